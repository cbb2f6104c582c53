// SPDX-License-Identifier: GPL-2.0
/*
 * virt.c - the libvirt peer: a libvirt domain's stock memballoon, driven
 * through libvirt's C API (`tballoon serve --libvirt DOMAIN`), because
 * libvirt owns its VMs' QMP sockets.
 *
 *   - the size: virDomainSetMemoryFlags(VIR_DOMAIN_AFFECT_LIVE), in KiB of
 *     guest memory; followed by VIR_DOMAIN_EVENT_ID_BALLOON_CHANGE (QEMU's
 *     BALLOON_CHANGE, rate-limited to one a second) and, while a command
 *     runs, virDomainMemoryStats' ACTUAL_BALLOON every TB_VIRT_POLL_MS;
 *   - statistics: virDomainSetMemoryStatsPeriod once, then
 *     virDomainMemoryStats each period (a sample is new when LAST_UPDATE
 *     changes). libvirt names them its own way: its AVAILABLE is the
 *     guest's total memory and its USABLE is the guest's available memory;
 *   - the end of the domain or of the connection: lifecycle and close
 *     callbacks.
 *
 * libvirt delivers events from its own event loop, which runs here on one
 * thread of its own (virEventRunDefaultImpl). That thread only writes
 * small records to a pipe; the daemon's loop reads them, so the device
 * model is touched from the loop's thread alone. The API calls are made
 * from the loop's thread and are synchronous: libvirt's own bounds apply
 * (keepalive every TB_VIRT_KEEPALIVE_S, the connection is dead after
 * TB_VIRT_KEEPALIVE_COUNT missed answers).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mem.h"
#include "peer.h"
#include "util.h"

#ifndef TB_HAVE_LIBVIRT

struct tb_peer *tb_virt_peer_new(struct tb_dev *dev, const char *uri,
				 const char *domain, uint32_t stats_interval_ms,
				 char *err, size_t errlen)
{
	(void)dev;
	(void)uri;
	(void)stats_interval_ms;
	snprintf(err, errlen, "libvirt domain %s: this tballoon was built without "
		 "libvirt (install libvirt-dev and rebuild)", domain);
	return NULL;
}

#else

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <pthread.h>

#define TB_VIRT_POLL_MS 100U
#define TB_VIRT_CMD_STATS_MS 250U
#define TB_VIRT_RETRY_MS 1000U
#define TB_VIRT_KEEPALIVE_S 5
#define TB_VIRT_KEEPALIVE_COUNT 3

enum tb_virt_msg_type { TB_VIRT_MSG_BALLOON, TB_VIRT_MSG_GONE };

struct tb_virt_msg {
	enum tb_virt_msg_type type;
	uint64_t kib;
};

/**
 * struct tb_virt - the libvirt peer
 * @uri, @name: as given
 * @conn, @dom: libvirt's handles, NULL while down
 * @pipe_rd, @pipe_wr: event records from libvirt's event thread
 * @ram_kib: the domain's maximum memory (guest RAM the balloon is out of)
 * @rss: QEMU's resident memory from the last statistics (bytes)
 * @last_update: LAST_UPDATE of the last sample passed on
 * @prev_pages: the balloon at the previous statistics read (a new sample
 *	was taken after it, and is paired with the smaller of it and the
 *	balloon now)
 */
struct tb_virt {
	struct tb_peer peer;
	char *uri;
	char *name;
	virConnectPtr conn;
	virDomainPtr dom;
	int cb_balloon;
	int cb_life;
	int pipe_rd;
	int pipe_wr;
	uint64_t ram_kib;
	uint64_t rss;
	unsigned int period_s;
	uint64_t stats_due;
	uint64_t poll_due;
	uint64_t retry_ms;
	uint64_t last_update;
	uint32_t prev_pages;
	bool up;
	bool said_down;
};

static pthread_once_t tb_virt_once = PTHREAD_ONCE_INIT;
static int tb_virt_loop_rc;

static void *tb_virt_loop(void *arg)
{
	(void)arg;
	for (;;)
		if (virEventRunDefaultImpl() < 0)
			nanosleep(&(struct timespec){ .tv_nsec = 100 * 1000 * 1000 }, NULL);
	return NULL;
}

