// SPDX-License-Identifier: GPL-2.0
/*
 * test_vu.c - vhost-user dispatch: replies, REPLY_ACK, fd hygiene, bounds,
 * ring bring-up through messages. No sockets: messages are built in memory.
 */
#include "tb_test.h"

#include <sys/eventfd.h>
#include <sys/socket.h>

#include "vu.h"

#define MiB (1ULL << 20)
#define UVA 0x7f0000000000ULL

struct mock {
	uint8_t config[64];
	unsigned int set_config_calls;
	uint32_t set_off, set_size;
	uint64_t features;
	unsigned int notified[4];
	int sessions;
	unsigned int resets;
	unsigned int stops[4];
};

static void m_get_config(void *o, uint8_t *buf, uint32_t off, uint32_t size)
{
	struct mock *m = o;

	memcpy(buf, m->config + off, size);
}

static int m_set_config(void *o, const uint8_t *buf, uint32_t off, uint32_t size,
			uint32_t flags)
{
	struct mock *m = o;

	(void)flags;
	m->set_config_calls++;
	m->set_off = off;
	m->set_size = size;
	memcpy(m->config + off, buf, size);
	return 0;
}

static void m_set_features(void *o, uint64_t f)
{
	((struct mock *)o)->features = f;
}

static void m_queue_notify(void *o, unsigned int idx)
{
	((struct mock *)o)->notified[idx]++;
}

static void m_session(void *o, bool up)
{
	((struct mock *)o)->sessions += up ? 1 : -1;
}

static void m_queue_stop(void *o, unsigned int idx)
{
	((struct mock *)o)->stops[idx]++;
}

static void m_device_reset(void *o)
{
	((struct mock *)o)->resets++;
}

static const struct tb_vu_ops mock_ops = {
	.features = TB_BIT(0) | TB_BIT(12),
	.protocol_features = TB_BIT(TB_VU_PF_MQ) | TB_BIT(TB_VU_PF_REPLY_ACK) |
			     TB_BIT(TB_VU_PF_BACKEND_REQ) | TB_BIT(TB_VU_PF_CONFIG),
	.nqueues = 3,
	.config_size = 64,
	.get_config = m_get_config,
	.set_config = m_set_config,
	.set_features = m_set_features,
	.queue_notify = m_queue_notify,
	.session = m_session,
	.queue_stop = m_queue_stop,
	.device_reset = m_device_reset,
};

struct fx {
	struct tb_vu vu;
	struct mock mock;
	struct tb_vu_msg m, r;
	bool send;
};

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	tb_vu_init(&f->vu, &mock_ops, &f->mock);
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	tb_vu_detach(&f->vu);
	free(f);
	return 0;
}

static void msg(struct fx *f, uint32_t req, uint32_t flags, uint32_t size)
{
	memset(&f->m, 0, sizeof(f->m));
	f->m.hdr.request = req;
	f->m.hdr.flags = TB_VU_VERSION | flags;
	f->m.hdr.size = size;
}

static int dispatch(struct fx *f)
{
	return tb_vu_dispatch(&f->vu, &f->m, &f->r, &f->send);
}

static void msg_u64(struct fx *f, uint32_t req, uint64_t v, uint32_t flags)
{
	msg(f, req, flags, 8);
	f->m.p.u64 = v;
}

static void negotiate(struct fx *f)
{
	msg_u64(f, TB_VU_SET_PROTOCOL_FEATURES, mock_ops.protocol_features, 0);
	assert_int_equal(dispatch(f), 0);
	msg_u64(f, TB_VU_SET_FEATURES, TB_BIT(TB_F_VERSION_1) | TB_BIT(TB_F_PROTOCOL_FEATURES) |
		TB_BIT(12), 0);
	assert_int_equal(dispatch(f), 0);
}

