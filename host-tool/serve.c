// SPDX-License-Identifier: GPL-2.0
/*
 * serve.c - single-threaded poll() loop of the backend daemon.
 *
 * Sources: signals (signalfd), the vhost-user listener or session socket,
 * the backend channel, each started queue's kick eventfd -- or, instead of
 * all of those, a peer's fds (QMP, libvirt: peer.h) --, the control
 * listener and its clients, and the punch pool's eventfd (punch.h: the
 * only other threads, which release ballooned and reported memory; the
 * loop hands the buffers back as they finish). Host-side timers come from
 * tb_dev_tick() and the peer's tick.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <grp.h>
#include <libgen.h>
#include <limits.h>
#include <sys/file.h>

#include "ctl.h"
#include "dev.h"
#include "peer.h"
#include "sd.h"
#include "serve.h"
#include "session.h"
#include "state.h"
#include "util.h"
#include "vu.h"

#define TB_MAX_CLIENTS 32
/* a client that does not read its events is dropped past this backlog */
#define TB_CLIENT_OUT_MAX (1U << 20)
/* a client that sends no request this long after connecting is dropped */
#define TB_CLIENT_IDLE_MS 30000U
/* at most one progress event per client this often (the outcome always) */
#define TB_CLIENT_PROGRESS_MS 50U

/**
 * struct tb_client - one control connection
 * @in, @inlen: the request line being received
 * @out: pending output, bytes [@outoff, @outlen) not sent yet
 * @connected_ms: when it connected; @requested: it sent a request since
 * @negotiated: it sent qmp_capabilities (commands and events from then on)
 * @progress_ms: when it was last sent a progress event
 * @pending: the latest progress event held back by the rate bound (sent when
 *	the window ends, or just before the outcome), NULL if none
 */
struct tb_client {
	int fd;
	char *in;
	size_t inlen;
	char *out;
	size_t outoff;
	size_t outlen;
	size_t outcap;
	bool dead;
	bool requested;
	bool negotiated;
	uint64_t connected_ms;
	uint64_t progress_ms;
	json_object *pending;
};

struct tb_serve {
	struct tb_vu vu;
	struct tb_dev dev;
	int vu_listen_fd;
	int ctl_listen_fd;
	int sig_fd;
	struct tb_client clients[TB_MAX_CLIENTS];
	unsigned int nclients;
	/* events raised while a request is handled go out after its reply */
	bool in_request;
	json_object *deferred;
	const char *state_path;
	uint64_t saved_gen;
	bool save_failed;
	/* systemd: passed sockets, notifications, the session's fd store */
	struct tb_sd sd;
	/* the session snapshot as last written, and whether it changed since */
	char *session_saved;
	json_object *session_snap;
	bool session_dirty;
	/* who may use the control socket besides root and our own uid */
	gid_t peer_gid;
	bool peer_gid_set;
	/* queues whose last pass hit its work bound: go on after a poll round */
	uint32_t queue_more;
	/* --qmp / --libvirt: the VM's stock balloon, instead of vhost-user */
	struct tb_peer *peer;
	/* the punch pool (vhost-user, --punch-threads > 0) */
	struct tb_punch_pool pool;
	bool pool_up;
};

/*
 * Keep the fd store and the session snapshot in step with the vhost-user
 * session (only with a state file: without one a restart cannot resume).
 */
static void tb_serve_track_session(struct tb_serve *s)
{
	json_object *snap;
	const char *str;

	if (!s->state_path)
		return;
	if (tb_session_store_fds(&s->vu, &s->sd))
		s->session_dirty = true;
	snap = tb_session_to_json(&s->vu);
	str = snap ? json_object_to_json_string_ext(snap, JSON_C_TO_STRING_PLAIN) : "";
	if (!s->session_saved || strcmp(str, s->session_saved)) {
		free(s->session_saved);
		s->session_saved = strdup(str);
		/* kept for the next write: no second serialisation or parse */
		json_object_put(s->session_snap);
		s->session_snap = json_object_get(snap);
		s->session_dirty = true;
	}
	json_object_put(snap);
}

/* write the state file if anything changed since the last write */
static void tb_serve_save(struct tb_serve *s)
{
	int rc;

	if (!s->state_path)
		return;
	tb_serve_track_session(s);
	if (s->saved_gen == s->dev.gen && !s->session_dirty)
		return;
	rc = tb_state_write(&s->dev, s->session_snap, s->state_path);
	if (rc < 0) {
		if (!s->save_failed)
			tb_err("state file %s: %s", s->state_path, strerror(-rc));
		s->save_failed = true;
		return;
	}
	s->save_failed = false;
	s->saved_gen = s->dev.gen;
	s->session_dirty = false;
}

/* the earlier of two "ms until due" values, where -1 means never */
static int64_t tb_due_min(int64_t a, int64_t b)
{
	return a < 0 ? b : (b < 0 || a < b) ? a : b;
}

/* ------------------------------------------------------------------------
 * Control clients
 * ------------------------------------------------------------------------
 */

static void tb_client_queue(struct tb_client *c, const char *s, size_t len)
{
	size_t need;

	if (c->dead)
		return;
	/* what was sent goes once the backlog is mostly sent, not per send */
	if (c->outoff && (c->outoff == c->outlen || c->outoff > c->outcap / 2)) {
		memmove(c->out, c->out + c->outoff, c->outlen - c->outoff);
		c->outlen -= c->outoff;
		c->outoff = 0;
	}
	need = c->outlen + len + 1;
	if (need > TB_CLIENT_OUT_MAX) {
		tb_warn("control: client %d is not reading, dropped", c->fd);
		c->dead = true;
		return;
	}
	if (need > c->outcap) {
		size_t cap = c->outcap ? c->outcap : 4096;
		char *p;

		while (cap < need)
			cap *= 2;
		p = realloc(c->out, cap);
		if (!p) {
			c->dead = true;
			return;
		}
		c->out = p;
		c->outcap = cap;
	}
	memcpy(c->out + c->outlen, s, len);
	c->out[c->outlen + len] = '\n';
	c->outlen += len + 1;
}