/* libvirt's default event loop, on a thread of its own, once per process */
static void tb_virt_start_loop(void)
{
	pthread_t t;

	tb_virt_loop_rc = virEventRegisterDefaultImpl();
	if (tb_virt_loop_rc < 0)
		return;
	tb_virt_loop_rc = pthread_create(&t, NULL, tb_virt_loop, NULL) ? -1 : 0;
	if (!tb_virt_loop_rc)
		pthread_detach(t);
}

static const char *tb_virt_errmsg(void)
{
	const char *m = virGetLastErrorMessage();

	return m ? m : "unknown libvirt error";
}

/* libvirt's errors are ours to report, not printed on stderr by libvirt */
static void tb_virt_quiet(void *opaque, virErrorPtr e)
{
	(void)opaque;
	(void)e;
}

static void tb_virt_post(struct tb_virt *v, enum tb_virt_msg_type type, uint64_t kib)
{
	struct tb_virt_msg m = { type, kib };

	/* a full pipe drops the record: the loop re-reads the size anyway */
	if (write(v->pipe_wr, &m, sizeof(m)) < 0)
		return;
}

static int tb_virt_on_balloon(virConnectPtr c, virDomainPtr d, unsigned long long kib,
			      void *opaque)
{
	(void)c;
	(void)d;
	tb_virt_post(opaque, TB_VIRT_MSG_BALLOON, kib);
	return 0;
}

static int tb_virt_on_life(virConnectPtr c, virDomainPtr d, int event, int detail,
			   void *opaque)
{
	(void)c;
	(void)d;
	(void)detail;
	if (event == VIR_DOMAIN_EVENT_STOPPED || event == VIR_DOMAIN_EVENT_UNDEFINED ||
	    event == VIR_DOMAIN_EVENT_CRASHED)
		tb_virt_post(opaque, TB_VIRT_MSG_GONE, 0);
	return 0;
}

static void tb_virt_on_close(virConnectPtr c, int reason, void *opaque)
{
	(void)c;
	(void)reason;
	tb_virt_post(opaque, TB_VIRT_MSG_GONE, 0);
}

static uint64_t tb_virt_pages_of_kib(const struct tb_virt *v, uint64_t kib)
{
	if (kib > v->ram_kib)
		return 0;
	return (v->ram_kib - kib) >> (TB_PAGE_SHIFT - 10);
}

static void tb_virt_down(struct tb_virt *v, uint64_t now, const char *why)
{
	if (!v->said_down)
		tb_warn("%s: %s", v->peer.what, why);
	v->said_down = true;
	if (v->conn) {
		if (v->cb_balloon >= 0)
			virConnectDomainEventDeregisterAny(v->conn, v->cb_balloon);
		if (v->cb_life >= 0)
			virConnectDomainEventDeregisterAny(v->conn, v->cb_life);
		virConnectUnregisterCloseCallback(v->conn, tb_virt_on_close);
	}
	v->cb_balloon = v->cb_life = -1;
	if (v->dom)
		virDomainFree(v->dom);
	if (v->conn)
		virConnectClose(v->conn);
	v->dom = NULL;
	v->conn = NULL;
	if (v->up)
		tb_dev_peer_link(v->peer.dev, false, now);
	v->up = false;
	v->retry_ms = now + TB_VIRT_RETRY_MS;
}

/*
 * Read the domain's statistics: the balloon size always, the rest when the
 * guest sent a new sample. false if the domain cannot be read.
 */
