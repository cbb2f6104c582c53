// SPDX-License-Identifier: GPL-2.0
/*
 * test_ctl.c - control protocol: request parsing and validation with json-c,
 * responses, the status object, events.
 */
#include "tb_test.h"
#include "ctl.h"

#define MiB (1ULL << 20)
#define RAM (16 * MiB)

struct fx {
	struct tb_mem mem;
	struct tb_dev dev;
	bool negotiated;	/* the client's qmp_capabilities state */
};

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	tb_mem_init(&f->mem);
	if (tb_mem_add(&f->mem, 0, RAM, 0, 0, tb_test_memfd(RAM)))
		return -1;
	tb_dev_init(&f->dev, &f->mem, NULL, NULL);
	f->negotiated = true;
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	tb_mem_clear(&f->mem);
	free(f);
	return 0;
}

static void ready(struct fx *f)
{
	tb_dev_session(&f->dev, true, 1);
	tb_dev_set_features(&f->dev, TB_BIT(32) | TB_DEV_FEATURES);
	f->dev.driver_ok = true;
	f->dev.notify_ok = true;
}

static json_object *handle(struct fx *f, const char *line)
{
	return tb_ctl_handle_line(&f->dev, line, strlen(line), 1000, &f->negotiated);
}

/* the error description of a response, or NULL if it is not an error */
static const char *err_desc(json_object *r)
{
	json_object *e, *d, *c;

	if (!json_object_object_get_ex(r, "error", &e))
		return NULL;
	assert_true(json_object_object_get_ex(e, "class", &c));
	/*
	 * QMP's classes: GenericError, CommandNotFound (unknown commands,
	 * before negotiation), DeviceNotActive (not ready yet)
	 */
	assert_true(!strcmp(json_object_get_string(c), "GenericError") ||
		    !strcmp(json_object_get_string(c), "CommandNotFound") ||
		    !strcmp(json_object_get_string(c), "DeviceNotActive"));
	assert_true(json_object_object_get_ex(e, "desc", &d));
	return json_object_get_string(d);
}

/* every line here must be answered by an error, never a crash */
static void test_garbage(void **state)
{
	static const char *const bad[] = {
		"", "garbage", "{", "}", "[]", "42", "\"execute\"", "null",
		"{\"execute\":\"query-balloon\"} trailing",
		"{\"execute\":\"query-balloon\"}{}",
		"{\"execute\":42}",
		"{\"execute\":null}",
		"{\"arguments\":{}}",
		"{\"execute\":\"query-balloon\",\"arguments\":[]}",
		"{\"execute\":\"query-balloon\",\"bogus\":1}",
		"{\"execute\":\"query-balloon\",\"arguments\":{\"x\":1}}",
		"{\"execute\":\"no-such-command\"}",
		"{\"execute\":\"inflate\"}",
		"{\"execute\":\"inflate\",\"arguments\":{\"target-pages\":1}}",
		"{\"execute\":\"inflate\",\"arguments\":{\"deadline-ms\":1}}",
		"{\"execute\":\"inflate\",\"arguments\":{\"target-pages\":\"1\",\"deadline-ms\":1}}",
		"{\"execute\":\"inflate\",\"arguments\":{\"target-pages\":1.5,\"deadline-ms\":1}}",
		"{\"execute\":\"inflate\",\"arguments\":{\"target-pages\":-1,\"deadline-ms\":1}}",
		"{\"execute\":\"inflate\",\"arguments\":{\"target-pages\":4294967296,\"deadline-ms\":1}}",
		"{\"execute\":\"inflate\",\"arguments\":{\"target-pages\":99999999999999999999999,\"deadline-ms\":1}}",
		"{\"execute\":\"inflate\",\"arguments\":{\"target-pages\":1,\"deadline-ms\":0}}",
		"{\"execute\":\"inflate\",\"arguments\":{\"target-pages\":1,\"deadline-ms\":3600001}}",
		"{\"execute\":\"inflate\",\"arguments\":{\"target-pages\":1,\"deadline-ms\":1,\"paced\":1}}",
		"{\"execute\":\"inflate\",\"arguments\":{\"target-pages\":1,\"deadline-ms\":1,\"floor-pages\":true}}",
		"{\"execute\":\"inflate\",\"arguments\":{\"target-pages\":1,\"deadline-ms\":1,\"speed\":9}}",
		"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
		"{\"execute\":\"query-balloon\",\"id\":{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{\"g\":{\"h\":{\"i\":{\"j\":{\"k\":{\"l\":{\"m\":{\"n\":{\"o\":{\"p\":{}}}}}}}}}}}}}}}}}}",
		"\xff\xfe{}",
	};
	struct fx *f = *state;

	ready(f);
	for (size_t i = 0; i < TB_ARRAY_SIZE(bad); i++) {
		json_object *r = handle(f, bad[i]);

		if (!err_desc(r))
			fail_msg("accepted: %s -> %s", bad[i], json_object_to_json_string(r));
		json_object_put(r);
	}
	/* nothing reached the device */
	assert_int_equal(f->dev.cmd.cmd_id, 0);
	assert_int_equal(TB_CFG(&f->dev, cmd_id), 0);
}

