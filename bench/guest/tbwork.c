// SPDX-License-Identifier: GPL-2.0
/*
 * tbwork - the guest's own workload for the benchmark's workload-cost
 * figure: how much work a program in the guest loses while the balloon
 * takes memory.
 *
 *   tbwork [-s BYTES] [-i SAMPLE_MS] [-t MAX_S] STOPFILE
 *
 * Maps BYTES (default 64 MiB) of private anonymous memory, touches it, then
 * reads, modifies and writes it over and over, one 64-bit word per 64-byte
 * line, until STOPFILE exists (looked for once per sample) or MAX_S seconds
 * (default 300) have passed. A unit of work is one 4 KiB page done. Keeps
 * the cumulative count every SAMPLE_MS (default 20), and notes the sample at
 * which STOPFILE.1, then STOPFILE.2 first exist (the benchmark creates them
 * just before and just after the move it measures). Prints after the loop
 * (nothing is printed while the clock runs):
 *
 *   sample T_US UNITS   units done by T_US microseconds after the start
 *   mark N T_US UNITS   the sample at which STOPFILE.N was first seen
 *   total T_US UNITS
 *
 * Exit 0, or 1 with a message when a step fails. Static binary for the test
 * initramfs (bench/run.py appends it as a second cpio archive).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "tbsize.h"

#define PAGE 4096UL
#define MAX_SAMPLES 65536

struct sample {
	long t_us;
	unsigned long units;
};

static struct sample samples[MAX_SAMPLES];
static unsigned int nsamples;
static struct sample marks[2];
static unsigned int nmarks;

static long now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000L + ts.tv_nsec / 1000L;
}

int main(int argc, char **argv)
{
	unsigned long bytes = 64UL << 20, units = 0, off = 0, i;
	long sample_us = 20000, max_us = 300L * 1000000L, t0, t, next;
	volatile uint64_t *mem;
	char mark[4096];
	const char *stop;
	int c;

	while ((c = getopt(argc, argv, "s:i:t:")) != -1) {
		switch (c) {
		case 's':
			bytes = parse_size(optarg);
			if (!bytes) {
				fprintf(stderr, "tbwork: bad size '%s'\n", optarg);
				return 1;
			}
			break;
		case 'i':
			sample_us = atol(optarg) * 1000L;
			break;
		case 't':
			max_us = atol(optarg) * 1000000L;
			break;
		default:
			fprintf(stderr, "usage: tbwork [-s BYTES] [-i SAMPLE_MS] [-t MAX_S] STOPFILE\n");
			return 1;
		}
	}
	if (optind != argc - 1 || sample_us <= 0 || max_us <= 0 || bytes < PAGE) {
		fprintf(stderr, "usage: tbwork [-s BYTES] [-i SAMPLE_MS] [-t MAX_S] STOPFILE\n");
		return 1;
	}
	stop = argv[optind];
	bytes -= bytes % PAGE;
	mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		fprintf(stderr, "tbwork: mmap %lu: %s\n", bytes, strerror(errno));
		return 1;
	}
	memset((void *)mem, 1, bytes);

	t0 = now_us();
	next = sample_us;
	for (;;) {
		/* one page: one word per cache line */
		for (i = 0; i < PAGE / sizeof(uint64_t); i += 8)
			mem[off / sizeof(uint64_t) + i] += i;
		off += PAGE;
		if (off >= bytes)
			off = 0;
		units++;
		if (units % 16)
			continue;
		t = now_us() - t0;
		if (t < next)
			continue;
		if (nsamples < MAX_SAMPLES)
			samples[nsamples++] = (struct sample){ t, units };
		next = t + sample_us;
		if (nmarks < 2) {
			snprintf(mark, sizeof(mark), "%s.%u", stop, nmarks + 1);
			if (access(mark, F_OK) == 0)
				marks[nmarks++] = (struct sample){ t, units };
		}
		if (t >= max_us || access(stop, F_OK) == 0)
			break;
	}
	for (i = 0; i < nsamples; i++)
		printf("sample %ld %lu\n", samples[i].t_us, samples[i].units);
	for (i = 0; i < nmarks; i++)
		printf("mark %lu %ld %lu\n", i + 1, marks[i].t_us, marks[i].units);
	printf("total %ld %lu\n", now_us() - t0, units);
	return 0;
}
