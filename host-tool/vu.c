// SPDX-License-Identifier: GPL-2.0
/*
 * vu.c - vhost-user back-end protocol layer.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

#include "util.h"
#include "vu.h"

static const char *const tb_vu_request_names[TB_VU_REQUEST_COUNT] = {
	[TB_VU_NONE] = "NONE",
	[TB_VU_GET_FEATURES] = "GET_FEATURES",
	[TB_VU_SET_FEATURES] = "SET_FEATURES",
	[TB_VU_SET_OWNER] = "SET_OWNER",
	[TB_VU_RESET_OWNER] = "RESET_OWNER",
	[TB_VU_SET_MEM_TABLE] = "SET_MEM_TABLE",
	[TB_VU_SET_LOG_BASE] = "SET_LOG_BASE",
	[TB_VU_SET_LOG_FD] = "SET_LOG_FD",
	[TB_VU_SET_VRING_NUM] = "SET_VRING_NUM",
	[TB_VU_SET_VRING_ADDR] = "SET_VRING_ADDR",
	[TB_VU_SET_VRING_BASE] = "SET_VRING_BASE",
	[TB_VU_GET_VRING_BASE] = "GET_VRING_BASE",
	[TB_VU_SET_VRING_KICK] = "SET_VRING_KICK",
	[TB_VU_SET_VRING_CALL] = "SET_VRING_CALL",
	[TB_VU_SET_VRING_ERR] = "SET_VRING_ERR",
	[TB_VU_GET_PROTOCOL_FEATURES] = "GET_PROTOCOL_FEATURES",
	[TB_VU_SET_PROTOCOL_FEATURES] = "SET_PROTOCOL_FEATURES",
	[TB_VU_GET_QUEUE_NUM] = "GET_QUEUE_NUM",
	[TB_VU_SET_VRING_ENABLE] = "SET_VRING_ENABLE",
	[TB_VU_SEND_RARP] = "SEND_RARP",
	[TB_VU_NET_SET_MTU] = "NET_SET_MTU",
	[TB_VU_SET_BACKEND_REQ_FD] = "SET_BACKEND_REQ_FD",
	[TB_VU_IOTLB_MSG] = "IOTLB_MSG",
	[TB_VU_SET_VRING_ENDIAN] = "SET_VRING_ENDIAN",
	[TB_VU_GET_CONFIG] = "GET_CONFIG",
	[TB_VU_SET_CONFIG] = "SET_CONFIG",
	[TB_VU_CREATE_CRYPTO_SESSION] = "CREATE_CRYPTO_SESSION",
	[TB_VU_CLOSE_CRYPTO_SESSION] = "CLOSE_CRYPTO_SESSION",
	[TB_VU_POSTCOPY_ADVISE] = "POSTCOPY_ADVISE",
	[TB_VU_POSTCOPY_LISTEN] = "POSTCOPY_LISTEN",
	[TB_VU_POSTCOPY_END] = "POSTCOPY_END",
	[TB_VU_GET_INFLIGHT_FD] = "GET_INFLIGHT_FD",
	[TB_VU_SET_INFLIGHT_FD] = "SET_INFLIGHT_FD",
	[TB_VU_GPU_SET_SOCKET] = "GPU_SET_SOCKET",
	[TB_VU_RESET_DEVICE] = "RESET_DEVICE",
	[TB_VU_VRING_KICK] = "VRING_KICK",
	[TB_VU_GET_MAX_MEM_SLOTS] = "GET_MAX_MEM_SLOTS",
	[TB_VU_ADD_MEM_REG] = "ADD_MEM_REG",
	[TB_VU_REM_MEM_REG] = "REM_MEM_REG",
	[TB_VU_SET_STATUS] = "SET_STATUS",
	[TB_VU_GET_STATUS] = "GET_STATUS",
};

const char *tb_vu_request_name(uint32_t request)
{
	if (request < TB_VU_REQUEST_COUNT && tb_vu_request_names[request])
		return tb_vu_request_names[request];
	return "UNKNOWN";
}

static void tb_vu_queue_init(struct tb_vu_queue *q)
{
	memset(q, 0, sizeof(*q));
	q->kick_fd = -1;
	q->call_fd = -1;
	q->err_fd = -1;
}

void tb_vu_init(struct tb_vu *vu, const struct tb_vu_ops *ops, void *opaque)
{
	memset(vu, 0, sizeof(*vu));
	vu->ops = ops;
	vu->opaque = opaque;
	vu->sock_fd = -1;
	vu->backend_fd = -1;
	tb_mem_init(&vu->mem);
	for (unsigned int i = 0; i < TB_VU_MAX_QUEUES; i++)
		tb_vu_queue_init(&vu->q[i]);
}

uint64_t tb_vu_offered_features(const struct tb_vu *vu)
{
	return vu->ops->features | vu->extra_features | TB_BIT(TB_F_VERSION_1) |
	       TB_BIT(TB_F_PROTOCOL_FEATURES);
}

static bool tb_vu_has_pf(const struct tb_vu *vu, unsigned int bit)
{
	return vu->protocol_features & TB_BIT(bit);
}

/* ------------------------------------------------------------------------
 * Queues
 * ------------------------------------------------------------------------
 */

/* the queue index from a peer message, validated */
static struct tb_vu_queue *tb_vu_queue_get(struct tb_vu *vu, uint64_t idx)
{
	if (idx >= vu->ops->nqueues || idx >= TB_VU_MAX_QUEUES) {
		tb_warn("vhost-user: queue index %llu out of range",
			(unsigned long long)idx);
		return NULL;
	}
	return &vu->q[idx];
}

/*
 * (Re)attach the ring to the current memory table. Keeps the device's
 * position when the ring was already attached (memory table change while
 * running), else starts from the SET_VRING_BASE value.
 */
