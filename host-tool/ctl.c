// SPDX-License-Identifier: GPL-2.0
/*
 * ctl.c - control protocol: request parsing (json-c), status and events.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "ctl.h"
#include "util.h"

static const char *const tb_ctl_event_names[TB_EVENT_COUNT] = {
	[TB_EVENT_PROGRESS] = "BALLOON_PROGRESS",
	[TB_EVENT_DONE] = "BALLOON_DONE",
	[TB_EVENT_CONNECTED] = "FRONTEND_CONNECTED",
	[TB_EVENT_DISCONNECTED] = "FRONTEND_DISCONNECTED",
	[TB_EVENT_RESET] = "DEVICE_RESET",
	[TB_EVENT_BROKEN] = "DEVICE_BROKEN",
	/* QEMU's name for it */
	[TB_EVENT_CHANGE] = "BALLOON_CHANGE",
};

const char *tb_ctl_event_name(enum tb_event ev)
{
	return (unsigned int)ev < TB_EVENT_COUNT ? tb_ctl_event_names[ev] : "UNKNOWN";
}

void tb_json_add_u64(json_object *o, const char *key, uint64_t v)
{
	json_object_object_add(o, key, json_object_new_uint64(v));
}

void tb_json_add_i64(json_object *o, const char *key, int64_t v)
{
	json_object_object_add(o, key, json_object_new_int64(v));
}

/* {"tballoon": {"major", "minor", "micro"}, "package"}: greeting, query-version */
static json_object *tb_ctl_version(void)
{
	json_object *o = json_object_new_object();
	json_object *t = json_object_new_object();

	tb_json_add_u64(t, "major", TB_VERSION_MAJOR);
	tb_json_add_u64(t, "minor", TB_VERSION_MINOR);
	tb_json_add_u64(t, "micro", TB_VERSION_MICRO);
	json_object_object_add(o, "tballoon", t);
	json_object_object_add(o, "package", json_object_new_string("tballoon " TB_VERSION));
	return o;
}

json_object *tb_ctl_greeting(void)
{
	json_object *qmp = json_object_new_object();
	json_object *g = json_object_new_object();

	json_object_object_add(qmp, "version", tb_ctl_version());
	json_object_object_add(qmp, "capabilities", json_object_new_array());
	json_object_object_add(g, "QMP", qmp);
	return g;
}

json_object *tb_ctl_error(json_object *id, const char *desc)
{
	return tb_ctl_error_class(id, "GenericError", desc);
}

json_object *tb_ctl_error_class(json_object *id, const char *cls, const char *desc)
{
	json_object *e = json_object_new_object();
	json_object *r = json_object_new_object();

	json_object_object_add(e, "class", json_object_new_string(cls));
	json_object_object_add(e, "desc", json_object_new_string(desc));
	json_object_object_add(r, "error", e);
	if (id)
		json_object_object_add(r, "id", json_object_get(id));
	return r;
}

static json_object *tb_ctl_return(json_object *id, json_object *val)
{
	json_object *r = json_object_new_object();

	json_object_object_add(r, "return", val);
	if (id)
		json_object_object_add(r, "id", json_object_get(id));
	return r;
}