static void tb_client_send_json(struct tb_client *c, json_object *o)
{
	size_t len;
	const char *s = json_object_to_json_string_length(o,
		JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);

	tb_client_queue(c, s, len);
}

static void tb_client_flush(struct tb_client *c)
{
	while (c->outoff < c->outlen && !c->dead) {
		ssize_t n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			c->dead = true;
			return;
		}
		c->outoff += (size_t)n;
	}
	if (c->outoff == c->outlen)
		c->outoff = c->outlen = 0;
}

static void tb_client_free(struct tb_client *c)
{
	json_object_put(c->pending);
	tb_close_fd(&c->fd);
	free(c->in);
	free(c->out);
	memset(c, 0, sizeof(*c));
	c->fd = -1;
}

static bool tb_event_is_progress(json_object *o)
{
	json_object *e;

	/* rate-bound like progress: a guest moving its balloon on its own */
	return json_object_object_get_ex(o, "event", &e) &&
	       (!strcmp(json_object_get_string(e), "BALLOON_PROGRESS") ||
		!strcmp(json_object_get_string(e), "BALLOON_CHANGE"));
}

static void tb_client_send_pending(struct tb_client *c, uint64_t now)
{
	if (!c->pending)
		return;
	tb_client_send_json(c, c->pending);
	json_object_put(c->pending);
	c->pending = NULL;
	c->progress_ms = now;
}

/*
 * At most one progress event per client per TB_CLIENT_PROGRESS_MS: one
 * that comes sooner waits (the latest replaces the one waiting) until the
 * window ends or an outcome follows, which it then precedes. Nothing is
 * lost but intermediate states, and a flood of reports costs each client
 * a bounded rate.
 */
static void tb_serve_broadcast(struct tb_serve *s, json_object *o)
{
	bool progress = tb_event_is_progress(o);
	uint64_t now = tb_now_ms();

	for (unsigned int i = 0; i < s->nclients; i++) {
		struct tb_client *c = &s->clients[i];

		/* as QMP: no events before the capabilities negotiation */
		if (!c->negotiated)
			continue;
		if (progress && c->progress_ms && now - c->progress_ms < TB_CLIENT_PROGRESS_MS) {
			json_object_put(c->pending);
			c->pending = json_object_get(o);
			continue;
		}
		if (progress) {
			json_object_put(c->pending);
			c->pending = NULL;
			c->progress_ms = now;
		} else {
			tb_client_send_pending(c, now);
		}
		tb_client_send_json(c, o);
		tb_client_flush(c);
	}
}

/* send held-back progress whose window ended; ms until the next, or -1 */
static int64_t tb_serve_pending_progress(struct tb_serve *s, uint64_t now)
{
	int64_t next = -1;

	for (unsigned int i = 0; i < s->nclients; i++) {
		struct tb_client *c = &s->clients[i];
		uint64_t due = c->progress_ms + TB_CLIENT_PROGRESS_MS;

		if (!c->pending || c->dead)
			continue;
		if (now >= due) {
			tb_client_send_pending(c, now);
			tb_client_flush(c);
			continue;
		}
		next = tb_due_min(next, (int64_t)(due - now));
	}
	return next;
}

static void tb_serve_flush_deferred(struct tb_serve *s)
{
	size_t n;

	if (!s->deferred)
		return;
	n = json_object_array_length(s->deferred);
	for (size_t i = 0; i < n; i++)
		tb_serve_broadcast(s, json_object_array_get_idx(s->deferred, i));
	json_object_put(s->deferred);
	s->deferred = NULL;
}

/* the peer's primary or a supplementary group is --socket-group */
static bool tb_serve_peer_in_group(const struct tb_serve *s, int fd, const struct ucred *cred)
{
	gid_t groups[256];
	socklen_t len = sizeof(groups);

	if (!s->peer_gid_set)
		return false;
	if (cred->gid == s->peer_gid)
		return true;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0)
		return false;
	for (size_t i = 0; i < len / sizeof(groups[0]); i++)
		if (groups[i] == s->peer_gid)
			return true;
	return false;
}

static void tb_serve_reap_clients(struct tb_serve *s);

/* the slots are full: make room by dropping the oldest client that never asked */
static void tb_serve_drop_idle(struct tb_serve *s)
{
	struct tb_client *old = NULL;

	for (unsigned int i = 0; i < s->nclients; i++) {
		struct tb_client *c = &s->clients[i];

		if (!c->requested && !c->dead && (!old || c->connected_ms < old->connected_ms))
			old = c;
	}
	if (!old)
		return;
	tb_warn("control: all %u slots taken; dropping client %d, idle since it "
		"connected", TB_MAX_CLIENTS, old->fd);
	old->dead = true;
	tb_serve_reap_clients(s);
}

/*
 * Drop clients that sent no request within TB_CLIENT_IDLE_MS of connecting;
 * returns ms until the next one is due, or -1.
 */
static int64_t tb_serve_idle_clients(struct tb_serve *s, uint64_t now)
{
	int64_t next = -1;

	for (unsigned int i = 0; i < s->nclients; i++) {
		struct tb_client *c = &s->clients[i];
		uint64_t due = c->connected_ms + TB_CLIENT_IDLE_MS;

		if (c->requested || c->dead)
			continue;
		if (now >= due) {
			tb_info("control: client %d sent nothing in %u s, dropped", c->fd,
				TB_CLIENT_IDLE_MS / 1000);
			c->dead = true;
			continue;
		}
		next = tb_due_min(next, (int64_t)(due - now));
	}
	return next;
}

