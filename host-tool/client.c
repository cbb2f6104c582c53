// SPDX-License-Identifier: GPL-2.0
/*
 * client.c - `tballoon inflate|deflate|status|abort`: QMP-style requests on
 * the control socket, live progress from BALLOON_PROGRESS events.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "conn.h"
#include "ctl.h"
#include "parse.h"
#include "util.h"

/* SIGINT/SIGTERM while following a command (--wait, watch): detach */
static void tb_client_on_signal(int sig)
{
	(void)sig;
	tb_conn_interrupted = 1;
}

/* the exit code for a request @c could not get done */
static int tb_conn_failed(const struct tb_conn *c)
{
	return strcmp(c->err_class, "DeviceNotActive") ? TB_EXIT_ERROR : TB_EXIT_NOT_READY;
}


/* ------------------------------------------------------------------------
 * Printing
 * ------------------------------------------------------------------------
 */

static int64_t tb_jint(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : 0;
}

static const char *tb_jstr(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : "?";
}

static const char *tb_pages_str(char *buf, size_t len, int64_t pages)
{
	char b[32];

	tb_format_bytes(b, sizeof(b), pages * 4096);
	snprintf(buf, len, "%lld pages (%s)", (long long)pages, b);
	return buf;
}

/* "done", or "pressure (floor)": the reason only when there is one */
static const char *tb_state_str(char *buf, size_t len, json_object *c)
{
	const char *reason = tb_jstr(c, "reason");

	if (!strcmp(reason, "none") || !strcmp(reason, "?"))
		snprintf(buf, len, "%s", tb_jstr(c, "state"));
	else
		snprintf(buf, len, "%s (%s)", tb_jstr(c, "state"), reason);
	return buf;
}

void tb_print_status(json_object *st, bool json)
{
	json_object *c = tb_jobj(st, "command");
	char a[64], b[64], r[32], res[32], rel[32], g[32];
	int64_t ram = tb_jint(st, "guest_ram_bytes");
	int64_t actual = tb_jint(st, "actual_pages");

	if (json) {
		puts(json_object_to_json_string_ext(st, JSON_C_TO_STRING_PLAIN |
						    JSON_C_TO_STRING_NOSLASHESCAPE));
		return;
	}
	tb_format_bytes(r, sizeof(r), ram);
	tb_format_bytes(res, sizeof(res), tb_jint(st, "resident_bytes"));
	tb_format_bytes(rel, sizeof(rel), tb_jint(st, "released_bytes"));
	printf("VM:         %s, deadline and floor enforced by the %s\n",
	       tb_jstr(st, "kind"), tb_jstr(st, "enforced_by"));
	printf("front-end:  %s, driver %s, timed %s%s%s%s\n",
	       tb_jbool(st, "connected") ? "connected" : "not connected",
	       tb_jbool(st, "driver_ok") ? "ready" : "not ready",
	       tb_jbool(st, "timed") ? "yes" : "no",
	       tb_jbool(st, "deflate_on_oom") ? ", deflate-on-oom" : "",
	       tb_jbool(st, "free_page_reporting") ? ", free-page-reporting" : "",
	       tb_jbool(st, "page_poison") && tb_jint(st, "poison_val") ? ", page-poison" : "");
	if (tb_jbool(st, "broken"))
		printf("device:     BROKEN, commands refused until the guest resets it: %s\n",
		       tb_jstr(st, "broken_reason"));
	if (ram)
		printf("guest RAM:  %s, host resident %s, released since start %s\n", r, res, rel);
	else
		printf("guest RAM:  unknown (no VM connected, or its driver not started yet)\n");
	{
		json_object *stats = NULL;
		int64_t back = 0;

		if (json_object_object_get_ex(st, "stats", &stats))
			back = tb_jint(stats, "guest_deflated_pages");
		printf("balloon:    %s", tb_pages_str(a, sizeof(a), actual));
		/* the other way round, as virsh setmem and QMP balloon count */
		if (ram) {
			tb_format_bytes(g, sizeof(g), ram - actual * 4096);
			printf(", guest memory %s", g);
		}
		if (tb_jint(st, "num_pages") != actual)
			printf(", target %s", tb_pages_str(b, sizeof(b), tb_jint(st, "num_pages")));
		/* DEFLATE_ON_OOM (or a driver removal) took these back */
		if (back > 0)
			printf(", taken back by the guest %s",
			       tb_pages_str(b, sizeof(b), back));
		printf("\n");
		if (stats && tb_jint(stats, "reports")) {
			char rep[32], kept[32];

			tb_format_bytes(rep, sizeof(rep), tb_jint(stats, "reported_bytes"));
			tb_format_bytes(kept, sizeof(kept), tb_jint(stats, "reported_kept_bytes"));
			printf("reporting:  %lld free page reports, %s released",
			       (long long)tb_jint(stats, "reports"), rep);
			if (tb_jint(stats, "reported_kept_bytes"))
				printf(", %s kept (the guest poisons free pages)", kept);
			printf("\n");
		}
	}
	if (!c || !tb_jint(c, "cmd_id")) {
		printf("command:    none yet\n");
		return;
	}
	if (!strcmp(tb_jstr(c, "op"), "abort")) {
		printf("command:    %lld abort\n", (long long)tb_jint(c, "cmd_id"));
	} else {
		printf("command:    %lld %s to %s, deadline %lld ms",
		       (long long)tb_jint(c, "cmd_id"), tb_jstr(c, "op"),
		       tb_pages_str(a, sizeof(a), tb_jint(c, "target_pages")),
		       (long long)tb_jint(c, "deadline_ms"));
		if (tb_jint(c, "floor_pages"))
			printf(", floor %s", tb_pages_str(b, sizeof(b), tb_jint(c, "floor_pages")));
		printf("%s%s\n", tb_jbool(c, "paced") ? ", paced" : "",
		       tb_jbool(c, "gentle") ? ", gentle" : "");
	}
	printf("state:      %s, started at %lld pages, guest %lld ms, host %lld ms, "
	       "%lld reports\n", tb_state_str(a, sizeof(a), c),
	       (long long)tb_jint(c, "start_pages"), (long long)tb_jint(c, "elapsed_ms"),
	       (long long)tb_jint(c, "host_elapsed_ms"), (long long)tb_jint(c, "reports"));
}

