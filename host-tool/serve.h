/* SPDX-License-Identifier: GPL-2.0 */
/*
 * serve.h - `tballoon serve`: the event loop joining the vhost-user session,
 * the device model and the control socket clients.
 */
#ifndef TB_SERVE_H
#define TB_SERVE_H

#include <stdint.h>

/**
 * struct tb_serve_opts - how `tballoon serve` runs
 * @socket_path: vhost-user socket to listen on (or NULL with @vu_fd)
 * @vu_fd: an already connected vhost-user socket, or -1
 * @control_path: control socket
 * @state_path: state file (NULL: none); loaded at start if present
 * @grace_ms: host watchdog grace after a command's deadline
 * @stats_interval_ms: guest statistics request period (0: on demand only)
 */
struct tb_serve_opts {
	const char *socket_path;
	int vu_fd;
	const char *control_path;
	const char *state_path;
	uint32_t grace_ms;
	uint32_t stats_interval_ms;
};

/*
 * Run until SIGTERM/SIGINT. Listens for the front-end on @socket_path, or,
 * if @vu_fd >= 0, serves the already connected socket @vu_fd and returns
 * when that session ends. Returns a process exit code.
 */
int tb_serve_run(const struct tb_serve_opts *o);

/* listen on a fresh UNIX socket at @path with mode 0600; fd or -errno */
int tb_listen_unix(const char *path);

#endif /* TB_SERVE_H */
