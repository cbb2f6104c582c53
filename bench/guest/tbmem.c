// SPDX-License-Identifier: GPL-2.0
/*
 * tbmem - the "limit" of the balloon benchmark: allocate and free guest
 * memory with no host involvement, and time both.
 *
 *   tbmem [-m populate|touch] [-i SAMPLE_MS] [-H] BYTES
 *
 * Maps BYTES of private anonymous memory, makes every 4 KiB page of it
 * present (populate: madvise(MADV_POPULATE_WRITE) 2 MiB at a time, one
 * system call per chunk; touch: a write to one byte per page, one page fault
 * per page), then unmaps it 2 MiB at a time. Transparent huge pages are
 * refused (MADV_NOHUGEPAGE) unless -H is given, so the guest moves 4 KiB
 * pages like a balloon does. Prints, after both phases (nothing is printed
 * while the clock runs):
 *
 *   sample alloc|free T_US BYTES   progress, about every SAMPLE_MS (default 20)
 *   alloc_us N                     time to make BYTES present
 *   free_us N                      time to unmap them
 *
 * Exit 0, or 1 with a message when a step fails. Static binary for the test
 * initramfs (bench/run.py appends it as a second cpio archive).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "tbsize.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define CHUNK (2UL << 20)
#define MAX_SAMPLES 65536

struct sample {
	char phase;		/* 'a' alloc, 'f' free */
	long t_us;
	unsigned long bytes;
};

static struct sample samples[MAX_SAMPLES];
static unsigned int nsamples;

static long now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000L + ts.tv_nsec / 1000L;
}

static void record(char phase, long t_us, unsigned long bytes)
{
	if (nsamples < MAX_SAMPLES)
		samples[nsamples++] = (struct sample){ phase, t_us, bytes };
}

static void usage(void)
{
	fprintf(stderr, "usage: tbmem [-m populate|touch] [-i SAMPLE_MS] [-H] BYTES\n");
	exit(2);
}

int main(int argc, char **argv)
{
	long page = sysconf(_SC_PAGESIZE);
	long interval_us = 20000, t0, t, last, alloc_us, free_us;
	unsigned long bytes, off, p_off;
	int touch = 0, thp = 0, opt;
	unsigned int i;
	char *mem;

	while ((opt = getopt(argc, argv, "m:i:H")) != -1) {
		switch (opt) {
		case 'm':
			if (!strcmp(optarg, "touch"))
				touch = 1;
			else if (strcmp(optarg, "populate"))
				usage();
			break;
		case 'i':
			interval_us = strtol(optarg, NULL, 0) * 1000L;
			break;
		case 'H':
			thp = 1;
			break;
		default:
			usage();
		}
	}
	if (optind != argc - 1)
		usage();
	bytes = parse_size(argv[optind]);
	if (!bytes || bytes % CHUNK)
		usage();

	mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (mem == MAP_FAILED) {
		printf("tbmem: mmap %lu: %s\n", bytes, strerror(errno));
		return 1;
	}
	if (!thp && madvise(mem, bytes, MADV_NOHUGEPAGE))
		printf("tbmem: MADV_NOHUGEPAGE: %s\n", strerror(errno));

	t0 = last = now_us();
	record('a', 0, 0);
	for (off = 0; off < bytes; off += CHUNK) {
		if (touch) {
			for (p_off = 0; p_off < CHUNK; p_off += page)
				mem[off + p_off] = 1;
		} else if (madvise(mem + off, CHUNK, MADV_POPULATE_WRITE)) {
			printf("tbmem: MADV_POPULATE_WRITE after %lu bytes: %s\n",
			       off, strerror(errno));
			return 1;
		}
		t = now_us();
		if (t - last >= interval_us) {
			record('a', t - t0, off + CHUNK);
			last = t;
		}
	}
	alloc_us = now_us() - t0;
	record('a', alloc_us, bytes);

	t0 = last = now_us();
	record('f', 0, bytes);
	for (off = 0; off < bytes; off += CHUNK) {
		if (munmap(mem + off, CHUNK)) {
			printf("tbmem: munmap: %s\n", strerror(errno));
			return 1;
		}
		t = now_us();
		if (t - last >= interval_us) {
			record('f', t - t0, bytes - off - CHUNK);
			last = t;
		}
	}
	free_us = now_us() - t0;
	record('f', free_us, 0);

	for (i = 0; i < nsamples; i++)
		printf("sample %s %ld %lu\n", samples[i].phase == 'a' ? "alloc" : "free",
		       samples[i].t_us, samples[i].bytes);
	printf("alloc_us %ld\nfree_us %ld\n", alloc_us, free_us);
	return 0;
}
