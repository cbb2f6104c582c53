// SPDX-License-Identifier: GPL-2.0
/*
 * session.c - a vhost-user session across a daemon restart (see session.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "session.h"
#include "util.h"

#define TB_SESSION_MAX_SLOTS (2 + TB_MEM_MAX_REGIONS + 3 * TB_VU_MAX_QUEUES)

struct tb_session_slot {
	char name[TB_SD_NAME_MAX];
	int fd;
};

/* every fd of @vu's session with its fd store name; returns the count */
static unsigned int tb_session_slots(const struct tb_vu *vu, struct tb_session_slot *s)
{
	static const char *const qnames[3] = { "kick", "call", "err" };
	unsigned int n = 0;

#define TB_SLOT(fd_, ...) \
	do { \
		if ((fd_) >= 0) { \
			snprintf(s[n].name, sizeof(s[n].name), __VA_ARGS__); \
			s[n].fd = (fd_); \
			n++; \
		} \
	} while (0)
	if (vu->sock_fd < 0)
		return 0;
	TB_SLOT(vu->sock_fd, TB_SESSION_FD_PREFIX "sock");
	TB_SLOT(vu->backend_fd, TB_SESSION_FD_PREFIX "backend");
	for (unsigned int i = 0; i < vu->mem.nregions; i++)
		TB_SLOT(vu->mem.r[i].fd, TB_SESSION_FD_PREFIX "mem%u", i);
	for (unsigned int i = 0; i < vu->ops->nqueues && i < TB_VU_MAX_QUEUES; i++) {
		const int fds[3] = { vu->q[i].kick_fd, vu->q[i].call_fd, vu->q[i].err_fd };

		for (unsigned int k = 0; k < 3; k++)
			TB_SLOT(fds[k], TB_SESSION_FD_PREFIX "%s%u", qnames[k], i);
	}
#undef TB_SLOT
	return n;
}

bool tb_session_store_fds(const struct tb_vu *vu, struct tb_sd *sd)
{
	struct tb_session_slot slots[TB_SESSION_MAX_SLOTS];
	unsigned int n = tb_session_slots(vu, slots);
	bool changed = false;
	unsigned int i = 0;

	/*
	 * A replaced fd always has a new number (it arrives while the old one
	 * is still open) and this runs after every request, so comparing
	 * numbers is enough.
	 */
	for (unsigned int k = 0; k < n; k++) {
		if (tb_sd_stored_fd(sd, slots[k].name) == slots[k].fd)
			continue;
		tb_sd_store(sd, slots[k].name, slots[k].fd);
		changed = true;
	}
	while (i < sd->nstored) {
		const char *name = sd->stored[i].name;
		bool live = false;

		if (strncmp(name, TB_SESSION_FD_PREFIX, strlen(TB_SESSION_FD_PREFIX))) {
			i++;
			continue;
		}
		for (unsigned int k = 0; k < n && !live; k++)
			live = !strcmp(slots[k].name, name);
		if (live) {
			i++;
			continue;
		}
		{
			char gone[TB_SD_NAME_MAX];

			memcpy(gone, name, sizeof(gone));
			tb_sd_store(sd, gone, -1);	/* moves the last entry to i */
		}
		changed = true;
	}
	return changed;
}

static void tb_js_u64(json_object *o, const char *k, uint64_t v)
{
	json_object_object_add(o, k, json_object_new_uint64(v));
}

static void tb_js_bool(json_object *o, const char *k, bool v)
{
	json_object_object_add(o, k, json_object_new_boolean(v));
}

