// SPDX-License-Identifier: GPL-2.0
/*
 * util.c - logging, clocks and fd helpers.
 */
#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

int tb_log_level = TB_LOG_INFO;
bool tb_log_syslog_prefix;

/* syslog(3) priorities of the levels, for journald's "<N>" prefixes */
static const int tb_log_priority[TB_LOG_COUNT] = {
	[TB_LOG_ERR] = 3,
	[TB_LOG_WARN] = 4,
	[TB_LOG_INFO] = 6,
	[TB_LOG_DEBUG] = 7,
};

static const char *const tb_log_prefix[TB_LOG_COUNT] = {
	[TB_LOG_ERR] = "error",
	[TB_LOG_WARN] = "warning",
	[TB_LOG_INFO] = "info",
	[TB_LOG_DEBUG] = "debug",
};

void tb_log(int level, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	if (level > tb_log_level || level < 0 || level >= TB_LOG_COUNT)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	/* one fprintf per line so concurrent writers do not interleave */
	if (tb_log_syslog_prefix)
		fprintf(stderr, "<%d>%s: %s\n", tb_log_priority[level], tb_log_prefix[level], buf);
	else
		fprintf(stderr, "tballoon: %s: %s\n", tb_log_prefix[level], buf);
}

uint64_t tb_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void tb_close_fd(int *fd)
{
	if (*fd >= 0) {
		close(*fd);
		*fd = -1;
	}
}
