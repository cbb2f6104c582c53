/* SPDX-License-Identifier: GPL-2.0 */
/*
 * session.h - a vhost-user session that outlives the daemon process.
 *
 * QEMU's generic vhost-user device cannot re-attach to a restarted backend
 * (and aborts on the next config read after a disconnect), so the session
 * itself must survive a restart of `tballoon serve`. Two halves:
 *
 *  - the fds (the connected socket, the backend channel, every memory region
 *    fd, every kick/call/err eventfd) live in systemd's fd store under fixed
 *    names ("vu-sock", "vu-mem0", "vu-kick1", ...), kept in step with the
 *    session after every request, before its reply;
 *  - everything else (features, memory table, ring addresses and flags) is a
 *    JSON snapshot in the state file, written at the same point.
 *
 * A restarted daemon finds the fds in LISTEN_FDS and the snapshot in its
 * state file, rebuilds struct tb_vu and resumes every ring at its used index
 * (this backend completes buffers in order, so the used index is where the
 * dead daemon's work ended; a buffer it had popped but not returned is read
 * again, and the device model does not count it twice). QEMU is sent
 * nothing and notices nothing.
 *
 * Called only from the event loop; the struct tb_vu must be idle (no
 * request half-handled).
 */
#ifndef TB_SESSION_H
#define TB_SESSION_H

#include <json-c/json.h>
#include <stdbool.h>

#include "sd.h"
#include "vu.h"

/* name prefix of every session fd in the fd store */
#define TB_SESSION_FD_PREFIX "vu-"

/* the snapshot of @vu's session (caller owns it), NULL if none */
json_object *tb_session_to_json(const struct tb_vu *vu);

/*
 * Bring the fd store in step with @vu's fds: store new or replaced ones,
 * remove gone ones. Returns true if anything changed.
 */
bool tb_session_store_fds(const struct tb_vu *vu, struct tb_sd *sd);

/*
 * Resume the session of @snap with the fds passed in @sd. On success @vu is
 * attached exactly as the dead daemon left it and 0 is returned; on failure
 * (-EINVAL malformed snapshot, -ENOENT an fd missing, or the errno of a
 * mapping) @vu stays detached, every session fd passed is closed, and the
 * front-end has to connect anew.
 */
int tb_session_resume(struct tb_vu *vu, json_object *snap, struct tb_sd *sd);

#endif /* TB_SESSION_H */