static json_object *tb_ctl_command(const struct tb_dev *dev, uint64_t now_ms)
{
	const struct tb_cmd *c = &dev->cmd;
	json_object *o = json_object_new_object();
	uint64_t end = c->ended_ms ? c->ended_ms : now_ms;
	uint64_t after = c->ended_ms ? c->resident_after : tb_dev_resident_bytes(dev);

	tb_json_add_u64(o, "cmd_id", c->cmd_id);
	json_object_object_add(o, "op", json_object_new_string(tb_op_name(c->op)));
	json_object_object_add(o, "state", json_object_new_string(
		c->cmd_id ? tb_state_name(c->state) : "idle"));
	json_object_object_add(o, "reason", json_object_new_string(tb_reason_name(c->reason)));
	tb_json_add_u64(o, "target_pages", c->target_pages);
	tb_json_add_u64(o, "start_pages", c->start_pages);
	tb_json_add_u64(o, "deadline_ms", c->deadline_ms);
	tb_json_add_u64(o, "floor_pages", c->floor_pages);
	json_object_object_add(o, "paced", json_object_new_boolean(c->flags & TBALLOON_FLAG_PACED));
	json_object_object_add(o, "gentle", json_object_new_boolean(c->flags & TBALLOON_FLAG_GENTLE));
	tb_json_add_u64(o, "elapsed_ms", c->elapsed_ms);
	tb_json_add_u64(o, "host_elapsed_ms", c->cmd_id && end > c->issued_ms ? end - c->issued_ms : 0);
	tb_json_add_u64(o, "report_seq", c->report_seq);
	tb_json_add_u64(o, "reports", c->reports);
	/* the sizes in bytes too (pages stay for the clients written against them) */
	tb_json_add_u64(o, "target_bytes", (uint64_t)c->target_pages << TB_PAGE_SHIFT);
	tb_json_add_u64(o, "start_bytes", (uint64_t)c->start_pages << TB_PAGE_SHIFT);
	tb_json_add_u64(o, "floor_bytes", (uint64_t)c->floor_pages << TB_PAGE_SHIFT);
	/* extensions beyond the brief's object */
	json_object_object_add(o, "timed", json_object_new_boolean(c->timed));
	json_object_object_add(o, "recovered", json_object_new_boolean(c->recovered));
	tb_json_add_u64(o, "resident_before_bytes", c->resident_before);
	tb_json_add_i64(o, "host_released_bytes",
			c->cmd_id ? (int64_t)c->resident_before - (int64_t)after : 0);
	return o;
}

json_object *tb_ctl_status(const struct tb_dev *dev, uint64_t now_ms)
{
	json_object *o = json_object_new_object();
	json_object *s = json_object_new_object();

	json_object_object_add(o, "kind", json_object_new_string(tb_kind_name(dev->kind)));
	/* who keeps the deadline and the floor: the guest only with TIMED */
	json_object_object_add(o, "enforced_by", json_object_new_string(
		tb_dev_timed(dev) ? "guest" : "host"));
	json_object_object_add(o, "connected", json_object_new_boolean(dev->connected));
	json_object_object_add(o, "timed", json_object_new_boolean(tb_dev_timed(dev)));
	json_object_object_add(o, "deflate_on_oom", json_object_new_boolean(
		dev->features_set && (dev->features & TB_BIT(TB_BALLOON_F_DEFLATE_ON_OOM))));
	json_object_object_add(o, "free_page_reporting", json_object_new_boolean(
		dev->features_set && (dev->features & TB_BIT(TB_BALLOON_F_REPORTING))));
	json_object_object_add(o, "page_poison", json_object_new_boolean(
		dev->features_set && (dev->features & TB_BIT(TB_BALLOON_F_PAGE_POISON))));
	tb_json_add_u64(o, "poison_val", TB_CFG(dev, poison_val));
	tb_json_add_u64(o, "punch_threads", dev->punch_threads);
	json_object_object_add(o, "driver_ok", json_object_new_boolean(dev->driver_ok));
	tb_json_add_u64(o, "guest_ram_bytes", tb_dev_ram_bytes(dev));
	tb_json_add_u64(o, "resident_bytes", tb_dev_resident_bytes(dev));
	tb_json_add_u64(o, "released_bytes", dev->stats.released_bytes);
	tb_json_add_u64(o, "actual_pages", TB_CFG(dev, actual));
	tb_json_add_u64(o, "num_pages", TB_CFG(dev, num_pages));
	tb_json_add_u64(o, "actual_bytes", (uint64_t)TB_CFG(dev, actual) << TB_PAGE_SHIFT);
	tb_json_add_u64(o, "num_bytes", (uint64_t)TB_CFG(dev, num_pages) << TB_PAGE_SHIFT);
	/* guest memory as virsh and QMP's "actual" count it: RAM - balloon */
	{
		uint64_t ram = tb_dev_ram_bytes(dev);
		uint64_t bal = (uint64_t)TB_CFG(dev, actual) << TB_PAGE_SHIFT;

		tb_json_add_u64(o, "guest_memory_bytes", ram > bal ? ram - bal : 0);
	}
	/* extensions beyond the brief's object */
	tb_json_add_u64(o, "device_pages", dev->device_pages);
	tb_json_add_u64(o, "device_bytes", dev->device_pages << TB_PAGE_SHIFT);
	json_object_object_add(o, "broken", json_object_new_boolean(dev->broken));
	json_object_object_add(o, "broken_reason", json_object_new_string(dev->broken_why));
	json_object_object_add(o, "restored", json_object_new_boolean(dev->restored));
	json_object_object_add(o, "command", tb_ctl_command(dev, now_ms));

	tb_json_add_u64(s, "inflated_pages", dev->stats.inflated_pages);
	tb_json_add_u64(s, "deflated_pages", dev->stats.deflated_pages);
	tb_json_add_u64(s, "guest_deflated_pages", dev->stats.guest_deflated_pages);
	tb_json_add_u64(s, "migrated_pages", dev->stats.migrated_pages);
	tb_json_add_u64(s, "inflated_bytes", dev->stats.inflated_pages << TB_PAGE_SHIFT);
	tb_json_add_u64(s, "deflated_bytes", dev->stats.deflated_pages << TB_PAGE_SHIFT);
	tb_json_add_u64(s, "guest_deflated_bytes",
			dev->stats.guest_deflated_pages << TB_PAGE_SHIFT);
	tb_json_add_u64(s, "refused_pfns", dev->stats.refused_pfns);
	tb_json_add_u64(s, "bad_buffers", dev->stats.bad_buffers);
	tb_json_add_u64(s, "punch_errors", dev->stats.punch_errors);
	tb_json_add_u64(s, "bad_reports", dev->stats.bad_reports);
	tb_json_add_u64(s, "broken_rings", dev->stats.broken_rings);
	tb_json_add_u64(s, "resets", dev->stats.resets);
	tb_json_add_u64(s, "unresponsive", dev->stats.unresponsive);
	tb_json_add_u64(s, "reports", dev->stats.reports);
	tb_json_add_u64(s, "reported_bytes", dev->stats.reported_bytes);
	tb_json_add_u64(s, "reported_kept_bytes", dev->stats.reported_kept_bytes);
	json_object_object_add(o, "stats", s);
	return o;
}

