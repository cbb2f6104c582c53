// SPDX-License-Identifier: GPL-2.0
/*
 * test_vring.c - the split ring walker against hostile rings.
 */
#include "tb_test.h"
#include "vring.h"

#define GPA_BASE 0x100000ULL
#define MEM_SIZE (1ULL << 20)
#define QSZ 8
#define DESC_OFF 0x0
#define AVAIL_OFF 0x1000
#define USED_OFF 0x2000
#define DATA_OFF 0x10000

struct fx {
	struct tb_mem mem;
	struct tb_vring vr;
	struct tb_vring_desc *desc;
	uint16_t *avail;
	uint8_t *used;
};

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	uint8_t *h;

	tb_mem_init(&f->mem);
	if (tb_mem_add(&f->mem, GPA_BASE, MEM_SIZE, 0x7f0000000000ULL, 0,
		       tb_test_memfd(MEM_SIZE)))
		return -1;
	h = f->mem.r[0].host;
	f->desc = (struct tb_vring_desc *)(h + DESC_OFF);
	f->avail = (uint16_t *)(h + AVAIL_OFF);
	f->used = h + USED_OFF;
	if (tb_vring_setup(&f->vr, QSZ, f->desc, f->avail, f->used, 0))
		return -1;
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	tb_vring_reset(&f->vr);
	tb_mem_clear(&f->mem);
	free(f);
	return 0;
}

static void set_desc(struct fx *f, unsigned int i, uint64_t addr, uint32_t len,
		     uint16_t flags, uint16_t next)
{
	f->desc[i].addr = htole64(addr);
	f->desc[i].len = htole32(len);
	f->desc[i].flags = htole16(flags);
	f->desc[i].next = htole16(next);
}

/* publish @head in the next avail slot */
static void avail_add(struct fx *f, uint16_t head)
{
	uint16_t idx = le16toh(f->avail[1]);

	f->avail[2 + idx % QSZ] = htole16(head);
	f->avail[1] = htole16(idx + 1);
}

static uint16_t used_idx(struct fx *f)
{
	return le16toh(*(uint16_t *)(f->used + 2));
}

static void test_empty(void **state)
{
	struct fx *f = *state;
	struct tb_vring_chain ch;

	assert_int_equal(tb_vring_pop(&f->vr, &f->mem, &ch), 0);
}

static void test_single(void **state)
{
	struct fx *f = *state;
	struct tb_vring_chain ch;

	set_desc(f, 3, GPA_BASE + DATA_OFF, 64, 0, 0);
	avail_add(f, 3);
	assert_int_equal(tb_vring_pop(&f->vr, &f->mem, &ch), 1);
	assert_int_equal(ch.err, TB_CHAIN_OK);
	assert_int_equal(ch.head, 3);
	assert_int_equal(ch.nsegs, 1);
	assert_ptr_equal(ch.segs[0].host, f->mem.r[0].host + DATA_OFF);
	assert_int_equal(ch.segs[0].len, 64);
	assert_false(ch.segs[0].write);
	assert_int_equal(tb_vring_pop(&f->vr, &f->mem, &ch), 0);

	tb_vring_push(&f->vr, 3, 0);
	assert_int_equal(used_idx(f), 1);
	assert_int_equal(le32toh(*(uint32_t *)(f->used + 4)), 3);
	assert_int_equal(le32toh(*(uint32_t *)(f->used + 8)), 0);
}

static void test_chain(void **state)
{
	struct fx *f = *state;
	struct tb_vring_chain ch;

	set_desc(f, 0, GPA_BASE + DATA_OFF, 16, TB_VRING_DESC_F_NEXT, 5);
	set_desc(f, 5, GPA_BASE + DATA_OFF + 0x100, 32, TB_VRING_DESC_F_NEXT, 2);
	set_desc(f, 2, GPA_BASE + DATA_OFF + 0x200, 8, TB_VRING_DESC_F_WRITE, 0);
	avail_add(f, 0);
	assert_int_equal(tb_vring_pop(&f->vr, &f->mem, &ch), 1);
	assert_int_equal(ch.err, TB_CHAIN_OK);
	assert_int_equal(ch.nsegs, 3);
	assert_int_equal(ch.segs[1].len, 32);
	assert_true(ch.segs[2].write);
}

/* a full-length chain (every descriptor once) is legal */
static void test_chain_max_length(void **state)
{
	struct fx *f = *state;
	struct tb_vring_chain ch;

	for (unsigned int i = 0; i < QSZ; i++)
		set_desc(f, i, GPA_BASE + DATA_OFF, 4,
			 i + 1 < QSZ ? TB_VRING_DESC_F_NEXT : 0, i + 1);
	avail_add(f, 0);
	assert_int_equal(tb_vring_pop(&f->vr, &f->mem, &ch), 1);
	assert_int_equal(ch.err, TB_CHAIN_OK);
	assert_int_equal(ch.nsegs, QSZ);
}