/* pages moved by the command in @st */
static int64_t tb_moved(json_object *st)
{
	int64_t d = tb_jint(st, "actual_pages") - tb_jint(tb_jobj(st, "command"), "start_pages");

	return d < 0 ? -d : d;
}

static void tb_print_progress(json_object *st, bool tty)
{
	json_object *c = tb_jobj(st, "command");
	int64_t total = tb_jint(c, "target_pages") - tb_jint(c, "start_pages");
	int64_t moved = tb_moved(st);
	int64_t el = tb_jint(c, "host_elapsed_ms"), dl = tb_jint(c, "deadline_ms");
	char m[32], t[32];
	int pct;

	total = total < 0 ? -total : total;
	pct = total ? (int)(moved * 100 / total) : 100;
	if (pct > 100)
		pct = 100;
	if (tty) {
		/* one line redrawn in place: a bar, MiB, the deadline's time left */
		char bar[21];
		int fill = pct / 5;

		for (int i = 0; i < 20; i++)
			bar[i] = i < fill ? '#' : '.';
		bar[20] = 0;
		tb_format_bytes(m, sizeof(m), moved * 4096);
		tb_format_bytes(t, sizeof(t), total * 4096);
		printf("\r%s %lld: [%s] %3d%% %s of %s, %.1f s, %.1f s left\033[K",
		       tb_jstr(c, "op"), (long long)tb_jint(c, "cmd_id"), bar, pct, m, t,
		       (double)el / 1000.0, el < dl ? (double)(dl - el) / 1000.0 : 0.0);
	} else {
		printf("%s %lld: %s, %lld/%lld pages (%d%%), %.1f s\n", tb_jstr(c, "op"),
		       (long long)tb_jint(c, "cmd_id"), tb_jstr(c, "state"), (long long)moved,
		       (long long)total, pct, (double)el / 1000.0);
	}
	fflush(stdout);
}

