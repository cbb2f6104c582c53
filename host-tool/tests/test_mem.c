// SPDX-License-Identifier: GPL-2.0
/*
 * test_mem.c - region table, translation, PFN coalescing and page release.
 */
#include "tb_test.h"

#include <sys/stat.h>

#include "mem.h"

#define MiB (1ULL << 20)

/* a recording punch function */
struct punch_log {
	unsigned int n;
	int fd[16];
	uint64_t off[16];
	uint64_t len[16];
	int fail;
};

static int punch_record(void *opaque, int fd, uint64_t off, uint64_t len)
{
	struct punch_log *l = opaque;

	if (l->n < 16) {
		l->fd[l->n] = fd;
		l->off[l->n] = off;
		l->len[l->n] = len;
	}
	l->n++;
	return l->fail ? -EIO : 0;
}

static void test_add_translate(void **state)
{
	struct tb_mem m;
	uint8_t *h;

	(void)state;
	tb_mem_init(&m);
	assert_int_equal(tb_mem_add(&m, 0, 2 * MiB, 0x7f0000000000ULL, 0, tb_test_memfd(2 * MiB)), 0);
	assert_int_equal(tb_mem_add(&m, 4 * MiB, 1 * MiB, 0x7f1000000000ULL, 2 * MiB,
				    tb_test_memfd(4 * MiB)), 0);
	assert_int_equal(m.nregions, 2);
	assert_int_equal(tb_mem_ram_bytes(&m), 3 * MiB);

	h = tb_mem_gpa_to_host(&m, 0x1000, 16);
	assert_ptr_equal(h, m.r[0].host + 0x1000);
	assert_ptr_equal(tb_mem_uva_to_host(&m, 0x7f1000000010ULL, 4), m.r[1].host + 0x10);
	/* last byte of a region is fine, one past is not */
	assert_non_null(tb_mem_gpa_to_host(&m, 2 * MiB - 1, 1));
	assert_null(tb_mem_gpa_to_host(&m, 2 * MiB - 1, 2));
	assert_null(tb_mem_gpa_to_host(&m, 2 * MiB, 1));
	/* the hole between the regions */
	assert_null(tb_mem_gpa_to_host(&m, 3 * MiB, 4096));
	/* wrap-around lengths */
	assert_null(tb_mem_gpa_to_host(&m, 0x1000, UINT64_MAX));
	assert_null(tb_mem_gpa_to_host(&m, UINT64_MAX, 2));
	assert_null(tb_mem_uva_to_host(&m, 0, 1));

	/* fd offset of a guest address */
	uint64_t off;

	assert_int_equal(tb_mem_gpa_to_fd(&m, 4 * MiB + 0x3000, 4096, &off), 1);
	assert_int_equal(off, 2 * MiB + 0x3000);
	assert_int_equal(tb_mem_gpa_to_fd(&m, 5 * MiB, 4096, &off), -1);
	tb_mem_clear(&m);
	assert_int_equal(m.nregions, 0);
}

static void test_add_rejects(void **state)
{
	struct tb_mem m;
	int fd = tb_test_memfd(MiB);

	(void)state;
	tb_mem_init(&m);
	assert_int_equal(tb_mem_add(&m, 0, 0, 0, 0, fd), -EINVAL);
	assert_int_equal(tb_mem_add(&m, UINT64_MAX - 10, MiB, 0, 0, fd), -EINVAL);
	assert_int_equal(tb_mem_add(&m, 0, MiB, UINT64_MAX - 10, 0, fd), -EINVAL);
	assert_int_equal(tb_mem_add(&m, 0, MiB, 0, INT64_MAX, fd), -EINVAL);
	assert_int_equal(tb_mem_add(&m, 0, MiB, 0, 0, -1), -EINVAL);
	assert_int_equal(tb_mem_add(&m, 0, MiB, 0, 0, fd), 0);
	/* overlapping guest ranges */
	fd = tb_test_memfd(MiB);
	assert_int_equal(tb_mem_add(&m, MiB / 2, MiB, 0, 0, fd), -EEXIST);
	/* a failed add leaves the fd to the caller */
	assert_false(tb_test_fd_closed(fd));
	close(fd);
	/* not mappable */
	fd = open("/dev/null", O_RDONLY);
	assert_true(tb_mem_add(&m, 8 * MiB, MiB, 0, 0, fd) < 0);
	close(fd);
	tb_mem_clear(&m);
}

static void test_table_full(void **state)
{
	struct tb_mem m;
	int fd;

	(void)state;
	tb_mem_init(&m);
	for (unsigned int i = 0; i < TB_MEM_MAX_REGIONS; i++)
		assert_int_equal(tb_mem_add(&m, i * MiB, MiB, i * MiB, 0, tb_test_memfd(MiB)), 0);
	fd = tb_test_memfd(MiB);
	assert_int_equal(tb_mem_add(&m, 64 * MiB, MiB, 0, 0, fd), -ENOSPC);
	close(fd);
	tb_mem_clear(&m);
}