static void test_embedded_nul(void **state)
{
	struct fx *f = *state;
	static const char line[] = "{\"execute\":\"query-balloon\"}\0junk";
	json_object *r = tb_ctl_handle_line(&f->dev, line, sizeof(line) - 1, 1,
					       &f->negotiated);

	assert_non_null(err_desc(r));
	json_object_put(r);
}

/*
 * Found by fuzz_ctl: json-c took "''" followed by a comment running into a
 * NUL for the empty string, and the duplicate-key scan then counted more
 * objects than it had room for (heap overflow under ASan).
 */
static void test_nul_after_comment(void **state)
{
	struct fx *f = *state;
	static const char line[] = "''/***/{{{{/\177{{{{{{{{{{{{{{/:\0\r";
	json_object *r = tb_ctl_handle_line(&f->dev, line, sizeof(line) - 1, 1,
					       &f->negotiated);

	assert_non_null(err_desc(r));
	json_object_put(r);
	r = handle(f, "''/***/{{{{/\177{{{{{{{{{{{{{{/:");
	assert_non_null(err_desc(r));
	json_object_put(r);
}

static void test_too_long(void **state)
{
	struct fx *f = *state;
	size_t n = TB_CTL_LINE_MAX + 10;
	char *line = malloc(n);
	json_object *r;

	memset(line, ' ', n);
	r = tb_ctl_handle_line(&f->dev, line, n, 1, &f->negotiated);
	assert_non_null(err_desc(r));
	json_object_put(r);
	free(line);
}

static void test_id_echoed(void **state)
{
	struct fx *f = *state;
	json_object *r, *id;

	r = handle(f, "{\"execute\":\"query-balloon\",\"id\":{\"n\":[1,2]}}");
	assert_true(json_object_object_get_ex(r, "return", NULL));
	assert_true(json_object_object_get_ex(r, "id", &id));
	assert_string_equal(json_object_to_json_string_ext(id, JSON_C_TO_STRING_PLAIN),
			    "{\"n\":[1,2]}");
	json_object_put(r);

	r = handle(f, "{\"execute\":\"nope\",\"id\":\"abc\"}");
	assert_non_null(err_desc(r));
	assert_true(json_object_object_get_ex(r, "id", &id));
	assert_string_equal(json_object_get_string(id), "abc");
	json_object_put(r);

}

/* the class of an error response, or NULL */
static const char *err_class(json_object *r)
{
	json_object *e, *c;

	if (!json_object_object_get_ex(r, "error", &e) ||
	    !json_object_object_get_ex(e, "class", &c))
		return NULL;
	return json_object_get_string(c);
}

/* as QEMU's QMP: qmp_capabilities first, once; no NUL in command names */
static void test_negotiation(void **state)
{
	struct fx *f = *state;
	json_object *r, *v;

	f->negotiated = false;
	r = handle(f, "{\"execute\":\"query-balloon\",\"id\":1}");
	assert_string_equal(err_class(r), "CommandNotFound");
	assert_non_null(strstr(err_desc(r), "qmp_capabilities"));
	json_object_put(r);
	assert_false(f->negotiated);
	r = handle(f, "{\"execute\":\"qmp_capabilities\"}");
	assert_true(json_object_object_get_ex(r, "return", &v));
	assert_int_equal(json_object_object_length(v), 0);
	assert_false(json_object_object_get_ex(r, "id", NULL));
	json_object_put(r);
	assert_true(f->negotiated);
	r = handle(f, "{\"execute\":\"qmp_capabilities\"}");
	assert_string_equal(err_class(r), "CommandNotFound");
	json_object_put(r);
	r = handle(f, "{\"execute\":\"query-balloon\"}");
	assert_true(json_object_object_get_ex(r, "return", NULL));
	json_object_put(r);
	/* "abort\u0000x" must not run abort */
	r = handle(f, "{\"execute\":\"query-balloon\\u0000x\"}");
	assert_non_null(strstr(err_desc(r), "NUL"));
	json_object_put(r);
}