static void tb_vu_queue_map(struct tb_vu *vu, struct tb_vu_queue *q)
{
	uint16_t last = q->vr.num ? q->vr.last_avail : q->base;
	void *desc, *avail, *used;
	int rc;

	tb_vring_reset(&q->vr);
	if (!q->addr_set || !q->num || !vu->mem.nregions)
		return;
	desc = tb_mem_uva_to_host(&vu->mem, q->addr.desc, tb_vring_desc_size(q->num));
	avail = tb_mem_uva_to_host(&vu->mem, q->addr.avail, tb_vring_avail_size(q->num));
	used = tb_mem_uva_to_host(&vu->mem, q->addr.used, tb_vring_used_size(q->num));
	if (!desc || !avail || !used) {
		tb_warn("vhost-user: queue %u ring addresses outside guest memory",
			q->addr.index);
		return;
	}
	rc = tb_vring_setup(&q->vr, q->num, desc, avail, used, last);
	if (rc < 0)
		tb_warn("vhost-user: queue %u ring setup failed: %s",
			q->addr.index, strerror(-rc));
}

/* stop a queue: forget the ring and the kick fd (GET_VRING_BASE, reset) */
static void tb_vu_queue_stop(struct tb_vu_queue *q)
{
	if (q->vr.num)
		q->base = q->vr.last_avail;
	tb_vring_reset(&q->vr);
	tb_close_fd(&q->kick_fd);
	q->started = false;
}

static void tb_vu_queue_free(struct tb_vu_queue *q)
{
	tb_vu_queue_stop(q);
	tb_close_fd(&q->call_fd);
	tb_close_fd(&q->err_fd);
	tb_vu_queue_init(q);
}

bool tb_vu_queue_ready(const struct tb_vu *vu, unsigned int idx)
{
	const struct tb_vu_queue *q;
	bool enabled;

	if (idx >= vu->ops->nqueues || idx >= TB_VU_MAX_QUEUES)
		return false;
	q = &vu->q[idx];
	/* without PROTOCOL_FEATURES a ring is enabled as soon as it starts */
	enabled = q->enabled || !(vu->features & TB_BIT(TB_F_PROTOCOL_FEATURES));
	return q->started && enabled && q->vr.num && !q->vr.broken;
}

