// SPDX-License-Identifier: GPL-2.0
/*
 * sd.c - systemd's service protocol through libsystemd (see sd.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "sd.h"
#include "util.h"

int tb_sd_init(struct tb_sd *sd)
{
	char **names = NULL;
	int n;

	memset(sd, 0, sizeof(*sd));
	sd->notify = getenv("NOTIFY_SOCKET") != NULL;
	n = sd_listen_fds_with_names(1, &names);
	if (n < 0)
		return n;
	for (int i = 0; i < n; i++) {
		int fd = SD_LISTEN_FDS_START + i;
		struct tb_sd_fd *p;

		if (sd->npassed == TB_SD_MAX_FDS) {
			tb_warn("systemd: more than %d fds passed, closing fd %d (%s)",
				TB_SD_MAX_FDS, fd, names && names[i] ? names[i] : "?");
			close(fd);
			continue;
		}
		if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
			tb_warn("systemd: passed fd %d: %s", fd, strerror(errno));
			continue;
		}
		p = &sd->passed[sd->npassed++];
		p->fd = fd;
		snprintf(p->name, sizeof(p->name), "%s",
			 names && names[i] ? names[i] : "unknown");
		tb_dbg("systemd: passed fd %d named %s", fd, p->name);
	}
	if (names) {
		for (int i = 0; names[i]; i++)
			free(names[i]);
		free(names);
	}
	return 0;
}

int tb_sd_take_named(struct tb_sd *sd, const char *name)
{
	for (unsigned int i = 0; i < sd->npassed; i++) {
		struct tb_sd_fd *p = &sd->passed[i];

		if (p->fd >= 0 && !strcmp(p->name, name)) {
			int fd = p->fd;

			p->fd = -1;
			return fd;
		}
	}
	return -1;
}

bool tb_sd_has_passed(const struct tb_sd *sd, const char *name)
{
	for (unsigned int i = 0; i < sd->npassed; i++)
		if (sd->passed[i].fd >= 0 && !strcmp(sd->passed[i].name, name))
			return true;
	return false;
}

int tb_sd_take_listener(struct tb_sd *sd, const char *path)
{
	for (unsigned int i = 0; i < sd->npassed; i++) {
		struct tb_sd_fd *p = &sd->passed[i];

		if (p->fd >= 0 && sd_is_socket_unix(p->fd, SOCK_STREAM, 1, path, 0) > 0) {
			int fd = p->fd;

			p->fd = -1;
			return fd;
		}
	}
	return -1;
}

void tb_sd_close_unused(struct tb_sd *sd)
{
	for (unsigned int i = 0; i < sd->npassed; i++) {
		struct tb_sd_fd *p = &sd->passed[i];

		if (p->fd < 0)
			continue;
		tb_info("systemd: passed fd %d (%s) not used, closed", p->fd, p->name);
		/* a stale stored fd must leave the store too */
		if (sd->notify) {
			char msg[64 + TB_SD_NAME_MAX];

			snprintf(msg, sizeof(msg), "FDSTOREREMOVE=1\nFDNAME=%s", p->name);
			sd_notify(0, msg);
		}
		tb_close_fd(&p->fd);
	}
	sd->npassed = 0;
}

void tb_sd_notify(struct tb_sd *sd, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int rc;

	if (!sd->notify)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	rc = sd_notify(0, buf);
	if (rc < 0)
		tb_warn("systemd: notify \"%s\": %s", buf, strerror(-rc));
}

static int tb_sd_stored_idx(const struct tb_sd *sd, const char *name)
{
	for (unsigned int i = 0; i < sd->nstored; i++)
		if (!strcmp(sd->stored[i].name, name))
			return (int)i;
	return -1;
}

int tb_sd_stored_fd(const struct tb_sd *sd, const char *name)
{
	int i = tb_sd_stored_idx(sd, name);

	return i < 0 ? -1 : sd->stored[i].fd;
}

int tb_sd_store(struct tb_sd *sd, const char *name, int fd)
{
	char msg[64 + TB_SD_NAME_MAX];
	int i = tb_sd_stored_idx(sd, name), rc;

	if (strlen(name) >= TB_SD_NAME_MAX)
		return -ENAMETOOLONG;
	if (i >= 0) {
		if (sd->notify) {
			snprintf(msg, sizeof(msg), "FDSTOREREMOVE=1\nFDNAME=%s", name);
			rc = sd_notify(0, msg);
			if (rc < 0)
				tb_warn("systemd: fd store: remove %s: %s", name, strerror(-rc));
		}
		sd->stored[i] = sd->stored[--sd->nstored];
	}
	if (fd < 0)
		return 0;
	if (sd->nstored == TB_SD_MAX_FDS)
		return -ENOSPC;
	if (sd->notify) {
		snprintf(msg, sizeof(msg), "FDSTORE=1\nFDNAME=%s", name);
		rc = sd_pid_notify_with_fds(0, 0, msg, &fd, 1);
		if (rc < 0) {
			tb_warn("systemd: fd store: %s (fd %d): %s", name, fd, strerror(-rc));
			return rc;
		}
	}
	sd->stored[sd->nstored].fd = fd;
	snprintf(sd->stored[sd->nstored].name, TB_SD_NAME_MAX, "%s", name);
	sd->nstored++;
	return 0;
}

bool tb_sd_stderr_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}