/*
 * Duplicate keys are refused as by QEMU's QMP (json-c alone keeps the last
 * one: "execute" twice ran the second command), at any depth; equal names
 * in different objects, escaped names and ':' or '{' inside strings are not
 * duplicates, nor are characters inside comments.
 */
static void test_duplicate_keys(void **state)
{
	static const char *const bad[] = {
		"{\"execute\":\"query-balloon\",\"execute\":\"abort\"}",
		"{\"execute\":\"inflate\",\"arguments\":{\"target-pages\":1,"
		"\"target-pages\":9,\"deadline-ms\":100}}",
		"{\"execute\":\"query-balloon\",\"id\":[{\"a\":1},{\"b\":{\"c\":1,\"c\":2}}]}",
		"{\"execute\":\"query-balloon\",\"id\":{\"a\":1,\"\\u0061\":2}}",
		"{\"execute\":\"query-balloon\",'execute':\"query-balloon\"}",
		"{\"execute\":\"query-balloon\" /* c */, \"execute\":\"abort\"}",
	};
	static const char *const good[] = {
		"{\"execute\":\"query-balloon\",\"id\":{\"execute\":{\"execute\":1}}}",
		"{\"execute\":\"query-balloon\",\"id\":[{\"a\":1},{\"a\":1},{}]}",
		"{\"execute\":\"query-balloon\",\"id\":\"{\\\"a\\\":1,\\\"a\\\":2}:\"}",
		"{\"execute\":\"query-balloon\",\"id\":'{a:1,a:2}'}",
		"{'execute':'query-balloon','id':{'a:b':1,'a':2}}",
		"{\"execute\":\"query-balloon\" /* {\"a\":1,\"a\":1} */}",
	};
	struct fx *f = *state;

	ready(f);
	for (size_t i = 0; i < TB_ARRAY_SIZE(bad); i++) {
		json_object *r = handle(f, bad[i]);

		if (!err_desc(r))
			fail_msg("accepted: %s", bad[i]);
		json_object_put(r);
	}
	assert_int_equal(f->dev.cmd.cmd_id, 0);
	for (size_t i = 0; i < TB_ARRAY_SIZE(good); i++) {
		json_object *r = handle(f, good[i]);

		if (!json_object_object_get_ex(r, "return", NULL))
			fail_msg("refused: %s -> %s", good[i], json_object_to_json_string(r));
		json_object_put(r);
	}
}

static void test_greeting(void **state)
{
	json_object *g = tb_ctl_greeting(), *q, *v;

	(void)state;
	assert_true(json_object_object_get_ex(g, "QMP", &q));
	assert_true(json_object_object_get_ex(q, "version", &v));
	assert_true(json_object_object_get_ex(q, "capabilities", &v));
	assert_true(json_object_is_type(v, json_type_array));
	json_object_put(g);
}

static void assert_keys(json_object *o, const char *const *keys)
{
	for (; *keys; keys++)
		if (!json_object_object_get_ex(o, *keys, NULL))
			fail_msg("missing key %s", *keys);
}

static void test_status_contract(void **state)
{
	static const char *const top[] = {
		"connected", "timed", "deflate_on_oom", "driver_ok", "guest_ram_bytes", "resident_bytes",
		"released_bytes", "actual_pages", "num_pages", "command", NULL
	};
	static const char *const cmd[] = {
		"cmd_id", "op", "state", "reason", "target_pages", "start_pages",
		"deadline_ms", "floor_pages", "paced", "elapsed_ms", "host_elapsed_ms",
		"report_seq", "reports", NULL
	};
	struct fx *f = *state;
	json_object *s = tb_ctl_status(&f->dev, 5), *c, *v;

	assert_keys(s, top);
	assert_true(json_object_object_get_ex(s, "command", &c));
	assert_keys(c, cmd);
	json_object_object_get_ex(c, "state", &v);
	assert_string_equal(json_object_get_string(v), "idle");
	json_object_object_get_ex(c, "op", &v);
	assert_string_equal(json_object_get_string(v), "none");
	json_object_object_get_ex(s, "guest_ram_bytes", &v);
	assert_int_equal(json_object_get_int64(v), RAM);
	json_object_object_get_ex(s, "connected", &v);
	assert_true(json_object_is_type(v, json_type_boolean));
	json_object_put(s);
}