json_object *tb_ctl_guest_stats(struct tb_dev *dev, uint64_t now_ms)
{
	const struct tb_guest_stats *g = &dev->gstats;
	json_object *o = json_object_new_object();
	json_object *v = json_object_new_object();
	bool on = dev->features_set && (dev->features & TB_BIT(TB_BALLOON_F_STATS_VQ));

	json_object_object_add(o, "stats_vq", json_object_new_boolean(on));
	tb_json_add_u64(o, "guest_ram_bytes", tb_dev_ram_bytes(dev));
	tb_json_add_u64(o, "resident_bytes", tb_dev_resident_bytes(dev));
	tb_json_add_u64(o, "released_bytes", dev->stats.released_bytes);
	tb_json_add_u64(o, "actual_pages", TB_CFG(dev, actual));
	tb_json_add_u64(o, "device_pages", dev->device_pages);
	tb_json_add_u64(o, "updates", g->updates);
	tb_json_add_i64(o, "age_ms", g->updates && now_ms >= g->updated_ms ?
			(int64_t)(now_ms - g->updated_ms) : -1);
	tb_json_add_u64(o, "interval_ms", dev->stats_interval_ms);
	for (unsigned int i = 0; i < TB_GSTAT_COUNT; i++)
		if (g->have & (1U << i))
			tb_json_add_u64(v, tb_gstat_name(i), g->val[i]);
	json_object_object_add(o, "guest", v);
	/* the next statistics request goes out now: the next query is fresh */
	dev->stats_wanted = on;
	return o;
}

json_object *tb_ctl_event(enum tb_event ev, json_object *data)
{
	json_object *e = json_object_new_object();
	json_object *ts = json_object_new_object();
	struct timeval tv;

	gettimeofday(&tv, NULL);
	tb_json_add_i64(ts, "seconds", tv.tv_sec);
	tb_json_add_i64(ts, "microseconds", tv.tv_usec);
	json_object_object_add(e, "event", json_object_new_string(tb_ctl_event_name(ev)));
	json_object_object_add(e, "data", data);
	json_object_object_add(e, "timestamp", ts);
	return e;
}

/* ------------------------------------------------------------------------
 * Requests
 * ------------------------------------------------------------------------
 */