static void tb_vu_signal(int fd)
{
	uint64_t one = 1;

	if (fd >= 0 && write(fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		tb_warn("vhost-user: eventfd write: %s", strerror(errno));
}

void tb_vu_queue_call(struct tb_vu *vu, unsigned int idx)
{
	if (idx < TB_VU_MAX_QUEUES)
		tb_vu_signal(vu->q[idx].call_fd);
}

void tb_vu_queue_error(struct tb_vu *vu, unsigned int idx)
{
	if (idx < TB_VU_MAX_QUEUES)
		tb_vu_signal(vu->q[idx].err_fd);
}

/* let the device drop per-queue state before the ring goes away */
static void tb_vu_queue_stopping(struct tb_vu *vu, unsigned int idx)
{
	if (vu->ops->queue_stop && idx < vu->ops->nqueues && vu->q[idx].vr.num)
		vu->ops->queue_stop(vu->opaque, idx);
}

/* queue 0 restarting as a fresh ring means the guest reset the device */
static void tb_vu_maybe_reset(struct tb_vu *vu, struct tb_vu_queue *q,
			      unsigned int idx, const char *why)
{
	if (idx != 0 || q->reset_seen)
		return;
	q->reset_seen = true;
	q->moved = false;
	tb_info("vhost-user: queue 0 restarted as a new ring (%s): device reset", why);
	if (vu->ops->device_reset)
		vu->ops->device_reset(vu->opaque);
}

static void tb_vu_notify_queue(struct tb_vu *vu, unsigned int idx)
{
	if (vu->ops->queue_notify && tb_vu_queue_ready(vu, idx))
		vu->ops->queue_notify(vu->opaque, idx);
}

/* ------------------------------------------------------------------------
 * Request handlers: one per request, each validates its own payload
 * ------------------------------------------------------------------------
 */

static bool tb_vu_payload_ok(const struct tb_vu_msg *m, size_t need)
{
	if (m->hdr.size < need) {
		tb_warn("vhost-user: %s payload %u bytes, need %zu",
			tb_vu_request_name(m->hdr.request), m->hdr.size, need);
		return false;
	}
	return true;
}

/* The queue a vring state message names; NULL when its payload or index is bad. */
static struct tb_vu_queue *tb_vu_state_queue(struct tb_vu *vu,
					     const struct tb_vu_msg *m)
{
	if (!tb_vu_payload_ok(m, sizeof(m->p.state)))
		return NULL;
	return tb_vu_queue_get(vu, m->p.state.index);
}

static void tb_vu_reply_u64(struct tb_vu_msg *r, uint64_t v)
{
	r->p.u64 = v;
	r->hdr.size = sizeof(r->p.u64);
}

static int tb_vu_get_features(struct tb_vu *vu, struct tb_vu_msg *m,
			      struct tb_vu_msg *r)
{
	(void)m;
	tb_vu_reply_u64(r, tb_vu_offered_features(vu));
	return 0;
}

static int tb_vu_set_features(struct tb_vu *vu, struct tb_vu_msg *m)
{
	uint64_t offered = tb_vu_offered_features(vu);
	uint64_t f;

	if (!tb_vu_payload_ok(m, sizeof(uint64_t)))
		return -EINVAL;
	f = m->p.u64;
	if (f & ~offered)
		tb_warn("vhost-user: front-end acked unoffered features 0x%llx, ignored",
			(unsigned long long)(f & ~offered));
	vu->features = f & offered;
	vu->features_set = true;
	tb_info("vhost-user: features acked 0x%llx", (unsigned long long)vu->features);
	if (vu->ops->set_features)
		vu->ops->set_features(vu->opaque, vu->features);
	return 0;
}

static int tb_vu_get_protocol_features(struct tb_vu *vu, struct tb_vu_msg *r)
{
	tb_vu_reply_u64(r, vu->ops->protocol_features);
	return 0;
}

static int tb_vu_set_protocol_features(struct tb_vu *vu, struct tb_vu_msg *m)
{
	if (!tb_vu_payload_ok(m, sizeof(uint64_t)))
		return -EINVAL;
	if (m->p.u64 & ~vu->ops->protocol_features)
		tb_warn("vhost-user: front-end acked unoffered protocol features 0x%llx",
			(unsigned long long)(m->p.u64 & ~vu->ops->protocol_features));
	vu->protocol_features = m->p.u64 & vu->ops->protocol_features;
	tb_dbg("vhost-user: protocol features 0x%llx",
	       (unsigned long long)vu->protocol_features);
	return 0;
}

static int tb_vu_get_queue_num(struct tb_vu *vu, struct tb_vu_msg *r)
{
	tb_vu_reply_u64(r, vu->ops->nqueues);
	return 0;
}

/* RESET_OWNER (deprecated) and RESET_DEVICE: stop and disable every ring */
static int tb_vu_reset(struct tb_vu *vu, bool device)
{
	for (unsigned int i = 0; i < TB_VU_MAX_QUEUES; i++) {
		tb_vu_queue_stopping(vu, i);
		tb_vu_queue_stop(&vu->q[i]);
		vu->q[i].enabled = false;
		vu->q[i].moved = false;
	}
	if (device) {
		vu->features = 0;
		vu->features_set = false;
	}
	if (vu->ops->device_reset)
		vu->ops->device_reset(vu->opaque);
	return 0;
}

static int tb_vu_set_mem_table(struct tb_vu *vu, struct tb_vu_msg *m)
{
	const struct tb_vu_mem_table *t = &m->p.mem;
	struct tb_mem nm;
	int rc;

	if (!tb_vu_payload_ok(m, 8))
		return -EINVAL;
	if (t->nregions == 0 || t->nregions > TB_MEM_MAX_REGIONS ||
	    !tb_vu_payload_ok(m, 8 + t->nregions * sizeof(t->r[0]))) {
		tb_warn("vhost-user: bad region count %u", t->nregions);
		return -EINVAL;
	}
	if (m->nfds != t->nregions) {
		tb_warn("vhost-user: %u regions but %u fds", t->nregions, m->nfds);
		return -EINVAL;
	}

	tb_mem_init(&nm);
	for (unsigned int i = 0; i < t->nregions; i++) {
		const struct tb_vu_mem_region *r = &t->r[i];

		rc = tb_mem_add(&nm, r->gpa, r->size, r->uva, r->mmap_offset, m->fds[i]);
		if (rc < 0) {
			tb_warn("vhost-user: region %u (gpa 0x%llx size 0x%llx): %s", i,
				(unsigned long long)r->gpa,
				(unsigned long long)r->size, strerror(-rc));
			/* the fds mapped so far are in nm; the rest stay in m */
			tb_mem_clear(&nm);
			return rc;
		}
		m->fds[i] = -1;	/* taken */
		tb_info("vhost-user: region %u: gpa 0x%llx size %llu MiB fd offset 0x%llx",
			i, (unsigned long long)r->gpa,
			(unsigned long long)(r->size >> 20),
			(unsigned long long)r->mmap_offset);
	}

	/* the rings point into the old mappings: detach, swap, re-attach */
	tb_mem_clear(&vu->mem);
	vu->mem = nm;
	for (unsigned int i = 0; i < vu->ops->nqueues; i++) {
		struct tb_vu_queue *q = &vu->q[i];

		if (q->addr_set)
			tb_vu_queue_map(vu, q);
	}
	for (unsigned int i = 0; i < vu->ops->nqueues; i++)
		tb_vu_notify_queue(vu, i);
	return 0;
}

static int tb_vu_set_vring_num(struct tb_vu *vu, struct tb_vu_msg *m)
{
	struct tb_vu_queue *q;

	q = tb_vu_state_queue(vu, m);
	if (!q)
		return -EINVAL;
	if (m->p.state.num == 0 || m->p.state.num > TB_VRING_MAX_NUM) {
		tb_warn("vhost-user: queue %u bad size %u", m->p.state.index,
			m->p.state.num);
		return -EINVAL;
	}
	q->num = m->p.state.num;
	if (q->addr_set)
		tb_vu_queue_map(vu, q);
	return 0;
}

static int tb_vu_set_vring_addr(struct tb_vu *vu, struct tb_vu_msg *m)
{
	struct tb_vu_queue *q;

	if (!tb_vu_payload_ok(m, sizeof(m->p.addr)))
		return -EINVAL;
	q = tb_vu_queue_get(vu, m->p.addr.index);
	if (!q)
		return -EINVAL;
	if (q->addr_set && !q->started && q->moved &&
	    (q->addr.desc != m->p.addr.desc || q->addr.avail != m->p.addr.avail ||
	     q->addr.used != m->p.addr.used))
		tb_vu_maybe_reset(vu, q, m->p.addr.index, "new ring addresses");
	q->addr = m->p.addr;
	q->addr_set = true;
	/*
	 * A running ring keeps its position (the front-end re-sends the
	 * addresses e.g. to toggle logging); a stopped one starts from the
	 * SET_VRING_BASE value.
	 */
	tb_vu_queue_map(vu, q);
	if (!q->vr.num)
		return -EINVAL;
	tb_vu_notify_queue(vu, m->p.addr.index);
	return 0;
}

static int tb_vu_set_vring_base(struct tb_vu *vu, struct tb_vu_msg *m)
{
	struct tb_vu_queue *q;

	q = tb_vu_state_queue(vu, m);
	if (!q)
		return -EINVAL;
	if (m->p.state.num > 0xffff)
		return -EINVAL;
	/*
	 * A ring restarting at 0 after we reported another position is a new
	 * ring (reboot, driver reload); restarting where we said it stood is a
	 * pause, also when that position is 0 because the 16-bit index wrapped.
	 */
	if (!q->started && q->stopped_valid && q->stopped_at != 0 && m->p.state.num == 0)
		tb_vu_maybe_reset(vu, q, m->p.state.index, "position 0");
	q->base = (uint16_t)m->p.state.num;
	if (q->vr.num) {
		q->vr.last_avail = q->base;
		q->vr.broken = false;
	}
	return 0;
}

static int tb_vu_get_vring_base(struct tb_vu *vu, struct tb_vu_msg *m,
				struct tb_vu_msg *r)
{
	struct tb_vu_queue *q;
	uint32_t idx = m->hdr.size >= sizeof(m->p.state) ? m->p.state.index : 0;

	/* always answer: the front-end waits for this reply */
	r->p.state.index = idx;
	r->p.state.num = 0;
	r->hdr.size = sizeof(r->p.state);
	q = tb_vu_state_queue(vu, m);
	if (!q)
		return -EINVAL;
	tb_vu_queue_stopping(vu, idx);
	tb_vu_queue_stop(q);
	if (q->base)
		q->moved = true;
	q->stopped_at = q->base;
	q->stopped_valid = true;
	q->reset_seen = false;
	r->p.state.num = q->base;
	tb_dbg("vhost-user: queue %u stopped at %u", idx, q->base);
	return 0;
}

/*
 * A ring notifier must be an eventfd: anything else (a pipe whose writer is
 * gone polls HUP forever, a socket or file may block) is refused. It is made
 * non-blocking, so that signalling one the front-end filled up (a counter
 * near 2^64 blocks write()) never stalls the loop.
 */
static int tb_vu_check_eventfd(int fd)
{
	char path[64], target[64];
	ssize_t n;
	int fl;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return -errno;
	target[n] = 0;
	if (strcmp(target, "anon_inode:[eventfd]"))
		return -EBADF;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

/* SET_VRING_KICK/CALL/ERR: payload u64 = index | NOFD flag, fd in ancillary */
static int tb_vu_set_vring_fd(struct tb_vu *vu, struct tb_vu_msg *m)
{
	struct tb_vu_queue *q;
	bool nofd;
	int fd = -1;
	int *slot;

	if (!tb_vu_payload_ok(m, sizeof(uint64_t)))
		return -EINVAL;
	nofd = m->p.u64 & TB_VU_VRING_NOFD;
	if ((m->p.u64 & ~(TB_VU_VRING_IDX_MASK | TB_VU_VRING_NOFD)) ||
	    m->nfds != (nofd ? 0U : 1U)) {
		tb_warn("vhost-user: %s: bad payload 0x%llx with %u fds",
			tb_vu_request_name(m->hdr.request),
			(unsigned long long)m->p.u64, m->nfds);
		return -EINVAL;
	}
	q = tb_vu_queue_get(vu, m->p.u64 & TB_VU_VRING_IDX_MASK);
	if (!q)
		return -EINVAL;
	if (!nofd) {
		int rc = tb_vu_check_eventfd(m->fds[0]);

		if (rc < 0) {
			tb_warn("vhost-user: %s: fd is not an eventfd (%s), refused",
				tb_vu_request_name(m->hdr.request), strerror(-rc));
			return rc;	/* the dispatcher closes it */
		}
		fd = m->fds[0];
		m->fds[0] = -1;	/* taken */
	}

	switch (m->hdr.request) {
	case TB_VU_SET_VRING_KICK:
		slot = &q->kick_fd;
		break;
	case TB_VU_SET_VRING_CALL:
		slot = &q->call_fd;
		break;
	default:
		slot = &q->err_fd;
		break;
	}
	tb_close_fd(slot);
	*slot = fd;

	if (m->hdr.request == TB_VU_SET_VRING_KICK) {
		if (nofd)
			tb_warn("vhost-user: polling mode requested, not supported; "
				"queue %llu is only processed on other events",
				(unsigned long long)(m->p.u64 & TB_VU_VRING_IDX_MASK));
		q->started = true;
		tb_vu_notify_queue(vu, m->p.u64 & TB_VU_VRING_IDX_MASK);
	}
	return 0;
}

static int tb_vu_set_vring_enable(struct tb_vu *vu, struct tb_vu_msg *m)
{
	struct tb_vu_queue *q;

	q = tb_vu_state_queue(vu, m);
	if (!q || m->p.state.num > 1)
		return -EINVAL;
	q->enabled = m->p.state.num;
	tb_dbg("vhost-user: queue %u %s", m->p.state.index,
	       q->enabled ? "enabled" : "disabled");
	if (q->enabled)
		tb_vu_notify_queue(vu, m->p.state.index);
	return 0;
}

static int tb_vu_set_backend_req_fd(struct tb_vu *vu, struct tb_vu_msg *m)
{
	struct timeval tv = { .tv_sec = 2 };

	if (m->nfds != 1) {
		tb_warn("vhost-user: SET_BACKEND_REQ_FD with %u fds", m->nfds);
		return -EINVAL;
	}
	tb_close_fd(&vu->backend_fd);
	vu->backend_fd = m->fds[0];
	m->fds[0] = -1;	/* taken */
	/* never block the event loop for long on a stuck front-end */
	setsockopt(vu->backend_fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	return 0;
}

/* offset/size of a config access, bounds-checked against the device */
static bool tb_vu_config_ok(const struct tb_vu *vu, const struct tb_vu_config *c)
{
	return c->size <= TB_VU_CONFIG_MAX &&
	       tb_range_ok(c->offset, c->size, vu->ops->config_size);
}

static int tb_vu_get_config(struct tb_vu *vu, struct tb_vu_msg *m,
			    struct tb_vu_msg *r)
{
	const struct tb_vu_config *c = &m->p.config;

	/* a zero-length payload tells the front-end the request failed */
	r->hdr.size = 0;
	if (!tb_vu_payload_ok(m, TB_VU_CONFIG_HDR_SIZE))
		return -EINVAL;
	if (!tb_vu_config_ok(vu, c) || !vu->ops->get_config) {
		tb_warn("vhost-user: GET_CONFIG offset %u size %u refused",
			c->offset, c->size);
		return -EINVAL;
	}
	r->p.config.offset = c->offset;
	r->p.config.size = c->size;
	r->p.config.flags = c->flags;
	memset(r->p.config.region, 0, sizeof(r->p.config.region));
	vu->ops->get_config(vu->opaque, r->p.config.region, c->offset, c->size);
	r->hdr.size = TB_VU_CONFIG_HDR_SIZE + c->size;
	return 0;
}

static int tb_vu_set_config(struct tb_vu *vu, struct tb_vu_msg *m)
{
	const struct tb_vu_config *c = &m->p.config;

	if (!tb_vu_payload_ok(m, TB_VU_CONFIG_HDR_SIZE))
		return -EINVAL;
	if (!tb_vu_config_ok(vu, c) ||
	    m->hdr.size < TB_VU_CONFIG_HDR_SIZE + c->size || !vu->ops->set_config) {
		tb_warn("vhost-user: SET_CONFIG offset %u size %u refused",
			c->offset, c->size);
		return -EINVAL;
	}
	return vu->ops->set_config(vu->opaque, c->region, c->offset, c->size, c->flags);
}

/* ------------------------------------------------------------------------
 * Dispatch
 * ------------------------------------------------------------------------
 */

int tb_vu_dispatch(struct tb_vu *vu, struct tb_vu_msg *m,
		   struct tb_vu_msg *r, bool *send_reply)
{
	bool explicit_reply = false;
	int rc;

	memset(&r->hdr, 0, sizeof(r->hdr));
	r->nfds = 0;
	*send_reply = false;

	/* buffers still being worked on go back before memory or rings change */
	switch (m->hdr.request) {
	case TB_VU_SET_FEATURES:
	case TB_VU_RESET_OWNER:
	case TB_VU_RESET_DEVICE:
	case TB_VU_SET_MEM_TABLE:
	case TB_VU_SET_VRING_NUM:
	case TB_VU_SET_VRING_ADDR:
	case TB_VU_SET_VRING_BASE:
	case TB_VU_GET_VRING_BASE:
	case TB_VU_SET_VRING_ENABLE:
		if (vu->ops->quiesce)
			vu->ops->quiesce(vu->opaque);
		break;
	default:
		break;
	}

	switch (m->hdr.request) {
	case TB_VU_GET_FEATURES:
		rc = tb_vu_get_features(vu, m, r);
		explicit_reply = true;
		break;
	case TB_VU_SET_FEATURES:
		rc = tb_vu_set_features(vu, m);
		break;
	case TB_VU_SET_OWNER:
		vu->owner = true;
		rc = 0;
		break;
	case TB_VU_RESET_OWNER:
		rc = tb_vu_reset(vu, false);
		break;
	case TB_VU_RESET_DEVICE:
		rc = tb_vu_reset(vu, true);
		break;
	case TB_VU_SET_MEM_TABLE:
		rc = tb_vu_set_mem_table(vu, m);
		break;
	case TB_VU_SET_VRING_NUM:
		rc = tb_vu_set_vring_num(vu, m);
		break;
	case TB_VU_SET_VRING_ADDR:
		rc = tb_vu_set_vring_addr(vu, m);
		break;
	case TB_VU_SET_VRING_BASE:
		rc = tb_vu_set_vring_base(vu, m);
		break;
	case TB_VU_GET_VRING_BASE:
		rc = tb_vu_get_vring_base(vu, m, r);
		explicit_reply = true;
		break;
	case TB_VU_SET_VRING_KICK:
	case TB_VU_SET_VRING_CALL:
	case TB_VU_SET_VRING_ERR:
		rc = tb_vu_set_vring_fd(vu, m);
		break;
	case TB_VU_GET_PROTOCOL_FEATURES:
		rc = tb_vu_get_protocol_features(vu, r);
		explicit_reply = true;
		break;
	case TB_VU_SET_PROTOCOL_FEATURES:
		rc = tb_vu_set_protocol_features(vu, m);
		break;
	case TB_VU_GET_QUEUE_NUM:
		rc = tb_vu_get_queue_num(vu, r);
		explicit_reply = true;
		break;
	case TB_VU_SET_VRING_ENABLE:
		rc = tb_vu_set_vring_enable(vu, m);
		break;
	case TB_VU_SET_BACKEND_REQ_FD:
		rc = tb_vu_set_backend_req_fd(vu, m);
		break;
	case TB_VU_GET_CONFIG:
		rc = tb_vu_get_config(vu, m, r);
		explicit_reply = true;
		break;
	case TB_VU_SET_CONFIG:
		rc = tb_vu_set_config(vu, m);
		break;
	default:
		vu->unknown_requests++;
		tb_warn("vhost-user: unsupported request %u (%s)%s", m->hdr.request,
			tb_vu_request_name(m->hdr.request),
			(m->hdr.flags & TB_VU_FLAG_NEED_REPLY) ? ", failing it" : "");
		rc = -ENOSYS;
		break;
	}

	/* every fd a handler did not take is closed here, on every path */
	for (unsigned int i = 0; i < m->nfds; i++)
		tb_close_fd(&m->fds[i]);
	m->nfds = 0;

	if (rc < 0)
		tb_dbg("vhost-user: %s failed: %s", tb_vu_request_name(m->hdr.request),
		       strerror(-rc));

	if (explicit_reply) {
		*send_reply = true;
	} else if ((m->hdr.flags & TB_VU_FLAG_NEED_REPLY) &&
		   tb_vu_has_pf(vu, TB_VU_PF_REPLY_ACK)) {
		/* REPLY_ACK: 0 success, non-zero failure */
		tb_vu_reply_u64(r, rc < 0 ? 1 : 0);
		*send_reply = true;
	}
	if (*send_reply) {
		r->hdr.request = m->hdr.request;
		r->hdr.flags = TB_VU_VERSION | TB_VU_FLAG_REPLY;
	}
	return rc;
}

/* ------------------------------------------------------------------------
 * Socket I/O
 * ------------------------------------------------------------------------
 */

/* read exactly len bytes; -ETIMEDOUT on SO_RCVTIMEO, -ECONNRESET on EOF */
static int tb_vu_read_full(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = read(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return (errno == EAGAIN || errno == EWOULDBLOCK) ? -ETIMEDOUT : -errno;
		if (n == 0)
			return -ECONNRESET;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static void tb_vu_msg_close_fds(struct tb_vu_msg *m)
{
	for (unsigned int i = 0; i < m->nfds; i++)
		tb_close_fd(&m->fds[i]);
	m->nfds = 0;
}

/*
 * Move the SCM_RIGHTS fds of a received @mh into @m (closing any beyond
 * TB_VU_MAX_FDS: never leak one we cannot hold). -EMSGSIZE if the
 * ancillary data was truncated, else 0.
 */
static int tb_vu_take_fds(struct msghdr *mh, struct tb_vu_msg *m)
{
	struct cmsghdr *cm;

	for (cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
		size_t cnt;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		cnt = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < cnt; i++) {
			int rfd;

			memcpy(&rfd, CMSG_DATA(cm) + i * sizeof(int), sizeof(rfd));
			if (m->nfds < TB_VU_MAX_FDS)
				m->fds[m->nfds++] = rfd;
			else
				close(rfd);
		}
	}
	if (mh->msg_flags & MSG_CTRUNC) {
		tb_warn("vhost-user: ancillary data truncated");
		return -EMSGSIZE;
	}
	return 0;
}

int tb_vu_recv(int fd, struct tb_vu_msg *m)
{
	char cbuf[CMSG_SPACE(TB_VU_MAX_FDS * sizeof(int))];
	struct iovec iov = { .iov_base = &m->hdr, .iov_len = sizeof(m->hdr) };
	struct msghdr mh = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = cbuf,
		.msg_controllen = sizeof(cbuf),
	};
	ssize_t n;
	int rc;

	m->nfds = 0;
	do {
		n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return (errno == EAGAIN || errno == EWOULDBLOCK) ? -ETIMEDOUT : -errno;
	if (n == 0)
		return -ECONNRESET;

	if (tb_vu_take_fds(&mh, m) < 0) {
		rc = -EMSGSIZE;
		goto err;
	}
	if ((size_t)n < sizeof(m->hdr)) {
		rc = tb_vu_read_full(fd, (uint8_t *)&m->hdr + n, sizeof(m->hdr) - (size_t)n);
		if (rc < 0)
			goto err;
	}
	if ((m->hdr.flags & TB_VU_VERSION_MASK) != TB_VU_VERSION) {
		tb_warn("vhost-user: bad version in flags 0x%x", m->hdr.flags);
		rc = -EPROTO;
		goto err;
	}
	if (m->hdr.size > sizeof(m->p)) {
		tb_warn("vhost-user: %s payload of %u bytes is too large",
			tb_vu_request_name(m->hdr.request), m->hdr.size);
		rc = -EMSGSIZE;
		goto err;
	}
	/* zero the rest so short payloads never expose stale bytes */
	memset(&m->p, 0, sizeof(m->p));
	rc = tb_vu_read_full(fd, &m->p, m->hdr.size);
	if (rc < 0)
		goto err;
	return 0;
err:
	tb_vu_msg_close_fds(m);
	return rc;
}

static int tb_vu_send_flags(int fd, const struct tb_vu_msg *m, int flags);

int tb_vu_send(int fd, const struct tb_vu_msg *m)
{
	return tb_vu_send_flags(fd, m, 0);
}

/*
 * A reply never waits: a front-end reads each reply before its next request,
 * so one that lets the socket fill up is not reading at all; its session
 * ends (-EAGAIN) instead of stalling the loop for the send timeout.
 */
static int tb_vu_send_reply(int fd, const struct tb_vu_msg *m)
{
	return tb_vu_send_flags(fd, m, MSG_DONTWAIT);
}

static int tb_vu_send_flags(int fd, const struct tb_vu_msg *m, int flags)
{
	struct iovec iov[2] = {
		{ .iov_base = (void *)&m->hdr, .iov_len = sizeof(m->hdr) },
		{ .iov_base = (void *)&m->p, .iov_len = m->hdr.size },
	};
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = m->hdr.size ? 2 : 1 };
	size_t left = sizeof(m->hdr) + m->hdr.size;

	if (m->hdr.size > sizeof(m->p))
		return -EINVAL;
	while (left) {
		ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL | flags);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (flags & MSG_DONTWAIT))
			return -errno;
		if (n < 0)
			return (errno == EAGAIN || errno == EWOULDBLOCK) ? -ETIMEDOUT : -errno;
		if ((flags & MSG_DONTWAIT) && (size_t)n != left)
			return -EAGAIN;	/* half a reply: the session cannot go on */
		left -= (size_t)n;
		/* partial write: advance the iovecs */
		while (n > 0 && mh.msg_iovlen) {
			if ((size_t)n >= mh.msg_iov->iov_len) {
				n -= (ssize_t)mh.msg_iov->iov_len;
				mh.msg_iov++;
				mh.msg_iovlen--;
			} else {
				mh.msg_iov->iov_base = (uint8_t *)mh.msg_iov->iov_base + n;
				mh.msg_iov->iov_len -= (size_t)n;
				n = 0;
			}
		}
	}
	return 0;
}

/*
 * A whole message without fds that has arrived, copied into vu->rx.msg and
 * left in the socket: 1 (vu->rx.peeked set), 0 when there is nothing yet,
 * -EAGAIN when the message is incomplete or carries fds (then it is taken
 * the ordinary way), -errno when the session must end. The reply to a
 * request read this way is prepared and made durable while the request
 * stays in the socket, which it leaves just before the reply goes out
 * (tb_vu_rx_consume()): a daemon killed before, while it makes its state
 * durable for instance, does not leave the front-end waiting for a reply
 * that no one owes it any more: a restarted daemon that takes the session
 * up again reads the same request and answers it.
 */
static int tb_vu_rx_peek(struct tb_vu *vu)
{
	struct tb_vu_msg *m = &vu->rx.msg;
	char cbuf[CMSG_SPACE(TB_VU_MAX_FDS * sizeof(int))];
	struct iovec iov[2] = {
		{ .iov_base = &m->hdr, .iov_len = sizeof(m->hdr) },
		{ .iov_base = &m->p, .iov_len = sizeof(m->p) },
	};
	struct msghdr mh = {
		.msg_iov = iov,
		.msg_iovlen = 2,
		.msg_control = cbuf,
		.msg_controllen = sizeof(cbuf),
	};
	struct tb_vu_msg fds = { .nfds = 0 };
	ssize_t n;

	do {
		n = recvmsg(vu->sock_fd, &mh, MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -errno;
	if (n == 0)
		return -ECONNRESET;
	/* a peek installs the fds again each time: close them, read it for real */
	if (tb_vu_take_fds(&mh, &fds) < 0 || fds.nfds) {
		tb_vu_msg_close_fds(&fds);
		return -EAGAIN;
	}
	if ((size_t)n < sizeof(m->hdr) || m->hdr.size > sizeof(m->p) ||
	    (size_t)n < sizeof(m->hdr) + m->hdr.size ||
	    (m->hdr.flags & TB_VU_VERSION_MASK) != TB_VU_VERSION)
		return -EAGAIN;	/* incomplete, or the ordinary path refuses it */
	/* zero what lies past the payload, as the ordinary path does */
	memset((uint8_t *)&m->p + m->hdr.size, 0, sizeof(m->p) - m->hdr.size);
	m->nfds = 0;
	vu->rx.got = sizeof(m->hdr) + m->hdr.size;
	vu->rx.peeked = true;
	return 1;
}

/* Take a peeked message, answered now, out of the socket. 0 or -errno. */
static int tb_vu_rx_consume(struct tb_vu *vu)
{
	static uint8_t sink[sizeof(struct tb_vu_hdr) + sizeof(((struct tb_vu_msg *)0)->p)];
	size_t left = vu->rx.got;

	vu->rx.peeked = false;
	vu->rx.got = 0;
	while (left) {
		ssize_t n = recv(vu->sock_fd, sink, left, MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			/* it was there a moment ago: the connection is broken */
			tb_warn("vhost-user: an answered request could not be taken: %s",
				n < 0 ? strerror(errno) : "end of stream");
			return n < 0 ? -errno : -ECONNRESET;
		}
		left -= (size_t)n;
	}
	return 0;
}

/*
 * Take what has arrived of the current message without waiting: 1 when it
 * is complete in vu->rx.msg, 0 when more is to come, -errno when the session
 * must end. Never reads past the message, so the fds of the next one stay
 * in the socket.
 */
static int tb_vu_rx_step(struct tb_vu *vu)
{
	struct tb_vu_rx *rx = &vu->rx;
	struct tb_vu_msg *m = &rx->msg;
	const size_t hdr = sizeof(m->hdr);

	if (!rx->started_ms) {
		int rc = tb_vu_rx_peek(vu);

		if (rc != -EAGAIN)
			return rc;
		/* incomplete or with fds: take it the ordinary way */
		rx->started_ms = tb_now_ms();
		rx->got = 0;
		m->nfds = 0;
	}
	for (;;) {
		char cbuf[CMSG_SPACE(TB_VU_MAX_FDS * sizeof(int))];
		size_t want = rx->got < hdr ? hdr - rx->got : hdr + m->hdr.size - rx->got;
		struct iovec iov = {
			.iov_base = rx->got < hdr ? (uint8_t *)&m->hdr + rx->got :
						    (uint8_t *)&m->p + (rx->got - hdr),
			.iov_len = want,
		};
		struct msghdr mh = {
			.msg_iov = &iov,
			.msg_iovlen = 1,
			.msg_control = cbuf,
			.msg_controllen = sizeof(cbuf),
		};
		ssize_t n;

		if (!want)
			return 1;
		n = recvmsg(vu->sock_fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -errno;
		if (n == 0)
			return -ECONNRESET;
		if (tb_vu_take_fds(&mh, m) < 0)
			return -EMSGSIZE;
		rx->got += (size_t)n;
		if (rx->got != hdr)
			continue;
		if ((m->hdr.flags & TB_VU_VERSION_MASK) != TB_VU_VERSION) {
			tb_warn("vhost-user: bad version in flags 0x%x", m->hdr.flags);
			return -EPROTO;
		}
		if (m->hdr.size > sizeof(m->p)) {
			tb_warn("vhost-user: %s payload of %u bytes is too large",
				tb_vu_request_name(m->hdr.request), m->hdr.size);
			return -EMSGSIZE;
		}
		/* zero the rest so short payloads never expose stale bytes */
		memset(&m->p, 0, sizeof(m->p));
	}
}

static void tb_vu_rx_reset(struct tb_vu *vu)
{
	tb_vu_msg_close_fds(&vu->rx.msg);
	vu->rx.started_ms = 0;
	vu->rx.got = 0;
	vu->rx.peeked = false;
}

int64_t tb_vu_rx_due(const struct tb_vu *vu, uint64_t now_ms)
{
	uint64_t end;

	if (vu->sock_fd < 0 || !vu->rx.started_ms)
		return -1;
	end = vu->rx.started_ms + TB_VU_MSG_TIMEOUT_MS;
	return now_ms >= end ? 0 : (int64_t)(end - now_ms);
}

int tb_vu_serve_one(struct tb_vu *vu)
{
	static struct tb_vu_msg reply;	/* large; one session at a time */
	struct tb_vu_msg *msg = &vu->rx.msg;
	bool send_reply;
	int rc;

	rc = tb_vu_rx_step(vu);
	if (rc < 0) {
		tb_vu_rx_reset(vu);
		return rc;
	}
	if (rc == 0) {
		/* a message must arrive whole within the bound, not byte by byte */
		if (tb_vu_rx_due(vu, tb_now_ms()) == 0) {
			tb_warn("vhost-user: a message did not arrive whole within %u ms "
				"(%zu bytes so far)", TB_VU_MSG_TIMEOUT_MS, vu->rx.got);
			tb_vu_rx_reset(vu);
			return -ETIMEDOUT;
		}
		return 0;
	}
	vu->rx.started_ms = 0;
	tb_dbg("vhost-user: <- %s (size %u, flags 0x%x, %u fds)",
	       tb_vu_request_name(msg->hdr.request), msg->hdr.size, msg->hdr.flags,
	       msg->nfds);
	tb_vu_dispatch(vu, msg, &reply, &send_reply);
	msg->nfds = 0;	/* the dispatcher consumed them */
	/* whatever must outlive us is durable before the front-end hears back */
	if (vu->ops->before_reply)
		vu->ops->before_reply(vu->opaque);
	/*
	 * Durable: only now may the request leave the socket, just before
	 * its reply (taken after the reply, a daemon killed in between would
	 * leave its successor to answer it a second time).
	 */
	if (vu->rx.peeked) {
		rc = tb_vu_rx_consume(vu);
		if (rc < 0)
			return rc;
	}
	if (send_reply) {
		rc = tb_vu_send_reply(vu->sock_fd, &reply);
		if (rc < 0) {
			tb_warn("vhost-user: reply to %s: %s",
				tb_vu_request_name(msg->hdr.request), strerror(-rc));
			return rc;
		}
	}
	return 0;
}

/* @fd becomes the session's connection; the device model hears of it */
static void tb_vu_start_session(struct tb_vu *vu, int fd)
{
	struct timeval tv = { .tv_sec = 5 };

	/* a peer that stops mid-message must not wedge the event loop */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	vu->sock_fd = fd;
	if (vu->ops->session)
		vu->ops->session(vu->opaque, true);
}

void tb_vu_attach(struct tb_vu *vu, int fd)
{
	tb_vu_detach(vu);
	tb_vu_start_session(vu, fd);
}

void tb_vu_attach_resumed(struct tb_vu *vu, int fd, bool features_set,
			  uint64_t features)
{
	struct tb_vu_queue *q;
	unsigned int i;

	tb_close_fd(&vu->sock_fd);
	tb_vu_start_session(vu, fd);
	vu->features = features & tb_vu_offered_features(vu);
	vu->features_set = features_set;
	if (features_set && vu->ops->set_features)
		vu->ops->set_features(vu->opaque, vu->features);
	for (i = 0; i < vu->ops->nqueues; i++) {
		q = &vu->q[i];
		if (!q->addr_set)
			continue;
		tb_vu_queue_map(vu, q);
		/*
		 * Buffers complete in order here: the used index is where the
		 * previous process's work ended; one it popped but never
		 * returned is read again.
		 */
		if (q->started && q->vr.num)
			q->vr.last_avail = q->vr.used_idx;
	}
	for (i = 0; i < vu->ops->nqueues; i++)
		tb_vu_notify_queue(vu, i);
}

void tb_vu_detach(struct tb_vu *vu)
{
	bool was_up = vu->sock_fd >= 0;

	if (vu->ops->quiesce)
		vu->ops->quiesce(vu->opaque);
	tb_vu_rx_reset(vu);
	for (unsigned int i = 0; i < TB_VU_MAX_QUEUES; i++)
		tb_vu_queue_free(&vu->q[i]);
	tb_mem_clear(&vu->mem);
	tb_close_fd(&vu->backend_fd);
	tb_close_fd(&vu->sock_fd);
	vu->features = 0;
	vu->features_set = false;
	vu->protocol_features = 0;
	vu->owner = false;
	if (was_up && vu->ops->session)
		vu->ops->session(vu->opaque, false);
}

bool tb_vu_can_notify(const struct tb_vu *vu)
{
	return vu->backend_fd >= 0 && tb_vu_has_pf(vu, TB_VU_PF_CONFIG) &&
	       tb_vu_has_pf(vu, TB_VU_PF_BACKEND_REQ);
}

int tb_vu_notify_config(struct tb_vu *vu)
{
	struct tb_vu_msg m;

	if (!tb_vu_can_notify(vu))
		return -ENOTCONN;
	memset(&m.hdr, 0, sizeof(m.hdr));
	m.hdr.request = TB_VU_BACKEND_CONFIG_CHANGE_MSG;
	/* no NEED_REPLY: the front-end answers by GET_CONFIG on the main socket */
	m.hdr.flags = TB_VU_VERSION;
	m.hdr.size = 0;
	/* never wait on a front-end that does not read: EAGAIN = not sent */
	{
		ssize_t n = send(vu->backend_fd, &m.hdr, sizeof(m.hdr),
				 MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n < 0)
			return -errno;
		return n == (ssize_t)sizeof(m.hdr) ? 0 : -EIO;
	}
}

int tb_vu_backend_readable(struct tb_vu *vu)
{
	uint8_t buf[256];
	ssize_t n;

	n = recv(vu->backend_fd, buf, sizeof(buf), MSG_DONTWAIT);
	if (n > 0) {
		tb_dbg("vhost-user: %zd unexpected bytes on the backend channel", n);
		return 0;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	tb_info("vhost-user: backend channel closed");
	tb_close_fd(&vu->backend_fd);
	return -EPIPE;
}