static void test_inflate_roundtrip(void **state)
{
	struct fx *f = *state;
	json_object *r, *ret, *c, *v;

	/* no guest yet: a clear error */
	r = handle(f, "{\"execute\":\"inflate\",\"arguments\":{\"target-pages\":100,\"deadline-ms\":2000}}");
	assert_non_null(strstr(err_desc(r), "connected"));
	json_object_put(r);

	ready(f);
	/* host-side validation against guest RAM */
	r = handle(f, "{\"execute\":\"inflate\",\"arguments\":{\"target-pages\":4097,\"deadline-ms\":2000}}");
	assert_non_null(strstr(err_desc(r), "beyond guest RAM"));
	json_object_put(r);

	r = handle(f, "{\"execute\":\"inflate\",\"arguments\":{\"target-pages\":100,"
		      "\"deadline-ms\":2000,\"floor-pages\":50,\"paced\":true},\"id\":1}");
	assert_null(err_desc(r));
	assert_true(json_object_object_get_ex(r, "return", &ret));
	assert_true(json_object_object_get_ex(ret, "command", &c));
	json_object_object_get_ex(c, "cmd_id", &v);
	assert_int_equal(json_object_get_int64(v), 1);
	json_object_object_get_ex(c, "op", &v);
	assert_string_equal(json_object_get_string(v), "inflate");
	json_object_object_get_ex(c, "state", &v);
	assert_string_equal(json_object_get_string(v), "running");
	json_object_object_get_ex(c, "paced", &v);
	assert_true(json_object_get_boolean(v));
	json_object_object_get_ex(c, "floor_pages", &v);
	assert_int_equal(json_object_get_int64(v), 50);
	json_object_put(r);
	assert_int_equal(TB_CFG(&f->dev, target_pages), 100);
	assert_int_equal(TB_CFG(&f->dev, flags), TBALLOON_FLAG_PACED);

	r = handle(f, "{\"execute\":\"abort\"}");
	assert_null(err_desc(r));
	json_object_put(r);
	assert_int_equal(TB_CFG(&f->dev, op), TBALLOON_OP_ABORT);

	r = handle(f, "{\"execute\":\"deflate\",\"arguments\":{\"target-pages\":0,\"deadline-ms\":1}}");
	assert_null(err_desc(r));
	json_object_put(r);
	assert_int_equal(TB_CFG(&f->dev, op), TBALLOON_OP_DEFLATE);
}

/* x-test-set-last-cmd-id: bad ids refused, the next command wraps past 0 */
static void test_set_last_cmd_id(void **state)
{
	static const char *const bad[] = {
		"{\"execute\":\"x-test-set-last-cmd-id\",\"arguments\":{\"id\":-1}}",
		"{\"execute\":\"x-test-set-last-cmd-id\",\"arguments\":{\"id\":4294967296}}",
		"{\"execute\":\"x-test-set-last-cmd-id\",\"arguments\":{\"id\":\"7\"}}",
		"{\"execute\":\"x-test-set-last-cmd-id\",\"arguments\":{}}",
		"{\"execute\":\"x-test-set-last-cmd-id\",\"arguments\":{\"id\":1,\"x\":1}}",
	};
	struct fx *f = *state;
	json_object *r;
	size_t i;

	ready(f);
	for (i = 0; i < TB_ARRAY_SIZE(bad); i++) {
		r = handle(f, bad[i]);
		assert_non_null(err_desc(r));
		json_object_put(r);
	}
	r = handle(f, "{\"execute\":\"x-test-set-last-cmd-id\",\"arguments\":{\"id\":4294967294}}");
	assert_null(err_desc(r));
	json_object_put(r);
	r = handle(f, "{\"execute\":\"inflate\",\"arguments\":{\"target-pages\":100,\"deadline-ms\":2000}}");
	assert_null(err_desc(r));
	json_object_put(r);
	assert_int_equal(TB_CFG(&f->dev, cmd_id), 4294967295U);
	/* refused while that command runs */
	r = handle(f, "{\"execute\":\"x-test-set-last-cmd-id\",\"arguments\":{\"id\":5}}");
	assert_non_null(strstr(err_desc(r), "running"));
	json_object_put(r);
	/* the next id after 0xffffffff is 1, never 0 */
	r = handle(f, "{\"execute\":\"abort\"}");
	assert_null(err_desc(r));
	json_object_put(r);
	assert_int_equal(TB_CFG(&f->dev, cmd_id), 1);
}