json_object *tb_session_to_json(const struct tb_vu *vu)
{
	json_object *o, *regions, *queues;

	if (vu->sock_fd < 0)
		return NULL;
	o = json_object_new_object();
	regions = json_object_new_array();
	queues = json_object_new_array();
	tb_js_u64(o, "features", vu->features);
	tb_js_bool(o, "features_set", vu->features_set);
	tb_js_u64(o, "protocol_features", vu->protocol_features);
	tb_js_bool(o, "owner", vu->owner);
	tb_js_bool(o, "backend", vu->backend_fd >= 0);
	for (unsigned int i = 0; i < vu->mem.nregions; i++) {
		const struct tb_mem_region *r = &vu->mem.r[i];
		json_object *jr = json_object_new_object();

		tb_js_u64(jr, "gpa", r->gpa);
		tb_js_u64(jr, "size", r->size);
		tb_js_u64(jr, "uva", r->uva);
		tb_js_u64(jr, "fd_offset", r->fd_offset);
		json_object_array_add(regions, jr);
	}
	for (unsigned int i = 0; i < vu->ops->nqueues && i < TB_VU_MAX_QUEUES; i++) {
		const struct tb_vu_queue *q = &vu->q[i];
		json_object *jq = json_object_new_object();

		tb_js_u64(jq, "num", q->num);
		tb_js_u64(jq, "base", q->vr.num ? q->vr.last_avail : q->base);
		tb_js_bool(jq, "addr_set", q->addr_set);
		tb_js_u64(jq, "addr_flags", q->addr.flags);
		tb_js_u64(jq, "desc", q->addr.desc);
		tb_js_u64(jq, "used", q->addr.used);
		tb_js_u64(jq, "avail", q->addr.avail);
		tb_js_u64(jq, "log", q->addr.log);
		tb_js_bool(jq, "started", q->started);
		tb_js_bool(jq, "enabled", q->enabled);
		tb_js_bool(jq, "moved", q->moved);
		tb_js_bool(jq, "reset_seen", q->reset_seen);
		json_object_object_add(jq, "stopped_at", json_object_new_int64(
			q->stopped_valid ? q->stopped_at : -1));
		tb_js_bool(jq, "kick", q->kick_fd >= 0);
		tb_js_bool(jq, "call", q->call_fd >= 0);
		tb_js_bool(jq, "err", q->err_fd >= 0);
		json_object_array_add(queues, jq);
	}
	json_object_object_add(o, "regions", regions);
	json_object_object_add(o, "queues", queues);
	return o;
}

/* member @k of @o as an unsigned integer <= @max */
static int tb_jget(json_object *o, const char *k, uint64_t max, uint64_t *v)
{
	json_object *m;

	if (!json_object_object_get_ex(o, k, &m) || !json_object_is_type(m, json_type_int) ||
	    json_object_get_int64(m) < 0 || json_object_get_uint64(m) > max)
		return -EINVAL;
	*v = json_object_get_uint64(m);
	return 0;
}

static int tb_jbool(json_object *o, const char *k, bool *v)
{
	json_object *m;

	if (!json_object_object_get_ex(o, k, &m) || !json_object_is_type(m, json_type_boolean))
		return -EINVAL;
	*v = json_object_get_boolean(m);
	return 0;
}

/* the passed fd named PREFIX@fmt, or -ENOENT */
static int tb_session_take(struct tb_sd *sd, const char *fmt, unsigned int i)
{
	char name[TB_SD_NAME_MAX], part[16];
	int fd;

	snprintf(part, sizeof(part), fmt, i);
	snprintf(name, sizeof(name), TB_SESSION_FD_PREFIX "%s", part);
	fd = tb_sd_take_named(sd, name);
	if (fd < 0)
		tb_warn("session: fd %s was not passed back", name);
	return fd < 0 ? -ENOENT : fd;
}

static int tb_session_queue(struct tb_vu *vu, unsigned int i, json_object *jq,
			    struct tb_sd *sd)
{
	struct tb_vu_queue *q = &vu->q[i];
	uint64_t num, base, v;
	bool has[3];
	int *slot[3] = { &q->kick_fd, &q->call_fd, &q->err_fd };
	static const char *const fmt[3] = { "kick%u", "call%u", "err%u" };

	if (tb_jget(jq, "num", TB_VRING_MAX_NUM, &num) ||
	    tb_jget(jq, "base", 0xffff, &base) ||
	    tb_jbool(jq, "addr_set", &q->addr_set) ||
	    tb_jbool(jq, "started", &q->started) ||
	    tb_jbool(jq, "enabled", &q->enabled) ||
	    tb_jbool(jq, "moved", &q->moved) ||
	    tb_jbool(jq, "reset_seen", &q->reset_seen) ||
	    tb_jbool(jq, "kick", &has[0]) || tb_jbool(jq, "call", &has[1]) ||
	    tb_jbool(jq, "err", &has[2]))
		return -EINVAL;
	q->num = (uint32_t)num;
	q->base = (uint16_t)base;
	q->addr.index = i;
	if (tb_jget(jq, "addr_flags", UINT32_MAX, &v))
		return -EINVAL;
	q->addr.flags = (uint32_t)v;
	if (tb_jget(jq, "desc", UINT64_MAX, &q->addr.desc) ||
	    tb_jget(jq, "used", UINT64_MAX, &q->addr.used) ||
	    tb_jget(jq, "avail", UINT64_MAX, &q->addr.avail) ||
	    tb_jget(jq, "log", UINT64_MAX, &q->addr.log))
		return -EINVAL;
	{
		json_object *m;

		if (!json_object_object_get_ex(jq, "stopped_at", &m) ||
		    !json_object_is_type(m, json_type_int) ||
		    json_object_get_int64(m) < -1 || json_object_get_int64(m) > 0xffff)
			return -EINVAL;
		q->stopped_valid = json_object_get_int64(m) >= 0;
		q->stopped_at = q->stopped_valid ? (uint16_t)json_object_get_int64(m) : 0;
	}
	for (unsigned int k = 0; k < 3; k++) {
		int fd;

		if (!has[k])
			continue;
		fd = tb_session_take(sd, fmt[k], i);
		if (fd < 0)
			return fd;
		*slot[k] = fd;
	}
	return 0;
}