static void tb_serve_accept_client(struct tb_serve *s)
{
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	struct tb_client *c;
	json_object *g;
	int fd;

	fd = accept4(s->ctl_listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0)
		return;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0 ||
	    (cred.uid != 0 && cred.uid != geteuid() && !tb_serve_peer_in_group(s, fd, &cred))) {
		tb_warn("control: connection from uid %d refused",
			clen == sizeof(cred) ? (int)cred.uid : -1);
		close(fd);
		return;
	}
	if (s->nclients >= TB_MAX_CLIENTS)
		tb_serve_drop_idle(s);
	if (s->nclients >= TB_MAX_CLIENTS) {
		static const char busy[] =
			"{\"error\":{\"class\":\"GenericError\",\"desc\":\"too many clients\"}}\n";

		if (send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
			tb_dbg("control: %s", strerror(errno));
		close(fd);
		return;
	}
	c = &s->clients[s->nclients++];
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->connected_ms = tb_now_ms();
	tb_dbg("control: client %d connected (pid %d uid %d)", fd, (int)cred.pid,
	       (int)cred.uid);
	g = tb_ctl_greeting();
	tb_client_send_json(c, g);
	json_object_put(g);
	tb_client_flush(c);
}

static void tb_serve_client_line(struct tb_serve *s, struct tb_client *c,
				 char *line, size_t len)
{
	json_object *resp;

	while (len && (line[len - 1] == '\r' || line[len - 1] == ' '))
		len--;
	if (!len)
		return;
	c->requested = true;
	s->in_request = true;
	resp = tb_ctl_handle_line(&s->dev, line, len, tb_now_ms(), &c->negotiated);
	s->in_request = false;
	tb_client_send_json(c, resp);
	json_object_put(resp);
	tb_client_flush(c);
	tb_serve_flush_deferred(s);
}

static void tb_serve_client_read(struct tb_serve *s, struct tb_client *c)
{
	char buf[4096];
	ssize_t n;

	n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		if (c->inlen)
			tb_dbg("control: client %d left mid-line", c->fd);
		c->dead = true;
		return;
	}
	for (ssize_t i = 0; i < n && !c->dead; i++) {
		if (buf[i] == '\n') {
			if (c->in)
				tb_serve_client_line(s, c, c->in, c->inlen);
			c->inlen = 0;
			continue;
		}
		if (c->inlen >= TB_CTL_LINE_MAX) {
			json_object *e = tb_ctl_error(NULL, "request too long");

			tb_client_send_json(c, e);
			json_object_put(e);
			tb_client_flush(c);
			c->dead = true;
			break;
		}
		if (!c->in) {
			c->in = malloc(TB_CTL_LINE_MAX);
			if (!c->in) {
				c->dead = true;
				break;
			}
		}
		c->in[c->inlen++] = buf[i];
	}
}

/* drop dead clients, keeping the array dense */
static void tb_serve_reap_clients(struct tb_serve *s)
{
	unsigned int j = 0;

	for (unsigned int i = 0; i < s->nclients; i++) {
		if (s->clients[i].dead) {
			tb_dbg("control: client %d closed", s->clients[i].fd);
			tb_client_free(&s->clients[i]);
			continue;
		}
		if (i != j)
			s->clients[j] = s->clients[i];
		j++;
	}
	s->nclients = j;
}

/* ------------------------------------------------------------------------
 * Glue: vhost-user <-> device <-> control
 * ------------------------------------------------------------------------
 */

/*
 * Guest memory that vanishes under us (a front-end truncating a file it
 * could not seal) raises SIGBUS on the next access. Accesses made on the
 * guest's behalf run armed: the handler jumps back and the device is marked
 * broken instead of the daemon dying. Outside them SIGBUS stays fatal.
 */
static sigjmp_buf *volatile tb_sigbus_env;

static void tb_sigbus(int sig, siginfo_t *si, void *uc)
{
	(void)si;
	(void)uc;
	if (tb_sigbus_env)
		siglongjmp(*tb_sigbus_env, 1);
	signal(sig, SIG_DFL);
	raise(sig);
}

static void tb_sigbus_install(void)
{
	struct sigaction sa = { .sa_sigaction = tb_sigbus, .sa_flags = SA_SIGINFO };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
}

static void tb_serve_sigbus(struct tb_serve *s, unsigned int idx)
{
	tb_sigbus_env = NULL;
	tb_err("vhost-user: queue %u: guest memory vanished under the daemon (SIGBUS): "
	       "the front-end shrank a memory file", idx);
	tb_dev_set_broken(&s->dev, "guest memory vanished (SIGBUS): the front-end "
			  "shrank a memory file", tb_now_ms());
	tb_vu_queue_error(&s->vu, idx);
}

/* release guest memory; the pool's threads call this too */
static int tb_serve_punch(void *opaque, int fd, uint64_t off, uint64_t len)
{
	struct tb_serve *s = opaque;
	uint32_t delay = __atomic_load_n(&s->dev.test_punch_delay_ms, __ATOMIC_RELAXED);

	if (delay) {
		struct timespec ts = { .tv_sec = delay / 1000,
				       .tv_nsec = (long)(delay % 1000) * 1000000L };

		nanosleep(&ts, NULL);
	}
	return tb_mem_punch_fallocate(NULL, fd, off, len);
}

/*
 * The buffers whose memory the pool released go back, in ring order. They
 * are counted first and the state file records the release before any of
 * them is returned: a buffer back in the used ring is never delivered
 * again, so a daemon killed right after would otherwise lose its bytes.
 */