static void tb_print_outcome(json_object *st)
{
	json_object *c = tb_jobj(st, "command");
	char rel[32], m[32], sb[64];

	tb_format_bytes(m, sizeof(m), tb_moved(st) * 4096);
	printf("%s %lld: %s, %lld pages (%s) moved in %.3f s (guest %.3f s, %lld reports)",
	       tb_jstr(c, "op"), (long long)tb_jint(c, "cmd_id"), tb_state_str(sb, sizeof(sb), c),
	       (long long)tb_moved(st), m,
	       (double)tb_jint(c, "host_elapsed_ms") / 1000.0,
	       (double)tb_jint(c, "elapsed_ms") / 1000.0, (long long)tb_jint(c, "reports"));
	/* what the host got back: an inflate's business only */
	if (!strcmp(tb_jstr(c, "op"), "inflate") && tb_jint(c, "resident_before_bytes")) {
		tb_format_bytes(rel, sizeof(rel), tb_jint(c, "host_released_bytes"));
		printf(", host memory released %s", rel);
	}
	printf("\n");
}

int tb_exit_for_state(const char *state)
{
	static const struct { const char *state; int code; } map[] = {
		{ "done", TB_EXIT_OK },
		{ "deadline", TB_EXIT_DEADLINE },
		{ "pressure", TB_EXIT_PRESSURE },
		{ "aborted", TB_EXIT_ABORTED },
		{ "rejected", TB_EXIT_REJECTED },
		{ "guest-unresponsive", TB_EXIT_TIMEOUT },
	};

	for (size_t i = 0; i < TB_ARRAY_SIZE(map); i++)
		if (!strcmp(state, map[i].state))
			return map[i].code;
	return TB_EXIT_ERROR;
}

/* ------------------------------------------------------------------------
 * Subcommands
 * ------------------------------------------------------------------------
 */

static int tb_client_simple(const struct tb_client_opts *o, const char *name,
			    const char *what)
{
	struct tb_conn c;
	json_object *st;

	if (tb_conn_open(&c, o->control) < 0)
		return TB_EXIT_ERROR;
	st = tb_conn_execute(&c, name, NULL, what);
	if (!st) {
		int rc = tb_conn_failed(&c);

		tb_conn_close(&c);
		return rc;
	}
	tb_conn_close(&c);
	tb_print_status(st, o->json);
	json_object_put(st);
	return TB_EXIT_OK;
}

int tb_client_status(const struct tb_client_opts *o)
{
	return tb_client_simple(o, "query-balloon", "status");
}

static bool tb_state_is_terminal(const char *state)
{
	return strcmp(state, "running") && strcmp(state, "idle");
}

int tb_client_abort(const struct tb_client_opts *o)
{
	json_object *st, *cmd;
	struct tb_conn c;
	bool idle;

	/* nothing to abort is no failure: the command is stopped either way */
	if (tb_conn_open(&c, o->control) < 0)
		return TB_EXIT_ERROR;
	st = tb_conn_execute(&c, "query-balloon", NULL, "abort");
	tb_conn_close(&c);
	if (!st)
		return TB_EXIT_ERROR;
	cmd = tb_jobj(st, "command");
	idle = !strcmp(tb_jstr(cmd, "state"), "idle") || !tb_jint(cmd, "cmd_id") ||
	       tb_state_is_terminal(tb_jstr(cmd, "state"));
	if (idle) {
		fprintf(stderr, "tballoon: abort: no command is running, nothing to abort\n");
		tb_print_status(st, o->json);
		json_object_put(st);
		return TB_EXIT_OK;
	}
	json_object_put(st);
	return tb_client_simple(o, "abort", "abort");
}

int tb_client_wait_ready(const struct tb_client_opts *o, uint64_t timeout_ms)
{
	uint64_t end = tb_now_ms() + timeout_ms;
	const char *why = "the daemon does not answer";
	bool answered = false;

	for (;;) {
		struct tb_conn c;
		json_object *st = NULL;

		if (tb_conn_open_q(&c, o->control, true) == 0) {
			st = tb_conn_execute(&c, "query-balloon", NULL, "wait");
			tb_conn_close(&c);
		}
		if (st) {
			answered = true;
			if (tb_jbool(st, "connected") && tb_jbool(st, "driver_ok")) {
				if (o->json)
					tb_print_status(st, true);
				else
					printf("ready: %s, driver ready, balloon %lld pages\n",
					       tb_jstr(st, "kind"),
					       (long long)tb_jint(st, "actual_pages"));
				json_object_put(st);
				return TB_EXIT_OK;
			}
			why = tb_jbool(st, "connected") ? "the guest driver is not ready" :
							  "no VM is connected";
			json_object_put(st);
		}
		if (tb_now_ms() >= end)
			break;
		nanosleep(&(struct timespec){ .tv_nsec = 100 * 1000 * 1000 }, NULL);
	}
	fprintf(stderr, "tballoon: wait: not ready after %llu ms: %s\n",
		(unsigned long long)timeout_ms, why);
	return answered ? TB_EXIT_NOT_READY : TB_EXIT_ERROR;
}