static void test_coalesce(void **state)
{
	static const uint32_t pfns[] = { 16, 17, 18, 40, 19, 20, 0xfffff, 21 };
	struct punch_log log = { 0 };
	struct tb_pfn_batch b;
	struct tb_mem m;

	(void)state;
	tb_mem_init(&m);
	assert_int_equal(tb_mem_add(&m, 0, MiB, 0, 0x10000, tb_test_memfd(2 * MiB)), 0);
	tb_pfn_batch_init(&b, &m, punch_record, &log);
	for (size_t i = 0; i < TB_ARRAY_SIZE(pfns); i++)
		tb_pfn_batch_add(&b, pfns[i]);
	tb_pfn_batch_flush(&b);

	/* 16..18 | 40 | 19..21 (0xfffff refused, does not break the run) */
	assert_int_equal(log.n, 3);
	assert_int_equal(log.off[0], 0x10000 + 16 * 4096);
	assert_int_equal(log.len[0], 3 * 4096);
	assert_int_equal(log.off[1], 0x10000 + 40 * 4096);
	assert_int_equal(log.len[1], 4096);
	assert_int_equal(log.off[2], 0x10000 + 19 * 4096);
	assert_int_equal(log.len[2], 3 * 4096);
	assert_int_equal(b.pages, 7);
	assert_int_equal(b.refused, 1);
	assert_int_equal(b.ranges, 3);
	assert_int_equal(b.bytes, 7 * 4096);
	tb_mem_clear(&m);
}

static void test_coalesce_region_boundary(void **state)
{
	struct punch_log log = { 0 };
	struct tb_pfn_batch b;
	struct tb_mem m;

	(void)state;
	tb_mem_init(&m);
	/* two adjacent guest regions backed by different files */
	assert_int_equal(tb_mem_add(&m, 0, MiB, 0, 0, tb_test_memfd(MiB)), 0);
	assert_int_equal(tb_mem_add(&m, MiB, MiB, MiB, 0, tb_test_memfd(MiB)), 0);
	tb_pfn_batch_init(&b, &m, punch_record, &log);
	tb_pfn_batch_add(&b, 255);
	tb_pfn_batch_add(&b, 256);
	tb_pfn_batch_add(&b, 257);
	tb_pfn_batch_flush(&b);
	assert_int_equal(log.n, 2);
	assert_int_equal(log.fd[0], m.r[0].fd);
	assert_int_equal(log.off[0], 255 * 4096);
	assert_int_equal(log.len[0], 4096);
	assert_int_equal(log.fd[1], m.r[1].fd);
	assert_int_equal(log.off[1], 0);
	assert_int_equal(log.len[1], 2 * 4096);
	tb_mem_clear(&m);
}

/*
 * QEMU sends one fd per region, two for the low and high RAM of one memfd:
 * both regions release through the first one's fd, so the punch pool sees
 * one file (and punches it from one thread); another file keeps its own.
 */
static void test_one_punch_fd_per_file(void **state)
{
	struct punch_log log = { 0 };
	struct tb_pfn_batch b;
	struct tb_mem m;
	int fd = tb_test_memfd(4 * MiB);
	int other = tb_test_memfd(MiB);

	(void)state;
	tb_mem_init(&m);
	assert_int_equal(tb_mem_add(&m, 0, 2 * MiB, 0, 0, fd), 0);
	assert_int_equal(tb_mem_add(&m, 4 * MiB, 2 * MiB, 4 * MiB, 2 * MiB, dup(fd)), 0);
	assert_int_equal(tb_mem_add(&m, 8 * MiB, MiB, 8 * MiB, 0, other), 0);
	assert_int_equal(m.r[0].punch_fd, fd);
	assert_int_equal(m.r[1].punch_fd, fd);
	assert_int_not_equal(m.r[1].fd, fd);
	assert_int_equal(m.r[2].punch_fd, other);
	tb_pfn_batch_init(&b, &m, punch_record, &log);
	tb_pfn_batch_add(&b, 1);
	tb_pfn_batch_add(&b, 1024 + 1);		/* 4 MiB + 4 KiB: region 1 */
	tb_pfn_batch_add(&b, 2048);		/* 8 MiB: the other file */
	tb_pfn_batch_flush(&b);
	assert_int_equal(log.n, 3);
	assert_int_equal(log.fd[0], fd);
	assert_int_equal(log.fd[1], fd);
	assert_int_equal(log.off[1], 2 * MiB + 4096);
	assert_int_equal(log.fd[2], other);
	tb_mem_clear(&m);
	assert_int_equal(m.r[1].punch_fd, -1);
}

