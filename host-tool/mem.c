// SPDX-License-Identifier: GPL-2.0
/*
 * mem.c - guest memory regions, translation, page release.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mem.h"
#include "util.h"

void tb_mem_init(struct tb_mem *m)
{
	m->nregions = 0;
	for (unsigned int i = 0; i < TB_MEM_MAX_REGIONS; i++) {
		m->r[i].fd = -1;
		m->r[i].punch_fd = -1;
	}
}

/* the fd is a memfd (its /proc/self/fd link reads "/memfd:NAME ...") */
static bool tb_mem_is_memfd(int fd)
{
	char path[64], target[32];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return false;
	target[n] = 0;
	return !strncmp(target, "/memfd:", 7);
}

int tb_mem_add(struct tb_mem *m, uint64_t gpa, uint64_t size, uint64_t uva,
	       uint64_t fd_offset, int fd)
{
	struct tb_mem_region *r;
	uint64_t pagesz = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t map_off, lead;
	struct stat st;
	void *p;

	if (m->nregions >= TB_MEM_MAX_REGIONS)
		return -ENOSPC;
	if (fd < 0 || size == 0)
		return -EINVAL;
	/* the ranges must not wrap in any of the three address spaces */
	if (!tb_range_ok(gpa, size, UINT64_MAX) ||
	    !tb_range_ok(uva, size, UINT64_MAX) ||
	    !tb_range_ok(fd_offset, size, INT64_MAX))
		return -EINVAL;
	for (unsigned int i = 0; i < m->nregions; i++) {
		const struct tb_mem_region *o = &m->r[i];

		if (gpa < o->gpa + o->size && o->gpa < gpa + size)
			return -EEXIST;
	}

	/*
	 * A region past the end of its file would raise SIGBUS in the daemon
	 * the first time a ring or PFN there is touched: refuse it.
	 */
	if (fstat(fd, &st) < 0)
		return -errno;
	/* a device or pipe has no size to check (a 64 TiB /dev/zero region) */
	if (!S_ISREG(st.st_mode))
		return -EBADFD;
	if (fd_offset + size > (uint64_t)st.st_size)
		return -ERANGE;
	/*
	 * A memfd the front-end can still shrink would raise SIGBUS in the
	 * daemon later: QEMU seals its memfds (seal=on), so require it. Other
	 * files cannot be sealed; accesses to them are SIGBUS-guarded.
	 */
	if (tb_mem_is_memfd(fd)) {
		int seals = fcntl(fd, F_GET_SEALS);

		if (seals < 0 || !(seals & F_SEAL_SHRINK))
			return -EPERM;
	}

	map_off = fd_offset & ~(pagesz - 1);
	lead = fd_offset - map_off;
	if (size > SIZE_MAX - lead)
		return -EINVAL;
	p = mmap(NULL, size + lead, PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_NORESERVE, fd, (off_t)map_off);
	if (p == MAP_FAILED)
		return -errno;

	r = &m->r[m->nregions];
	r->punch_fd = fd;
	for (unsigned int i = 0; i < m->nregions; i++) {
		struct stat o;

		if (!fstat(m->r[i].fd, &o) && o.st_dev == st.st_dev && o.st_ino == st.st_ino) {
			r->punch_fd = m->r[i].fd;
			break;
		}
	}
	m->nregions++;
	r->gpa = gpa;
	r->size = size;
	r->uva = uva;
	r->fd_offset = fd_offset;
	r->fd = fd;
	r->map = p;
	r->map_len = size + lead;
	r->host = (uint8_t *)p + lead;
	return 0;
}

void tb_mem_clear(struct tb_mem *m)
{
	for (unsigned int i = 0; i < m->nregions; i++) {
		struct tb_mem_region *r = &m->r[i];

		munmap(r->map, r->map_len);
		tb_close_fd(&r->fd);
		r->punch_fd = -1;
		r->map = NULL;
		r->host = NULL;
	}
	m->nregions = 0;
}

/* index of the region holding [addr, addr+len) in the chosen space, or -1 */
static int tb_mem_find(const struct tb_mem *m, uint64_t addr, uint64_t len,
		       bool user)
{
	for (unsigned int i = 0; i < m->nregions; i++) {
		const struct tb_mem_region *r = &m->r[i];
		uint64_t base = user ? r->uva : r->gpa;

		/* written so that no term can overflow */
		if (addr >= base && addr - base < r->size &&
		    len <= r->size - (addr - base))
			return (int)i;
	}
	return -1;
}

