// SPDX-License-Identifier: GPL-2.0
/*
 * state.c - the daemon's state file (see state.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "state.h"
#include "util.h"

#define TB_STATE_VERSION 1
/* a state file is a few KiB; anything much bigger is not ours */
#define TB_STATE_MAX_BYTES (1 << 20)

static void tb_boot_id(char *buf, size_t len)
{
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");

	buf[0] = 0;
	if (!f)
		return;
	if (!fgets(buf, (int)len, f))
		buf[0] = 0;
	fclose(f);
	buf[strcspn(buf, "\n")] = 0;
}

static void tb_add_u64(json_object *o, const char *k, uint64_t v)
{
	json_object_object_add(o, k, json_object_new_uint64(v));
}

json_object *tb_state_to_json(const struct tb_dev *dev)
{
	const struct tb_cmd *c = &dev->cmd;
	json_object *o = json_object_new_object();
	json_object *jc = json_object_new_object();
	json_object *js = json_object_new_object();
	char hex[2 * VIRTIO_TBALLOON_CONFIG_SIZE + 1];
	char boot[64];

	for (size_t i = 0; i < sizeof(dev->config); i++)
		snprintf(hex + 2 * i, 3, "%02x", dev->config[i]);
	tb_boot_id(boot, sizeof(boot));
	tb_add_u64(o, "version", TB_STATE_VERSION);
	json_object_object_add(o, "boot_id", json_object_new_string(boot));
	json_object_object_add(o, "config", json_object_new_string(hex));
	tb_add_u64(o, "last_cmd_id", dev->last_cmd_id);
	tb_add_u64(o, "last_report_seq", dev->last_report_seq);
	tb_add_u64(o, "device_pages", dev->device_pages);
	for (unsigned int q = 0; q < 2; q++) {
		char k[32];

		snprintf(k, sizeof(k), "counted_pos_%u", q);
		/* -1: none */
		json_object_object_add(o, k, json_object_new_int64(
			dev->counted_valid[q] ? dev->counted_pos[q] : -1));
	}

	tb_add_u64(jc, "cmd_id", c->cmd_id);
	tb_add_u64(jc, "op", c->op);
	tb_add_u64(jc, "flags", c->flags);
	tb_add_u64(jc, "deadline_ms", c->deadline_ms);
	tb_add_u64(jc, "target_pages", c->target_pages);
	tb_add_u64(jc, "floor_pages", c->floor_pages);
	tb_add_u64(jc, "state", c->state);
	tb_add_u64(jc, "reason", c->reason);
	tb_add_u64(jc, "elapsed_ms", c->elapsed_ms);
	tb_add_u64(jc, "start_pages", c->start_pages);
	tb_add_u64(jc, "report_seq", c->report_seq);
	tb_add_u64(jc, "reports", c->reports);
	tb_add_u64(jc, "timed", c->timed);
	/* CLOCK_MONOTONIC runs on across a daemon restart (same host boot) */
	tb_add_u64(jc, "issued_ms", c->issued_ms);
	tb_add_u64(jc, "ended_ms", c->ended_ms);
	tb_add_u64(jc, "resident_before", c->resident_before);
	tb_add_u64(jc, "resident_after", c->resident_after);
	json_object_object_add(o, "command", jc);

	tb_add_u64(js, "released_bytes", dev->stats.released_bytes);
	tb_add_u64(js, "inflated_pages", dev->stats.inflated_pages);
	tb_add_u64(js, "deflated_pages", dev->stats.deflated_pages);
	tb_add_u64(js, "guest_deflated_pages", dev->stats.guest_deflated_pages);
	tb_add_u64(js, "migrated_pages", dev->stats.migrated_pages);
	tb_add_u64(js, "refused_pfns", dev->stats.refused_pfns);
	tb_add_u64(js, "bad_buffers", dev->stats.bad_buffers);
	tb_add_u64(js, "punch_errors", dev->stats.punch_errors);
	tb_add_u64(js, "bad_reports", dev->stats.bad_reports);
	tb_add_u64(js, "broken_rings", dev->stats.broken_rings);
	tb_add_u64(js, "resets", dev->stats.resets);
	tb_add_u64(js, "unresponsive", dev->stats.unresponsive);
	json_object_object_add(o, "counters", js);
	return o;
}

