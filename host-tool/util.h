/* SPDX-License-Identifier: GPL-2.0 */
/*
 * util.h - logging, little-endian access, clocks and small fd helpers shared
 * by every layer of the tballoon host tool.
 */
#ifndef TB_UTIL_H
#define TB_UTIL_H

#include <endian.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* release of the host tool, printed by --version and the QMP greeting */
#define TB_VERSION_MAJOR 0
#define TB_VERSION_MINOR 1
#define TB_VERSION_MICRO 0
#define TB_VERSION "0.1.0"

#define TB_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define TB_BIT(n) (1ULL << (n))

/* log levels, most severe first; messages above tb_log_level are dropped */
enum tb_log_level {
	TB_LOG_ERR,
	TB_LOG_WARN,
	TB_LOG_INFO,
	TB_LOG_DEBUG,
	TB_LOG_COUNT
};

/* current threshold; serve -v raises it */
extern int tb_log_level;

/* prefix lines with "<N>" syslog priorities (stderr is journald's) */
extern bool tb_log_syslog_prefix;

/* Log one line to stderr with a level prefix (no trailing newline needed). */
void tb_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define tb_err(...) tb_log(TB_LOG_ERR, __VA_ARGS__)
#define tb_warn(...) tb_log(TB_LOG_WARN, __VA_ARGS__)
#define tb_info(...) tb_log(TB_LOG_INFO, __VA_ARGS__)
#define tb_dbg(...) tb_log(TB_LOG_DEBUG, __VA_ARGS__)

/* CLOCK_MONOTONIC in milliseconds */
uint64_t tb_now_ms(void);

/* close *fd if it is open and mark it closed (-1) */
void tb_close_fd(int *fd);

/* Unaligned little-endian accessors for wire structures. */
static inline uint16_t tb_get_le16(const void *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
	return le16toh(v);
}

static inline uint32_t tb_get_le32(const void *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return le32toh(v);
}

static inline uint64_t tb_get_le64(const void *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return le64toh(v);
}

static inline void tb_put_le32(void *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, sizeof(v));
}

static inline uint32_t tb_min_u32(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}

/* a + b would not overflow and the sum is <= limit */
static inline bool tb_range_ok(uint64_t a, uint64_t b, uint64_t limit)
{
	return a <= limit && b <= limit - a;
}

#endif /* TB_UTIL_H */
