// SPDX-License-Identifier: GPL-2.0
/*
 * memhog - allocate and touch guest memory, for pressure tests.
 *
 *   memhog MIB [HOLD_SECONDS]
 *
 * Allocates MIB mebibytes in 1 MiB chunks, writes every page, prints
 * "memhog: touched N MiB in T ms", then holds the memory for HOLD_SECONDS
 * (default 0; -1 = until killed) and exits 0. If an allocation fails it
 * prints how far it got and exits 1. Runs as a static binary in the test
 * initramfs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1UL << 20)

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

int main(int argc, char **argv)
{
	long page = sysconf(_SC_PAGESIZE);
	long mib, hold = 0, done, t0, off;
	char *p;

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: memhog MIB [HOLD_SECONDS]\n");
		return 2;
	}
	mib = strtol(argv[1], NULL, 0);
	if (argc == 3)
		hold = strtol(argv[2], NULL, 0);

	t0 = now_ms();
	for (done = 0; done < mib; done++) {
		p = malloc(CHUNK);
		if (!p) {
			printf("memhog: allocation failed after %ld MiB\n", done);
			return 1;
		}
		for (off = 0; off < (long)CHUNK; off += page)
			p[off] = (char)(done + off);
	}
	printf("memhog: touched %ld MiB in %ld ms\n", done, now_ms() - t0);
	fflush(stdout);

	if (hold < 0)
		for (;;)
			pause();
	if (hold > 0)
		sleep((unsigned int)hold);
	return 0;
}
