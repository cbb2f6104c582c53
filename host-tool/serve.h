/* SPDX-License-Identifier: GPL-2.0 */
/*
 * serve.h - `tballoon serve`: the event loop joining the vhost-user session,
 * the device model and the control socket clients.
 */
#ifndef TB_SERVE_H
#define TB_SERVE_H

/*
 * Run until SIGTERM/SIGINT. Listens for the front-end on @socket_path, or,
 * if @vu_fd >= 0, serves the already connected socket @vu_fd and returns
 * when that session ends. Returns a process exit code.
 */
int tb_serve_run(const char *socket_path, int vu_fd, const char *control_path);

/* listen on a fresh UNIX socket at @path with mode 0600; fd or -errno */
int tb_listen_unix(const char *path);

#endif /* TB_SERVE_H */