/* an unsigned integer argument in [min, max]; 0 ok, -1 with *err set */
static int tb_ctl_arg_u32(json_object *args, const char *key, bool required,
			  uint32_t min, uint32_t max, uint32_t *out,
			  char *err, size_t errlen)
{
	json_object *v;
	int64_t s;
	uint64_t u;

	if (!json_object_object_get_ex(args, key, &v)) {
		if (!required)
			return 0;
		snprintf(err, errlen, "parameter '%s' is missing", key);
		return -1;
	}
	if (!json_object_is_type(v, json_type_int)) {
		snprintf(err, errlen, "parameter '%s' expects an integer", key);
		return -1;
	}
	s = json_object_get_int64(v);
	u = json_object_get_uint64(v);
	if (s < 0 || u < min || u > max) {
		snprintf(err, errlen, "parameter '%s' must be in %u..%u", key, min, max);
		return -1;
	}
	*out = (uint32_t)u;
	return 0;
}

/* every member of @args is one of @allowed (NULL-terminated) */
static int tb_ctl_args_known(json_object *args, const char *const *allowed,
			     char *err, size_t errlen)
{
	json_object_object_foreach(args, key, val) {
		bool ok = false;

		(void)val;
		for (const char *const *a = allowed; *a; a++)
			if (!strcmp(key, *a))
				ok = true;
		if (!ok) {
			snprintf(err, errlen, "parameter '%s' is unexpected", key);
			return -1;
		}
	}
	return 0;
}

/*
 * A command the device refused: DeviceNotActive (QMP's class for "No
 * balloon device has been activated") when it may succeed later unchanged
 * (no front-end yet, the driver not ready, no statistics yet), else
 * GenericError.
 */
static json_object *tb_ctl_refused(const struct tb_dev *dev, json_object *id, const char *err)
{
	return dev->refused_retry ? tb_ctl_error_class(id, "DeviceNotActive", err) :
				    tb_ctl_error(id, err);
}

/* the commands, for query-commands (QMP's reply shape: [{"name": ...}]) */
static const char *const tb_ctl_commands[] = {
	"qmp_capabilities", "query-version", "query-commands", "query-balloon",
	"query-stats", "inflate", "deflate", "abort",
	"x-test-withhold-buffers", "x-test-config-notify", "x-test-set-last-cmd-id",
	"x-test-punch-delay",
};

static json_object *tb_ctl_move(struct tb_dev *dev, uint32_t op, json_object *args,
				json_object *id, uint64_t now_ms)
{
	static const char *const allowed[] = {
		"target-pages", "deadline-ms", "floor-pages", "paced", "gentle", NULL
	};
	static const struct { const char *name; uint32_t flag; } flag_args[] = {
		{ "paced", TBALLOON_FLAG_PACED }, { "gentle", TBALLOON_FLAG_GENTLE },
	};
	size_t i;
	uint32_t target = 0, deadline = 0, floor = 0, flags = 0;
	json_object *v;
	char err[256];

	if (tb_ctl_args_known(args, allowed, err, sizeof(err)) ||
	    tb_ctl_arg_u32(args, "target-pages", true, 0, UINT32_MAX, &target,
			   err, sizeof(err)) ||
	    tb_ctl_arg_u32(args, "deadline-ms", true, 1, TBALLOON_DEADLINE_MAX_MS,
			   &deadline, err, sizeof(err)) ||
	    tb_ctl_arg_u32(args, "floor-pages", false, 0, UINT32_MAX, &floor,
			   err, sizeof(err)))
		return tb_ctl_error(id, err);
	for (i = 0; i < sizeof(flag_args) / sizeof(flag_args[0]); i++) {
		if (!json_object_object_get_ex(args, flag_args[i].name, &v))
			continue;
		if (!json_object_is_type(v, json_type_boolean)) {
			snprintf(err, sizeof(err), "parameter '%s' expects a boolean",
				 flag_args[i].name);
			return tb_ctl_error(id, err);
		}
		if (json_object_get_boolean(v))
			flags |= flag_args[i].flag;
	}
	if (!tb_dev_issue(dev, op, target, deadline, floor, flags, now_ms, err, sizeof(err)))
		return tb_ctl_refused(dev, id, err);
	return tb_ctl_return(id, tb_ctl_status(dev, now_ms));
}