/* how long a client waits for a restarted daemon */
#define TB_REJOIN_MS 30000

/*
 * The daemon went away while we followed command @id: wait for a restarted
 * one (serve --state-file) and return its status if it still knows @id, with
 * @c connected again; NULL otherwise.
 */
static json_object *tb_client_rejoin(const struct tb_client_opts *o, struct tb_conn *c,
				     int64_t id, uint64_t give_up)
{
	uint64_t until = tb_now_ms() + TB_REJOIN_MS;

	if (give_up && give_up < until)
		until = give_up;
	tb_conn_close(c);
	fprintf(stderr, "tballoon: waiting for the daemon to come back\n");
	while (tb_now_ms() < until) {
		json_object *st;

		struct timespec ts = { .tv_nsec = 200 * 1000 * 1000 };

		nanosleep(&ts, NULL);
		if (tb_conn_open_q(c, o->control, true) < 0)
			continue;
		st = tb_conn_execute(c, "query-balloon", NULL, "query-balloon");
		if (st && tb_jint(tb_jobj(st, "command"), "cmd_id") == id) {
			fprintf(stderr, "tballoon: the daemon is back and follows command %lld\n",
				(long long)id);
			return st;
		}
		if (st)
			fprintf(stderr, "tballoon: the daemon came back without command %lld "
				"(no --state-file?)\n", (long long)id);
		json_object_put(st);
		tb_conn_close(c);
		return NULL;
	}
	fprintf(stderr, "tballoon: the daemon did not come back\n");
	return NULL;
}

/*
 * Follow command @id from the status @st (taken) on @c (closed here) until it
 * ends or @give_up (0: never): live progress, then the outcome (text) or the
 * final status object (JSON). Returns the exit code of the outcome.
 */
static int tb_client_follow(const struct tb_client_opts *o, struct tb_conn *c,
			    json_object *st, int64_t id, uint64_t give_up,
			    uint64_t budget_ms)
{
	bool tty = !o->json && isatty(STDOUT_FILENO);
	bool progress_shown = false, heard = false, said_waiting = false;
	uint64_t quiet_until = tb_now_ms() + TB_QUIET_MS;
	struct sigaction sa = { .sa_handler = tb_client_on_signal };
	json_object *ev = NULL;
	int rc;

	/* no SA_RESTART: a Ctrl-C ends the wait, not the command */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	/* already over (standard balloon at target)? */
	while (!tb_state_is_terminal(tb_jstr(tb_jobj(st, "command"), "state"))) {
		json_object *data, *cmd;
		bool quiet = !heard && !said_waiting && !o->json;

		rc = tb_conn_read(c, &ev, quiet && quiet_until < give_up ? quiet_until : give_up);
		if (rc == -2) {
			if (progress_shown)
				putchar('\n');
			fprintf(stderr, "tballoon: interrupted: %s %lld goes on in the daemon; "
				"follow it with `tballoon watch`, stop it with `tballoon abort`\n",
				tb_jstr(tb_jobj(st, "command"), "op"), (long long)id);
			json_object_put(st);
			tb_conn_close(c);
			return TB_EXIT_INTERRUPTED;
		}
		if (rc == 0 && quiet && tb_now_ms() < give_up) {
			/* a silent guest: say what we are waiting for */
			said_waiting = true;
			fprintf(stderr, "tballoon: %s %lld: issued, waiting for the guest to report "
				"(deadline %lld ms; giving up at deadline + grace)\n",
				tb_jstr(tb_jobj(st, "command"), "op"), (long long)id,
				(long long)tb_jint(tb_jobj(st, "command"), "deadline_ms"));
			continue;
		}
		if (rc < 0) {
			json_object *again = c->fd >= 0 ? tb_client_rejoin(o, c, id, give_up) : NULL;

			json_object_put(st);
			if (!again) {
				tb_conn_close(c);
				return TB_EXIT_ERROR;
			}
			st = again;
			continue;
		}
		if (rc == 0) {
			if (progress_shown)
				putchar('\n');
			fprintf(stderr, "tballoon: %s %lld: no outcome from the guest within "
				"deadline + grace (%llu ms)\n",
				tb_jstr(tb_jobj(st, "command"), "op"), (long long)id,
				(unsigned long long)budget_ms);
			if (o->json)
				tb_print_status(st, true);
			json_object_put(st);
			tb_conn_close(c);
			return TB_EXIT_TIMEOUT;
		}
		data = tb_jobj(ev, "data");
		cmd = data ? tb_jobj(data, "command") : NULL;
		/* a command's own events; the device's (connect, change) are not */
		if (!json_object_object_get_ex(ev, "event", NULL) || !cmd ||
		    tb_jint(cmd, "cmd_id") != id ||
		    (strcmp(tb_jstr(ev, "event"), "BALLOON_PROGRESS") &&
		     strcmp(tb_jstr(ev, "event"), "BALLOON_DONE"))) {
			json_object_put(ev);
			continue;
		}
		json_object_put(st);
		st = json_object_get(data);
		json_object_put(ev);
		heard = true;
		if (!o->json && !tb_state_is_terminal(tb_jstr(cmd, "state"))) {
			tb_print_progress(st, tty);
			progress_shown = tty;
		}
	}
	tb_conn_close(c);
	if (progress_shown)
		putchar('\n');
	if (o->json)
		tb_print_status(st, true);
	else
		tb_print_outcome(st);
	rc = tb_exit_for_state(tb_jstr(tb_jobj(st, "command"), "state"));
	json_object_put(st);
	return rc;
}