/* integer member @k of @o into *v (must exist, be an integer, fit @max) */
static int tb_get(json_object *o, const char *k, uint64_t max, uint64_t *v)
{
	json_object *m;

	if (!json_object_object_get_ex(o, k, &m) || !json_object_is_type(m, json_type_int) ||
	    json_object_get_int64(m) < 0 || json_object_get_uint64(m) > max)
		return -1;
	*v = json_object_get_uint64(m);
	return 0;
}

#define TB_GET32(o, k, dst) \
	do { uint64_t v_; if (tb_get(o, k, UINT32_MAX, &v_)) return -EINVAL; (dst) = (uint32_t)v_; } while (0)
#define TB_GET64(o, k, dst) \
	do { uint64_t v_; if (tb_get(o, k, UINT64_MAX, &v_)) return -EINVAL; (dst) = v_; } while (0)

int tb_state_from_json(struct tb_dev *dev, json_object *o)
{
	uint8_t config[VIRTIO_TBALLOON_CONFIG_SIZE];
	struct tb_dev_stats st = dev->stats;
	json_object *jc, *js, *m;
	struct tb_cmd c = { 0 };
	uint32_t last_cmd_id, last_seq;
	uint64_t version, pages, timed;
	int64_t counted[2];
	const char *hex;
	char boot[64];

	if (!json_object_is_type(o, json_type_object) ||
	    tb_get(o, "version", UINT32_MAX, &version) || version != TB_STATE_VERSION)
		return -EINVAL;
	tb_boot_id(boot, sizeof(boot));
	if (!json_object_object_get_ex(o, "boot_id", &m) ||
	    strcmp(json_object_get_string(m), boot))
		return -EINVAL;
	if (!json_object_object_get_ex(o, "config", &m) ||
	    !json_object_is_type(m, json_type_string))
		return -EINVAL;
	hex = json_object_get_string(m);
	if (strlen(hex) != 2 * sizeof(config))
		return -EINVAL;
	for (size_t i = 0; i < sizeof(config); i++) {
		unsigned int b;

		if (sscanf(hex + 2 * i, "%2x", &b) != 1)
			return -EINVAL;
		config[i] = (uint8_t)b;
	}
	TB_GET32(o, "last_cmd_id", last_cmd_id);
	TB_GET32(o, "last_report_seq", last_seq);
	TB_GET64(o, "device_pages", pages);
	if (!json_object_object_get_ex(o, "command", &jc) ||
	    !json_object_object_get_ex(o, "counters", &js))
		return -EINVAL;
	TB_GET32(jc, "cmd_id", c.cmd_id);
	TB_GET32(jc, "op", c.op);
	TB_GET32(jc, "flags", c.flags);
	TB_GET32(jc, "deadline_ms", c.deadline_ms);
	TB_GET32(jc, "target_pages", c.target_pages);
	TB_GET32(jc, "floor_pages", c.floor_pages);
	TB_GET32(jc, "state", c.state);
	TB_GET32(jc, "reason", c.reason);
	TB_GET32(jc, "elapsed_ms", c.elapsed_ms);
	TB_GET32(jc, "start_pages", c.start_pages);
	TB_GET32(jc, "report_seq", c.report_seq);
	TB_GET32(jc, "reports", c.reports);
	TB_GET64(jc, "timed", timed);
	TB_GET64(jc, "issued_ms", c.issued_ms);
	TB_GET64(jc, "ended_ms", c.ended_ms);
	TB_GET64(jc, "resident_before", c.resident_before);
	TB_GET64(jc, "resident_after", c.resident_after);
	if (c.op >= TBALLOON_OP_COUNT || c.state >= TB_STATE_NAMES ||
	    c.reason >= TBALLOON_REASON_COUNT)
		return -EINVAL;
	c.timed = timed != 0;
	TB_GET64(js, "released_bytes", st.released_bytes);
	TB_GET64(js, "inflated_pages", st.inflated_pages);
	TB_GET64(js, "deflated_pages", st.deflated_pages);
	/* newer than the rest: a state file written before it lacks it */
	if (json_object_object_get_ex(js, "guest_deflated_pages", &m))
		TB_GET64(js, "guest_deflated_pages", st.guest_deflated_pages);
	if (json_object_object_get_ex(js, "migrated_pages", &m))
		TB_GET64(js, "migrated_pages", st.migrated_pages);
	TB_GET64(js, "refused_pfns", st.refused_pfns);
	TB_GET64(js, "bad_buffers", st.bad_buffers);
	TB_GET64(js, "punch_errors", st.punch_errors);
	TB_GET64(js, "bad_reports", st.bad_reports);
	TB_GET64(js, "broken_rings", st.broken_rings);
	TB_GET64(js, "resets", st.resets);
	TB_GET64(js, "unresponsive", st.unresponsive);

	for (unsigned int q = 0; q < 2; q++) {
		char k[32];

		snprintf(k, sizeof(k), "counted_pos_%u", q);
		counted[q] = -1;
		if (json_object_object_get_ex(o, k, &m)) {
			if (!json_object_is_type(m, json_type_int) ||
			    json_object_get_int64(m) < -1 || json_object_get_int64(m) > 0xffff)
				return -EINVAL;
			counted[q] = json_object_get_int64(m);
		}
	}

	memcpy(dev->config, config, sizeof(config));
	for (unsigned int q = 0; q < 2; q++) {
		dev->counted_valid[q] = counted[q] >= 0;
		dev->counted_pos[q] = counted[q] >= 0 ? (uint16_t)counted[q] : 0;
	}
	dev->last_cmd_id = last_cmd_id;
	dev->last_report_seq = last_seq;
	dev->device_pages = pages;
	c.recovered = tb_cmd_running(&c);
	dev->cmd = c;
	dev->stats = st;
	dev->restored = true;
	return 0;
}

