// SPDX-License-Identifier: GPL-2.0
/*
 * fuzz_vu.c - libFuzzer target: the vhost-user message layer.
 *
 * Input: a sequence of messages as on the wire (12-byte header, then up to
 * hdr.size payload bytes). Bits 4..5 of hdr.flags attach 0..3 descriptors
 * (a 1 MiB memfd for SET_MEM_TABLE, eventfds otherwise), as SCM_RIGHTS
 * would. Each message goes through tb_vu_dispatch() with the real device
 * model behind it; the session is torn down at the end, so leaked fds or
 * mappings show up as leaks or fd exhaustion.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dev.h"
#include "util.h"
#include "vu.h"

#define FUZZ_RAM (1U << 20)

static int fuzz_memfd = -1;
static struct tb_vu vu;
static struct tb_dev dev;

static void f_get_config(void *o, uint8_t *buf, uint32_t off, uint32_t size)
{
	(void)o;
	tb_dev_get_config(&dev, buf, off, size);
}

static int f_set_config(void *o, const uint8_t *buf, uint32_t off, uint32_t size,
			uint32_t flags)
{
	(void)o;
	(void)flags;
	return tb_dev_set_config(&dev, buf, off, size, 1000);
}

static void f_set_features(void *o, uint64_t features)
{
	(void)o;
	tb_dev_set_features(&dev, features);
}

static void f_queue_notify(void *o, unsigned int idx)
{
	bool notify;

	(void)o;
	tb_dev_process_queue(&dev, idx, &vu.q[idx].vr, &notify);
}

static void f_session(void *o, bool up)
{
	(void)o;
	tb_dev_session(&dev, up, 1000);
}

static void f_queue_stop(void *o, unsigned int idx)
{
	(void)o;
	tb_dev_queue_stopped(&dev, idx, &vu.q[idx].vr);
}

static void f_reset(void *o)
{
	(void)o;
	tb_dev_reset(&dev, 1000);
}

static int f_punch(void *o, int fd, uint64_t off, uint64_t len)
{
	(void)o;
	(void)fd;
	(void)off;
	(void)len;
	return 0;
}

static const struct tb_vu_ops f_ops = {
	.features = TB_DEV_FEATURES,
	.protocol_features = TB_BIT(TB_VU_PF_MQ) | TB_BIT(TB_VU_PF_REPLY_ACK) |
			     TB_BIT(TB_VU_PF_BACKEND_REQ) | TB_BIT(TB_VU_PF_CONFIG),
	.nqueues = VIRTIO_TBALLOON_VQ_MAX,
	.config_size = VIRTIO_TBALLOON_CONFIG_SIZE,
	.get_config = f_get_config,
	.set_config = f_set_config,
	.set_features = f_set_features,
	.queue_notify = f_queue_notify,
	.session = f_session,
	.queue_stop = f_queue_stop,
	.device_reset = f_reset,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct tb_vu_msg m, r;
	int sv[2];

	if (fuzz_memfd < 0) {
		tb_log_level = -1;
		fuzz_memfd = memfd_create("fuzz-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);
		if (fuzz_memfd < 0 || ftruncate(fuzz_memfd, FUZZ_RAM) < 0 ||
		    fcntl(fuzz_memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0)
			__builtin_trap();
	}
	tb_vu_init(&vu, &f_ops, NULL);
	tb_dev_init(&dev, &vu.mem, NULL, NULL);
	dev.punch = f_punch;
	/* a real socket, so that a detach closes something */
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return 0;
	tb_vu_attach(&vu, sv[0]);
	close(sv[1]);

	while (size >= sizeof(m.hdr)) {
		bool send_reply;
		size_t n;

		memcpy(&m.hdr, data, sizeof(m.hdr));
		data += sizeof(m.hdr);
		size -= sizeof(m.hdr);
		n = m.hdr.size < size ? m.hdr.size : size;
		if (n > sizeof(m.p))
			n = sizeof(m.p);
		/* as tb_vu_recv: the payload is what arrived, zero-padded */
		memset(&m.p, 0, sizeof(m.p));
		memcpy(&m.p, data, n);
		m.hdr.size = (uint32_t)n;
		data += n;
		size -= n;
		m.nfds = (m.hdr.flags >> 4) & 3;
		for (unsigned int i = 0; i < m.nfds; i++)
			m.fds[i] = m.hdr.request == TB_VU_SET_MEM_TABLE ?
				   dup(fuzz_memfd) : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		tb_vu_dispatch(&vu, &m, &r, &send_reply);
		if (send_reply && r.hdr.size > sizeof(r.p))
			__builtin_trap();
	}
	tb_vu_detach(&vu);
	return 0;
}
