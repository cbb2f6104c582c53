// SPDX-License-Identifier: GPL-2.0
/*
 * kcoreread - read all of the guest's RAM through /proc/kcore, as a crash
 * dump tool or a debugger would.
 *
 *   kcoreread
 *
 * Reads every PT_LOAD segment of /proc/kcore that maps physical memory
 * (p_paddr set: the direct map of RAM and the kernel text) in 1 MiB reads
 * and prints "kcoreread: N MiB from M segments, Z MiB of zero pages in T
 * ms". Exits 1 if /proc/kcore cannot be read. The kernel fills pages it
 * must not read (PageOffline: balloon pages) with zeros instead of reading
 * them. Runs as a static binary in the test initramfs.
 */
#include <elf.h>
#include <fcntl.h>
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

static int all_zero(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

int main(void)
{
	static unsigned char buf[CHUNK];
	unsigned long long total = 0, zero = 0;
	Elf64_Ehdr eh;
	long t0 = now_ms();
	int fd, segs = 0;

	fd = open("/proc/kcore", O_RDONLY);
	if (fd < 0 || pread(fd, &eh, sizeof(eh), 0) != sizeof(eh) ||
	    memcmp(eh.e_ident, ELFMAG, SELFMAG) || eh.e_phentsize != sizeof(Elf64_Phdr)) {
		perror("kcoreread: /proc/kcore");
		return 1;
	}
	for (int i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;

		if (pread(fd, &ph, sizeof(ph), eh.e_phoff + (off_t)i * sizeof(ph)) != sizeof(ph)) {
			perror("kcoreread: program header");
			return 1;
		}
		if (ph.p_type != PT_LOAD || ph.p_paddr == (Elf64_Addr)-1)
			continue;
		segs++;
		for (unsigned long long off = 0; off < ph.p_filesz; off += CHUNK) {
			size_t n = ph.p_filesz - off < CHUNK ? ph.p_filesz - off : CHUNK;
			ssize_t got = pread(fd, buf, n, ph.p_offset + off);

			if (got <= 0)
				break;
			total += got;
			for (ssize_t p = 0; p + 4096 <= got; p += 4096)
				zero += all_zero(buf + p, 4096) ? 4096 : 0;
		}
	}
	printf("kcoreread: %llu MiB from %d segments, %llu MiB of zero pages in %ld ms\n",
	       total >> 20, segs, zero >> 20, now_ms() - t0);
	return 0;
}