static void tb_serve_reap(struct tb_serve *s)
{
	struct tb_punch_job *job;
	volatile unsigned int mask = 0;
	sigjmp_buf env;

	if (!s->pool_up)
		return;
	s->pool.reaping = tb_punch_take(&s->pool);
	if (!s->pool.reaping)
		return;
	for (job = s->pool.reaping; job; job = job->fifo_next)
		tb_dev_punched(&s->dev, job);
	tb_serve_save(s);
	if (sigsetjmp(env, 1)) {
		/* the ring of the job at the head is gone: drop it, go on */
		job = s->pool.reaping;
		s->pool.reaping = job->fifo_next;
		tb_serve_sigbus(s, job->queue);
		tb_punch_job_free(job);
	}
	tb_sigbus_env = &env;
	while ((job = s->pool.reaping)) {
		/* a queue stopped or broken since: its ring is not ours to write */
		if (tb_vu_queue_ready(&s->vu, job->queue)) {
			tb_vring_push(&s->vu.q[job->queue].vr, job->head, 0);
			mask |= 1U << job->queue;
		}
		s->pool.reaping = job->fifo_next;
		tb_punch_job_free(job);
	}
	tb_sigbus_env = NULL;
	for (unsigned int i = 0; mask >> i; i++)
		if (mask & (1U << i) && tb_vu_queue_ready(&s->vu, i) &&
		    tb_vring_need_notify(&s->vu.q[i].vr))
			tb_vu_queue_call(&s->vu, i);
}

/*
 * Before the front-end changes memory or rings (and at the session's end):
 * every submitted punch finishes and its buffer goes back, so no worker
 * uses an fd about to close and the used ring is where the front-end
 * expects it.
 */
static void tb_ops_quiesce(void *opaque)
{
	struct tb_serve *s = opaque;

	if (!s->pool_up)
		return;
	tb_punch_drain(&s->pool);
	tb_serve_reap(s);
}

static void tb_serve_queue(struct tb_serve *s, unsigned int idx)
{
	sigjmp_buf env;
	bool notify;
	int rc;

	s->queue_more &= ~(1U << idx);
	if (!tb_vu_queue_ready(&s->vu, idx) || s->dev.broken)
		return;
	if (sigsetjmp(env, 1)) {
		tb_serve_sigbus(s, idx);
		return;
	}
	tb_sigbus_env = &env;
	rc = tb_dev_process_queue(&s->dev, idx, &s->vu.q[idx].vr, &notify);
	tb_sigbus_env = NULL;
	if (rc < 0) {
		tb_warn("vhost-user: queue %u stopped: driver broke the ring", idx);
		tb_vu_queue_error(&s->vu, idx);
	} else if (rc > 0) {
		/* the pass bound was hit: every other source first, then more */
		s->queue_more |= 1U << idx;
	}
	/* the used ring is published (release fence in tb_vring_push) */
	if (notify)
		tb_vu_queue_call(&s->vu, idx);
	/* buffers with nothing to punch (refused ones) need no thread */
	tb_serve_reap(s);
}

static void tb_serve_update_driver_ok(struct tb_serve *s)
{
	if (s->peer)
		return;	/* the peer says (tb_dev_peer_link) */
	s->dev.notify_ok = tb_vu_can_notify(&s->vu);
	s->dev.driver_ok = s->vu.sock_fd >= 0 && s->vu.features_set &&
			   tb_vu_queue_ready(&s->vu, VIRTIO_TBALLOON_VQ_INFLATE) &&
			   tb_vu_queue_ready(&s->vu, VIRTIO_TBALLOON_VQ_DEFLATE);
}

static void tb_ops_get_config(void *opaque, uint8_t *buf, uint32_t off, uint32_t size)
{
	struct tb_serve *s = opaque;

	tb_dev_get_config(&s->dev, buf, off, size);
}

static int tb_ops_set_config(void *opaque, const uint8_t *buf, uint32_t off,
			     uint32_t size, uint32_t flags)
{
	struct tb_serve *s = opaque;

	int rc;

	(void)flags;	/* migration is not supported: same rules */
	rc = tb_dev_set_config(&s->dev, buf, off, size, tb_now_ms());
	/* on disk before the front-end gets its REPLY_ACK */
	tb_serve_save(s);
	return rc;
}

static void tb_ops_set_features(void *opaque, uint64_t features)
{
	struct tb_serve *s = opaque;

	tb_dev_set_features(&s->dev, features);
}

static void tb_ops_queue_notify(void *opaque, unsigned int idx)
{
	tb_serve_queue(opaque, idx);
}

static void tb_ops_session(void *opaque, bool up)
{
	struct tb_serve *s = opaque;

	tb_info("vhost-user: front-end %s", up ? "connected" : "disconnected");
	tb_dev_session(&s->dev, up, tb_now_ms());
}

static void tb_ops_queue_stop(void *opaque, unsigned int idx)
{
	struct tb_serve *s = opaque;

	tb_dev_queue_stopped(&s->dev, idx, &s->vu.q[idx].vr);
}

static void tb_ops_device_reset(void *opaque)
{
	struct tb_serve *s = opaque;

	tb_dev_reset(&s->dev, tb_now_ms());
}

static void tb_ops_commit(void *opaque)
{
	tb_serve_save(opaque);
}

static void tb_ops_before_reply(void *opaque)
{
	tb_serve_save(opaque);
}