static void test_get_features(void **state)
{
	struct fx *f = *state;

	msg(f, TB_VU_GET_FEATURES, 0, 0);
	assert_int_equal(dispatch(f), 0);
	assert_true(f->send);
	assert_int_equal(f->r.hdr.request, TB_VU_GET_FEATURES);
	assert_int_equal(f->r.hdr.flags, TB_VU_VERSION | TB_VU_FLAG_REPLY);
	assert_int_equal(f->r.hdr.size, 8);
	assert_true(f->r.p.u64 & TB_BIT(TB_F_VERSION_1));
	assert_true(f->r.p.u64 & TB_BIT(TB_F_PROTOCOL_FEATURES));
	assert_true(f->r.p.u64 & TB_BIT(12));
	assert_true(f->r.p.u64 & TB_BIT(0));

	msg(f, TB_VU_GET_PROTOCOL_FEATURES, 0, 0);
	assert_int_equal(dispatch(f), 0);
	assert_int_equal(f->r.p.u64, mock_ops.protocol_features);
	msg(f, TB_VU_GET_QUEUE_NUM, 0, 0);
	assert_int_equal(dispatch(f), 0);
	assert_int_equal(f->r.p.u64, 3);
}

static void test_set_features_masks(void **state)
{
	struct fx *f = *state;

	msg_u64(f, TB_VU_SET_FEATURES, TB_BIT(TB_F_VERSION_1) | TB_BIT(5) | TB_BIT(12), 0);
	assert_int_equal(dispatch(f), 0);
	assert_false(f->send);
	/* bit 5 was never offered */
	assert_int_equal(f->mock.features, TB_BIT(TB_F_VERSION_1) | TB_BIT(12));
	/* short payload */
	msg(f, TB_VU_SET_FEATURES, 0, 4);
	assert_int_equal(dispatch(f), -EINVAL);
}

static void test_reply_ack(void **state)
{
	struct fx *f = *state;

	/* before REPLY_ACK is negotiated, NEED_REPLY is not honoured */
	msg(f, TB_VU_SET_OWNER, TB_VU_FLAG_NEED_REPLY, 0);
	assert_int_equal(dispatch(f), 0);
	assert_false(f->send);

	negotiate(f);
	msg(f, TB_VU_SET_OWNER, TB_VU_FLAG_NEED_REPLY, 0);
	assert_int_equal(dispatch(f), 0);
	assert_true(f->send);
	assert_int_equal(f->r.hdr.size, 8);
	assert_int_equal(f->r.p.u64, 0);

	/* failure is non-zero */
	msg(f, TB_VU_SET_VRING_NUM, TB_VU_FLAG_NEED_REPLY, 8);
	f->m.p.state.index = 7;
	f->m.p.state.num = 64;
	assert_int_equal(dispatch(f), -EINVAL);
	assert_true(f->send);
	assert_int_equal(f->r.p.u64, 1);

	/* explicit replies are not replaced by an ack */
	msg(f, TB_VU_GET_FEATURES, TB_VU_FLAG_NEED_REPLY, 0);
	assert_int_equal(dispatch(f), 0);
	assert_true(f->r.p.u64 & TB_BIT(TB_F_VERSION_1));
}

static void test_unknown_request(void **state)
{
	struct fx *f = *state;
	int fd = eventfd(0, EFD_CLOEXEC);

	negotiate(f);
	msg(f, 9999, TB_VU_FLAG_NEED_REPLY, 0);
	f->m.fds[0] = fd;
	f->m.nfds = 1;
	assert_int_equal(dispatch(f), -ENOSYS);
	assert_true(f->send);
	assert_int_equal(f->r.p.u64, 1);
	assert_true(tb_test_fd_closed(fd));
	assert_int_equal(f->vu.unknown_requests, 1);

	/* known to the protocol, not supported here, no reply requested */
	msg(f, TB_VU_SET_LOG_BASE, 0, 16);
	assert_int_equal(dispatch(f), -ENOSYS);
	assert_false(f->send);
	assert_string_equal(tb_vu_request_name(TB_VU_SET_LOG_BASE), "SET_LOG_BASE");
	assert_string_equal(tb_vu_request_name(12345), "UNKNOWN");
}

