/* SPDX-License-Identifier: GPL-2.0 */
/*
 * parse.h - command line value parsing and human-readable formatting.
 */
#ifndef TB_PARSE_H
#define TB_PARSE_H

#include <stddef.h>
#include <stdint.h>

/*
 * SIZE: a number of bytes with an optional binary unit (K, M, G, T;
 * optionally followed by "iB" or "B"; case-insensitive; plain number or "B"
 * = bytes), decimals allowed ("1.5G"), or hex bytes ("0x100000"); or "Np"
 * for N 4 KiB pages (a whole number). Byte sizes must come out a whole
 * multiple of 4 KiB. Returns 0 with *pages set, or -1 with *why set.
 */
int tb_parse_size_pages(const char *s, uint64_t *pages, const char **why);

/*
 * "N%" with N in 0..100 and at most two decimals: *centi set to hundredths
 * of a percent (0..10000), returns 0; -1 if @s is not a percentage (*why
 * set when it looks like one but is invalid, else NULL).
 */
int tb_parse_percent(const char *s, uint32_t *centi, const char **why);

/*
 * DUR: a number with unit ms, s, m (minutes) or h (case-insensitive),
 * decimals allowed ("1.5s"), or several such parts from the largest unit
 * down ("1m30s", "1h2m"); a plain number alone is milliseconds. Must come
 * out a whole number of milliseconds. Returns 0 with *ms set, or -1 with
 * *why set.
 */
int tb_parse_duration_ms(const char *s, uint64_t *ms, const char **why);

/* "1.5 GiB", "512.0 MiB", "12 B"; negative values keep their sign */
void tb_format_bytes(char *buf, size_t len, int64_t bytes);

#endif /* TB_PARSE_H */