/* ask the driver for fresh statistics when due; ms until next, or -1 */
static int64_t tb_serve_stats(struct tb_serve *s, uint64_t now)
{
	int64_t due = tb_dev_stats_due(&s->dev, now);
	sigjmp_buf env;
	bool notify, asked;

	if (due != 0)
		return due;
	if (!tb_vu_queue_ready(&s->vu, VIRTIO_TBALLOON_VQ_STATS)) {
		s->dev.stats_wanted = false;
		return -1;
	}
	if (sigsetjmp(env, 1)) {
		tb_serve_sigbus(s, VIRTIO_TBALLOON_VQ_STATS);
		return -1;
	}
	tb_sigbus_env = &env;
	asked = tb_dev_stats_request(&s->dev, &s->vu.q[VIRTIO_TBALLOON_VQ_STATS].vr, now,
				     &notify);
	tb_sigbus_env = NULL;
	if (asked && notify)
		tb_vu_queue_call(&s->vu, VIRTIO_TBALLOON_VQ_STATS);
	return -1;
}

static int tb_ops_notify_config(void *opaque)
{
	struct tb_serve *s = opaque;
	int rc;

	if (s->peer) {
		rc = s->peer->ops->set_balloon(s->peer, TB_CFG(&s->dev, num_pages));
		if (rc < 0)
			tb_warn("%s: balloon target not set: %s", s->peer->what,
				strerror(-rc));
		return rc;
	}
	rc = tb_vu_notify_config(&s->vu);

	if (rc < 0)
		tb_warn("vhost-user: config change notification not sent: %s",
			strerror(-rc));
	return rc;
}

static void tb_ops_event(void *opaque, enum tb_event ev, const struct tb_cmd *cmd)
{
	struct tb_serve *s = opaque;
	json_object *e;

	(void)cmd;	/* always s->dev.cmd */
	e = tb_ctl_event(ev, tb_ctl_status(&s->dev, tb_now_ms()));
	if (s->in_request) {
		if (!s->deferred)
			s->deferred = json_object_new_array();
		json_object_array_add(s->deferred, e);
		return;
	}
	tb_serve_broadcast(s, e);
	json_object_put(e);
}

static const struct tb_vu_ops tb_serve_vu_ops = {
	.features = TB_DEV_FEATURES,
	.protocol_features = TB_BIT(TB_VU_PF_MQ) | TB_BIT(TB_VU_PF_REPLY_ACK) |
			     TB_BIT(TB_VU_PF_BACKEND_REQ) | TB_BIT(TB_VU_PF_CONFIG),
	/*
	 * inflateq, deflateq, statsq and reporting_vq: the most a driver can
	 * have with what this device offers (no FREE_PAGE_HINT, whose queue
	 * would come before reporting_vq)
	 */
	.nqueues = VIRTIO_TBALLOON_VQ_REPORTING,
	.config_size = VIRTIO_TBALLOON_CONFIG_SIZE,
	.get_config = tb_ops_get_config,
	.set_config = tb_ops_set_config,
	.set_features = tb_ops_set_features,
	.queue_notify = tb_ops_queue_notify,
	.session = tb_ops_session,
	.queue_stop = tb_ops_queue_stop,
	.quiesce = tb_ops_quiesce,
	.device_reset = tb_ops_device_reset,
	.before_reply = tb_ops_before_reply,
};

static const struct tb_dev_ops tb_serve_dev_ops = {
	.notify_config = tb_ops_notify_config,
	.event = tb_ops_event,
	.commit = tb_ops_commit,
};

static int tb_ops_peer_stop(void *opaque)
{
	struct tb_serve *s = opaque;

	return s->peer->ops->stop(s->peer);
}

static void tb_ops_peer_footprint(void *opaque, uint64_t *ram, uint64_t *res)
{
	struct tb_serve *s = opaque;

	s->peer->ops->footprint(s->peer, ram, res);
}

/* a stock balloon driven through a peer: no rings, no state of our own */
static const struct tb_dev_ops tb_serve_peer_dev_ops = {
	.notify_config = tb_ops_notify_config,
	.event = tb_ops_event,
	.stop = tb_ops_peer_stop,
	.footprint = tb_ops_peer_footprint,
};

/* ------------------------------------------------------------------------
 * Sockets and loop
 * ------------------------------------------------------------------------
 */

/*
 * One daemon per socket: PATH.lock is held (flock) for the daemon's life. A
 * second daemon on the same path is refused while the first lives, instead
 * of unlinking its live socket. Lock files stay: unlinking one would let two
 * daemons lock two different files of the same name.
 */
static int tb_lock_path(const char *path)
{
	char lock[PATH_MAX];
	int fd;

	if (snprintf(lock, sizeof(lock), "%s.lock", path) >= (int)sizeof(lock))
		return -ENAMETOOLONG;
	fd = open(lock, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0600);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int rc = errno == EWOULDBLOCK ? -EADDRINUSE : -errno;

		close(fd);
		return rc;
	}
	return fd;
}

int tb_listen_unix_opts(const char *path, const struct tb_listen_opts *lo,
			struct tb_listener *l)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	mode_t old;
	int fd, rc;

	l->fd = l->lock_fd = -1;
	l->passed = false;
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	rc = tb_lock_path(path);
	if (rc < 0)
		return rc;
	l->lock_fd = rc;
	/* with the lock held, a socket at @path is a dead daemon's: replace it,
	 * never any other kind of file
	 */
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			rc = -EEXIST;
			goto fail;
		}
		unlink(path);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		rc = -errno;
		goto fail;
	}
	old = umask(0077);
	rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (rc < 0 || (lo && lo->gid_set && chown(path, (uid_t)-1, lo->gid) < 0) ||
	    chmod(path, lo ? lo->mode : 0600) < 0 || listen(fd, 64) < 0 ||
	    lstat(path, &st) < 0) {
		rc = -errno;
		close(fd);
		goto fail;
	}
	l->fd = fd;
	l->dev = st.st_dev;
	l->ino = st.st_ino;
	return 0;