static void test_query_stats(void **state)
{
	struct fx *f = *state;
	json_object *r, *ret, *g, *v;

	/* before any statistics: age -1, nothing under "guest", no request */
	r = handle(f, "{\"execute\":\"query-stats\"}");
	assert_true(json_object_object_get_ex(r, "return", &ret));
	json_object_object_get_ex(ret, "stats_vq", &v);
	assert_false(json_object_get_boolean(v));
	json_object_object_get_ex(ret, "age_ms", &v);
	assert_int_equal(json_object_get_int64(v), -1);
	json_object_object_get_ex(ret, "guest", &g);
	assert_int_equal(json_object_object_length(g), 0);
	assert_false(f->dev.stats_wanted);
	json_object_put(r);

	ready(f);
	f->dev.gstats.updates = 3;
	f->dev.gstats.updated_ms = 400;
	f->dev.gstats.have = (1U << TB_GSTAT_MEMFREE) | (1U << TB_GSTAT_MEMTOT);
	f->dev.gstats.val[TB_GSTAT_MEMFREE] = 1234;
	f->dev.gstats.val[TB_GSTAT_MEMTOT] = 5678;
	f->dev.gstats.val[TB_GSTAT_SWAP_IN] = 99;	/* not in the last buffer */
	r = handle(f, "{\"execute\":\"query-stats\",\"id\":3}");
	assert_null(err_desc(r));
	json_object_object_get_ex(r, "return", &ret);
	json_object_object_get_ex(ret, "stats_vq", &v);
	assert_true(json_object_get_boolean(v));
	json_object_object_get_ex(ret, "age_ms", &v);
	assert_int_equal(json_object_get_int64(v), 600);
	json_object_object_get_ex(ret, "guest", &g);
	assert_int_equal(json_object_object_length(g), 2);
	json_object_object_get_ex(g, "free-memory", &v);
	assert_int_equal(json_object_get_int64(v), 1234);
	json_object_object_get_ex(g, "total-memory", &v);
	assert_int_equal(json_object_get_int64(v), 5678);
	/* asks the device for fresh statistics */
	assert_true(f->dev.stats_wanted);
	json_object_put(r);

	r = handle(f, "{\"execute\":\"query-stats\",\"arguments\":{\"x\":1}}");
	assert_non_null(err_desc(r));
	json_object_put(r);
}

static void test_event(void **state)
{
	struct fx *f = *state;
	json_object *e = tb_ctl_event(TB_EVENT_DONE, tb_ctl_status(&f->dev, 1)), *v;

	assert_true(json_object_object_get_ex(e, "event", &v));
	assert_string_equal(json_object_get_string(v), "BALLOON_DONE");
	assert_true(json_object_object_get_ex(e, "data", &v));
	assert_true(json_object_object_get_ex(v, "command", NULL));
	assert_true(json_object_object_get_ex(e, "timestamp", &v));
	assert_true(json_object_object_get_ex(v, "seconds", NULL));
	json_object_put(e);
	assert_string_equal(tb_ctl_event_name(TB_EVENT_PROGRESS), "BALLOON_PROGRESS");
}

#define T(fn) TB_TEST_FX("ctl", fn, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_query_stats),
		T(test_garbage),
		T(test_embedded_nul),
		T(test_nul_after_comment),
		T(test_too_long),
		T(test_id_echoed),
		T(test_negotiation),
		T(test_duplicate_keys),
		TB_TEST("ctl", test_greeting),
		T(test_status_contract),
		T(test_inflate_roundtrip),
		T(test_set_last_cmd_id),
		T(test_event),
	};

	return tb_test_run("ctl", tests);
}