int tb_client_watch_follow(const struct tb_client_opts *o)
{
	struct sigaction sa = { .sa_handler = tb_client_on_signal };
	json_object *ev = NULL;
	struct tb_conn c;

	if (tb_conn_open(&c, o->control) < 0)
		return TB_EXIT_ERROR;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (;;) {
		int rc = tb_conn_read(&c, &ev, 0);
		json_object *data, *cmd, *ts;

		if (rc == -2) {		/* Ctrl-C: the normal end of a stream */
			tb_conn_close(&c);
			return TB_EXIT_OK;
		}
		if (rc <= 0) {
			fprintf(stderr, "tballoon: watch: the daemon went away\n");
			tb_conn_close(&c);
			return TB_EXIT_ERROR;
		}
		if (!json_object_object_get_ex(ev, "event", NULL)) {
			json_object_put(ev);
			continue;
		}
		if (o->json) {
			/* NDJSON: each event as the daemon sent it, one per line */
			puts(json_object_to_json_string_ext(ev, JSON_C_TO_STRING_PLAIN |
							    JSON_C_TO_STRING_NOSLASHESCAPE));
		} else {
			char a[32], sb[64];
			time_t t;
			struct tm tm;

			data = tb_jobj(ev, "data");
			cmd = data ? tb_jobj(data, "command") : NULL;
			ts = tb_jobj(ev, "timestamp");
			t = (time_t)tb_jint(ts, "seconds");
			localtime_r(&t, &tm);
			tb_format_bytes(a, sizeof(a), tb_jint(data, "actual_pages") * 4096);
			printf("%02d:%02d:%02d.%03lld %-21s balloon %s", tm.tm_hour, tm.tm_min,
			       tm.tm_sec, (long long)(tb_jint(ts, "microseconds") / 1000),
			       tb_jstr(ev, "event"), a);
			if (cmd && tb_jint(cmd, "cmd_id"))
				printf(", command %lld %s: %s", (long long)tb_jint(cmd, "cmd_id"),
				       tb_jstr(cmd, "op"), tb_state_str(sb, sizeof(sb), cmd));
			if (data && tb_jbool(data, "broken"))
				printf(", broken: %s", tb_jstr(data, "broken_reason"));
			printf("\n");
		}
		json_object_put(ev);
		ev = NULL;
	}
}

