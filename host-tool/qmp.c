// SPDX-License-Identifier: GPL-2.0
/*
 * qmp.c - the QMP peer: a VM with QEMU's stock virtio-balloon, driven
 * through its QMP socket (`tballoon serve --qmp PATH`).
 *
 * Owns the QMP connection: the greeting and capabilities negotiation, the
 * setup queries (RAM, the balloon device's QOM path, the balloon size, the
 * statistics polling period), then in steady state:
 *
 *   - BALLOON_CHANGE events move `actual`. QEMU rate-limits this event to
 *     one per second (measured: the first at once, then the latest value
 *     each second), so while a command runs `query-balloon` is asked every
 *     TB_QMP_POLL_MS as well; when idle the events alone are followed;
 *   - `qom-get guest-stats` each polling period (TB_QMP_CMD_STATS_MS while a
 *     command runs, to see the guest's next sample soon after it lands);
 *     a sample is passed on only when its last-update changed, and values
 *     of -1 (tags the guest does not report, e.g. 6.12's on a 6.1 guest)
 *     are absent, not huge;
 *   - `balloon` sets the target; a stop first asks `query-balloon` and sets
 *     the target to that answer.
 *
 * QMP answers in order, so the requests in flight are a FIFO. Every wait is
 * bounded: a reply later than TB_QMP_REPLY_MS, a line longer than
 * TB_QMP_LINE_MAX or an output backlog beyond TB_QMP_OUT_MAX ends the
 * connection (the device shows the VM as disconnected; a running command
 * ends aborted/removed) and it is tried again every TB_QMP_RETRY_MS.
 *
 * Called only from the daemon's poll loop (no locks).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "mem.h"
#include "peer.h"
#include "util.h"

#define TB_QMP_LINE_MAX (1U << 20)
#define TB_QMP_OUT_MAX (1U << 16)
#define TB_QMP_REPLY_MS 5000U
#define TB_QMP_RETRY_MS 1000U
#define TB_QMP_POLL_MS 50U
#define TB_QMP_CMD_STATS_MS 250U
#define TB_QMP_PENDING 16U

enum tb_qmp_req {
	TB_QREQ_CAPS,
	TB_QREQ_MEMSIZE,
	TB_QREQ_LIST_PERIPHERAL,
	TB_QREQ_LIST_ANON,
	TB_QREQ_SETUP_BALLOON,
	TB_QREQ_POLLING,
	TB_QREQ_QUERY,		/* query-balloon: follow actual */
	TB_QREQ_STOP,		/* query-balloon, then balloon to that */
	TB_QREQ_BALLOON,
	TB_QREQ_STATS,
};

static const char *const tb_qmp_req_names[] = {
	[TB_QREQ_CAPS] = "qmp_capabilities",
	[TB_QREQ_MEMSIZE] = "query-memory-size-summary",
	[TB_QREQ_LIST_PERIPHERAL] = "qom-list",
	[TB_QREQ_LIST_ANON] = "qom-list",
	[TB_QREQ_SETUP_BALLOON] = "query-balloon",
	[TB_QREQ_POLLING] = "qom-set",
	[TB_QREQ_QUERY] = "query-balloon",
	[TB_QREQ_STOP] = "query-balloon",
	[TB_QREQ_BALLOON] = "balloon",
	[TB_QREQ_STATS] = "qom-get",
};

enum tb_qmp_state {
	TB_QMP_DOWN,		/* not connected; retry at @retry_ms */
	TB_QMP_GREETING,	/* connected, waiting for {"QMP": ...} */
	TB_QMP_SETUP,		/* setup queries in flight */
	TB_QMP_UP,		/* the balloon is ours */
};

struct tb_qmp_pending {
	uint64_t id;
	enum tb_qmp_req req;
	uint64_t sent_ms;
};

