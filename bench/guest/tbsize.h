/* SPDX-License-Identifier: GPL-2.0 */
/*
 * tbsize.h - the size argument of the bench guest programs: a number with
 * an optional K, M or G suffix (binary units). Included by tbmem.c and
 * tbwork.c, each built as its own static binary.
 */
#ifndef TBSIZE_H
#define TBSIZE_H

#include <stdlib.h>

/* bytes in S, or 0 when S is not a size */
static inline unsigned long parse_size(const char *s)
{
	char *end;
	unsigned long v = strtoul(s, &end, 0);

	switch (*end) {
	case 'G': case 'g':
		v <<= 10;
		/* fall through */
	case 'M': case 'm':
		v <<= 10;
		/* fall through */
	case 'K': case 'k':
		v <<= 10;
		end++;
		break;
	}
	return *end ? 0 : v;
}

#endif