static void test_mem_table_fd_hygiene(void **state)
{
	struct fx *f = *state;
	int a = tb_test_memfd(MiB), b = tb_test_memfd(MiB), c;

	/* two regions, one fd: refused, the fd closed */
	msg(f, TB_VU_SET_MEM_TABLE, 0, 8 + 2 * 32);
	f->m.p.mem.nregions = 2;
	f->m.p.mem.r[0] = (struct tb_vu_mem_region){ 0, MiB, UVA, 0 };
	f->m.p.mem.r[1] = (struct tb_vu_mem_region){ MiB, MiB, UVA + MiB, 0 };
	f->m.fds[0] = a;
	f->m.nfds = 1;
	assert_int_equal(dispatch(f), -EINVAL);
	assert_true(tb_test_fd_closed(a));

	/* second region invalid: the first (already mapped) fd and the second closed */
	a = tb_test_memfd(MiB);
	msg(f, TB_VU_SET_MEM_TABLE, 0, 8 + 2 * 32);
	f->m.p.mem.nregions = 2;
	f->m.p.mem.r[0] = (struct tb_vu_mem_region){ 0, MiB, UVA, 0 };
	f->m.p.mem.r[1] = (struct tb_vu_mem_region){ MiB, 0, UVA + MiB, 0 };
	f->m.fds[0] = a;
	f->m.fds[1] = b;
	f->m.nfds = 2;
	assert_int_equal(dispatch(f), -EINVAL);
	assert_true(tb_test_fd_closed(a));
	assert_true(tb_test_fd_closed(b));
	assert_int_equal(f->vu.mem.nregions, 0);

	/* too many regions / payload too short */
	c = tb_test_memfd(MiB);
	msg(f, TB_VU_SET_MEM_TABLE, 0, 8 + 32);
	f->m.p.mem.nregions = 9;
	f->m.fds[0] = c;
	f->m.nfds = 1;
	assert_int_equal(dispatch(f), -EINVAL);
	assert_true(tb_test_fd_closed(c));
	c = tb_test_memfd(MiB);
	msg(f, TB_VU_SET_MEM_TABLE, 0, 8 + 16);
	f->m.p.mem.nregions = 1;
	f->m.fds[0] = c;
	f->m.nfds = 1;
	assert_int_equal(dispatch(f), -EINVAL);
	assert_true(tb_test_fd_closed(c));

	/* a good table keeps its fds */
	a = tb_test_memfd(2 * MiB);
	b = tb_test_memfd(2 * MiB);
	msg(f, TB_VU_SET_MEM_TABLE, 0, 8 + 2 * 32);
	f->m.p.mem.nregions = 2;
	f->m.p.mem.r[0] = (struct tb_vu_mem_region){ 0, MiB, UVA, 0 };
	f->m.p.mem.r[1] = (struct tb_vu_mem_region){ 4 * MiB, MiB, UVA + 4 * MiB, MiB };
	f->m.fds[0] = a;
	f->m.fds[1] = b;
	f->m.nfds = 2;
	assert_int_equal(dispatch(f), 0);
	assert_false(tb_test_fd_closed(a));
	assert_false(tb_test_fd_closed(b));
	assert_int_equal(f->vu.mem.nregions, 2);
	assert_int_equal(f->vu.mem.r[1].fd_offset, MiB);

	/* a replacement table closes the old fds */
	c = tb_test_memfd(MiB);
	msg(f, TB_VU_SET_MEM_TABLE, 0, 8 + 32);
	f->m.p.mem.nregions = 1;
	f->m.p.mem.r[0] = (struct tb_vu_mem_region){ 0, MiB, UVA, 0 };
	f->m.fds[0] = c;
	f->m.nfds = 1;
	assert_int_equal(dispatch(f), 0);
	assert_true(tb_test_fd_closed(a));
	assert_true(tb_test_fd_closed(b));
	assert_int_equal(f->vu.mem.nregions, 1);
}

