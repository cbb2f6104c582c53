// SPDX-License-Identifier: GPL-2.0
/*
 * offline - count the guest's PageOffline pages (/proc/kpageflags bit
 * KPF_OFFLINE): the pages a balloon holds, as the kernel sees them.
 *
 *   offline
 *
 * Prints "offline N" (4 KiB pages) and exits 0, or exits 1 if
 * /proc/kpageflags cannot be read (needs CONFIG_PROC_PAGE_MONITOR).
 */
#include <stdint.h>
#include <stdio.h>

#define KPF_OFFLINE 23

int main(void)
{
	static uint64_t flags[4096];
	unsigned long long offline = 0;
	size_t n, i;
	FILE *f = fopen("/proc/kpageflags", "rb");

	if (!f) {
		perror("offline: /proc/kpageflags");
		return 1;
	}
	while ((n = fread(flags, sizeof(flags[0]), 4096, f)) > 0)
		for (i = 0; i < n; i++)
			offline += (flags[i] >> KPF_OFFLINE) & 1;
	fclose(f);
	printf("offline %llu\n", offline);
	return 0;
}
