/* SPDX-License-Identifier: GPL-2.0 */
/*
 * state.h - the daemon's state file: what a restarted `tballoon serve` needs
 * to pick up a guest that kept running (config space, current command,
 * balloon count, counters), as one JSON object written atomically on every
 * change: a new unique file beside it (mkostemp: O_EXCL, so never through a
 * planted symlink or FIFO), fsync, rename over the old one, fsync of the
 * directory. Neither a process kill nor a host crash can tear it. It is read
 * with O_NOFOLLOW|O_NONBLOCK and must be a regular file of at most 1 MiB.
 * The file records the host's boot id: after a reboot of the host it is
 * ignored. The device model commits once per pass of a queue, so a burst of
 * buffers costs one durable write, not one each.
 */
#ifndef TB_STATE_H
#define TB_STATE_H

#include <json-c/json.h>

#include "dev.h"

/* the state as a JSON object (caller owns it) */
json_object *tb_state_to_json(const struct tb_dev *dev);

/*
 * Restore @dev from @o. Returns 0, or -EINVAL (malformed, another version,
 * another host boot) leaving @dev untouched.
 */
int tb_state_from_json(struct tb_dev *dev, json_object *o);

/* write @dev to @path atomically; 0 or -errno */
int tb_state_save(const struct tb_dev *dev, const char *path);

/* load @path into @dev; 0, -ENOENT (no file) or another -errno */
int tb_state_load(struct tb_dev *dev, const char *path);

/*
 * The same with the vhost-user session snapshot (session.h) stored beside
 * the device state: @session may be NULL (none); on read *@session gets a
 * new reference to it, or NULL.
 */
int tb_state_write(const struct tb_dev *dev, json_object *session, const char *path);
int tb_state_read(struct tb_dev *dev, const char *path, json_object **session);

#endif /* TB_STATE_H */