static void test_vring_fd_hygiene(void **state)
{
	struct fx *f = *state;
	int fd = eventfd(0, EFD_CLOEXEC), fd2;

	/* out-of-range queue: fd closed, never stored */
	msg_u64(f, TB_VU_SET_VRING_CALL, 200, 0);
	f->m.fds[0] = fd;
	f->m.nfds = 1;
	assert_int_equal(dispatch(f), -EINVAL);
	assert_true(tb_test_fd_closed(fd));

	/* NOFD flag with an fd anyway: refused, closed */
	fd = eventfd(0, EFD_CLOEXEC);
	msg_u64(f, TB_VU_SET_VRING_KICK, 1 | TB_VU_VRING_NOFD, 0);
	f->m.fds[0] = fd;
	f->m.nfds = 1;
	assert_int_equal(dispatch(f), -EINVAL);
	assert_true(tb_test_fd_closed(fd));

	/* junk in the upper bits */
	fd = eventfd(0, EFD_CLOEXEC);
	msg_u64(f, TB_VU_SET_VRING_ERR, 1 | (1ULL << 40), 0);
	f->m.fds[0] = fd;
	f->m.nfds = 1;
	assert_int_equal(dispatch(f), -EINVAL);
	assert_true(tb_test_fd_closed(fd));

	/* replacing a call fd closes the previous one */
	fd = eventfd(0, EFD_CLOEXEC);
	msg_u64(f, TB_VU_SET_VRING_CALL, 2, 0);
	f->m.fds[0] = fd;
	f->m.nfds = 1;
	assert_int_equal(dispatch(f), 0);
	assert_int_equal(f->vu.q[2].call_fd, fd);
	fd2 = eventfd(0, EFD_CLOEXEC);
	msg_u64(f, TB_VU_SET_VRING_CALL, 2, 0);
	f->m.fds[0] = fd2;
	f->m.nfds = 1;
	assert_int_equal(dispatch(f), 0);
	assert_true(tb_test_fd_closed(fd));
	assert_int_equal(f->vu.q[2].call_fd, fd2);

	/* extra fds on a message that takes none are closed */
	fd = eventfd(0, EFD_CLOEXEC);
	msg(f, TB_VU_SET_OWNER, 0, 0);
	f->m.fds[0] = fd;
	f->m.nfds = 1;
	assert_int_equal(dispatch(f), 0);
	assert_true(tb_test_fd_closed(fd));

	/* backend channel needs exactly one fd */
	msg(f, TB_VU_SET_BACKEND_REQ_FD, 0, 0);
	assert_int_equal(dispatch(f), -EINVAL);
}

/*
 * Ring notifiers from a hostile front-end: a pipe (its writer gone, it would
 * poll HUP forever) is refused and closed; a call eventfd filled to the
 * limit must not block the loop when the device signals it.
 */
static void test_vring_fd_types(void **state)
{
	struct fx *f = *state;
	uint64_t full = 0xfffffffffffffffeULL;
	int p[2], fd;

	assert_int_equal(pipe(p), 0);
	close(p[1]);
	msg_u64(f, TB_VU_SET_VRING_KICK, 1, 0);
	f->m.fds[0] = p[0];
	f->m.nfds = 1;
	assert_int_equal(dispatch(f), -EBADF);
	assert_true(tb_test_fd_closed(p[0]));
	assert_int_equal(f->vu.q[1].kick_fd, -1);
	assert_false(f->vu.q[1].started);

	fd = eventfd(0, EFD_CLOEXEC);	/* blocking, as a hostile peer sends it */
	assert_int_equal(write(fd, &full, sizeof(full)), sizeof(full));
	msg_u64(f, TB_VU_SET_VRING_CALL, 1, 0);
	f->m.fds[0] = fd;
	f->m.nfds = 1;
	assert_int_equal(dispatch(f), 0);
	/* before the fix this write blocked forever: the alarm fails the test */
	alarm(5);
	tb_vu_queue_call(&f->vu, 1);
	tb_vu_queue_call(&f->vu, 1);
	alarm(0);
	assert_int_equal(f->vu.q[1].call_fd, fd);
}