/* QEMU's guest-stats names, by statistics tag */
static const char *const tb_qmp_stat_names[TB_GSTAT_COUNT] = {
	[TB_GSTAT_SWAP_IN] = "stat-swap-in",
	[TB_GSTAT_SWAP_OUT] = "stat-swap-out",
	[TB_GSTAT_MAJFLT] = "stat-major-faults",
	[TB_GSTAT_MINFLT] = "stat-minor-faults",
	[TB_GSTAT_MEMFREE] = "stat-free-memory",
	[TB_GSTAT_MEMTOT] = "stat-total-memory",
	[TB_GSTAT_AVAIL] = "stat-available-memory",
	[TB_GSTAT_CACHES] = "stat-disk-caches",
	[TB_GSTAT_HTLB_PGALLOC] = "stat-htlb-pgalloc",
	[TB_GSTAT_HTLB_PGFAIL] = "stat-htlb-pgfail",
	[TB_GSTAT_OOM_KILL] = "stat-oom-kills",
	[TB_GSTAT_ALLOC_STALL] = "stat-alloc-stalls",
	[TB_GSTAT_ASYNC_SCAN] = "stat-async-scans",
	[TB_GSTAT_DIRECT_SCAN] = "stat-direct-scans",
	[TB_GSTAT_ASYNC_RECLAIM] = "stat-async-reclaims",
	[TB_GSTAT_DIRECT_RECLAIM] = "stat-direct-reclaims",
};

/**
 * struct tb_qmp - the QMP peer
 * @path: QEMU's QMP socket
 * @in, @inlen: the line being received; @out: requests not sent yet
 * @pend, @npend: requests in flight, oldest first
 * @balloon: QOM path of the balloon device
 * @ram: guest RAM (base + plugged memory)
 * @pid: QEMU's pid (SO_PEERCRED), for its resident memory
 * @setup_pages: the balloon size query-balloon gave during setup
 * @polling_s: guest-stats-polling-interval set
 * @stats_due, @poll_due: next guest-stats read, next query-balloon
 * @last_update: guest-stats' last-update of the last sample passed on
 * @stats_req_pages: the balloon when the guest-stats read in flight was sent
 * @stats_prev_pages: the balloon when the previous read was sent: a new
 *	sample in the answer to this one was taken after that (and paired
 *	with the smallest of it, @stats_req_pages and the balloon now)
 * @setup_err: why the setup failed (reported by tb_qmp_peer_new)
 * @said_down: the lost connection was logged (not again every retry)
 * @fail: why the connection must be dropped at the next tick ("" if not)
 * @want_pages, @want_set: a target set while a balloon command was in
 *	flight, sent once that one is answered: targets are coalesced (the
 *	latest wins), so a QEMU whose loop stalls while host pacing steps
 *	every 100 ms sees one command per answer, not a queue that runs into
 *	TB_QMP_PENDING
 */
struct tb_qmp {
	struct tb_peer peer;
	char path[108];
	int fd;
	enum tb_qmp_state state;
	char *in;
	size_t inlen;
	char out[TB_QMP_OUT_MAX];
	size_t outlen;
	struct tb_qmp_pending pend[TB_QMP_PENDING];
	unsigned int npend;
	uint64_t next_id;
	uint64_t state_ms;
	uint64_t retry_ms;
	char balloon[256];
	uint64_t ram;
	pid_t pid;
	uint64_t setup_pages;
	unsigned int polling_s;
	uint64_t stats_due;
	uint64_t poll_due;
	int64_t last_update;
	uint32_t stats_req_pages;
	uint32_t stats_prev_pages;
	char setup_err[200];
	bool said_down;
	char fail[160];
	uint64_t want_pages;
	bool want_set;
};

static struct tb_qmp *tb_qmp_of(struct tb_peer *p)
{
	return (struct tb_qmp *)p;
}

