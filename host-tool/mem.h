/* SPDX-License-Identifier: GPL-2.0 */
/*
 * mem.h - guest memory as received by VHOST_USER_SET_MEM_TABLE: the mapped
 * regions, address translation (guest-physical and front-end user addresses)
 * and releasing 4 KiB balloon pages with fallocate(PUNCH_HOLE).
 *
 * No sockets here; everything is testable with a memfd.
 */
#ifndef TB_MEM_H
#define TB_MEM_H

#include <stdbool.h>
#include <stdint.h>

/* VHOST_MEMORY_BASELINE_NREGIONS: the most regions SET_MEM_TABLE carries */
#define TB_MEM_MAX_REGIONS 8
/* balloon page size: PFNs on the wire address 4 KiB frames */
#define TB_PAGE_SHIFT 12
#define TB_PAGE_SIZE (1ULL << TB_PAGE_SHIFT)

/**
 * struct tb_mem_region - one guest memory region
 * @gpa: guest-physical address of the first byte
 * @size: length in bytes
 * @uva: the front-end's (QEMU's) user address of the first byte
 * @fd_offset: offset of the first byte in @fd
 * @fd: the region's memory fd (owned)
 * @map: our mapping (page-aligned start), @map_len its length
 * @host: our address of the first byte of the region
 */
struct tb_mem_region {
	uint64_t gpa;
	uint64_t size;
	uint64_t uva;
	uint64_t fd_offset;
	int fd;
	/*
	 * the fd its releases go through: the fd of the first region of the
	 * same file (QEMU sends one fd per region, often for one memfd), so
	 * that the punch pool sees one file as one fd; not closed by itself
	 */
	int punch_fd;
	void *map;
	uint64_t map_len;
	uint8_t *host;
};

/* the region table; only [0, nregions) are valid */
struct tb_mem {
	unsigned int nregions;
	struct tb_mem_region r[TB_MEM_MAX_REGIONS];
};

void tb_mem_init(struct tb_mem *m);

/*
 * Add a region and map it MAP_SHARED|MAP_NORESERVE. Takes ownership of @fd
 * only on success (returns 0); on failure returns -errno and the caller still
 * owns (and must close) @fd. Rejects empty, overflowing or overlapping ranges.
 */
int tb_mem_add(struct tb_mem *m, uint64_t gpa, uint64_t size, uint64_t uva,
	       uint64_t fd_offset, int fd);

/* unmap and close every region */
void tb_mem_clear(struct tb_mem *m);

/* host pointer for [gpa, gpa+len) if it lies inside one region, else NULL */
void *tb_mem_gpa_to_host(const struct tb_mem *m, uint64_t gpa, uint64_t len);

/* host pointer for front-end user addresses [uva, uva+len), else NULL */
void *tb_mem_uva_to_host(const struct tb_mem *m, uint64_t uva, uint64_t len);

/*
 * Region index holding all of [gpa, gpa+len), or -1. *fd_off receives the
 * offset of @gpa in that region's fd.
 */
int tb_mem_gpa_to_fd(const struct tb_mem *m, uint64_t gpa, uint64_t len,
		     uint64_t *fd_off);

/* guest RAM size: sum of the region sizes */
uint64_t tb_mem_ram_bytes(const struct tb_mem *m);

/*
 * Host memory backing guest RAM: st_blocks * 512 summed over the distinct
 * files (by device and inode) behind the region fds.
 */
uint64_t tb_mem_resident_bytes(const struct tb_mem *m);

/* releases [off, off+len) of fd; returns 0 or -errno */
typedef int (*tb_punch_fn)(void *opaque, int fd, uint64_t off, uint64_t len);

/* the real thing: fallocate(PUNCH_HOLE | KEEP_SIZE) */
int tb_mem_punch_fallocate(void *opaque, int fd, uint64_t off, uint64_t len);

/**
 * struct tb_pfn_batch - coalesces a stream of PFNs into ranges
 * @mem: translation table
 * @punch: called once per coalesced range; NULL only accounts (deflate)
 * @opaque: passed to @punch
 * @region: region of the open range, -1 if none
 * @start_gpa, @len, @fd_off: the open range
 * @pages: valid PFNs seen
 * @refused: PFNs outside guest RAM (never punched)
 * @ranges: ranges flushed
 * @bytes: bytes successfully punched
 * @errors: punch calls that failed
 */
struct tb_pfn_batch {
	const struct tb_mem *mem;
	tb_punch_fn punch;
	void *opaque;
	int region;
	uint64_t start_gpa;
	uint64_t len;
	uint64_t fd_off;
	uint64_t pages;
	uint64_t refused;
	uint64_t ranges;
	uint64_t bytes;
	uint64_t errors;
	uint64_t repeats;
};

void tb_pfn_batch_init(struct tb_pfn_batch *b, const struct tb_mem *mem,
		       tb_punch_fn punch, void *opaque);
/*
 * Add one PFN; adjacent PFNs in the same region extend the open range, a PFN
 * inside it is a repeat (counted in @repeats, not punched or counted again).
 */
void tb_pfn_batch_add(struct tb_pfn_batch *b, uint32_t pfn);
/* punch the open range, if any */
void tb_pfn_batch_flush(struct tb_pfn_batch *b);

#endif /* TB_MEM_H */