static void test_loop(void **state)
{
	struct fx *f = *state;
	struct tb_vring_chain ch;

	set_desc(f, 1, GPA_BASE + DATA_OFF, 4, TB_VRING_DESC_F_NEXT, 4);
	set_desc(f, 4, GPA_BASE + DATA_OFF, 4, TB_VRING_DESC_F_NEXT, 1);
	avail_add(f, 1);
	assert_int_equal(tb_vring_pop(&f->vr, &f->mem, &ch), 1);
	assert_int_equal(ch.err, TB_CHAIN_LOOP);
	assert_int_equal(ch.head, 1);
	assert_int_equal(ch.nsegs, 0);
	/* the ring stays usable: the head goes back, the next chain works */
	tb_vring_push(&f->vr, ch.head, 0);
	set_desc(f, 6, GPA_BASE + DATA_OFF, 4, 0, 0);
	avail_add(f, 6);
	assert_int_equal(tb_vring_pop(&f->vr, &f->mem, &ch), 1);
	assert_int_equal(ch.err, TB_CHAIN_OK);
}

static void test_self_loop(void **state)
{
	struct fx *f = *state;
	struct tb_vring_chain ch;

	set_desc(f, 0, GPA_BASE + DATA_OFF, 4, TB_VRING_DESC_F_NEXT, 0);
	avail_add(f, 0);
	assert_int_equal(tb_vring_pop(&f->vr, &f->mem, &ch), 1);
	assert_int_equal(ch.err, TB_CHAIN_LOOP);
}

static void test_next_out_of_range(void **state)
{
	struct fx *f = *state;
	struct tb_vring_chain ch;

	set_desc(f, 0, GPA_BASE + DATA_OFF, 4, TB_VRING_DESC_F_NEXT, QSZ);
	avail_add(f, 0);
	assert_int_equal(tb_vring_pop(&f->vr, &f->mem, &ch), 1);
	assert_int_equal(ch.err, TB_CHAIN_NEXT_RANGE);
	set_desc(f, 0, GPA_BASE + DATA_OFF, 4, TB_VRING_DESC_F_NEXT, 0xffff);
	avail_add(f, 0);
	assert_int_equal(tb_vring_pop(&f->vr, &f->mem, &ch), 1);
	assert_int_equal(ch.err, TB_CHAIN_NEXT_RANGE);
}

static void test_head_out_of_range(void **state)
{
	struct fx *f = *state;
	struct tb_vring_chain ch;

	avail_add(f, QSZ);
	assert_int_equal(tb_vring_pop(&f->vr, &f->mem, &ch), -EIO);
	assert_true(f->vr.broken);
	/* nothing more is processed until the ring is set up again */
	set_desc(f, 0, GPA_BASE + DATA_OFF, 4, 0, 0);
	avail_add(f, 0);
	assert_int_equal(tb_vring_pop(&f->vr, &f->mem, &ch), -EIO);
	assert_int_equal(used_idx(f), 0);
}

static void test_avail_jump(void **state)
{
	struct fx *f = *state;
	struct tb_vring_chain ch;

	f->avail[1] = htole16(QSZ + 1);
	assert_int_equal(tb_vring_pop(&f->vr, &f->mem, &ch), -EIO);
	assert_true(f->vr.broken);
}

/* exactly a full ring of pending entries is fine */
static void test_avail_full(void **state)
{
	struct fx *f = *state;
	struct tb_vring_chain ch;
	int n = 0;

	for (unsigned int i = 0; i < QSZ; i++) {
		set_desc(f, i, GPA_BASE + DATA_OFF, 4, 0, 0);
		avail_add(f, (uint16_t)i);
	}
	while (tb_vring_pop(&f->vr, &f->mem, &ch) == 1) {
		assert_int_equal(ch.err, TB_CHAIN_OK);
		tb_vring_push(&f->vr, ch.head, 0);
		n++;
	}
	assert_int_equal(n, QSZ);
	assert_int_equal(used_idx(f), QSZ);
}

static void test_indirect_refused(void **state)
{
	struct fx *f = *state;
	struct tb_vring_chain ch;

	set_desc(f, 0, GPA_BASE + DATA_OFF, 16, TB_VRING_DESC_F_INDIRECT, 0);
	avail_add(f, 0);
	assert_int_equal(tb_vring_pop(&f->vr, &f->mem, &ch), 1);
	assert_int_equal(ch.err, TB_CHAIN_INDIRECT);
}

