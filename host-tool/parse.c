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

/*
 * A number: decimal digits with an optional fraction ("1", "1.5"), or hex
 * ("0x1f", no fraction). The value is *mant / *div (*div the fraction's
 * power of ten, 1 without one). 0, -1 if @s does not start with a number,
 * -2 if the number does not fit in 64 bits (or has more than 9 decimals).
 */
static int tb_scan_number(const char *s, unsigned __int128 *mant, uint64_t *div,
			  const char **end)
{
	unsigned __int128 n = 0;
	uint64_t d = 1;

	if ((s[0] == '0') && (s[1] == 'x' || s[1] == 'X')) {
		s += 2;
		if (!isxdigit((unsigned char)*s))
			return -1;
		for (; isxdigit((unsigned char)*s); s++) {
			n = n * 16 + (unsigned int)(isdigit((unsigned char)*s) ? *s - '0' :
						    tolower((unsigned char)*s) - 'a' + 10);
			if (n > UINT64_MAX)
				return -2;
		}
		*mant = n;
		*div = 1;
		*end = s;
		return 0;
	}
	if (!isdigit((unsigned char)*s))
		return -1;
	for (; isdigit((unsigned char)*s); s++) {
		n = n * 10 + (unsigned int)(*s - '0');
		if (n > UINT64_MAX)
			return -2;
	}
	if (*s == '.' && isdigit((unsigned char)s[1])) {
		for (s++; isdigit((unsigned char)*s); s++) {
			if (d == 1000000000ULL)
				return -2;
			n = n * 10 + (unsigned int)(*s - '0');
			d *= 10;
		}
	}
	*mant = n;
	*div = d;
	*end = s;
	return 0;
}

#define TB_SIZE_FORM "a size is a number with an optional unit: 512M, 1.5G, 4096K, " \
	"0x100000 (bytes), 262144p (4 KiB pages)"

int tb_parse_size_pages(const char *s, uint64_t *pages, const char **why)
{
	static const struct { const char *suffix; unsigned int shift; } units[] = {
		{ "", 0 }, { "b", 0 },
		{ "k", 10 }, { "kb", 10 }, { "kib", 10 },
		{ "m", 20 }, { "mb", 20 }, { "mib", 20 },
		{ "g", 30 }, { "gb", 30 }, { "gib", 30 },
		{ "t", 40 }, { "tb", 40 }, { "tib", 40 },
	};
	unsigned __int128 n, bytes;
	const char *end;
	uint64_t div;
	int rc;

	rc = s ? tb_scan_number(s, &n, &div, &end) : -1;
	if (rc == -2) {
		*why = "size too large";
		return -1;
	}
	if (rc) {
		*why = TB_SIZE_FORM;
		return -1;
	}
	if (!strcmp(end, "p")) {
		if (div != 1) {
			*why = "a page count is a whole number (e.g. 262144p)";
			return -1;
		}
		*pages = (uint64_t)n;
		return 0;
	}
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcasecmp(end, units[i].suffix))
			continue;
		bytes = n << units[i].shift;
		if ((bytes >> units[i].shift) != n || bytes / div > UINT64_MAX) {
			*why = "size too large";
			return -1;
		}
		if (bytes % div) {
			*why = "size is not a whole number of bytes";
			return -1;
		}
		bytes /= div;
		if (bytes % TB_PAGE_SIZE) {
			*why = "size must be a multiple of 4 KiB";
			return -1;
		}
		*pages = (uint64_t)(bytes / TB_PAGE_SIZE);
		return 0;
	}
	*why = "unknown unit: " TB_SIZE_FORM;
	return -1;
}

int tb_parse_percent(const char *s, uint32_t *centi, const char **why)
{
	unsigned __int128 n;
	const char *end;
	uint64_t div;

	*why = NULL;
	if (!s || !*s || s[strlen(s) - 1] != '%')
		return -1;
	if (tb_scan_number(s, &n, &div, &end) || strcmp(end, "%") || div > 100 ||
	    n * (100 / div) > 10000) {
		*why = "a percentage is 0% to 100% of guest RAM, with at most two "
		       "decimals (e.g. 25%, 12.5%)";
		return -1;
	}
	*centi = (uint32_t)(n * (100 / div));
	return 0;
}

#define TB_DUR_FORM "a duration is a number with a unit, or several from the largest " \
	"down: 250ms, 2s, 1.5s, 1m30s, 1h (a plain number is milliseconds)"

int tb_parse_duration_ms(const char *s, uint64_t *ms, const char **why)
{
	/* longest first, so that "ms" is not read as "m" */
	static const struct { const char *suffix; uint64_t mul; } units[] = {
		{ "ms", 1 }, { "h", 3600000 }, { "m", 60000 }, { "s", 1000 },
	};
	unsigned __int128 total = 0;
	uint64_t last = UINT64_MAX;
	const char *p = s;

	if (!s || !*s) {
		*why = TB_DUR_FORM;
		return -1;
	}
	while (*p) {
		unsigned __int128 n, v;
		const char *end;
		uint64_t div;
		size_t i;
		int rc = tb_scan_number(p, &n, &div, &end);

		if (rc == -2) {
			*why = "duration too large";
			return -1;
		}
		if (rc) {
			*why = TB_DUR_FORM;
			return -1;
		}
		if (!*end) {
			/* a bare number: milliseconds, but only on its own */
			if (p != s || div != 1) {
				*why = p != s ? "every part of a duration needs its unit "
						"(1m30s, not 1m30)" : TB_DUR_FORM;
				return -1;
			}
			*ms = (uint64_t)n;
			return 0;
		}
		for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
			if (!strncasecmp(end, units[i].suffix, strlen(units[i].suffix)))
				break;
		if (i == sizeof(units) / sizeof(units[0])) {
			*why = "unknown unit: " TB_DUR_FORM;
			return -1;
		}
		if (units[i].mul >= last) {
			*why = "the parts of a duration go from the largest unit down, "
			       "each once (1h2m3s)";
			return -1;
		}
		last = units[i].mul;
		v = n * units[i].mul;
		if (v % div) {
			*why = "a duration is a whole number of milliseconds";
			return -1;
		}
		total += v / div;
		if (total > UINT64_MAX) {
			*why = "duration too large";
			return -1;
		}
		p = end + strlen(units[i].suffix);
	}
	*ms = (uint64_t)total;
	return 0;
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