static void tb_qmp_drop(struct tb_qmp *q, uint64_t now, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void tb_qmp_drop(struct tb_qmp *q, uint64_t now, const char *fmt, ...)
{
	char why[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (q->state == TB_QMP_UP || !q->said_down)
		tb_warn("%s: %s", q->peer.what, why);
	if (q->state != TB_QMP_UP && !q->setup_err[0])
		snprintf(q->setup_err, sizeof(q->setup_err), "%s", why);
	q->said_down = true;
	q->fail[0] = 0;
	tb_close_fd(&q->fd);
	free(q->in);
	q->in = NULL;
	q->inlen = 0;
	q->outlen = 0;
	q->npend = 0;
	q->want_set = false;
	q->pid = 0;
	if (q->state == TB_QMP_UP)
		tb_dev_peer_link(q->peer.dev, false, now);
	q->state = TB_QMP_DOWN;
	q->retry_ms = now + TB_QMP_RETRY_MS;
}

/* queue one request; false if it cannot be (the connection is dropped) */
static bool tb_qmp_send(struct tb_qmp *q, enum tb_qmp_req req, json_object *args,
			uint64_t now)
{
	json_object *o = json_object_new_object();
	const char *s;
	size_t len;
	bool ok = false;

	json_object_object_add(o, "execute", json_object_new_string(tb_qmp_req_names[req]));
	if (args)
		json_object_object_add(o, "arguments", args);
	json_object_object_add(o, "id", json_object_new_uint64(++q->next_id));
	s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	len = strlen(s);
	if (q->npend == TB_QMP_PENDING || q->outlen + len + 1 > sizeof(q->out)) {
		json_object_put(o);
		/*
		 * Dropped by the next tick, not here: a request may be sent
		 * from inside the device model (a command being issued or
		 * stopped), which must not see the device go away under it.
		 */
		snprintf(q->fail, sizeof(q->fail), "QEMU does not take its requests "
			 "(%u in flight)", q->npend);
		return false;
	}
	memcpy(q->out + q->outlen, s, len);
	q->out[q->outlen + len] = '\n';
	q->outlen += len + 1;
	q->pend[q->npend++] = (struct tb_qmp_pending){ q->next_id, req, now };
	ok = true;
	json_object_put(o);
	return ok;
}

static void tb_qmp_flush(struct tb_qmp *q, uint64_t now)
{
	while (q->fd >= 0 && q->outlen) {
		ssize_t n = send(q->fd, q->out, q->outlen, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			tb_qmp_drop(q, now, "write: %s", strerror(errno));
			return;
		}
		memmove(q->out, q->out + n, q->outlen - (size_t)n);
		q->outlen -= (size_t)n;
	}
}

static bool tb_qmp_pending(const struct tb_qmp *q, enum tb_qmp_req req)
{
	for (unsigned int i = 0; i < q->npend; i++)
		if (q->pend[i].req == req)
			return true;
	return false;
}

static bool tb_qmp_set_target(struct tb_qmp *q, uint64_t pages, uint64_t now)
{
	uint64_t bytes = pages << TB_PAGE_SHIFT;
	json_object *a;

	if (tb_qmp_pending(q, TB_QREQ_BALLOON)) {
		q->want_pages = pages;
		q->want_set = true;
		return true;
	}
	a = json_object_new_object();

	/* QEMU refuses 0; a balloon of all RAM is refused before it gets here */
	json_object_object_add(a, "value", json_object_new_int64(
		(int64_t)(q->ram > bytes ? q->ram - bytes : TB_PAGE_SIZE)));
	return tb_qmp_send(q, TB_QREQ_BALLOON, a, now);
}

static uint64_t tb_qmp_pages_of_actual(const struct tb_qmp *q, json_object *ret)
{
	json_object *v;
	int64_t actual;

	if (!json_object_object_get_ex(ret, "actual", &v) || !json_object_is_type(v, json_type_int))
		return UINT64_MAX;
	actual = json_object_get_int64(v);
	if (actual < 0 || (uint64_t)actual > q->ram)
		return UINT64_MAX;
	return (q->ram - (uint64_t)actual) >> TB_PAGE_SHIFT;
}

static void tb_qmp_stats_reply(struct tb_qmp *q, json_object *ret, uint64_t now)
{
	uint32_t prev = q->stats_prev_pages;

	uint64_t val[TB_GSTAT_COUNT] = { 0 };
	json_object *st, *lu, *v;
	uint32_t have = 0;
	int64_t last;

	if (!json_object_object_get_ex(ret, "last-update", &lu) ||
	    !json_object_object_get_ex(ret, "stats", &st) ||
	    !json_object_is_type(st, json_type_object))
		return;
	last = json_object_get_int64(lu);
	/* the balloon when the next read's sample may have been taken, at the earliest */
	q->stats_prev_pages = q->stats_req_pages;
	/* 0: the guest never sent statistics; the same: no new sample */
	if (last <= 0 || last == q->last_update)
		return;
	q->last_update = last;
	for (unsigned int i = 0; i < TB_GSTAT_COUNT; i++) {
		if (!json_object_object_get_ex(st, tb_qmp_stat_names[i], &v) ||
		    !json_object_is_type(v, json_type_int))
			continue;
		/* -1 (as int64 or as 2^64-1): not reported by this guest */
		if (json_object_get_int64(v) < 0 ||
		    json_object_get_uint64(v) == UINT64_MAX)
			continue;
		val[i] = json_object_get_uint64(v);
		have |= 1U << i;
	}
	/*
	 * Taken after our previous read, which did not see it, and before
	 * this answer: pair it with the smallest balloon of that window, so
	 * that the floor estimate never credits the guest with pages a
	 * deflate gave back before the sample (it counted them already).
	 * The balloon at the previous read alone is the smallest only while
	 * it grows: after a deflate it was the largest (qmp-ours-floor
	 * stopped 140 MiB below its floor, the sample 222 MiB optimistic).
	 */
	tb_dev_peer_stats(q->peer.dev, have, val,
			  tb_min_u32(tb_min_u32(prev, q->stats_req_pages),
				     TB_CFG(q->peer.dev, actual)), now);
}

/* the balloon device in a qom-list answer: a child<virtio-balloon...> */
static bool tb_qmp_find_balloon(struct tb_qmp *q, json_object *ret, const char *dir)
{
	size_t n = json_object_is_type(ret, json_type_array) ? json_object_array_length(ret) : 0;

	for (size_t i = 0; i < n; i++) {
		json_object *e = json_object_array_get_idx(ret, i), *name, *type;

		if (!json_object_object_get_ex(e, "name", &name) ||
		    !json_object_object_get_ex(e, "type", &type))
			continue;
		if (strncmp(json_object_get_string(type), "child<virtio-balloon", 20))
			continue;
		snprintf(q->balloon, sizeof(q->balloon), "%s/%s", dir,
			 json_object_get_string(name));
		return true;
	}
	return false;
}

static void tb_qmp_qom_list(struct tb_qmp *q, enum tb_qmp_req req, uint64_t now)
{
	json_object *a = json_object_new_object();

	json_object_object_add(a, "path", json_object_new_string(
		req == TB_QREQ_LIST_PERIPHERAL ? "/machine/peripheral" :
						 "/machine/peripheral-anon"));
	tb_qmp_send(q, req, a, now);
}

static void tb_qmp_up(struct tb_qmp *q, uint64_t pages, uint64_t now)
{
	q->state = TB_QMP_UP;
	q->said_down = false;
	q->setup_err[0] = 0;
	q->last_update = 0;
	q->stats_due = now;
	q->poll_due = now;
	tb_info("%s: balloon %s, guest RAM %llu MiB, balloon %llu pages, "
		"statistics every %u s", q->peer.what, q->balloon,
		(unsigned long long)(q->ram >> 20), (unsigned long long)pages, q->polling_s);
	tb_dev_peer_link(q->peer.dev, true, now);
	tb_dev_peer_actual(q->peer.dev, pages, now);
}

/* a reply to the oldest request in flight */
static void tb_qmp_reply(struct tb_qmp *q, json_object *msg, uint64_t now)
{
	struct tb_qmp_pending p;
	json_object *ret = NULL, *e, *desc, *v;
	uint64_t pages;

	if (!q->npend) {
		tb_qmp_drop(q, now, "a reply to nothing asked: not a QMP peer we understand");
		return;
	}
	p = q->pend[0];
	memmove(q->pend, q->pend + 1, --q->npend * sizeof(q->pend[0]));
	/* a target set meanwhile goes out now that the last one is answered */
	if (p.req == TB_QREQ_BALLOON && q->want_set) {
		q->want_set = false;
		tb_qmp_set_target(q, q->want_pages, now);
	}
	if (json_object_object_get_ex(msg, "id", &v) && json_object_get_uint64(v) != p.id) {
		tb_qmp_drop(q, now, "reply id %s, expected %llu", json_object_get_string(v),
			    (unsigned long long)p.id);
		return;
	}
	if (json_object_object_get_ex(msg, "error", &e)) {
		const char *d = json_object_object_get_ex(e, "desc", &desc) ?
				json_object_get_string(desc) : "?";

		switch (p.req) {
		case TB_QREQ_LIST_ANON:
			tb_qmp_drop(q, now, "QEMU has no virtio-balloon device");
			return;
		case TB_QREQ_LIST_PERIPHERAL:
			/* no device with an id: look at the anonymous ones */
			tb_qmp_qom_list(q, TB_QREQ_LIST_ANON, now);
			return;
		case TB_QREQ_BALLOON:
		case TB_QREQ_QUERY:
		case TB_QREQ_STOP:
		case TB_QREQ_STATS:
			tb_warn("%s: %s: %s", q->peer.what, tb_qmp_req_names[p.req], d);
			return;
		default:
			tb_qmp_drop(q, now, "%s: %s", tb_qmp_req_names[p.req], d);
			return;
		}
	}
	if (!json_object_object_get_ex(msg, "return", &ret)) {
		tb_qmp_drop(q, now, "a reply with neither return nor error");
		return;
	}
	switch (p.req) {
	case TB_QREQ_CAPS:
		tb_qmp_send(q, TB_QREQ_MEMSIZE, NULL, now);
		break;
	case TB_QREQ_MEMSIZE: {
		json_object *b, *pl;

		if (!json_object_object_get_ex(ret, "base-memory", &b)) {
			tb_qmp_drop(q, now, "query-memory-size-summary: no base-memory");
			return;
		}
		q->ram = json_object_get_uint64(b);
		if (json_object_object_get_ex(ret, "plugged-memory", &pl))
			q->ram += json_object_get_uint64(pl);
		if (q->ram < TB_PAGE_SIZE) {
			tb_qmp_drop(q, now, "guest RAM %llu bytes", (unsigned long long)q->ram);
			return;
		}
		tb_qmp_qom_list(q, TB_QREQ_LIST_PERIPHERAL, now);
		break;
	}
	case TB_QREQ_LIST_PERIPHERAL:
	case TB_QREQ_LIST_ANON:
		if (tb_qmp_find_balloon(q, ret, p.req == TB_QREQ_LIST_PERIPHERAL ?
					"/machine/peripheral" : "/machine/peripheral-anon")) {
			tb_qmp_send(q, TB_QREQ_SETUP_BALLOON, NULL, now);
		} else if (p.req == TB_QREQ_LIST_PERIPHERAL) {
			tb_qmp_qom_list(q, TB_QREQ_LIST_ANON, now);
		} else {
			tb_qmp_drop(q, now, "QEMU has no virtio-balloon device "
				    "(-device virtio-balloon-pci)");
		}
		break;
	case TB_QREQ_SETUP_BALLOON: {
		json_object *a = json_object_new_object();

		json_object_object_add(a, "path", json_object_new_string(q->balloon));
		json_object_object_add(a, "property",
				       json_object_new_string("guest-stats-polling-interval"));
		json_object_object_add(a, "value", json_object_new_int((int)q->polling_s));
		if (tb_qmp_pages_of_actual(q, ret) == UINT64_MAX) {
			json_object_put(a);
			tb_qmp_drop(q, now, "query-balloon: no valid actual");
			return;
		}
		q->setup_pages = tb_qmp_pages_of_actual(q, ret);
		tb_qmp_send(q, TB_QREQ_POLLING, a, now);
		break;
	}
	case TB_QREQ_POLLING:
		tb_qmp_up(q, q->setup_pages, now);
		break;
	case TB_QREQ_QUERY:
	case TB_QREQ_STOP:
		pages = tb_qmp_pages_of_actual(q, ret);
		if (pages == UINT64_MAX)
			break;
		tb_dev_peer_actual(q->peer.dev, pages, now);
		if (p.req == TB_QREQ_STOP) {
			tb_dev_peer_target(q->peer.dev, pages);
			tb_qmp_set_target(q, pages, now);
		}
		break;
	case TB_QREQ_STATS:
		tb_qmp_stats_reply(q, ret, now);
		break;
	case TB_QREQ_BALLOON:
		break;
	}
}

static void tb_qmp_message(struct tb_qmp *q, json_object *msg, uint64_t now)
{
	json_object *v, *data;

	if (q->state == TB_QMP_GREETING) {
		json_object *ver, *qemu;

		if (!json_object_object_get_ex(msg, "QMP", &v) ||
		    !json_object_object_get_ex(v, "version", &ver) ||
		    !json_object_object_get_ex(ver, "qemu", &qemu)) {
			tb_qmp_drop(q, now, "the socket's greeting is not QEMU's QMP greeting");
			return;
		}
		q->state = TB_QMP_SETUP;
		tb_qmp_send(q, TB_QREQ_CAPS, NULL, now);
		return;
	}
	if (json_object_object_get_ex(msg, "event", &v)) {
		if (q->state == TB_QMP_UP && !strcmp(json_object_get_string(v), "BALLOON_CHANGE") &&
		    json_object_object_get_ex(msg, "data", &data)) {
			uint64_t pages = tb_qmp_pages_of_actual(q, data);

			if (pages != UINT64_MAX)
				tb_dev_peer_actual(q->peer.dev, pages, now);
		}
		return;
	}
	tb_qmp_reply(q, msg, now);
}

/* bytes from QEMU: complete lines are messages, the rest waits (bounded) */
static void tb_qmp_feed(struct tb_qmp *q, const char *buf, size_t n, uint64_t now)
{
	size_t start = 0;

	for (size_t i = 0; i <= n && q->fd >= 0; i++) {
		json_object *msg;
		size_t len = i - start;
		char *nin;

		if (i < n && buf[i] != '\n')
			continue;
		if (i == n && !len)
			break;
		if (q->inlen + len > TB_QMP_LINE_MAX) {
			tb_qmp_drop(q, now, "a QMP line longer than %u bytes", TB_QMP_LINE_MAX);
			return;
		}
		nin = realloc(q->in, q->inlen + len + 1);
		if (!nin) {
			tb_qmp_drop(q, now, "out of memory");
			return;
		}
		q->in = nin;
		memcpy(q->in + q->inlen, buf + start, len);
		q->inlen += len;
		q->in[q->inlen] = 0;
		start = i + 1;
		if (i == n)
			break;		/* a partial line: kept for the next read */
		q->inlen = 0;
		msg = json_tokener_parse(q->in);
		if (!msg || !json_object_is_type(msg, json_type_object)) {
			json_object_put(msg);
			if (strspn(q->in, " \t\r") == strlen(q->in))
				continue;
			tb_qmp_drop(q, now, "not JSON from the QMP socket");
			return;
		}
		tb_qmp_message(q, msg, now);
		json_object_put(msg);
	}
}

static void tb_qmp_read(struct tb_qmp *q, uint64_t now)
{
	char buf[16384];

	while (q->fd >= 0) {
		ssize_t n = recv(q->fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (n == 0) {
			tb_qmp_drop(q, now, "QEMU closed the QMP connection");
			return;
		}
		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR)
				tb_qmp_drop(q, now, "read: %s", strerror(errno));
			return;
		}
		tb_qmp_feed(q, buf, (size_t)n, now);
	}
}

static int64_t tb_qmp_tick(struct tb_peer *p, uint64_t now);

int tb_qmp_test_feed(struct tb_peer *p, int fd, const char *buf, size_t len, uint64_t now_ms)
{
	struct tb_qmp *q = tb_qmp_of(p);

	if (q->fd < 0 && fd >= 0) {
		q->fd = fd;
		q->state = TB_QMP_GREETING;
		q->state_ms = now_ms;
	}
	tb_qmp_feed(q, buf, len, now_ms);
	tb_qmp_tick(p, now_ms);
	q->outlen = 0;		/* what it would send goes nowhere */
	return q->state;
}

static void tb_qmp_connect(struct tb_qmp *q, uint64_t now)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	int fd;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", q->path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;

		if (fd >= 0)
			close(fd);
		q->fd = -1;
		tb_qmp_drop(q, now, "connect: %s", strerror(e));
		return;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	q->fd = fd;
	q->pid = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0 ? cred.pid : 0;
	q->state = TB_QMP_GREETING;
	q->state_ms = now;
	q->setup_err[0] = 0;
}