static void test_bad_lengths(void **state)
{
	static const struct { uint64_t addr; uint32_t len; } bad[] = {
		{ GPA_BASE + MEM_SIZE - 4, 8 },		/* crosses the region end */
		{ GPA_BASE + MEM_SIZE, 4 },		/* just past it */
		{ GPA_BASE - 4, 8 },			/* starts before it */
		{ 0, 4 },				/* below guest RAM */
		{ UINT64_MAX - 2, 8 },			/* wraps */
		{ GPA_BASE, 0xffffffff },		/* huge */
	};
	struct fx *f = *state;
	struct tb_vring_chain ch;

	for (size_t i = 0; i < TB_ARRAY_SIZE(bad); i++) {
		set_desc(f, 0, bad[i].addr, bad[i].len, 0, 0);
		avail_add(f, 0);
		assert_int_equal(tb_vring_pop(&f->vr, &f->mem, &ch), 1);
		if (ch.err != TB_CHAIN_BAD_ADDR)
			fail_msg("case %zu: err %d", i, ch.err);
		tb_vring_push(&f->vr, 0, 0);
	}
	/* a bad buffer late in a chain spoils the chain */
	set_desc(f, 0, GPA_BASE + DATA_OFF, 4, TB_VRING_DESC_F_NEXT, 1);
	set_desc(f, 1, GPA_BASE + MEM_SIZE, 4, 0, 0);
	avail_add(f, 0);
	assert_int_equal(tb_vring_pop(&f->vr, &f->mem, &ch), 1);
	assert_int_equal(ch.err, TB_CHAIN_BAD_ADDR);
	assert_int_equal(ch.nsegs, 0);
	/* the last byte of guest memory is fine */
	set_desc(f, 0, GPA_BASE + MEM_SIZE - 4, 4, 0, 0);
	avail_add(f, 0);
	assert_int_equal(tb_vring_pop(&f->vr, &f->mem, &ch), 1);
	assert_int_equal(ch.err, TB_CHAIN_OK);
}

static void test_index_wrap(void **state)
{
	struct fx *f = *state;
	struct tb_vring_chain ch;

	/* both indexes just below the 16-bit wrap */
	*(uint16_t *)(f->used + 2) = htole16(65534);
	assert_int_equal(tb_vring_setup(&f->vr, QSZ, f->desc, f->avail, f->used, 65534), 0);
	f->avail[1] = htole16(65534);
	for (unsigned int i = 0; i < 4; i++) {
		set_desc(f, i, GPA_BASE + DATA_OFF, 4, 0, 0);
		avail_add(f, (uint16_t)i);
	}
	for (unsigned int i = 0; i < 4; i++) {
		assert_int_equal(tb_vring_pop(&f->vr, &f->mem, &ch), 1);
		assert_int_equal(ch.head, i);
		tb_vring_push(&f->vr, ch.head, 0);
	}
	assert_int_equal(tb_vring_pop(&f->vr, &f->mem, &ch), 0);
	assert_int_equal(used_idx(f), 2);
}

static void test_notify_suppression(void **state)
{
	struct fx *f = *state;

	assert_true(tb_vring_need_notify(&f->vr));
	f->avail[0] = htole16(TB_VRING_AVAIL_F_NO_INTERRUPT);
	assert_false(tb_vring_need_notify(&f->vr));
}

static void test_setup_rejects(void **state)
{
	struct fx *f = *state;
	struct tb_vring vr = { 0 };
	uint8_t *h = f->mem.r[0].host;

	assert_int_equal(tb_vring_setup(&vr, 0, f->desc, f->avail, f->used, 0), -EINVAL);
	assert_int_equal(tb_vring_setup(&vr, TB_VRING_MAX_NUM + 1, f->desc, f->avail,
					f->used, 0), -EINVAL);
	assert_int_equal(tb_vring_setup(&vr, QSZ, h + 8, f->avail, f->used, 0), -EINVAL);
	assert_int_equal(tb_vring_setup(&vr, QSZ, f->desc, h + AVAIL_OFF + 1, f->used, 0),
			 -EINVAL);
	assert_int_equal(tb_vring_setup(&vr, QSZ, f->desc, f->avail, h + USED_OFF + 2, 0),
			 -EINVAL);
	assert_int_equal(tb_vring_setup(&vr, QSZ, NULL, f->avail, f->used, 0), -EINVAL);
	tb_vring_reset(&vr);
}

#define T(fn) TB_TEST_FX("vring", fn, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_empty),
		T(test_single),
		T(test_chain),
		T(test_chain_max_length),
		T(test_loop),
		T(test_self_loop),
		T(test_next_out_of_range),
		T(test_head_out_of_range),
		T(test_avail_jump),
		T(test_avail_full),
		T(test_indirect_refused),
		T(test_bad_lengths),
		T(test_index_wrap),
		T(test_notify_suppression),
		T(test_setup_rejects),
	};

	return tb_test_run("vring", tests);
}