int tb_client_watch(const struct tb_client_opts *o)
{
	struct tb_conn c;
	json_object *st, *cmd;
	uint64_t give_up = 0, budget = 0;
	int64_t id;

	if (tb_conn_open(&c, o->control) < 0)
		return TB_EXIT_ERROR;
	st = tb_conn_execute(&c, "query-balloon", NULL, "watch");
	if (!st) {
		tb_conn_close(&c);
		return TB_EXIT_ERROR;
	}
	cmd = tb_jobj(st, "command");
	id = tb_jint(cmd, "cmd_id");
	if (!id || !strcmp(tb_jstr(cmd, "state"), "idle")) {
		if (o->json)
			tb_print_status(st, true);
		else
			printf("no command has run yet\n");
		json_object_put(st);
		tb_conn_close(&c);
		return TB_EXIT_OK;
	}
	if (tb_state_is_terminal(tb_jstr(cmd, "state"))) {
		/* nothing to follow: say so, the last outcome is history */
		if (o->json) {
			tb_print_status(st, true);
		} else {
			printf("no command is running; the last one ended before watch started:\n");
			tb_print_outcome(st);
		}
		json_object_put(st);
		tb_conn_close(&c);
		return TB_EXIT_OK;
	}
	/* the daemon's watchdog ends it; ours is a backstop */
	budget = (uint64_t)tb_jint(cmd, "deadline_ms") + 60000;
	give_up = tb_now_ms() + budget;
	return tb_client_follow(o, &c, st, id, give_up, budget);
}

/* guest RAM in pages from query-balloon, 0 on error (printed) */
static uint64_t tb_client_ram_pages(struct tb_conn *c)
{
	json_object *st = tb_conn_execute(c, "query-balloon", NULL, "query-balloon");
	uint64_t pages;

	if (!st)
		return 0;
	pages = (uint64_t)tb_jint(st, "guest_ram_bytes") / 4096;
	json_object_put(st);
	if (!pages)
		fprintf(stderr, "tballoon: guest RAM unknown (no front-end): "
			"a percentage cannot be resolved\n");
	return pages;
}

static void tb_print_guest_stats(json_object *gs, bool json)
{
	json_object *g = tb_jobj(gs, "guest");
	char a[32], b[32], c[32];
	int64_t age = tb_jint(gs, "age_ms");

	if (json) {
		puts(json_object_to_json_string_ext(gs, JSON_C_TO_STRING_PLAIN |
						    JSON_C_TO_STRING_NOSLASHESCAPE));
		return;
	}
	if (!tb_jint(gs, "guest_ram_bytes")) {
		printf("guest RAM:  unknown (no VM connected, or its driver not started yet)\n");
		printf("guest:      no statistics: no guest yet\n");
		return;
	}
	tb_format_bytes(a, sizeof(a), tb_jint(gs, "guest_ram_bytes"));
	tb_format_bytes(b, sizeof(b), tb_jint(gs, "resident_bytes"));
	tb_format_bytes(c, sizeof(c), tb_jint(gs, "released_bytes"));
	printf("guest RAM:  %s, host resident %s, released since start %s\n", a, b, c);
	printf("balloon:    %lld pages (driver), %lld pages (device count)\n",
	       (long long)tb_jint(gs, "actual_pages"), (long long)tb_jint(gs, "device_pages"));
	if (!tb_jbool(gs, "stats_vq")) {
		printf("guest:      no statistics (the driver did not negotiate STATS_VQ)\n");
		return;
	}
	if (age < 0) {
		printf("guest:      no statistics received yet\n");
		return;
	}
	printf("guest:      statistics %.1f s old (%lld updates)\n", (double)age / 1000.0,
	       (long long)tb_jint(gs, "updates"));
	json_object_object_foreach(g, key, val) {
		/* the virtio spec's byte-valued tags; the rest are counts */
		static const char *const bytes[] = {
			"swap-in", "swap-out", "free-memory", "total-memory",
			"available-memory", "disk-caches",
		};
		bool is_bytes = false;

		for (size_t i = 0; i < TB_ARRAY_SIZE(bytes); i++)
			is_bytes |= !strcmp(key, bytes[i]);
		if (is_bytes) {
			tb_format_bytes(a, sizeof(a), json_object_get_int64(val));
			printf("  %-18s %s\n", key, a);
		} else {
			printf("  %-18s %lld\n", key, (long long)json_object_get_int64(val));
		}
	}
}

