// SPDX-License-Identifier: GPL-2.0
/*
 * test_state.c - the state file: round trip, atomic replacement, refusal of
 * malformed files and of another host boot.
 */
#include "tb_test.h"
#include <stdio.h>
#include "dev.h"
#include "state.h"

#define OFF(f) offsetof(struct virtio_tballoon_config, f)

static void fill(struct tb_dev *d)
{
	tb_dev_init(d, NULL, NULL, NULL);
	for (unsigned int i = 0; i < sizeof(d->config); i++)
		d->config[i] = (uint8_t)(i * 7 + 1);
	d->last_cmd_id = 42;
	d->last_report_seq = 17;
	d->device_pages = 12345;
	d->cmd.cmd_id = 42;
	d->cmd.op = TBALLOON_OP_INFLATE;
	d->cmd.state = TBALLOON_STATE_RUNNING;
	d->cmd.target_pages = 50000;
	d->cmd.deadline_ms = 60000;
	d->cmd.timed = true;
	d->cmd.issued_ms = 123456789;
	d->stats.released_bytes = 1ULL << 33;
	d->stats.inflated_pages = 99;
	d->counted_valid[0] = true;
	d->counted_pos[0] = 65535;
}

static void test_round_trip(void **state)
{
	struct tb_dev a, b;
	json_object *o;

	(void)state;
	fill(&a);
	o = tb_state_to_json(&a);
	tb_dev_init(&b, NULL, NULL, NULL);
	assert_int_equal(tb_state_from_json(&b, o), 0);
	json_object_put(o);
	assert_memory_equal(a.config, b.config, sizeof(a.config));
	assert_int_equal(b.last_cmd_id, 42);
	assert_int_equal(b.last_report_seq, 17);
	assert_int_equal(b.device_pages, 12345);
	assert_int_equal(b.cmd.cmd_id, 42);
	assert_int_equal(b.cmd.target_pages, 50000);
	assert_int_equal(b.cmd.issued_ms, 123456789);
	assert_true(b.cmd.timed);
	/* a command in progress comes back as recovered */
	assert_true(b.cmd.recovered);
	assert_true(b.restored);
	assert_int_equal(b.stats.released_bytes, 1ULL << 33);
	assert_int_equal(b.stats.inflated_pages, 99);
	assert_true(b.counted_valid[0]);
	assert_int_equal(b.counted_pos[0], 65535);
	assert_false(b.counted_valid[1]);
}

static void test_refused(void **state)
{
	static const char *const bad[] = {
		"[]", "{}", "{\"version\":2}",
		"{\"version\":1,\"boot_id\":\"not-this-boot\"}",
	};
	struct tb_dev a, b;
	json_object *o, *c;

	(void)state;
	for (size_t i = 0; i < TB_ARRAY_SIZE(bad); i++) {
		o = json_tokener_parse(bad[i]);
		tb_dev_init(&b, NULL, NULL, NULL);
		assert_int_equal(tb_state_from_json(&b, o), -EINVAL);
		assert_false(b.restored);
		json_object_put(o);
	}
	/* a wrong-size config, a state out of range, a negative count */
	fill(&a);
	o = tb_state_to_json(&a);
	json_object_object_add(o, "config", json_object_new_string("00ff"));
	assert_int_equal(tb_state_from_json(&b, o), -EINVAL);
	json_object_put(o);
	o = tb_state_to_json(&a);
	json_object_object_get_ex(o, "command", &c);
	json_object_object_add(c, "state", json_object_new_int(99));
	assert_int_equal(tb_state_from_json(&b, o), -EINVAL);
	json_object_object_add(c, "state", json_object_new_int(1));
	json_object_object_add(o, "device_pages", json_object_new_int(-1));
	assert_int_equal(tb_state_from_json(&b, o), -EINVAL);
	json_object_put(o);
	assert_false(b.restored);
}

static void test_save_load(void **state)
{
	char dir[] = "/tmp/tb-state-XXXXXX";
	char path[64], tmp[80];
	struct tb_dev a, b;
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/state.json", dir);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	tb_dev_init(&b, NULL, NULL, NULL);
	assert_int_equal(tb_state_load(&b, path), -ENOENT);
	fill(&a);
	assert_int_equal(tb_state_save(&a, path), 0);
	assert_int_equal(access(tmp, F_OK), -1);	/* renamed away */
	a.device_pages = 7;
	assert_int_equal(tb_state_save(&a, path), 0);
	assert_int_equal(tb_state_load(&b, path), 0);
	assert_int_equal(b.device_pages, 7);
	/* garbage is refused, not half-loaded */
	f = fopen(path, "w");
	fputs("{\"version\":1,", f);
	fclose(f);
	tb_dev_init(&b, NULL, NULL, NULL);
	assert_int_equal(tb_state_load(&b, path), -EINVAL);
	assert_false(b.restored);
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		TB_TEST("state", test_round_trip),
		TB_TEST("state", test_refused),
		TB_TEST("state", test_save_load),
	};

	return tb_test_run("state", tests);
}