int tb_session_resume(struct tb_vu *vu, json_object *snap, struct tb_sd *sd)
{
	json_object *regions, *queues;
	uint64_t features, pf;
	bool features_set, owner, backend;
	struct timeval tv = { .tv_sec = 2 };
	int rc = -EINVAL, sock = -1;
	size_t nr;

	tb_vu_detach(vu);
	if (!json_object_is_type(snap, json_type_object) ||
	    tb_jget(snap, "features", UINT64_MAX, &features) ||
	    tb_jbool(snap, "features_set", &features_set) ||
	    tb_jget(snap, "protocol_features", UINT64_MAX, &pf) ||
	    tb_jbool(snap, "owner", &owner) || tb_jbool(snap, "backend", &backend) ||
	    !json_object_object_get_ex(snap, "regions", &regions) ||
	    !json_object_is_type(regions, json_type_array) ||
	    !json_object_object_get_ex(snap, "queues", &queues) ||
	    !json_object_is_type(queues, json_type_array) ||
	    json_object_array_length(queues) > vu->ops->nqueues)
		goto fail;
	/* only what this build offers can have been negotiated */
	if ((features & ~tb_vu_offered_features(vu)) || (pf & ~vu->ops->protocol_features))
		goto fail;
	nr = json_object_array_length(regions);
	if (nr > TB_MEM_MAX_REGIONS)
		goto fail;

	for (size_t i = 0; i < nr; i++) {
		json_object *jr = json_object_array_get_idx(regions, i);
		uint64_t gpa, size, uva, off;
		int fd;

		rc = -EINVAL;
		if (tb_jget(jr, "gpa", UINT64_MAX, &gpa) || tb_jget(jr, "size", UINT64_MAX, &size) ||
		    tb_jget(jr, "uva", UINT64_MAX, &uva) ||
		    tb_jget(jr, "fd_offset", UINT64_MAX, &off))
			goto fail;
		fd = tb_session_take(sd, "mem%u", (unsigned int)i);
		if (fd < 0) {
			rc = fd;
			goto fail;
		}
		rc = tb_mem_add(&vu->mem, gpa, size, uva, off, fd);
		if (rc < 0) {
			tb_warn("session: region %zu: %s", i, strerror(-rc));
			close(fd);
			goto fail;
		}
	}
	/* a daemon of an older build kept fewer queues: the others were never set */
	for (unsigned int i = 0; i < json_object_array_length(queues); i++) {
		rc = tb_session_queue(vu, i, json_object_array_get_idx(queues, i), sd);
		if (rc < 0)
			goto fail;
	}
	if (backend) {
		rc = tb_session_take(sd, "backend", 0);
		if (rc < 0)
			goto fail;
		vu->backend_fd = rc;
		setsockopt(vu->backend_fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
	rc = tb_session_take(sd, "sock", 0);
	if (rc < 0)
		goto fail;
	sock = rc;

	/* everything is in place: the session is up again */
	vu->protocol_features = pf;
	vu->owner = owner;
	tb_vu_attach_resumed(vu, sock, features_set, features);
	tb_info("session: resumed the vhost-user session (%zu regions, features 0x%llx)",
		nr, (unsigned long long)features);
	return 0;

fail:
	if (rc == -EINVAL)
		tb_warn("session: snapshot in the state file is malformed");
	/* not attached yet: this only closes what was taken */
	tb_vu_detach(vu);
	return rc;
}