static void test_config_bounds(void **state)
{
	struct fx *f = *state;

	negotiate(f);
	for (int i = 0; i < 64; i++)
		f->mock.config[i] = (uint8_t)i;

	msg(f, TB_VU_GET_CONFIG, 0, TB_VU_CONFIG_HDR_SIZE + 64);
	f->m.p.config.offset = 0;
	f->m.p.config.size = 64;
	assert_int_equal(dispatch(f), 0);
	assert_true(f->send);
	assert_int_equal(f->r.hdr.size, TB_VU_CONFIG_HDR_SIZE + 64);
	assert_int_equal(f->r.p.config.region[63], 63);

	msg(f, TB_VU_GET_CONFIG, 0, TB_VU_CONFIG_HDR_SIZE + 8);
	f->m.p.config.offset = 40;
	f->m.p.config.size = 8;
	assert_int_equal(dispatch(f), 0);
	assert_int_equal(f->r.hdr.size, TB_VU_CONFIG_HDR_SIZE + 8);
	assert_int_equal(f->r.p.config.region[0], 40);

	/* past the end, huge, wrapping: a zero-size reply means failure */
	static const uint32_t bad[][2] = {
		{ 60, 8 }, { 64, 1 }, { 0, 65 }, { 0, 4096 }, { UINT32_MAX, 2 }, { 1, UINT32_MAX },
	};
	for (size_t i = 0; i < TB_ARRAY_SIZE(bad); i++) {
		msg(f, TB_VU_GET_CONFIG, 0, TB_VU_CONFIG_HDR_SIZE);
		f->m.p.config.offset = bad[i][0];
		f->m.p.config.size = bad[i][1];
		assert_int_equal(dispatch(f), -EINVAL);
		assert_true(f->send);
		assert_int_equal(f->r.hdr.size, 0);

		msg(f, TB_VU_SET_CONFIG, TB_VU_FLAG_NEED_REPLY, TB_VU_CONFIG_HDR_SIZE + 8);
		f->m.p.config.offset = bad[i][0];
		f->m.p.config.size = bad[i][1];
		assert_int_equal(dispatch(f), -EINVAL);
		assert_int_equal(f->r.p.u64, 1);
	}
	assert_int_equal(f->mock.set_config_calls, 0);

	/* SET_CONFIG whose payload is shorter than its size field */
	msg(f, TB_VU_SET_CONFIG, 0, TB_VU_CONFIG_HDR_SIZE + 4);
	f->m.p.config.offset = 0;
	f->m.p.config.size = 64;
	assert_int_equal(dispatch(f), -EINVAL);
	assert_int_equal(f->mock.set_config_calls, 0);

	msg(f, TB_VU_SET_CONFIG, 0, TB_VU_CONFIG_HDR_SIZE + 64);
	f->m.p.config.offset = 0;
	f->m.p.config.size = 64;
	assert_int_equal(dispatch(f), 0);
	assert_int_equal(f->mock.set_config_calls, 1);
}

/* bring a ring up through messages, as QEMU does, then kick it */
static void test_ring_bringup(void **state)
{
	struct fx *f = *state;
	int mfd = tb_test_memfd(MiB);
	int kick = eventfd(0, EFD_CLOEXEC), call = eventfd(0, EFD_CLOEXEC);

	negotiate(f);
	msg(f, TB_VU_SET_MEM_TABLE, 0, 8 + 32);
	f->m.p.mem.nregions = 1;
	f->m.p.mem.r[0] = (struct tb_vu_mem_region){ 0, MiB, UVA, 0 };
	f->m.fds[0] = mfd;
	f->m.nfds = 1;
	assert_int_equal(dispatch(f), 0);

	msg(f, TB_VU_SET_VRING_NUM, 0, 8);
	f->m.p.state = (struct tb_vu_vring_state){ 1, 64 };
	assert_int_equal(dispatch(f), 0);
	msg(f, TB_VU_SET_VRING_BASE, 0, 8);
	f->m.p.state = (struct tb_vu_vring_state){ 1, 5 };
	assert_int_equal(dispatch(f), 0);

	/* ring outside guest memory: refused */
	msg(f, TB_VU_SET_VRING_ADDR, 0, sizeof(struct tb_vu_vring_addr));
	f->m.p.addr = (struct tb_vu_vring_addr){ .index = 1, .desc = UVA + MiB - 64,
						 .avail = UVA + 0x1000, .used = UVA + 0x2000 };
	assert_int_equal(dispatch(f), -EINVAL);
	assert_int_equal(f->vu.q[1].vr.num, 0);

	msg(f, TB_VU_SET_VRING_ADDR, 0, sizeof(struct tb_vu_vring_addr));
	f->m.p.addr = (struct tb_vu_vring_addr){ .index = 1, .desc = UVA,
						 .avail = UVA + 0x1000, .used = UVA + 0x2000 };
	assert_int_equal(dispatch(f), 0);
	assert_int_equal(f->vu.q[1].vr.num, 64);
	assert_int_equal(f->vu.q[1].vr.last_avail, 5);
	assert_false(tb_vu_queue_ready(&f->vu, 1));

	msg_u64(f, TB_VU_SET_VRING_CALL, 1, 0);
	f->m.fds[0] = call;
	f->m.nfds = 1;
	assert_int_equal(dispatch(f), 0);
	msg_u64(f, TB_VU_SET_VRING_KICK, 1, 0);
	f->m.fds[0] = kick;
	f->m.nfds = 1;
	assert_int_equal(dispatch(f), 0);
	/* started, but PROTOCOL_FEATURES makes it start disabled */
	assert_false(tb_vu_queue_ready(&f->vu, 1));
	assert_int_equal(f->mock.notified[1], 0);

	msg(f, TB_VU_SET_VRING_ENABLE, 0, 8);
	f->m.p.state = (struct tb_vu_vring_state){ 1, 1 };
	assert_int_equal(dispatch(f), 0);
	assert_true(tb_vu_queue_ready(&f->vu, 1));
	assert_int_equal(f->mock.notified[1], 1);

	/* enable with a bad value */
	msg(f, TB_VU_SET_VRING_ENABLE, 0, 8);
	f->m.p.state = (struct tb_vu_vring_state){ 1, 7 };
	assert_int_equal(dispatch(f), -EINVAL);

	/* signal the call fd */
	uint64_t v = 0;

	tb_vu_queue_call(&f->vu, 1);
	assert_int_equal(read(call, &v, sizeof(v)), 8);
	assert_int_equal(v, 1);

	/* GET_VRING_BASE stops the ring, returns the position, closes kick */
	f->vu.q[1].vr.last_avail = 9;
	msg(f, TB_VU_GET_VRING_BASE, 0, 8);
	f->m.p.state = (struct tb_vu_vring_state){ 1, 0 };
	assert_int_equal(dispatch(f), 0);
	assert_true(f->send);
	assert_int_equal(f->r.p.state.index, 1);
	assert_int_equal(f->r.p.state.num, 9);
	assert_false(tb_vu_queue_ready(&f->vu, 1));
	assert_true(tb_test_fd_closed(kick));

	/* GET_VRING_BASE for a bogus queue still answers */
	msg(f, TB_VU_GET_VRING_BASE, 0, 8);
	f->m.p.state = (struct tb_vu_vring_state){ 99, 0 };
	assert_int_equal(dispatch(f), -EINVAL);
	assert_true(f->send);
	assert_int_equal(f->r.hdr.size, 8);
}