static unsigned int tb_qmp_pollfds(struct tb_peer *p, struct pollfd *pfd)
{
	struct tb_qmp *q = tb_qmp_of(p);

	if (q->fd < 0)
		return 0;
	pfd[0] = (struct pollfd){ .fd = q->fd, .events = POLLIN | (q->outlen ? POLLOUT : 0) };
	return 1;
}

static void tb_qmp_ready(struct tb_peer *p, const struct pollfd *pfd, unsigned int n,
			 uint64_t now)
{
	struct tb_qmp *q = tb_qmp_of(p);

	if (!n || pfd[0].fd != q->fd)
		return;
	if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR))
		tb_qmp_read(q, now);
	tb_qmp_flush(q, now);
}

static int64_t tb_qmp_tick(struct tb_peer *p, uint64_t now)
{
	struct tb_qmp *q = tb_qmp_of(p);
	bool running = tb_cmd_running(&p->dev->cmd);
	int64_t next;

	if (q->state == TB_QMP_DOWN) {
		if (now < q->retry_ms)
			return (int64_t)(q->retry_ms - now);
		tb_qmp_connect(q, now);
		if (q->state == TB_QMP_DOWN)
			return TB_QMP_RETRY_MS;
	}
	if (q->fail[0] && q->state != TB_QMP_DOWN) {
		char why[sizeof(q->fail)];

		memcpy(why, q->fail, sizeof(why));
		q->fail[0] = 0;
		tb_qmp_drop(q, now, "%s", why);
		return TB_QMP_RETRY_MS;
	}
	if (q->state == TB_QMP_GREETING && now >= q->state_ms + TB_QMP_REPLY_MS) {
		tb_qmp_drop(q, now, "no QMP greeting in %u ms (not a QEMU, or another "
			    "client holds this monitor: QEMU serves one at a time)",
			    TB_QMP_REPLY_MS);
		return TB_QMP_RETRY_MS;
	}
	if (q->npend && now >= q->pend[0].sent_ms + TB_QMP_REPLY_MS) {
		tb_qmp_drop(q, now, "no reply to %s in %u ms: QEMU is not answering",
			    tb_qmp_req_names[q->pend[0].req], TB_QMP_REPLY_MS);
		return TB_QMP_RETRY_MS;
	}
	next = TB_QMP_REPLY_MS;
	if (q->state == TB_QMP_UP) {
		if (now >= q->stats_due) {
			if (!tb_qmp_pending(q, TB_QREQ_STATS)) {
				json_object *a = json_object_new_object();

				json_object_object_add(a, "path", json_object_new_string(q->balloon));
				json_object_object_add(a, "property",
						       json_object_new_string("guest-stats"));
				q->stats_req_pages = TB_CFG(p->dev, actual);
				tb_qmp_send(q, TB_QREQ_STATS, a, now);
			}
			q->stats_due = now + (running ? TB_QMP_CMD_STATS_MS : q->polling_s * 1000ULL);
		}
		if (running && now >= q->poll_due) {
			if (!tb_qmp_pending(q, TB_QREQ_QUERY))
				tb_qmp_send(q, TB_QREQ_QUERY, NULL, now);
			q->poll_due = now + TB_QMP_POLL_MS;
		}
		if (q->state == TB_QMP_UP) {
			next = (int64_t)(q->stats_due - now);
			if (running && (int64_t)(q->poll_due - now) < next)
				next = (int64_t)(q->poll_due - now);
		}
	}
	if (q->npend) {
		int64_t r = (int64_t)(q->pend[0].sent_ms + TB_QMP_REPLY_MS - now);

		if (r < next)
			next = r;
	}
	tb_qmp_flush(q, now);
	return next < 0 ? 0 : next;
}