/*
 * Duplicate keys. json-c keeps the last of two equal keys, QEMU's QMP
 * refuses such a request. No packaged parser here reports them, so this
 * compares what json-c built with the text it built it from: the member
 * counts of the text's objects in document order (one ':' per member at
 * the object's own level) against the sizes of the parsed objects in the
 * same pre-order. A duplicate makes its object smaller than its text while
 * every object before it in pre-order is untouched, so the sequences
 * differ exactly when some object has a duplicate. @line is valid JSON
 * (json-c accepted it: json-c also takes 'strings' as QEMU does, and
 * comments) of at most TB_CTL_LINE_MAX bytes and depth 16.
 */
struct tb_ctl_members {
	uint32_t *count;	/* members of the n-th object of the text */
	size_t n, next;
};

static bool tb_ctl_members_match(const json_object *o, struct tb_ctl_members *m)
{
	if (json_object_is_type(o, json_type_array)) {
		size_t n = json_object_array_length(o);

		for (size_t i = 0; i < n; i++)
			if (!tb_ctl_members_match(json_object_array_get_idx(o, i), m))
				return false;
		return true;
	}
	if (!json_object_is_type(o, json_type_object))
		return true;
	if (m->next >= m->n ||
	    m->count[m->next++] != (uint32_t)json_object_object_length(o))
		return false;
	json_object_object_foreach((json_object *)o, key, val) {
		(void)key;
		if (!tb_ctl_members_match(val, m))
			return false;
	}
	return true;
}

static bool tb_ctl_has_duplicate_key(const json_object *req, const char *line, size_t len)
{
	size_t stack[17];	/* object index, or SIZE_MAX for an array */
	struct tb_ctl_members m = { 0 };
	int depth = 0;
	bool dup;

	/* at most one object per '{', whatever json-c made of the text */
	m.count = calloc(len + 1, sizeof(*m.count));
	if (!m.count)
		return true;	/* refused as if duplicate: never accept unchecked */
	for (size_t i = 0; i < len; i++) {
		char c = line[i];

		if (c == '"' || c == '\'') {	/* json-c, like QEMU, takes 'strings' */
			for (i++; i < len && line[i] != c; i++)
				if (line[i] == '\\')
					i++;
		} else if (c == '/' && i + 1 < len && line[i + 1] == '*') {
			for (i += 2; i + 1 < len && !(line[i] == '*' && line[i + 1] == '/'); i++)
				;
			i++;
		} else if (c == '/' && i + 1 < len && line[i + 1] == '/') {
			i = len;	/* to the end of the line */
		} else if ((c == '{' || c == '[') && depth < 17) {
			stack[depth++] = c == '{' ? m.n++ : SIZE_MAX;
		} else if ((c == '}' || c == ']') && depth > 0) {
			depth--;
		} else if (c == ':' && depth > 0 && stack[depth - 1] != SIZE_MAX) {
			m.count[stack[depth - 1]]++;
		}
	}
	dup = !tb_ctl_members_match(req, &m) || m.next != m.n;
	free(m.count);
	return dup;
}

