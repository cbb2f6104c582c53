// SPDX-License-Identifier: GPL-2.0
/*
 * memfrag - fragment guest memory, for compaction tests.
 *
 *   memfrag MIB [HOLD_SECONDS]
 *
 * Maps and writes MIB mebibytes, then unmaps every other 256 KiB of it, so
 * that the freed holes lie among pages still held. Prints "memfrag: ready,
 * holding N MiB" and holds the rest for HOLD_SECONDS (default 60) or until
 * killed. Allocations made meanwhile (balloon pages) fill the holes; once
 * memfrag exits, their pageblocks are partly free and compaction has work.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define PIECE (256UL << 10)

int main(int argc, char **argv)
{
	long page = sysconf(_SC_PAGESIZE);
	unsigned long mib, len, off;
	long hold = 60;
	char *p;

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: memfrag MIB [HOLD_SECONDS]\n");
		return 2;
	}
	mib = strtoul(argv[1], NULL, 0);
	if (argc == 3)
		hold = strtol(argv[2], NULL, 0);
	len = mib << 20;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		perror("memfrag: mmap");
		return 1;
	}
	/* Small pages: an unmapped piece of a huge page is not freed at once. */
	madvise(p, len, MADV_NOHUGEPAGE);
	for (off = 0; off < len; off += page)
		p[off] = 1;
	for (off = PIECE; off + PIECE <= len; off += 2 * PIECE)
		munmap(p + off, PIECE);
	printf("memfrag: ready, holding %lu MiB\n", mib / 2);
	fflush(stdout);
	if (hold > 0)
		sleep((unsigned int)hold);
	return 0;
}
