/* SPDX-License-Identifier: GPL-2.0 */
/*
 * serve.h - `tballoon serve`: the event loop joining the vhost-user session,
 * the device model and the control socket clients.
 */
#ifndef TB_SERVE_H
#define TB_SERVE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/**
 * struct tb_listen_opts - how the daemon's own sockets are created
 * @mode: permission bits (default 0600)
 * @gid: group of the sockets, and a group the control socket accepts
 *	peers of (with @gid_set)
 */
struct tb_listen_opts {
	mode_t mode;
	gid_t gid;
	bool gid_set;
};

/**
 * struct tb_listener - a listening socket of the daemon
 * @fd: the socket, -1 if none
 * @lock_fd: PATH.lock, held while we serve (-1 when passed in)
 * @passed: came from the service manager, which owns the file
 * @dev, @ino: the socket file we bound (removed at exit only if still it)
 */
struct tb_listener {
	int fd;
	int lock_fd;
	bool passed;
	dev_t dev;
	ino_t ino;
};

/**
 * struct tb_serve_opts - how `tballoon serve` runs
 * @socket_path: vhost-user socket to listen on (or NULL with @vu_fd)
 * @vu_fd: an already connected vhost-user socket, or -1
 * @control_path: control socket
 * @state_path: state file (NULL: none); loaded at start if present
 * @grace_ms: host watchdog grace after a command's deadline
 * @stats_interval_ms: guest statistics request period (0: on demand only)
 * @listen: mode and group of the sockets the daemon creates
 * @deflate_on_oom: offer VIRTIO_BALLOON_F_DEFLATE_ON_OOM (the guest may
 *	take pages back from the balloon to avoid an OOM kill, as with
 *	QEMU's virtio-balloon deflate-on-oom=on)
 * @free_page_reporting: offer VIRTIO_BALLOON_F_REPORTING (free memory the
 *	guest reports is released, as with free-page-reporting=on)
 * @qmp_path: drive the stock balloon of the QEMU behind this QMP socket
 *	instead of serving vhost-user (host-enforced commands)
 * @libvirt_domain, @libvirt_uri: the same through libvirt (NULL uri:
 *	libvirt's default)
 * @punch_threads: threads releasing memory off the event loop (punch.h);
 *	0: the loop punches itself (vhost-user only)
 */
struct tb_serve_opts {
	const char *socket_path;
	int vu_fd;
	const char *control_path;
	const char *state_path;
	uint32_t grace_ms;
	uint32_t stats_interval_ms;
	struct tb_listen_opts listen;
	bool deflate_on_oom;
	bool free_page_reporting;
	const char *qmp_path;
	const char *libvirt_domain;
	const char *libvirt_uri;
	unsigned int punch_threads;
};

/* a peer (QMP, libvirt) must be set up within this at start */
#define TB_SERVE_PEER_SETUP_MS 10000U

/*
 * Run until SIGTERM/SIGINT. Listens for the front-end on @socket_path, or,
 * if @vu_fd >= 0, serves the already connected socket @vu_fd and returns
 * when that session ends. Returns a process exit code.
 */
int tb_serve_run(const struct tb_serve_opts *o);

/*
 * Listen on a fresh UNIX socket at @path (mode and group from @lo, 0600 if
 * NULL), holding PATH.lock so that a second daemon on @path is refused with
 * -EADDRINUSE. 0 or -errno.
 */
int tb_listen_unix_opts(const char *path, const struct tb_listen_opts *lo,
			struct tb_listener *l);
/* close a listener; remove its socket file only if it is still ours */
void tb_listener_close(struct tb_listener *l, const char *path);

#endif /* TB_SERVE_H */