fail:
	tb_close_fd(&l->lock_fd);
	return rc;
}

void tb_listener_close(struct tb_listener *l, const char *path)
{
	struct stat st;

	if (l->fd < 0)
		return;
	if (!l->passed && lstat(path, &st) == 0 && st.st_dev == l->dev && st.st_ino == l->ino)
		unlink(path);
	tb_close_fd(&l->fd);
	tb_close_fd(&l->lock_fd);
}

/* the listener for @path: passed in by systemd, or bound here */
static int tb_serve_listener(struct tb_serve *s, const char *path,
			     const struct tb_listen_opts *lo, struct tb_listener *l)
{
	int fd = tb_sd_take_listener(&s->sd, path);

	if (fd >= 0) {
		*l = (struct tb_listener){ .fd = fd, .lock_fd = -1, .passed = true };
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
		tb_info("%s: socket passed in by the service manager", path);
		return 0;
	}
	return tb_listen_unix_opts(path, lo, l);
}

/* a state file needs a directory we can create files in: say so at start */
static int tb_serve_check_state_dir(const char *path)
{
	char *copy = strdup(path);
	const char *dir;
	int rc = 0;

	if (!copy)
		return -ENOMEM;
	dir = dirname(copy);
	if (access(dir, W_OK | X_OK) < 0) {
		rc = -errno;
		tb_err("--state-file %s: directory %s: %s", path, dir, strerror(errno));
	}
	free(copy);
	return rc;
}

