// SPDX-License-Identifier: GPL-2.0
/*
 * memtrace - a guest workload that follows a memory-demand trace and
 * measures the work it gets done (bench/policy.py).
 *
 *   memtrace TRACE [GROW_MIB_PER_S]
 *
 * TRACE is "SECONDS:MIB,SECONDS:MIB,...": for each phase the program's
 * memory is brought to MIB (grown 1 MiB at a time at GROW_MIB_PER_S, default
 * 64; shrunk at once) and held for SECONDS from the phase's start. All the
 * while it works on its memory: a read-modify-write of one word in each
 * page, chunk after chunk, round and round (a page swapped out costs a
 * major fault to touch again). Once a second it prints
 *   memtrace: t=SECONDS mib=MIB ops=PAGES_TOUCHED_THAT_SECOND
 * and at the end "memtrace: done ops=TOTAL seconds=S". An OOM kill shows
 * as the shell's status 137.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1UL << 20)
#define MAX_CHUNKS 16384
#define MAX_PHASES 256

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	static char *chunk[MAX_CHUNKS];
	double secs[MAX_PHASES], t0, next_print, phase_end = 0, grow_rate = 64, grown_at;
	long mibs[MAX_PHASES], have = 0, page = sysconf(_SC_PAGESIZE);
	unsigned long long ops = 0, ops_sec = 0;
	int nph = 0, ph = -1;
	long cursor = 0;
	char *s, *tok, *save = NULL;

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: memtrace SECONDS:MIB[,SECONDS:MIB...] [GROW_MIB_PER_S]\n");
		return 2;
	}
	if (argc == 3)
		grow_rate = strtod(argv[2], NULL);
	if (!(grow_rate > 0)) {
		fprintf(stderr, "memtrace: bad growth rate\n");
		return 2;
	}
	s = strdup(argv[1]);
	for (tok = strtok_r(s, ",", &save); tok && nph < MAX_PHASES;
	     tok = strtok_r(NULL, ",", &save)) {
		if (sscanf(tok, "%lf:%ld", &secs[nph], &mibs[nph]) != 2 || secs[nph] <= 0 ||
		    mibs[nph] < 0 || mibs[nph] > MAX_CHUNKS) {
			fprintf(stderr, "memtrace: bad phase '%s'\n", tok);
			return 2;
		}
		nph++;
	}
	free(s);
	setvbuf(stdout, NULL, _IOLBF, 0);
	t0 = now_s();
	next_print = t0 + 1;
	grown_at = t0;
	for (;;) {
		double t = now_s();

		if (t >= phase_end) {
			if (++ph == nph)
				break;
			phase_end = (ph ? phase_end : t0) + secs[ph];
			grown_at = t;
		}
		/* shrink at once, grow at the rate */
		while (have > mibs[ph]) {
			munmap(chunk[--have], CHUNK);
			chunk[have] = NULL;
		}
		while (have < mibs[ph] && (t - grown_at) * grow_rate >= 1) {
			char *p = mmap(NULL, CHUNK, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

			if (p == MAP_FAILED) {
				printf("memtrace: cannot map at %ld MiB\n", have);
				return 1;
			}
			for (unsigned long o = 0; o < CHUNK; o += (unsigned long)page)
				p[o] = 1;
			chunk[have++] = p;
			grown_at += 1.0 / grow_rate;
		}
		if (have < mibs[ph] && grown_at < t - 1)
			grown_at = t - 1;	/* do not bank growth while blocked */
		/* the work: one chunk's pages */
		if (have) {
			char *p;

			if (cursor >= have)
				cursor = 0;
			p = chunk[cursor++];
			for (unsigned long o = 0; o < CHUNK; o += (unsigned long)page) {
				volatile long *w = (volatile long *)(p + o);

				*w = *w + 1;
			}
			ops += CHUNK / (unsigned long)page;
			ops_sec += CHUNK / (unsigned long)page;
		} else {
			usleep(1000);
		}
		if (t >= next_print) {
			printf("memtrace: t=%.0f mib=%ld ops=%llu\n", t - t0, have, ops_sec);
			ops_sec = 0;
			next_print += 1;
		}
	}
	printf("memtrace: done ops=%llu seconds=%.1f\n", ops, now_s() - t0);
	return 0;
}
