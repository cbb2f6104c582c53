/* SPDX-License-Identifier: GPL-2.0 */
/*
 * sd.h - the daemon's side of systemd's service protocol, through libsystemd:
 * readiness and status (sd_notify(3): READY=1, STOPPING=1, STATUS=), the
 * sockets systemd passes in (sd_listen_fds_with_names(3): LISTEN_FDS,
 * LISTEN_FDNAMES) and the file descriptor store (FDSTORE=1 / FDSTOREREMOVE=1
 * with FDNAME=), which keeps fds across a restart of the service.
 *
 * Everything is a no-op without systemd (no NOTIFY_SOCKET, no LISTEN_FDS),
 * so the daemon runs the same by hand. Single-threaded: the event loop owns
 * struct tb_sd.
 */
#ifndef TB_SD_H
#define TB_SD_H

#include <stdbool.h>

/* passed-in fds kept; a restart passes at most the stored ones plus sockets */
#define TB_SD_MAX_FDS 64
#define TB_SD_NAME_MAX 32

struct tb_sd_fd {
	int fd;				/* -1 once taken or closed */
	char name[TB_SD_NAME_MAX];
};

/**
 * struct tb_sd - systemd state of the daemon
 * @passed: fds from LISTEN_FDS not taken yet, with their names
 * @npassed: entries of @passed
 * @notify: NOTIFY_SOCKET is set (messages go somewhere)
 * @stored: what is in the fd store now, by name (fd = our fd number)
 * @nstored: entries of @stored
 */
struct tb_sd {
	struct tb_sd_fd passed[TB_SD_MAX_FDS];
	unsigned int npassed;
	bool notify;
	struct tb_sd_fd stored[TB_SD_MAX_FDS];
	unsigned int nstored;
};

/*
 * Take what systemd passed (LISTEN_FDS, unsetting the variables so children
 * do not inherit them; every fd made CLOEXEC). 0 or -errno.
 */
int tb_sd_init(struct tb_sd *sd);

/* the passed fd named @name (first one), now the caller's; -1 if none */
int tb_sd_take_named(struct tb_sd *sd, const char *name);

/* a passed fd named @name is waiting to be taken */
bool tb_sd_has_passed(const struct tb_sd *sd, const char *name);

/* a passed listening AF_UNIX stream socket bound to @path, now the caller's; -1 */
int tb_sd_take_listener(struct tb_sd *sd, const char *path);

/* close every passed fd nobody took (logged) */
void tb_sd_close_unused(struct tb_sd *sd);

/* send one sd_notify(3) state line such as "READY=1" (no-op without systemd) */
void tb_sd_notify(struct tb_sd *sd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * Make the fd store hold @fd under @name, replacing what it held under that
 * name (FDSTOREREMOVE=1 first); @fd < 0 only removes. Remembers it as
 * stored even when no one listens, so the caller can compare. 0 or -errno.
 */
int tb_sd_store(struct tb_sd *sd, const char *name, int fd);

/* the fd number last stored under @name, or -1 */
int tb_sd_stored_fd(const struct tb_sd *sd, const char *name);

/*
 * Log lines carry syslog priority prefixes ("<3>") when stderr is the
 * journal (JOURNAL_STREAM names stderr's device and inode).
 */
bool tb_sd_stderr_is_journal(void);

#endif /* TB_SD_H */