static int tb_serve_signals(void)
{
	sigset_t set;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return -errno;
	return signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

enum tb_pfd_kind { TB_PFD_SIG, TB_PFD_VU_LISTEN, TB_PFD_VU, TB_PFD_BACKEND,
		   TB_PFD_KICK, TB_PFD_CTL_LISTEN, TB_PFD_CLIENT, TB_PFD_PEER,
		   TB_PFD_PUNCH };

struct tb_pfd_tag {
	enum tb_pfd_kind kind;
	unsigned int idx;
};

static void tb_serve_accept_vu(struct tb_serve *s)
{
	int fd = accept4(s->vu_listen_fd, NULL, NULL, SOCK_CLOEXEC);

	if (fd < 0)
		return;
	tb_vu_attach(&s->vu, fd);
}

/* a message that did not arrive whole in time ends the session */
static bool tb_serve_rx_expired(struct tb_serve *s)
{
	if (tb_vu_rx_due(&s->vu, tb_now_ms()) != 0)
		return false;
	if (tb_vu_serve_one(&s->vu) < 0) {
		tb_vu_detach(&s->vu);
		tb_serve_update_driver_ok(s);
		return true;
	}
	return false;
}

static void tb_serve_kick(struct tb_serve *s, unsigned int idx, int fd)
{
	uint64_t v;

	/* the fd may have been replaced while handling earlier events */
	if (s->vu.q[idx].kick_fd != fd)
		return;
	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		tb_dbg("kick %u: %s", idx, strerror(errno));
	tb_serve_queue(s, idx);
}

int tb_serve_run(const struct tb_serve_opts *o)
{
	const char *socket_path = o->socket_path, *control_path = o->control_path;
	int vu_fd = o->vu_fd;
	static struct tb_serve s;
	struct pollfd pfd[8 + TB_VU_MAX_QUEUES + TB_MAX_CLIENTS + TB_PEER_FDS];
	struct tb_pfd_tag tag[TB_ARRAY_SIZE(pfd)];
	struct tb_listener vu_l = { .fd = -1, .lock_fd = -1 };
	struct tb_listener ctl_l = { .fd = -1, .lock_fd = -1 };
	json_object *session = NULL;
	int exit_code = 0, rc0;

	tb_vu_init(&s.vu, &tb_serve_vu_ops, &s);
	if (o->deflate_on_oom)
		s.vu.extra_features |= TB_BIT(TB_BALLOON_F_DEFLATE_ON_OOM);
	if (o->free_page_reporting)
		s.vu.extra_features |= TB_BIT(TB_BALLOON_F_REPORTING);
	tb_dev_init(&s.dev, &s.vu.mem, o->qmp_path || o->libvirt_domain ?
		    &tb_serve_peer_dev_ops : &tb_serve_dev_ops, &s);
	s.dev.grace_ms = o->grace_ms;
	s.dev.stats_interval_ms = o->stats_interval_ms;
	s.dev.punch = tb_serve_punch;
	s.dev.punch_opaque = &s;
	s.vu_listen_fd = s.ctl_listen_fd = -1;
	s.peer_gid = o->listen.gid;
	s.peer_gid_set = o->listen.gid_set;
	rc0 = tb_sd_init(&s.sd);
	if (rc0 < 0)
		tb_warn("systemd: LISTEN_FDS: %s", strerror(-rc0));
	if (o->state_path && tb_serve_check_state_dir(o->state_path) < 0) {
		tb_sd_close_unused(&s.sd);
		return 1;
	}
	s.state_path = o->state_path;
	if (s.state_path) {
		int rc = tb_state_read(&s.dev, s.state_path, &session);

		if (rc == 0)
			tb_info("state restored from %s: balloon %u pages (device count "
				"%llu), command %u %s%s", s.state_path, TB_CFG(&s.dev, actual),
				(unsigned long long)s.dev.device_pages, s.dev.cmd.cmd_id,
				tb_state_name(s.dev.cmd.state),
				s.dev.cmd.recovered ? " (in progress, recovering)" : "");
		else if (rc != -ENOENT)
			tb_warn("state file %s ignored: %s", s.state_path, strerror(-rc));
		s.saved_gen = s.dev.gen;
	}

	s.sig_fd = tb_serve_signals();
	if (s.sig_fd < 0) {
		tb_err("signals: %s", strerror(errno));
		goto out_early;
	}
	tb_sigbus_install();
	if (o->qmp_path || o->libvirt_domain) {
		char why[256];

		s.dev.kind = o->qmp_path ? TB_KIND_QMP : TB_KIND_LIBVIRT;
		s.peer = o->qmp_path ?
			tb_qmp_peer_new(&s.dev, o->qmp_path, o->stats_interval_ms,
					why, sizeof(why)) :
			tb_virt_peer_new(&s.dev, o->libvirt_uri, o->libvirt_domain,
					 o->stats_interval_ms, why, sizeof(why));
		if (!s.peer || s.peer->ops->start(s.peer, TB_SERVE_PEER_SETUP_MS, why,
						  sizeof(why)) < 0) {
			tb_err("%s", why);
			goto out_early;
		}
	} else if (vu_fd < 0) {
		rc0 = tb_serve_listener(&s, socket_path, &o->listen, &vu_l);
		if (rc0 < 0) {
			tb_err("%s: %s", socket_path, rc0 == -EADDRINUSE ?
			       "another tballoon serve is running on this socket (its lock "
			       "file is held); stop that one first" : strerror(-rc0));
			goto out_early;
		}
		s.vu_listen_fd = vu_l.fd;
	}
	rc0 = tb_serve_listener(&s, control_path, &o->listen, &ctl_l);
	if (rc0 < 0) {
		tb_err("%s: %s", control_path, rc0 == -EADDRINUSE ?
		       "another tballoon serve is running on this socket (its lock "
		       "file is held); stop that one first" : strerror(-rc0));
		tb_listener_close(&vu_l, socket_path);
		goto out_early;
	}
	s.ctl_listen_fd = ctl_l.fd;
	if (s.peer)
		tb_info("serving %s, control on %s", s.peer->what, control_path);
	/* after the signal mask (the workers inherit it), before any queue runs */
	if (!s.peer && o->punch_threads) {
		rc0 = tb_punch_start(&s.pool, o->punch_threads, tb_serve_punch, &s);
		if (rc0 < 0) {
			tb_err("punch threads: %s", strerror(-rc0));
			tb_listener_close(&ctl_l, control_path);
			tb_listener_close(&vu_l, socket_path);
			goto out_early;
		}
		s.pool_up = true;
		s.dev.pool = &s.pool;
	}
	s.dev.punch_threads = s.pool_up ? s.pool.nthreads : 0;

	/* the fd store gave a connection back: take its session up again */
	if (session && vu_fd < 0 && tb_sd_has_passed(&s.sd, TB_SESSION_FD_PREFIX "sock")) {
		rc0 = tb_session_resume(&s.vu, session, &s.sd);
		if (rc0 < 0)
			tb_err("session: the vhost-user session could not be resumed (%s); "
			       "the front-end has to connect again", strerror(-rc0));
	}
	json_object_put(session);
	session = NULL;
	tb_sd_close_unused(&s.sd);

	if (vu_fd >= 0) {
		tb_info("serving vhost-user on fd %d, control on %s", vu_fd, control_path);
		tb_vu_attach(&s.vu, vu_fd);
	} else if (!s.peer) {
		tb_info("serving vhost-user on %s, control on %s", socket_path,
			control_path);
	}
	tb_serve_update_driver_ok(&s);
	tb_serve_save(&s);
	tb_sd_notify(&s.sd, "READY=1\nSTATUS=%s", s.vu.sock_fd >= 0 || s.peer ?
		     "serving the VM's balloon" : "waiting for the VM to connect");

	for (;;) {
		unsigned int n = 0;
		int64_t timeout;
		uint64_t now;
		int rc;

#define TB_ADD(fd_, ev_, kind_, idx_) \
		do { \
			pfd[n] = (struct pollfd){ .fd = (fd_), .events = (ev_) }; \
			tag[n] = (struct tb_pfd_tag){ (kind_), (idx_) }; \
			n++; \
		} while (0)

		TB_ADD(s.sig_fd, POLLIN, TB_PFD_SIG, 0);
		if (s.peer) {
			unsigned int np = s.peer->ops->pollfds(s.peer, pfd + n);

			for (unsigned int i = 0; i < np; i++)
				tag[n + i] = (struct tb_pfd_tag){ TB_PFD_PEER, i };
			n += np;
		} else if (s.vu.sock_fd < 0) {
			/* with --fd there is nothing to come back to */
			if (s.vu_listen_fd < 0) {
				tb_info("vhost-user session on fd %d ended, exiting", vu_fd);
				break;
			}
			TB_ADD(s.vu_listen_fd, POLLIN, TB_PFD_VU_LISTEN, 0);
		} else {
			TB_ADD(s.vu.sock_fd, POLLIN, TB_PFD_VU, 0);
			if (s.vu.backend_fd >= 0)
				TB_ADD(s.vu.backend_fd, POLLIN, TB_PFD_BACKEND, 0);
			for (unsigned int i = 0; i < s.vu.ops->nqueues; i++)
				if (s.vu.q[i].kick_fd >= 0)
					TB_ADD(s.vu.q[i].kick_fd, POLLIN, TB_PFD_KICK, i);
		}
		if (s.pool_up)
			TB_ADD(s.pool.event_fd, POLLIN, TB_PFD_PUNCH, 0);
		TB_ADD(s.ctl_listen_fd, POLLIN, TB_PFD_CTL_LISTEN, 0);
		for (unsigned int i = 0; i < s.nclients; i++)
			TB_ADD(s.clients[i].fd,
			       POLLIN | (s.clients[i].outoff < s.clients[i].outlen ? POLLOUT : 0),
			       TB_PFD_CLIENT, i);
#undef TB_ADD

		now = tb_now_ms();
		timeout = tb_dev_tick(&s.dev, now);
		if (s.peer)
			timeout = tb_due_min(timeout, s.peer->ops->tick(s.peer, now));
		/* the earliest of every timer; a partly received message too */
		timeout = tb_due_min(timeout, tb_serve_stats(&s, now));
		timeout = tb_due_min(timeout, tb_serve_idle_clients(&s, now));
		timeout = tb_due_min(timeout, tb_serve_pending_progress(&s, now));
		timeout = tb_due_min(timeout, tb_vu_rx_due(&s.vu, now));
		if (tb_serve_rx_expired(&s))
			continue;
		tb_serve_save(&s);
		if (s.queue_more)
			timeout = 0;
		rc = poll(pfd, n, timeout < 0 ? -1 : (int)(timeout > 60000 ? 60000 : timeout));
		if (rc < 0 && errno != EINTR) {
			tb_err("poll: %s", strerror(errno));
			exit_code = 1;
			break;
		}
		/* queues left over from the last round, after a look at the rest */
		for (unsigned int i = 0; s.queue_more && i < s.vu.ops->nqueues; i++)
			if (s.queue_more & (1U << i))
				tb_serve_queue(&s, i);
		if (rc <= 0)
			continue;

		if (pfd[0].revents) {
			struct signalfd_siginfo si = { 0 };

			if (read(s.sig_fd, &si, sizeof(si)) != sizeof(si)) {
				/* nothing (EAGAIN): another round */
			} else if (si.ssi_signo == SIGHUP) {
				/*
				 * A daemon's "reload": there is no configuration
				 * file and the log is stderr (the journal's, or
				 * a file the caller reopens), so nothing to do;
				 * it says so and serves on.
				 */
				tb_info("SIGHUP: nothing to reload (options are the command "
					"line, the log is stderr); serving on");
			} else {
				tb_info("signal %u, exiting", si.ssi_signo);
				break;
			}
		}
		if (s.peer) {
			unsigned int first = 1, np = 0;

			while (first + np < n && tag[first + np].kind == TB_PFD_PEER)
				np++;
			if (np)
				s.peer->ops->ready(s.peer, pfd + first, np, tb_now_ms());
		}
		for (unsigned int i = 1; i < n; i++) {
			short re = pfd[i].revents;

			if (!re)
				continue;
			switch (tag[i].kind) {
			case TB_PFD_VU_LISTEN:
				tb_serve_accept_vu(&s);
				break;
			case TB_PFD_VU:
				if (pfd[i].fd != s.vu.sock_fd)
					break;
				rc = tb_vu_serve_one(&s.vu);
				if (rc < 0) {
					if (rc != -ECONNRESET)
						tb_warn("vhost-user: session ended: %s",
							strerror(-rc));
					tb_vu_detach(&s.vu);
				}
				/* before any client request of this round */
				tb_serve_update_driver_ok(&s);
				break;
			case TB_PFD_BACKEND:
				if (pfd[i].fd == s.vu.backend_fd)
					tb_vu_backend_readable(&s.vu);
				break;
			case TB_PFD_KICK:
				if (re & (POLLERR | POLLHUP | POLLNVAL) &&
				    s.vu.q[tag[i].idx].kick_fd == pfd[i].fd) {
					/* the end of that fd: stop watching it */
					tb_warn("vhost-user: queue %u kick fd hung up, dropped",
						tag[i].idx);
					tb_close_fd(&s.vu.q[tag[i].idx].kick_fd);
					break;
				}
				tb_serve_kick(&s, tag[i].idx, pfd[i].fd);
				break;
			case TB_PFD_PUNCH:
				tb_serve_reap(&s);
				break;
			case TB_PFD_CTL_LISTEN:
				tb_serve_accept_client(&s);
				break;
			case TB_PFD_CLIENT: {
				struct tb_client *c = &s.clients[tag[i].idx];

				if (c->fd != pfd[i].fd || c->dead)
					break;
				if (re & (POLLIN | POLLHUP | POLLERR))
					tb_serve_client_read(&s, c);
				if (re & POLLOUT)
					tb_client_flush(c);
				break;
			}
			default:
				break;
			}
		}
		tb_serve_update_driver_ok(&s);
		tb_serve_reap_clients(&s);
		tb_serve_save(&s);
	}
	/*
	 * Our own exit is not a device reset: the state file keeps the guest's
	 * balloon and command for the next daemon (the session teardown below
	 * must not overwrite it), and the fd store keeps the session.
	 */
	tb_sd_notify(&s.sd, "STOPPING=1");
	tb_serve_save(&s);
	s.state_path = NULL;

	for (unsigned int i = 0; i < s.nclients; i++)
		tb_client_free(&s.clients[i]);
	s.nclients = 0;
	tb_vu_detach(&s.vu);	/* quiesces the pool first */
	if (s.pool_up)
		tb_punch_stop(&s.pool);
	s.pool_up = false;
	s.dev.pool = NULL;
	if (s.peer)
		s.peer->ops->destroy(s.peer);
	s.peer = NULL;
	json_object_put(s.deferred);
	s.deferred = NULL;
	free(s.session_saved);
	s.session_saved = NULL;
	json_object_put(s.session_snap);
	s.session_snap = NULL;
	close(s.sig_fd);
	tb_listener_close(&ctl_l, control_path);
	tb_listener_close(&vu_l, socket_path);
	return exit_code;

out_early:
	if (s.peer)
		s.peer->ops->destroy(s.peer);
	s.peer = NULL;
	json_object_put(session);
	tb_sd_close_unused(&s.sd);
	if (s.sig_fd >= 0)
		close(s.sig_fd);
	return 1;
}