static int tb_qmp_set_balloon(struct tb_peer *p, uint32_t pages)
{
	struct tb_qmp *q = tb_qmp_of(p);
	uint64_t now = tb_now_ms();

	if (q->state != TB_QMP_UP)
		return -ENOTCONN;
	if (((uint64_t)pages << TB_PAGE_SHIFT) >= q->ram)
		return -EINVAL;
	if (!tb_qmp_set_target(q, pages, now))
		return -EAGAIN;
	/* follow it at once: the first BALLOON_CHANGE may be a second away */
	q->poll_due = now;
	q->stats_due = now;
	/* sent by the loop (POLLOUT), never from inside the device model */
	return 0;
}

static int tb_qmp_stop(struct tb_peer *p)
{
	struct tb_qmp *q = tb_qmp_of(p);
	uint64_t now = tb_now_ms();

	if (q->state != TB_QMP_UP)
		return -ENOTCONN;
	return tb_qmp_send(q, TB_QREQ_STOP, NULL, now) ? 0 : -EAGAIN;
}

/* QEMU's resident memory (VmRSS), which holds the guest's RAM */
static uint64_t tb_qmp_rss(pid_t pid)
{
	char path[64], line[128];
	unsigned long long kb = 0;
	FILE *f;

	if (pid <= 0)
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %llu kB", &kb) == 1)
			break;
	fclose(f);
	return (uint64_t)kb << 10;
}