static bool tb_virt_read(struct tb_virt *v, bool stats, uint64_t now)
{
	virDomainMemoryStatStruct st[VIR_DOMAIN_MEMORY_STAT_NR];
	uint64_t val[TB_GSTAT_COUNT] = { 0 }, last = 0, actual = UINT64_MAX;
	uint32_t have = 0;
	int n = virDomainMemoryStats(v->dom, st, VIR_DOMAIN_MEMORY_STAT_NR, 0);

	if (n < 0)
		return false;
	for (int i = 0; i < n; i++) {
		int tag = -1;
		uint64_t x = st[i].val;

		switch (st[i].tag) {
		case VIR_DOMAIN_MEMORY_STAT_ACTUAL_BALLOON:
			actual = x;
			continue;
		case VIR_DOMAIN_MEMORY_STAT_RSS:
			v->rss = x << 10;
			continue;
		case VIR_DOMAIN_MEMORY_STAT_LAST_UPDATE:
			last = x;
			continue;
		case VIR_DOMAIN_MEMORY_STAT_SWAP_IN:
			tag = TB_GSTAT_SWAP_IN;
			x <<= 10;
			break;
		case VIR_DOMAIN_MEMORY_STAT_SWAP_OUT:
			tag = TB_GSTAT_SWAP_OUT;
			x <<= 10;
			break;
		case VIR_DOMAIN_MEMORY_STAT_MAJOR_FAULT:
			tag = TB_GSTAT_MAJFLT;
			break;
		case VIR_DOMAIN_MEMORY_STAT_MINOR_FAULT:
			tag = TB_GSTAT_MINFLT;
			break;
		case VIR_DOMAIN_MEMORY_STAT_UNUSED:
			tag = TB_GSTAT_MEMFREE;
			x <<= 10;
			break;
		case VIR_DOMAIN_MEMORY_STAT_AVAILABLE:	/* the guest's total */
			tag = TB_GSTAT_MEMTOT;
			x <<= 10;
			break;
		case VIR_DOMAIN_MEMORY_STAT_USABLE:	/* the guest's available */
			tag = TB_GSTAT_AVAIL;
			x <<= 10;
			break;
		case VIR_DOMAIN_MEMORY_STAT_DISK_CACHES:
			tag = TB_GSTAT_CACHES;
			x <<= 10;
			break;
		case VIR_DOMAIN_MEMORY_STAT_HUGETLB_PGALLOC:
			tag = TB_GSTAT_HTLB_PGALLOC;
			break;
		case VIR_DOMAIN_MEMORY_STAT_HUGETLB_PGFAIL:
			tag = TB_GSTAT_HTLB_PGFAIL;
			break;
		default:
			continue;
		}
		val[tag] = x;
		have |= 1U << tag;
	}
	if (actual != UINT64_MAX)
		tb_dev_peer_actual(v->peer.dev, tb_virt_pages_of_kib(v, actual), now);
	if (stats && last && last != v->last_update) {
		v->last_update = last;
		/*
		 * taken after our previous read, which did not see it: paired
		 * with the smallest balloon since then (qmp.c says why)
		 */
		tb_dev_peer_stats(v->peer.dev, have, val,
				  tb_min_u32(v->prev_pages, TB_CFG(v->peer.dev, actual)),
				  now);
	}
	if (stats)
		v->prev_pages = TB_CFG(v->peer.dev, actual);
	return true;
}

/* open the connection and the domain; false with @why set */
static bool tb_virt_open(struct tb_virt *v, uint64_t now, char *why, size_t len)
{
	unsigned long maxkib;

	v->conn = virConnectOpen(v->uri);
	if (!v->conn) {
		snprintf(why, len, "cannot connect to libvirt%s%s: %s", v->uri ? " at " : "",
			 v->uri ? v->uri : "", tb_virt_errmsg());
		return false;
	}
	if (virConnectSetKeepAlive(v->conn, TB_VIRT_KEEPALIVE_S, TB_VIRT_KEEPALIVE_COUNT) < 0)
		tb_dbg("%s: no keepalive: %s", v->peer.what, tb_virt_errmsg());
	virConnectRegisterCloseCallback(v->conn, tb_virt_on_close, v, NULL);
	v->dom = virDomainLookupByName(v->conn, v->name);
	if (!v->dom) {
		snprintf(why, len, "no such domain: %s", tb_virt_errmsg());
		return false;
	}
	if (virDomainIsActive(v->dom) != 1) {
		snprintf(why, len, "the domain is not running");
		return false;
	}
	maxkib = virDomainGetMaxMemory(v->dom);
	if (!maxkib) {
		snprintf(why, len, "cannot read its memory size: %s", tb_virt_errmsg());
		return false;
	}
	v->ram_kib = maxkib;
	if (virDomainSetMemoryStatsPeriod(v->dom, (int)v->period_s, VIR_DOMAIN_AFFECT_LIVE) < 0) {
		snprintf(why, len, "no memory balloon to drive (virDomainSetMemoryStatsPeriod: %s)",
			 tb_virt_errmsg());
		return false;
	}
	v->cb_balloon = virConnectDomainEventRegisterAny(
		v->conn, v->dom, VIR_DOMAIN_EVENT_ID_BALLOON_CHANGE,
		VIR_DOMAIN_EVENT_CALLBACK(tb_virt_on_balloon), v, NULL);
	v->cb_life = virConnectDomainEventRegisterAny(
		v->conn, v->dom, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
		VIR_DOMAIN_EVENT_CALLBACK(tb_virt_on_life), v, NULL);
	if (v->cb_balloon < 0 || v->cb_life < 0) {
		snprintf(why, len, "cannot follow its events: %s", tb_virt_errmsg());
		return false;
	}
	v->up = true;
	v->said_down = false;
	v->last_update = 0;
	tb_dev_peer_link(v->peer.dev, true, now);
	if (!tb_virt_read(v, true, now)) {
		snprintf(why, len, "cannot read its balloon: %s", tb_virt_errmsg());
		return false;
	}
	tb_info("%s: guest RAM %llu MiB, balloon %u pages, statistics every %u s",
		v->peer.what, (unsigned long long)(v->ram_kib >> 10),
		TB_CFG(v->peer.dev, actual), v->period_s);
	v->stats_due = now + v->period_s * 1000ULL;
	v->poll_due = now;
	return true;
}

