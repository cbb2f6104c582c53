// SPDX-License-Identifier: GPL-2.0
/*
 * fuzz_qmp.c - libFuzzer target: the QMP peer's view of what QEMU sends.
 *
 * Input: the bytes a hostile or broken QEMU writes to `serve --qmp`, in
 * chunks (a 0xff byte ends a chunk, and time moves on 10 ms between
 * chunks, so reply timeouts and timers fire too), from the greeting on:
 * replies to the setup queries in any order and shape, events, garbage,
 * partial and endless lines. Commands are issued on the device model in
 * between (the first byte of each chunk picks one), so replies and events
 * meet running, stopped and finished commands. Nothing may crash, leak or
 * read out of bounds; the peer may drop the connection at any point.
 */
#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dev.h"
#include "peer.h"
#include "util.h"

static struct tb_dev dev;
static struct tb_peer *peer;

static int f_notify(void *o)
{
	(void)o;
	return peer->ops->set_balloon(peer, TB_CFG(&dev, num_pages));
}

static int f_stop(void *o)
{
	(void)o;
	return peer->ops->stop(peer);
}

static void f_footprint(void *o, uint64_t *ram, uint64_t *res)
{
	(void)o;
	peer->ops->footprint(peer, ram, res);
}

static const struct tb_dev_ops f_ops = {
	.notify_config = f_notify, .stop = f_stop, .footprint = f_footprint,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t now = 1000;
	char err[128], sink[65536];
	int sv[2] = { -1, -1 };
	size_t start = 0;

	tb_log_level = -1;
	if (size > (4U << 20))
		return 0;
	tb_dev_init(&dev, NULL, &f_ops, NULL);
	dev.kind = TB_KIND_QMP;
	peer = tb_qmp_peer_new(&dev, "/nonexistent/fuzz.qmp", 1000, err, sizeof(err));
	if (!peer)
		__builtin_trap();
	for (size_t i = 0; i <= size; i++) {
		char why[128];

		if (i < size && data[i] != 0xff)
			continue;
		if (i > start) {
			uint8_t op = data[start] % 5;

			if (dev.connected && op == 1)
				tb_dev_issue(&dev, TBALLOON_OP_INFLATE, 1000, 50, 0, 0, now, why,
					     sizeof(why));
			else if (dev.connected && op == 2)
				tb_dev_issue(&dev, TBALLOON_OP_DEFLATE, 0, 5000, 0,
					     TBALLOON_FLAG_PACED, now, why, sizeof(why));
			else if (dev.connected && op == 3)
				tb_dev_issue(&dev, TBALLOON_OP_ABORT, 0, 0, 0, 0, now, why,
					     sizeof(why));
			/* a fresh connection after each one the peer dropped */
			if (sv[0] < 0 && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC |
						    SOCK_NONBLOCK, 0, sv) < 0)
				__builtin_trap();
			if (!tb_qmp_test_feed(peer, sv[0], (const char *)data + start + 1,
					      i - start - 1, now)) {
				close(sv[1]);	/* the peer closed sv[0] */
				sv[0] = sv[1] = -1;
			}
			/* what the peer sent goes nowhere */
			while (sv[1] >= 0 && read(sv[1], sink, sizeof(sink)) > 0)
				;
			tb_dev_tick(&dev, now);
		}
		start = i + 1;
		now += 10;
	}
	peer->ops->destroy(peer);	/* closes sv[0] */
	if (sv[1] >= 0)
		close(sv[1]);
	return 0;
}
