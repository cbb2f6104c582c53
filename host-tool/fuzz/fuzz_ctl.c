// SPDX-License-Identifier: GPL-2.0
/*
 * fuzz_ctl.c - libFuzzer target: the control protocol's request handler.
 *
 * Input: a session of lines: control requests as a client sends them, and
 * driver config writes (lines starting with '!') between them, so commands
 * are issued, superseded, reported on, finished and timed out in any order.
 * The device is connected and ready; every response must be a JSON object
 * with "return" or "error".
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ctl.h"
#include "dev.h"
#include "util.h"

static struct tb_mem mem;
static struct tb_dev dev;

static int f_notify(void *o)
{
	(void)o;
	return 0;
}

static const struct tb_dev_ops f_ops = { .notify_config = f_notify };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_object *resp;

	if (!mem.nregions) {
		int fd = memfd_create("fuzz-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);

		tb_log_level = -1;
		tb_mem_init(&mem);
		if (fd < 0 || ftruncate(fd, 64 << 20) < 0 ||
		    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0 ||
		    tb_mem_add(&mem, 0, 64 << 20, 0x7f0000000000ULL, 0, fd) < 0)
			__builtin_trap();
	}
	if (size > 4 * TB_CTL_LINE_MAX)
		return 0;
	tb_dev_init(&dev, &mem, &f_ops, NULL);
	tb_dev_session(&dev, true, 1000);
	tb_dev_set_features(&dev, TB_BIT(32) | (size && (data[0] & 1) ? TB_DEV_FEATURES : 0));
	dev.driver_ok = dev.notify_ok = true;
	/*
	 * A session, not one request: the input is lines; a line starting with
	 * '!' is the driver writing its part of the config (the bytes after it
	 * at offset 40, the driver-written block), any other line a control
	 * request on the same device. Time moves on by a line's length in ms,
	 * with the host timers run after each line.
	 */
	{
		uint64_t now = 2000;
		/* the first byte decides whether the session starts negotiated */
		bool negotiated = size > 1 && (data[1] & 1);

		while (size) {
			const uint8_t *nl = memchr(data, '\n', size);
			size_t len = nl ? (size_t)(nl - data) : size;

			if (len && data[0] == '!') {
				size_t n = len - 1 > 24 ? 24 : len - 1;

				tb_dev_set_config(&dev, data + 1, 40, (uint32_t)n, now);
			} else {
				resp = tb_ctl_handle_line(&dev, (const char *)data, len, now,
							  &negotiated);
				if (!resp || !json_object_is_type(resp, json_type_object) ||
				    (!json_object_object_get_ex(resp, "return", NULL) &&
				     !json_object_object_get_ex(resp, "error", NULL)))
					__builtin_trap();
				json_object_put(resp);
			}
			now += len;
			tb_dev_tick(&dev, now);
			data += len + (nl ? 1 : 0);
			size -= len + (nl ? 1 : 0);
		}
		tb_dev_tick(&dev, 1ULL << 40);
	}
	return 0;
}