int tb_client_stats(const struct tb_client_opts *o)
{
	struct tb_conn c;
	json_object *gs;

	if (tb_conn_open(&c, o->control) < 0)
		return TB_EXIT_ERROR;
	gs = tb_conn_execute(&c, "query-stats", NULL, "stats");
	tb_conn_close(&c);
	if (!gs)
		return TB_EXIT_ERROR;
	tb_print_guest_stats(gs, o->json);
	json_object_put(gs);
	return TB_EXIT_OK;
}

int tb_client_move(const struct tb_client_opts *o, const struct tb_move_opts *m)
{
	const char *op = m->op;
	json_object *args = json_object_new_object();
	json_object *st;
	struct tb_conn c;
	uint64_t give_up;
	int64_t id;

	json_object_object_add(args, "target-pages", json_object_new_uint64(m->target_pages));
	json_object_object_add(args, "deadline-ms", json_object_new_uint64(m->deadline_ms));
	json_object_object_add(args, "floor-pages", json_object_new_uint64(m->floor_pages));
	json_object_object_add(args, "paced", json_object_new_boolean(m->paced));
	json_object_object_add(args, "gentle", json_object_new_boolean(m->gentle));

	if (tb_conn_open(&c, o->control) < 0) {
		json_object_put(args);
		return TB_EXIT_ERROR;
	}
	if (!strcmp(op, "set")) {
		/* direction-free: the verb follows from where the balloon is */
		json_object *now = tb_conn_execute(&c, "query-balloon", NULL, "set");
		int64_t ram, actual, target = (int64_t)m->target_pages;

		if (!now) {
			json_object_put(args);
			tb_conn_close(&c);
			return TB_EXIT_ERROR;
		}
		ram = tb_jint(now, "guest_ram_bytes") / 4096;
		actual = tb_jint(now, "actual_pages");
		json_object_put(now);
		if (!ram && (m->guest_pages >= 0 || m->target_pct >= 0)) {
			fprintf(stderr, "tballoon: set: guest RAM unknown (no VM connected yet): "
				"a guest size or percentage cannot be resolved (not ready yet: "
				"worth retrying, or `tballoon wait --ready`)\n");
			json_object_put(args);
			tb_conn_close(&c);
			return TB_EXIT_NOT_READY;
		}
		if (m->guest_pages >= 0) {
			if (m->guest_pages > ram) {
				fprintf(stderr, "tballoon: set: --guest-size is more than the "
					"guest's RAM (%lld pages)\n", (long long)ram);
				json_object_put(args);
				tb_conn_close(&c);
				return TB_EXIT_ERROR;
			}
			target = ram - m->guest_pages;
		} else if (m->target_pct >= 0) {
			target = ram * m->target_pct / 10000;
		}
		json_object_object_add(args, "target-pages", json_object_new_uint64((uint64_t)target));
		op = target < actual ? "deflate" : "inflate";
	}
	if (m->target_pct >= 0 || m->floor_pct >= 0) {
		uint64_t ram = tb_client_ram_pages(&c);

		if (!ram) {
			json_object_put(args);
			tb_conn_close(&c);
			return TB_EXIT_NOT_READY;
		}
		if (m->target_pct >= 0 && strcmp(m->op, "set"))
			json_object_object_add(args, "target-pages", json_object_new_uint64(
				ram * (uint64_t)m->target_pct / 10000));
		if (m->floor_pct >= 0)
			json_object_object_add(args, "floor-pages", json_object_new_uint64(
				ram * (uint64_t)m->floor_pct / 10000));
	}
	st = tb_conn_execute(&c, op, args, op);
	if (!st) {
		int rc = tb_conn_failed(&c);

		tb_conn_close(&c);
		return rc;
	}
	id = tb_jint(tb_jobj(st, "command"), "cmd_id");
	if (!m->wait) {
		if (o->json) {
			tb_print_status(st, true);
		} else {
			char a[64];

			printf("%s %lld: issued, target %s, deadline %llu ms\n", op,
			       (long long)id, tb_pages_str(a, sizeof(a), tb_jint(tb_jobj(st,
					"command"), "target_pages")),
			       (unsigned long long)m->deadline_ms);
		}
		json_object_put(st);
		tb_conn_close(&c);
		return TB_EXIT_OK;
	}

	give_up = tb_now_ms() + m->deadline_ms + m->grace_ms;
	return tb_client_follow(o, &c, st, id, give_up, m->deadline_ms + m->grace_ms);
}