static unsigned int tb_virt_pollfds(struct tb_peer *p, struct pollfd *pfd)
{
	struct tb_virt *v = (struct tb_virt *)p;

	pfd[0] = (struct pollfd){ .fd = v->pipe_rd, .events = POLLIN };
	return 1;
}

static void tb_virt_ready(struct tb_peer *p, const struct pollfd *pfd, unsigned int n,
			  uint64_t now)
{
	struct tb_virt *v = (struct tb_virt *)p;
	struct tb_virt_msg m;

	if (!n || !(pfd[0].revents & POLLIN))
		return;
	while (read(v->pipe_rd, &m, sizeof(m)) == (ssize_t)sizeof(m)) {
		if (!v->up)
			continue;
		if (m.type == TB_VIRT_MSG_GONE)
			tb_virt_down(v, now, "the domain stopped or libvirt closed the connection");
		else
			tb_dev_peer_actual(p->dev, tb_virt_pages_of_kib(v, m.kib), now);
	}
}

static int64_t tb_virt_tick(struct tb_peer *p, uint64_t now)
{
	struct tb_virt *v = (struct tb_virt *)p;
	bool running = tb_cmd_running(&p->dev->cmd);
	int64_t next;

	if (!v->up) {
		char why[256];

		if (now < v->retry_ms)
			return (int64_t)(v->retry_ms - now);
		if (!tb_virt_open(v, now, why, sizeof(why)))
			tb_virt_down(v, now, why);
		if (!v->up)
			return TB_VIRT_RETRY_MS;
	}
	if (now >= v->stats_due || (running && now >= v->poll_due)) {
		bool stats = now >= v->stats_due;

		if (!tb_virt_read(v, stats, now)) {
			tb_virt_down(v, now, tb_virt_errmsg());
			return TB_VIRT_RETRY_MS;
		}
		if (stats)
			v->stats_due = now + (running ? TB_VIRT_CMD_STATS_MS :
					      v->period_s * 1000ULL);
		v->poll_due = now + TB_VIRT_POLL_MS;
	}
	running = tb_cmd_running(&p->dev->cmd);
	next = (int64_t)(v->stats_due - now);
	if (running && (int64_t)(v->poll_due - now) < next)
		next = (int64_t)(v->poll_due - now);
	return next < 0 ? 0 : next;
}

static int tb_virt_set_kib(struct tb_virt *v, uint64_t pages)
{
	uint64_t kib = pages << (TB_PAGE_SHIFT - 10);

	if (kib >= v->ram_kib)
		return -EINVAL;
	if (virDomainSetMemoryFlags(v->dom, v->ram_kib - kib, VIR_DOMAIN_AFFECT_LIVE) < 0) {
		tb_warn("%s: virDomainSetMemoryFlags: %s", v->peer.what, tb_virt_errmsg());
		return -EIO;
	}
	return 0;
}

static int tb_virt_set_balloon(struct tb_peer *p, uint32_t pages)
{
	struct tb_virt *v = (struct tb_virt *)p;

	if (!v->up)
		return -ENOTCONN;
	v->poll_due = tb_now_ms();
	return tb_virt_set_kib(v, pages);
}

