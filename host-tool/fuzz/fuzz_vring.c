// SPDX-License-Identifier: GPL-2.0
/*
 * fuzz_vring.c - libFuzzer target: the split ring walker and the device's
 * buffer processing (PFN queues, statistics queue, free page reports) over
 * hostile guest memory.
 *
 * Input: byte 0 = queue size - 1 (1..256), byte 1 = queue index (mod 5; its
 * top bit: the guest poisons free pages),
 * byte 2 = used->idx start, then the guest memory image from gpa 0 (the
 * descriptor table at 0, the available ring at 0x1000, the used ring at
 * 0x2000, buffers anywhere in the 64 KiB of RAM).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dev.h"
#include "mem.h"
#include "util.h"
#include "vring.h"

#define FUZZ_RAM (64U << 10)

static struct tb_mem mem;
static struct tb_dev dev;

static int f_punch(void *o, int fd, uint64_t off, uint64_t len)
{
	(void)o;
	(void)fd;
	/* the batcher must only ever ask for ranges inside guest RAM */
	if (off + len > FUZZ_RAM || len == 0)
		__builtin_trap();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tb_vring vr = { 0 };
	uint8_t *ram;
	uint32_t num;
	unsigned int idx;
	bool notify;

	if (!mem.nregions) {
		int fd = memfd_create("fuzz-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);

		tb_log_level = -1;
		tb_mem_init(&mem);
		if (fd < 0 || ftruncate(fd, FUZZ_RAM) < 0 ||
		    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0 ||
		    tb_mem_add(&mem, 0, FUZZ_RAM, 0x7f0000000000ULL, 0, fd) < 0)
			__builtin_trap();
	}
	if (size < 3)
		return 0;
	num = (uint32_t)data[0] + 1;
	idx = data[1] % VIRTIO_TBALLOON_VQ_MAX;
	ram = mem.r[0].host;
	memset(ram, 0, FUZZ_RAM);
	memcpy(ram, data + 3, size - 3 < FUZZ_RAM ? size - 3 : FUZZ_RAM);
	tb_put_le32(ram + 0x2000, (uint32_t)data[2] << 16);

	tb_dev_init(&dev, &mem, NULL, NULL);
	dev.punch = f_punch;
	/* queue 3 is reporting_vq; byte 1's top bit: the guest poisons */
	dev.features = TB_DEV_FEATURES | TB_BIT(TB_BALLOON_F_REPORTING);
	dev.features_set = true;
	if (data[1] & 0x80)
		tb_put_le32(dev.config + 12, 0xaaaaaaaa);
	if (tb_vring_setup(&vr, num, ram, ram + 0x1000, ram + 0x2000, 0) < 0)
		return 0;
	tb_dev_process_queue(&dev, idx, &vr, &notify);
	/* the driver may have added more meanwhile: go again */
	tb_dev_process_queue(&dev, idx, &vr, &notify);
	tb_dev_stats_request(&dev, &vr, 5000, &notify);
	if (dev.device_pages > FUZZ_RAM / 4096)
		__builtin_trap();
	/* a report never touches the balloon, and never punches a poisoned guest */
	if (tb_dev_queue_role(&dev, idx) == VIRTIO_TBALLOON_VQ_REPORTING &&
	    (dev.device_pages || ((data[1] & 0x80) && dev.stats.reported_bytes)))
		__builtin_trap();
	tb_vring_reset(&vr);
	return 0;
}