/* queue 0 on a 1 MiB memfd: NUM, BASE, ADDR (desc at UVA + @off), KICK */
static void q0_start(struct fx *f, uint16_t base, uint64_t off)
{
	msg(f, TB_VU_SET_VRING_NUM, 0, 8);
	f->m.p.state = (struct tb_vu_vring_state){ 0, 64 };
	assert_int_equal(dispatch(f), 0);
	msg(f, TB_VU_SET_VRING_BASE, 0, 8);
	f->m.p.state = (struct tb_vu_vring_state){ 0, base };
	assert_int_equal(dispatch(f), 0);
	msg(f, TB_VU_SET_VRING_ADDR, 0, sizeof(struct tb_vu_vring_addr));
	f->m.p.addr = (struct tb_vu_vring_addr){ .index = 0, .desc = UVA + off,
						 .avail = UVA + off + 0x1000,
						 .used = UVA + off + 0x2000 };
	assert_int_equal(dispatch(f), 0);
	msg_u64(f, TB_VU_SET_VRING_KICK, 0, 0);
	f->m.fds[0] = eventfd(0, EFD_CLOEXEC);
	f->m.nfds = 1;
	assert_int_equal(dispatch(f), 0);
}

static uint32_t q0_stop(struct fx *f, uint16_t pos)
{
	f->vu.q[0].vr.last_avail = pos;
	msg(f, TB_VU_GET_VRING_BASE, 0, 8);
	f->m.p.state = (struct tb_vu_vring_state){ 0, 0 };
	assert_int_equal(dispatch(f), 0);
	return f->r.p.state.num;
}