/* the balloon as libvirt reports it now, in pages; -1 if it cannot be read */
static int64_t tb_virt_actual_pages(struct tb_virt *v)
{
	virDomainMemoryStatStruct st[VIR_DOMAIN_MEMORY_STAT_NR];
	int n = virDomainMemoryStats(v->dom, st, VIR_DOMAIN_MEMORY_STAT_NR, 0);

	for (int i = 0; i < n; i++)
		if (st[i].tag == VIR_DOMAIN_MEMORY_STAT_ACTUAL_BALLOON)
			return (int64_t)tb_virt_pages_of_kib(v, st[i].val);
	return -1;
}

/*
 * Stop where it is: the size read afresh and set as the target. The device
 * model hears of the size from the next read or event, not from here (it
 * is stopping a command from inside its own checks).
 */
static int tb_virt_stop(struct tb_peer *p)
{
	struct tb_virt *v = (struct tb_virt *)p;
	int64_t pages;

	if (!v->up)
		return -ENOTCONN;
	pages = tb_virt_actual_pages(v);
	if (pages < 0)
		return -EIO;
	tb_dev_peer_target(p->dev, (uint64_t)pages);
	v->poll_due = tb_now_ms();
	return tb_virt_set_kib(v, (uint64_t)pages);
}

static void tb_virt_footprint(struct tb_peer *p, uint64_t *ram, uint64_t *res)
{
	struct tb_virt *v = (struct tb_virt *)p;

	*ram = v->up ? v->ram_kib << 10 : 0;
	if (res)
		*res = v->up ? v->rss : 0;
}

static int tb_virt_start(struct tb_peer *p, uint32_t timeout_ms, char *err, size_t errlen)
{
	struct tb_virt *v = (struct tb_virt *)p;
	char why[256];

	(void)timeout_ms;	/* libvirt's own: keepalive, job timeouts */
	v->said_down = true;
	if (tb_virt_open(v, tb_now_ms(), why, sizeof(why)))
		return 0;
	snprintf(err, errlen, "%s: %s", v->peer.what, why);
	tb_virt_down(v, tb_now_ms(), why);
	return -EPROTO;
}

static void tb_virt_destroy(struct tb_peer *p)
{
	struct tb_virt *v = (struct tb_virt *)p;

	v->said_down = true;
	tb_virt_down(v, tb_now_ms(), "");
	/* deregistered and closed: libvirt's thread posts nothing more */
	close(v->pipe_rd);
	close(v->pipe_wr);
	free(v->uri);
	free(v->name);
	free(v);
}

static const struct tb_peer_ops tb_virt_ops = {
	.start = tb_virt_start,
	.pollfds = tb_virt_pollfds,
	.ready = tb_virt_ready,
	.tick = tb_virt_tick,
	.set_balloon = tb_virt_set_balloon,
	.stop = tb_virt_stop,
	.footprint = tb_virt_footprint,
	.destroy = tb_virt_destroy,
};

struct tb_peer *tb_virt_peer_new(struct tb_dev *dev, const char *uri,
				 const char *domain, uint32_t stats_interval_ms,
				 char *err, size_t errlen)
{
	struct tb_virt *v;
	int fds[2];
	pthread_once(&tb_virt_once, tb_virt_start_loop);
	if (tb_virt_loop_rc < 0) {
		snprintf(err, errlen, "libvirt: cannot start its event loop: %s",
			 tb_virt_errmsg());
		return NULL;
	}
	virSetErrorFunc(NULL, tb_virt_quiet);
	v = calloc(1, sizeof(*v));
	if (!v || pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) {
		free(v);
		snprintf(err, errlen, "libvirt: %s", strerror(errno));
		return NULL;
	}
	v->peer.ops = &tb_virt_ops;
	v->peer.dev = dev;
	snprintf(v->peer.what, sizeof(v->peer.what), "libvirt domain %s", domain);
	v->uri = uri ? strdup(uri) : NULL;
	v->name = strdup(domain);
	v->pipe_rd = fds[0];
	v->pipe_wr = fds[1];
	v->cb_balloon = v->cb_life = -1;
	v->period_s = (stats_interval_ms + 999) / 1000;
	if (!v->period_s)
		v->period_s = 1;
	return &v->peer;
}

#endif /* TB_HAVE_LIBVIRT */