json_object *tb_ctl_handle_line(struct tb_dev *dev, const char *line, size_t len,
				uint64_t now_ms, bool *negotiated)
{
	static const char *const no_args[] = { NULL };
	json_tokener *tok;
	json_object *req, *exec = NULL, *args = NULL, *id = NULL, *resp;
	enum json_tokener_error jerr;
	const char *name;
	char err[256];

	if (len > TB_CTL_LINE_MAX)
		return tb_ctl_error(NULL, "request too long");
	/* json-c stops at a NUL and may take what came before it for a value */
	if (memchr(line, '\0', len))
		return tb_ctl_error(NULL, "JSON parse error: NUL byte in the request");
	tok = json_tokener_new_ex(16);
	if (!tok)
		return tb_ctl_error(NULL, "out of memory");
	req = json_tokener_parse_ex(tok, line, (int)len);
	jerr = json_tokener_get_error(tok);
	if (req && jerr == json_tokener_success) {
		/* only whitespace may follow the object */
		for (size_t i = json_tokener_get_parse_end(tok); i < len; i++) {
			if (line[i] != ' ' && line[i] != '\t' && line[i] != '\r') {
				jerr = json_tokener_error_parse_unexpected;
				break;
			}
		}
	} else if (jerr == json_tokener_continue) {
		jerr = json_tokener_error_parse_eof;
	}
	json_tokener_free(tok);
	if (!req || jerr != json_tokener_success) {
		json_object_put(req);
		snprintf(err, sizeof(err), "JSON parse error: %s",
			 json_tokener_error_desc(jerr));
		return tb_ctl_error(NULL, err);
	}
	if (tb_ctl_has_duplicate_key(req, line, len)) {
		resp = tb_ctl_error(NULL, "JSON parse error: duplicate key in an object");
		goto out;
	}

	if (!json_object_is_type(req, json_type_object)) {
		resp = tb_ctl_error(NULL, "request must be a JSON object");
		goto out;
	}
	json_object_object_get_ex(req, "id", &id);
	json_object_object_foreach(req, key, val) {
		(void)val;
		if (strcmp(key, "execute") && strcmp(key, "arguments") && strcmp(key, "id")) {
			snprintf(err, sizeof(err), "request member '%s' is unexpected", key);
			resp = tb_ctl_error(id, err);
			goto out;
		}
	}
	if (!json_object_object_get_ex(req, "execute", &exec) ||
	    !json_object_is_type(exec, json_type_string)) {
		resp = tb_ctl_error(id, "'execute' must be a string");
		goto out;
	}
	if (json_object_object_get_ex(req, "arguments", &args) &&
	    !json_object_is_type(args, json_type_object)) {
		resp = tb_ctl_error(id, "'arguments' must be an object");
		goto out;
	}
	if (!args) {
		args = json_object_new_object();
		json_object_object_add(req, "arguments", args);
	}

	name = json_object_get_string(exec);
	/* "inflate\u0000x" is not "inflate" */
	if ((size_t)json_object_get_string_len(exec) != strlen(name)) {
		resp = tb_ctl_error(id, "'execute' contains a NUL character");
		goto out;
	}
	/* as QEMU's QMP: capabilities negotiation first, then commands */
	if (!*negotiated) {
		if (strcmp(name, "qmp_capabilities")) {
			resp = tb_ctl_error_class(id, "CommandNotFound",
						  "Expecting capabilities negotiation with "
						  "'qmp_capabilities'");
		} else if (tb_ctl_args_known(args, no_args, err, sizeof(err))) {
			resp = tb_ctl_error(id, err);
		} else {
			*negotiated = true;
			resp = tb_ctl_return(id, json_object_new_object());
		}
		goto out;
	}
	if (!strcmp(name, "qmp_capabilities")) {
		resp = tb_ctl_error_class(id, "CommandNotFound",
					  "Capabilities negotiation is already complete, "
					  "command ignored");
		goto out;
	}
	if (!strcmp(name, "inflate")) {
		resp = tb_ctl_move(dev, TBALLOON_OP_INFLATE, args, id, now_ms);
	} else if (!strcmp(name, "deflate")) {
		resp = tb_ctl_move(dev, TBALLOON_OP_DEFLATE, args, id, now_ms);
	} else if (!strcmp(name, "abort") || !strcmp(name, "query-balloon") ||
		   !strcmp(name, "query-stats") || !strcmp(name, "query-version") ||
		   !strcmp(name, "query-commands")) {
		if (tb_ctl_args_known(args, no_args, err, sizeof(err))) {
			resp = tb_ctl_error(id, err);
		} else if (!strcmp(name, "query-version")) {
			resp = tb_ctl_return(id, tb_ctl_version());
		} else if (!strcmp(name, "query-commands")) {
			json_object *a = json_object_new_array();

			for (size_t i = 0; i < TB_ARRAY_SIZE(tb_ctl_commands); i++) {
				json_object *c = json_object_new_object();

				json_object_object_add(c, "name",
						       json_object_new_string(tb_ctl_commands[i]));
				json_object_array_add(a, c);
			}
			resp = tb_ctl_return(id, a);
		} else if (!strcmp(name, "query-stats")) {
			resp = tb_ctl_return(id, tb_ctl_guest_stats(dev, now_ms));
		} else if (!strcmp(name, "query-balloon")) {
			resp = tb_ctl_return(id, tb_ctl_status(dev, now_ms));
		} else if (!tb_dev_issue(dev, TBALLOON_OP_ABORT, 0, 0, 0, 0, now_ms,
					 err, sizeof(err))) {
			resp = tb_ctl_refused(dev, id, err);
		} else {
			resp = tb_ctl_return(id, tb_ctl_status(dev, now_ms));
		}
	} else if (!strcmp(name, "x-test-withhold-buffers")) {
		/*
		 * Test only (the x- prefix, as QEMU marks unstable commands):
		 * the device model stops returning PFN buffers, the way a
		 * dead or hostile backend would, while it keeps answering
		 * config accesses. For the guest driver's fault scenarios.
		 */
		static const char *const wargs[] = { "withhold", NULL };
		json_object *w;

		if (tb_ctl_args_known(args, wargs, err, sizeof(err))) {
			resp = tb_ctl_error(id, err);
		} else if (!json_object_object_get_ex(args, "withhold", &w) ||
			   !json_object_is_type(w, json_type_boolean)) {
			resp = tb_ctl_error(id, "'withhold' must be a boolean");
		} else {
			dev->test_withhold = json_object_get_boolean(w);
			tb_warn("test: PFN buffers and free page reports are %s",
				dev->test_withhold ?
				"withheld (x-test-withhold-buffers)" : "returned again");
			resp = tb_ctl_return(id, tb_ctl_status(dev, now_ms));
		}
	} else if (!strcmp(name, "x-test-punch-delay")) {
		/*
		 * Test only: every punch first sleeps this long, the way a
		 * slow or contended memory file would, to show that the loop
		 * keeps answering while the punch threads work.
		 */
		static const char *const pargs[] = { "ms", NULL };
		uint32_t ms;

		if (tb_ctl_args_known(args, pargs, err, sizeof(err)) ||
		    tb_ctl_arg_u32(args, "ms", true, 0, 10000, &ms, err, sizeof(err))) {
			resp = tb_ctl_error(id, err);
		} else {
			__atomic_store_n(&dev->test_punch_delay_ms, ms, __ATOMIC_RELAXED);
			tb_warn("test: each punch sleeps %u ms first (x-test-punch-delay)", ms);
			resp = tb_ctl_return(id, tb_ctl_status(dev, now_ms));
		}
	} else if (!strcmp(name, "x-test-config-notify")) {
		/*
		 * Test only: a config change notification although nothing in
		 * config space changed, as a noisy or hostile device model
		 * sends; the driver must not lose work to it.
		 */
		static const char *const nargs[] = { NULL };
		int rc;

		if (tb_ctl_args_known(args, nargs, err, sizeof(err))) {
			resp = tb_ctl_error(id, err);
		} else if (!dev->connected || !dev->driver_ok) {
			resp = tb_ctl_error(id, "the guest driver is not ready");
		} else if ((rc = tb_dev_notify(dev)) < 0) {
			snprintf(err, sizeof(err), "not sent: %s", strerror(-rc));
			resp = tb_ctl_error(id, err);
		} else {
			resp = tb_ctl_return(id, json_object_new_object());
		}
	} else if (!strcmp(name, "x-test-set-last-cmd-id")) {
		/*
		 * Test only: the id the next command follows (ids wrap from
		 * 0xffffffff to 1, 0 is "no command"), so that a scenario
		 * reaches the wrap without four billion commands. Refused while
		 * a command runs: its id would no longer be the last.
		 */
		static const char *const largs[] = { "id", NULL };
		uint32_t n;

		if (tb_ctl_args_known(args, largs, err, sizeof(err)) ||
		    tb_ctl_arg_u32(args, "id", true, 0, UINT32_MAX, &n, err, sizeof(err))) {
			resp = tb_ctl_error(id, err);
		} else if (tb_cmd_running(&dev->cmd)) {
			resp = tb_ctl_error(id, "a command is running");
		} else {
			dev->last_cmd_id = n;
			tb_warn("test: the next command follows id %u (x-test-set-last-cmd-id)",
				dev->last_cmd_id);
			resp = tb_ctl_return(id, tb_ctl_status(dev, now_ms));
		}
	} else {
		/* QMP's words and class for it */
		snprintf(err, sizeof(err), "The command %.64s has not been found", name);
		resp = tb_ctl_error_class(id, "CommandNotFound", err);
	}
out:
	/* resp holds its own reference to id */
	json_object_put(req);
	return resp;
}