static void test_reset_detection(void **state)
{
	struct fx *f = *state;

	negotiate(f);
	msg(f, TB_VU_SET_MEM_TABLE, 0, 8 + 32);
	f->m.p.mem.nregions = 1;
	f->m.p.mem.r[0] = (struct tb_vu_mem_region){ 0, MiB, UVA, 0 };
	f->m.fds[0] = tb_test_memfd(MiB);
	f->m.nfds = 1;
	assert_int_equal(dispatch(f), 0);

	q0_start(f, 0, 0);
	assert_int_equal(f->mock.resets, 0);
	/* a ring that never moved: restarting at 0 is nothing special */
	assert_int_equal(q0_stop(f, 0), 0);
	assert_int_equal(f->mock.stops[0], 1);
	q0_start(f, 0, 0);
	assert_int_equal(f->mock.resets, 0);
	/* pause/resume: back at its position, same ring */
	assert_int_equal(q0_stop(f, 7), 7);
	q0_start(f, 7, 0);
	assert_int_equal(f->mock.resets, 0);
	/* reboot: the moved ring restarts at 0 (one reset, not two) */
	q0_stop(f, 9);
	q0_start(f, 0, 0x10000);
	assert_int_equal(f->mock.resets, 1);
	/* reboot landing on the same position but a new ring */
	q0_stop(f, 3);
	q0_start(f, 3, 0x20000);
	assert_int_equal(f->mock.resets, 2);
	/*
	 * pause/resume right after the 16-bit index wrapped (65536 buffers):
	 * the front-end restarts at 0, where we said the ring stood; before
	 * the fix this zeroed the balloon as a guest reboot
	 */
	q0_stop(f, 40000);
	q0_start(f, 40000, 0x20000);
	assert_int_equal(q0_stop(f, 0), 0);
	q0_start(f, 0, 0x20000);
	assert_int_equal(f->mock.resets, 2);
	/* explicit resets */
	msg(f, TB_VU_RESET_DEVICE, 0, 0);
	assert_int_equal(dispatch(f), 0);
	assert_int_equal(f->mock.resets, 3);
	assert_false(tb_vu_queue_ready(&f->vu, 0));
}

static void test_region_past_file(void **state)
{
	struct fx *f = *state;
	int mfd = tb_test_memfd(MiB);

	negotiate(f);
	/* 2 MiB region on a 1 MiB file: touching it would SIGBUS the daemon */
	msg(f, TB_VU_SET_MEM_TABLE, 0, 8 + 32);
	f->m.p.mem.nregions = 1;
	f->m.p.mem.r[0] = (struct tb_vu_mem_region){ 0, 2 * MiB, UVA, 0 };
	f->m.fds[0] = mfd;
	f->m.nfds = 1;
	assert_int_equal(dispatch(f), -ERANGE);
	assert_true(tb_test_fd_closed(mfd));
	assert_int_equal(f->vu.mem.nregions, 0);
}

static void test_bad_vring_num(void **state)
{
	struct fx *f = *state;

	msg(f, TB_VU_SET_VRING_NUM, 0, 8);
	f->m.p.state = (struct tb_vu_vring_state){ 0, 0 };
	assert_int_equal(dispatch(f), -EINVAL);
	msg(f, TB_VU_SET_VRING_NUM, 0, 8);
	f->m.p.state = (struct tb_vu_vring_state){ 0, 65536 };
	assert_int_equal(dispatch(f), -EINVAL);
	msg(f, TB_VU_SET_VRING_BASE, 0, 8);
	f->m.p.state = (struct tb_vu_vring_state){ 0, 70000 };
	assert_int_equal(dispatch(f), -EINVAL);
	msg(f, TB_VU_SET_VRING_NUM, 0, 4);
	assert_int_equal(dispatch(f), -EINVAL);
}

