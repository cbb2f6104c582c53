// SPDX-License-Identifier: GPL-2.0
/*
 * memgrow - grow a guest program's memory steadily, for pressure tests.
 *
 *   memgrow MIB MIB_PER_S [HOLD_SECONDS]
 *
 * Allocates MIB mebibytes, 1 MiB at a time, at MIB_PER_S, writing every
 * page, so the guest's available memory falls steadily (unlike memhog,
 * which takes everything at once). Prints a line every 32 MiB, then
 * "memgrow: touched N MiB in T ms", holds the memory for HOLD_SECONDS
 * (default 0) and exits 0. If an allocation fails it prints how far it got
 * and exits 1. An OOM kill shows as the shell's status 137.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1UL << 20)

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	if (ms > 0)
		nanosleep(&ts, NULL);
}

int main(int argc, char **argv)
{
	long page = sysconf(_SC_PAGESIZE);
	long mib, rate, hold = 0, done, t0, off;
	char *p;

	if (argc < 3 || argc > 4) {
		fprintf(stderr, "usage: memgrow MIB MIB_PER_S [HOLD_SECONDS]\n");
		return 2;
	}
	mib = strtol(argv[1], NULL, 0);
	rate = strtol(argv[2], NULL, 0);
	if (argc == 4)
		hold = strtol(argv[3], NULL, 0);
	if (rate <= 0)
		rate = 1;

	t0 = now_ms();
	for (done = 0; done < mib; done++) {
		/* On schedule: MiB number `done` is due at done * 1000 / rate. */
		sleep_ms(t0 + done * 1000 / rate - now_ms());
		p = malloc(CHUNK);
		if (!p) {
			printf("memgrow: allocation failed after %ld MiB\n", done);
			return 1;
		}
		for (off = 0; off < (long)CHUNK; off += page)
			p[off] = (char)(done + off);
		if (done && !(done % 32)) {
			printf("memgrow: %ld MiB at %ld ms\n", done, now_ms() - t0);
			fflush(stdout);
		}
	}
	printf("memgrow: touched %ld MiB in %ld ms\n", done, now_ms() - t0);
	fflush(stdout);
	if (hold > 0)
		sleep((unsigned int)hold);
	return 0;
}
