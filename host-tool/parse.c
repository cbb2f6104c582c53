// SPDX-License-Identifier: GPL-2.0
/*
 * parse.c - sizes, durations, formatting.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mem.h"
#include "parse.h"

/* leading decimal digits only (no sign, no spaces, no hex); 0 or -1 */
static int tb_parse_uint(const char *s, uint64_t *v, const char **end)
{
	uint64_t n = 0;

	if (!isdigit((unsigned char)*s))
		return -1;
	for (; isdigit((unsigned char)*s); s++) {
		unsigned int d = (unsigned int)(*s - '0');

		if (n > (UINT64_MAX - d) / 10)
			return -1;
		n = n * 10 + d;
	}
	*v = n;
	*end = s;
	return 0;
}

int tb_parse_size_pages(const char *s, uint64_t *pages, const char **why)
{
	static const struct { const char *suffix; unsigned int shift; } units[] = {
		{ "", 0 }, { "b", 0 },
		{ "k", 10 }, { "kb", 10 }, { "kib", 10 },
		{ "m", 20 }, { "mb", 20 }, { "mib", 20 },
		{ "g", 30 }, { "gb", 30 }, { "gib", 30 },
		{ "t", 40 }, { "tb", 40 }, { "tib", 40 },
	};
	const char *end;
	uint64_t n;

	if (!s || tb_parse_uint(s, &n, &end)) {
		*why = "expected a number with an optional unit (K, M, G, T, or p for pages)";
		return -1;
	}
	if (!strcmp(end, "p")) {
		*pages = n;
		return 0;
	}
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcasecmp(end, units[i].suffix))
			continue;
		if (units[i].shift && n > (UINT64_MAX >> units[i].shift)) {
			*why = "size too large";
			return -1;
		}
		n <<= units[i].shift;
		if (n % TB_PAGE_SIZE) {
			*why = "size must be a multiple of 4 KiB";
			return -1;
		}
		*pages = n / TB_PAGE_SIZE;
		return 0;
	}
	*why = "unknown unit (use K, M, G, T, or p for pages)";
	return -1;
}

int tb_parse_percent(const char *s, int *pct, const char **why)
{
	const char *end;
	uint64_t n;

	*why = NULL;
	if (!s || !*s || s[strlen(s) - 1] != '%')
		return -1;
	if (tb_parse_uint(s, &n, &end) || strcmp(end, "%") || n > 100) {
		*why = "a percentage is 0% to 100% of guest RAM";
		return -1;
	}
	*pct = (int)n;
	return 0;
}

int tb_parse_duration_ms(const char *s, uint64_t *ms, const char **why)
{
	static const struct { const char *suffix; uint64_t mul; } units[] = {
		{ "", 1 }, { "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
	};
	const char *end;
	uint64_t n;

	if (!s || tb_parse_uint(s, &n, &end)) {
		*why = "expected a number with an optional unit (ms, s, m, h)";
		return -1;
	}
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(end, units[i].suffix))
			continue;
		if (n > UINT64_MAX / units[i].mul) {
			*why = "duration too large";
			return -1;
		}
		*ms = n * units[i].mul;
		return 0;
	}
	*why = "unknown unit (use ms, s, m or h)";
	return -1;
}

void tb_format_bytes(char *buf, size_t len, int64_t bytes)
{
	static const char *const unit[] = { "KiB", "MiB", "GiB", "TiB" };
	/* negate as a double: -INT64_MIN does not fit an int64_t */
	double v = bytes < 0 ? -(double)bytes : (double)bytes;
	const char *sign = bytes < 0 ? "-" : "";
	int u = -1;

	if (v < 1024) {
		snprintf(buf, len, "%s%.0f B", sign, v);
		return;
	}
	while (v >= 1024 && u < 3) {
		v /= 1024;
		u++;
	}
	snprintf(buf, len, "%s%.1f %s", sign, v, unit[u]);
}