/* socket layer: a message with fds over a socketpair, and a truncated one */
static void test_recv_send(void **state)
{
	struct tb_vu_msg in, out;
	int sv[2], efd = eventfd(0, EFD_CLOEXEC);
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov[2];
	struct msghdr mh = { 0 };
	struct cmsghdr *cm;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);

	/* request with one fd */
	memset(&out, 0, sizeof(out));
	out.hdr = (struct tb_vu_hdr){ TB_VU_SET_VRING_CALL, TB_VU_VERSION, 8 };
	out.p.u64 = 1;
	iov[0] = (struct iovec){ &out.hdr, sizeof(out.hdr) };
	iov[1] = (struct iovec){ &out.p, 8 };
	mh.msg_iov = iov;
	mh.msg_iovlen = 2;
	mh.msg_control = cbuf;
	mh.msg_controllen = sizeof(cbuf);
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &efd, sizeof(int));
	assert_int_equal(sendmsg(sv[0], &mh, 0), 20);
	assert_int_equal(tb_vu_recv(sv[1], &in), 0);
	assert_int_equal(in.hdr.request, TB_VU_SET_VRING_CALL);
	assert_int_equal(in.nfds, 1);
	assert_int_equal(in.p.u64, 1);
	close(in.fds[0]);
	close(efd);

	/* reply round trip */
	out.hdr = (struct tb_vu_hdr){ TB_VU_GET_FEATURES, TB_VU_VERSION | TB_VU_FLAG_REPLY, 8 };
	out.p.u64 = 0x1234;
	assert_int_equal(tb_vu_send(sv[0], &out), 0);
	assert_int_equal(tb_vu_recv(sv[1], &in), 0);
	assert_int_equal(in.p.u64, 0x1234);

	/* bad version */
	out.hdr = (struct tb_vu_hdr){ TB_VU_GET_FEATURES, 2, 0 };
	assert_int_equal(tb_vu_send(sv[0], &out), 0);
	assert_int_equal(tb_vu_recv(sv[1], &in), -EPROTO);

	/* oversized payload announced */
	struct tb_vu_hdr big = { TB_VU_SET_CONFIG, TB_VU_VERSION, 1U << 20 };

	assert_int_equal(write(sv[0], &big, sizeof(big)), sizeof(big));
	assert_int_equal(tb_vu_recv(sv[1], &in), -EMSGSIZE);

	/* peer gone mid-payload */
	struct tb_vu_hdr part = { TB_VU_SET_FEATURES, TB_VU_VERSION, 8 };

	assert_int_equal(write(sv[0], &part, sizeof(part)), sizeof(part));
	assert_int_equal(write(sv[0], "abc", 3), 3);
	close(sv[0]);
	assert_int_equal(tb_vu_recv(sv[1], &in), -ECONNRESET);
	assert_int_equal(tb_vu_recv(sv[1], &in), -ECONNRESET);
	close(sv[1]);
}

/* the backend channel carries CONFIG_CHANGE_MSG without NEED_REPLY */
static void test_config_change_msg(void **state)
{
	struct fx *f = *state;
	struct tb_vu_hdr h;
	int sv[2];

	assert_int_equal(tb_vu_notify_config(&f->vu), -ENOTCONN);
	negotiate(f);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	msg(f, TB_VU_SET_BACKEND_REQ_FD, 0, 0);
	f->m.fds[0] = sv[1];
	f->m.nfds = 1;
	assert_int_equal(dispatch(f), 0);
	assert_int_equal(tb_vu_notify_config(&f->vu), 0);
	assert_int_equal(read(sv[0], &h, sizeof(h)), sizeof(h));
	assert_int_equal(h.request, TB_VU_BACKEND_CONFIG_CHANGE_MSG);
	assert_int_equal(h.flags, TB_VU_VERSION);
	assert_int_equal(h.size, 0);
	close(sv[0]);
}

static void test_detach_closes_everything(void **state)
{
	struct fx *f = *state;
	int sv[2], call = eventfd(0, EFD_CLOEXEC);

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	tb_vu_attach(&f->vu, sv[1]);
	assert_int_equal(f->mock.sessions, 1);
	msg_u64(f, TB_VU_SET_VRING_CALL, 0, 0);
	f->m.fds[0] = call;
	f->m.nfds = 1;
	assert_int_equal(dispatch(f), 0);
	tb_vu_detach(&f->vu);
	assert_int_equal(f->mock.sessions, 0);
	assert_true(tb_test_fd_closed(call));
	assert_true(tb_test_fd_closed(sv[1]));
	assert_int_equal(f->vu.sock_fd, -1);
	close(sv[0]);
}

#define T(fn) TB_TEST_FX("vu", fn, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_get_features),
		T(test_set_features_masks),
		T(test_reply_ack),
		T(test_unknown_request),
		T(test_mem_table_fd_hygiene),
		T(test_vring_fd_hygiene),
		T(test_config_bounds),
		T(test_ring_bringup),
		T(test_bad_vring_num),
		TB_TEST("vu", test_recv_send),
		T(test_vring_fd_types),
		T(test_config_change_msg),
		T(test_detach_closes_everything),
		T(test_reset_detection),
		T(test_region_past_file),
	};

	return tb_test_run("vu", tests);
}