int tb_state_save(const struct tb_dev *dev, const char *path)
{
	return tb_state_write(dev, NULL, path);
}

/* write all of @len bytes */
static int tb_write_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* fsync the directory holding @path, so that a rename in it is durable */
static int tb_fsync_dir(const char *path)
{
	char *copy = strdup(path);
	int fd, rc = 0;

	if (!copy)
		return -ENOMEM;
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(copy);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

int tb_state_write(const struct tb_dev *dev, json_object *session, const char *path)
{
	json_object *o = tb_state_to_json(dev);
	size_t len, plen = strlen(path);
	const char *s;
	char *tmp = malloc(plen + 8);
	int fd, rc = 0;

	if (session)
		json_object_object_add(o, "session", json_object_get(session));
	s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
	if (!tmp) {
		json_object_put(o);
		return -ENOMEM;
	}
	/*
	 * A new, unique file next to @path (O_EXCL: never a symlink, FIFO or
	 * anyone's file), written and synced, then renamed over @path and the
	 * directory synced: a reader sees the old or the new state, after a
	 * daemon kill or a host crash alike.
	 */
	snprintf(tmp, plen + 8, "%s.XXXXXX", path);
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
	} else {
		rc = tb_write_all(fd, s, len);
		if (!rc && fsync(fd) < 0)
			rc = -errno;
		if (close(fd) < 0 && !rc)
			rc = -errno;
		if (!rc && rename(tmp, path) < 0)
			rc = -errno;
		if (rc)
			unlink(tmp);
		else
			rc = tb_fsync_dir(path);
	}
	free(tmp);
	json_object_put(o);
	return rc;
}

int tb_state_load(struct tb_dev *dev, const char *path)
{
	return tb_state_read(dev, path, NULL);
}

int tb_state_read(struct tb_dev *dev, const char *path, json_object **session)
{
	json_object *o, *m;
	struct stat st;
	char *buf;
	ssize_t n;
	int fd, rc;

	if (session)
		*session = NULL;
	/* never block on a FIFO or follow a symlink planted at @path */
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return errno == ELOOP ? -EINVAL : -errno;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > TB_STATE_MAX_BYTES) {
		tb_warn("state file %s: %s", path, S_ISREG(st.st_mode) ?
			"larger than 1 MiB" : "not a regular file");
		close(fd);
		return -EINVAL;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	n = pread(fd, buf, (size_t)st.st_size, 0);
	close(fd);
	if (n != st.st_size) {
		free(buf);
		return n < 0 ? -errno : -EIO;
	}
	buf[n] = 0;
	o = json_tokener_parse(buf);
	free(buf);
	if (!o)
		return -EINVAL;
	rc = tb_state_from_json(dev, o);
	if (!rc && session && json_object_object_get_ex(o, "session", &m))
		*session = json_object_get(m);
	json_object_put(o);
	return rc;
}