static void test_refuse_outside(void **state)
{
	struct punch_log log = { 0 };
	struct tb_pfn_batch b;
	struct tb_mem m;

	(void)state;
	tb_mem_init(&m);
	/* a region that does not start at 0 and ends mid-page */
	assert_int_equal(tb_mem_add(&m, 0x100000, 0x2800, 0, 0, tb_test_memfd(MiB)), 0);
	tb_pfn_batch_init(&b, &m, punch_record, &log);
	tb_pfn_batch_add(&b, 0);		/* below */
	tb_pfn_batch_add(&b, 0x100);		/* first page: ok */
	tb_pfn_batch_add(&b, 0x101);		/* ok */
	tb_pfn_batch_add(&b, 0x102);		/* half a page: refused */
	tb_pfn_batch_add(&b, UINT32_MAX);	/* far above */
	tb_pfn_batch_flush(&b);
	assert_int_equal(b.pages, 2);
	assert_int_equal(b.refused, 3);
	assert_int_equal(log.n, 1);
	assert_int_equal(log.len[0], 2 * 4096);
	tb_mem_clear(&m);
}

static void test_punch_errors_counted(void **state)
{
	struct punch_log log = { .fail = 1 };
	struct tb_pfn_batch b;
	struct tb_mem m;

	(void)state;
	tb_mem_init(&m);
	assert_int_equal(tb_mem_add(&m, 0, MiB, 0, 0, tb_test_memfd(MiB)), 0);
	tb_pfn_batch_init(&b, &m, punch_record, &log);
	tb_pfn_batch_add(&b, 1);
	tb_pfn_batch_add(&b, 5);
	tb_pfn_batch_flush(&b);
	assert_int_equal(b.errors, 2);
	assert_int_equal(b.bytes, 0);
	tb_mem_clear(&m);
}

static void test_account_only(void **state)
{
	struct tb_pfn_batch b;
	struct tb_mem m;

	(void)state;
	tb_mem_init(&m);
	assert_int_equal(tb_mem_add(&m, 0, MiB, 0, 0, tb_test_memfd(MiB)), 0);
	tb_pfn_batch_init(&b, &m, NULL, NULL);
	tb_pfn_batch_add(&b, 1);
	tb_pfn_batch_add(&b, 2);
	tb_pfn_batch_add(&b, 9999);
	tb_pfn_batch_flush(&b);
	assert_int_equal(b.pages, 2);
	assert_int_equal(b.refused, 1);
	assert_int_equal(b.bytes, 0);
	tb_mem_clear(&m);
}

/* the real thing: punching a memfd lowers st_blocks, counted once per file */
static void test_real_punch_resident(void **state)
{
	struct tb_pfn_batch b;
	struct tb_mem m;
	int fd = tb_test_memfd(4 * MiB);
	int fd2 = dup(fd);

	(void)state;
	tb_mem_init(&m);
	/* one file behind two regions, as QEMU sends it (one fd per region) */
	assert_int_equal(tb_mem_add(&m, 0, 2 * MiB, 0, 0, fd), 0);
	assert_int_equal(tb_mem_add(&m, 4 * MiB, 2 * MiB, 4 * MiB, 2 * MiB, fd2), 0);
	memset(m.r[0].host, 1, 2 * MiB);
	memset(m.r[1].host, 1, 2 * MiB);
	assert_int_equal(tb_mem_resident_bytes(&m), 4 * MiB);

	tb_pfn_batch_init(&b, &m, tb_mem_punch_fallocate, NULL);
	for (uint32_t pfn = 0; pfn < 256; pfn++)		/* first MiB of region 0 */
		tb_pfn_batch_add(&b, pfn);
	for (uint32_t pfn = 1024; pfn < 1024 + 128; pfn++)	/* 512 KiB of region 1 */
		tb_pfn_batch_add(&b, pfn);
	tb_pfn_batch_flush(&b);
	assert_int_equal(b.ranges, 2);
	assert_int_equal(b.bytes, MiB + MiB / 2);
	assert_int_equal(tb_mem_resident_bytes(&m), 4 * MiB - MiB - MiB / 2);
	/* the punched range reads back as zero through our mapping */
	assert_int_equal(m.r[0].host[4096], 0);
	assert_int_equal(m.r[0].host[MiB], 1);
	tb_mem_clear(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		TB_TEST("mem", test_add_translate),
		TB_TEST("mem", test_add_rejects),
		TB_TEST("mem", test_table_full),
		TB_TEST("mem", test_one_punch_fd_per_file),
		TB_TEST("mem", test_coalesce),
		TB_TEST("mem", test_coalesce_region_boundary),
		TB_TEST("mem", test_refuse_outside),
		TB_TEST("mem", test_punch_errors_counted),
		TB_TEST("mem", test_account_only),
		TB_TEST("mem", test_real_punch_resident),
	};

	return tb_test_run("mem", tests);
}
