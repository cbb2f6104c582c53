/* SPDX-License-Identifier: GPL-2.0 */
/*
 * parse.h - command line value parsing and human-readable formatting.
 */
#ifndef TB_PARSE_H
#define TB_PARSE_H

#include <stddef.h>
#include <stdint.h>

/*
 * SIZE: bytes with an optional binary unit (K, M, G, T; optionally followed
 * by "iB" or "B"; case-insensitive; plain number or "B" = bytes), or "Np"
 * for N 4 KiB pages. Byte sizes must be a multiple of 4 KiB.
 * Returns 0 with *pages set, or -1 with *why set.
 */
int tb_parse_size_pages(const char *s, uint64_t *pages, const char **why);

/*
 * "N%" with N in 0..100: *pct set, returns 0; -1 if @s is not a percentage
 * (*why set when it looks like one but is invalid, else NULL).
 */
int tb_parse_percent(const char *s, int *pct, const char **why);

/*
 * DUR: integer with unit ms, s, m (minutes) or h; plain = milliseconds.
 * Returns 0 with *ms set, or -1 with *why set.
 */
int tb_parse_duration_ms(const char *s, uint64_t *ms, const char **why);

/* "1.5 GiB", "512.0 MiB", "12 B"; negative values keep their sign */
void tb_format_bytes(char *buf, size_t len, int64_t bytes);

#endif /* TB_PARSE_H */