static void tb_qmp_footprint(struct tb_peer *p, uint64_t *ram, uint64_t *res)
{
	struct tb_qmp *q = tb_qmp_of(p);

	*ram = q->state == TB_QMP_UP ? q->ram : 0;
	if (res)
		*res = q->state == TB_QMP_UP ? tb_qmp_rss(q->pid) : 0;
}

static void tb_qmp_destroy(struct tb_peer *p)
{
	struct tb_qmp *q = tb_qmp_of(p);

	tb_close_fd(&q->fd);
	free(q->in);
	free(q);
}

static int tb_qmp_start(struct tb_peer *p, uint32_t timeout_ms, char *err, size_t errlen);

static const struct tb_peer_ops tb_qmp_ops = {
	.start = tb_qmp_start,
	.pollfds = tb_qmp_pollfds,
	.ready = tb_qmp_ready,
	.tick = tb_qmp_tick,
	.set_balloon = tb_qmp_set_balloon,
	.stop = tb_qmp_stop,
	.footprint = tb_qmp_footprint,
	.destroy = tb_qmp_destroy,
};

static int tb_qmp_start(struct tb_peer *p, uint32_t timeout_ms, char *err, size_t errlen)
{
	struct tb_qmp *q = tb_qmp_of(p);
	uint64_t end = tb_now_ms() + timeout_ms;

	/* quiet while setting up: a failure is reported once, by the caller */
	q->said_down = true;
	tb_qmp_connect(q, tb_now_ms());
	while (q->state != TB_QMP_UP && q->state != TB_QMP_DOWN) {
		uint64_t now = tb_now_ms();
		struct pollfd pfd;
		int64_t t;

		if (now >= end) {
			tb_qmp_drop(q, now, "no answer in %u ms (not a QEMU, or another client "
				    "holds this monitor: QEMU serves one at a time)", timeout_ms);
			break;
		}
		t = tb_qmp_tick(p, now);
		/* no fd: the tick dropped the connection */
		if (!tb_qmp_pollfds(p, &pfd))
			break;
		if (t < 0 || t > (int64_t)(end - now))
			t = (int64_t)(end - now);
		if (poll(&pfd, 1, (int)t) > 0)
			tb_qmp_ready(p, &pfd, 1, tb_now_ms());
	}
	if (q->state != TB_QMP_UP) {
		snprintf(err, errlen, "%s: %s", q->path, q->setup_err[0] ? q->setup_err :
			 "cannot set up");
		return -EPROTO;
	}
	return 0;
}

struct tb_peer *tb_qmp_peer_new(struct tb_dev *dev, const char *path,
				uint32_t stats_interval_ms, char *err, size_t errlen)
{
	struct tb_qmp *q;

	if (strlen(path) >= sizeof(q->path)) {
		snprintf(err, errlen, "%s: path too long for a UNIX socket", path);
		return NULL;
	}
	q = calloc(1, sizeof(*q));
	if (!q) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	q->peer.ops = &tb_qmp_ops;
	q->peer.dev = dev;
	snprintf(q->peer.what, sizeof(q->peer.what), "QMP %s", path);
	snprintf(q->path, sizeof(q->path), "%s", path);
	q->fd = -1;
	q->polling_s = (stats_interval_ms + 999) / 1000;
	if (!q->polling_s)
		q->polling_s = 1;
	return &q->peer;
}