void *tb_mem_gpa_to_host(const struct tb_mem *m, uint64_t gpa, uint64_t len)
{
	int i = tb_mem_find(m, gpa, len, false);

	return i < 0 ? NULL : m->r[i].host + (gpa - m->r[i].gpa);
}

void *tb_mem_uva_to_host(const struct tb_mem *m, uint64_t uva, uint64_t len)
{
	int i = tb_mem_find(m, uva, len, true);

	return i < 0 ? NULL : m->r[i].host + (uva - m->r[i].uva);
}

int tb_mem_gpa_to_fd(const struct tb_mem *m, uint64_t gpa, uint64_t len,
		     uint64_t *fd_off)
{
	int i = tb_mem_find(m, gpa, len, false);

	if (i >= 0)
		*fd_off = m->r[i].fd_offset + (gpa - m->r[i].gpa);
	return i;
}

uint64_t tb_mem_ram_bytes(const struct tb_mem *m)
{
	uint64_t sum = 0;

	for (unsigned int i = 0; i < m->nregions; i++)
		sum += m->r[i].size;
	return sum;
}

uint64_t tb_mem_resident_bytes(const struct tb_mem *m)
{
	struct stat seen[TB_MEM_MAX_REGIONS];
	unsigned int nseen = 0;
	uint64_t sum = 0;

	for (unsigned int i = 0; i < m->nregions; i++) {
		struct stat st;
		bool dup = false;

		if (fstat(m->r[i].fd, &st) < 0)
			continue;
		/* QEMU sends one fd per region, often for the same memfd */
		for (unsigned int j = 0; j < nseen; j++)
			if (seen[j].st_dev == st.st_dev && seen[j].st_ino == st.st_ino)
				dup = true;
		if (dup)
			continue;
		seen[nseen++] = st;
		sum += (uint64_t)st.st_blocks * 512;
	}
	return sum;
}

int tb_mem_punch_fallocate(void *opaque, int fd, uint64_t off, uint64_t len)
{
	(void)opaque;
	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)off, (off_t)len) < 0)
		return -errno;
	return 0;
}

void tb_pfn_batch_init(struct tb_pfn_batch *b, const struct tb_mem *mem,
		       tb_punch_fn punch, void *opaque)
{
	memset(b, 0, sizeof(*b));
	b->mem = mem;
	b->punch = punch;
	b->opaque = opaque;
	b->region = -1;
}

void tb_pfn_batch_flush(struct tb_pfn_batch *b)
{
	int rc;

	if (b->region < 0)
		return;
	b->ranges++;
	if (b->punch) {
		rc = b->punch(b->opaque, b->mem->r[b->region].punch_fd, b->fd_off, b->len);
		if (rc < 0) {
			b->errors++;
			tb_warn("punching %llu bytes at fd offset 0x%llx failed: %s",
				(unsigned long long)b->len,
				(unsigned long long)b->fd_off, strerror(-rc));
		} else {
			b->bytes += b->len;
		}
	}
	b->region = -1;
	b->len = 0;
}

void tb_pfn_batch_add(struct tb_pfn_batch *b, uint32_t pfn)
{
	uint64_t gpa = (uint64_t)pfn << TB_PAGE_SHIFT;
	uint64_t off;
	int region;

	/* a frame the open range already holds: a repeat, counted once */
	if (b->region >= 0 && gpa >= b->start_gpa && gpa - b->start_gpa < b->len) {
		b->repeats++;
		return;
	}
	/* extend the open range: same region, next frame */
	if (b->region >= 0 && gpa == b->start_gpa + b->len) {
		const struct tb_mem_region *r = &b->mem->r[b->region];

		if (gpa - r->gpa < r->size && TB_PAGE_SIZE <= r->size - (gpa - r->gpa)) {
			b->len += TB_PAGE_SIZE;
			b->pages++;
			return;
		}
	}

	region = tb_mem_gpa_to_fd(b->mem, gpa, TB_PAGE_SIZE, &off);
	if (region < 0) {
		b->refused++;
		return;
	}
	tb_pfn_batch_flush(b);
	b->region = region;
	b->start_gpa = gpa;
	b->len = TB_PAGE_SIZE;
	b->fd_off = off;
	b->pages++;
}
