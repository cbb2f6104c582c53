/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vring.h - split virtqueue walker for a device that reads guest buffers.
 *
 * Everything in guest memory is hostile: the available index, heads, next
 * links, descriptor flags, addresses and lengths. The walker snapshots each
 * descriptor once, bounds every chain by the queue size, refuses indirect
 * descriptors (VIRTIO_RING_F_INDIRECT_DESC is not offered) and translates
 * every buffer fully inside one guest memory region.
 *
 * Contract: tb_vring_pop() and tb_vring_push() are called from one thread;
 * the ring must have been set up with tb_vring_setup().
 */
#ifndef TB_VRING_H
#define TB_VRING_H

#include <stdbool.h>
#include <stdint.h>

#include "mem.h"

/* largest split queue size (virtio spec: 32768) */
#define TB_VRING_MAX_NUM 32768

/* descriptor flags (virtio spec 2.7.5) */
#define TB_VRING_DESC_F_NEXT 1
#define TB_VRING_DESC_F_WRITE 2
#define TB_VRING_DESC_F_INDIRECT 4
/* avail->flags: the driver does not want an interrupt */
#define TB_VRING_AVAIL_F_NO_INTERRUPT 1

/* wire layout, all little-endian */
struct tb_vring_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

struct tb_vring_used_elem {
	uint32_t id;
	uint32_t len;
};

/* why a chain was refused (the head is still returned to the driver) */
enum tb_chain_err {
	TB_CHAIN_OK,
	TB_CHAIN_LOOP,		/* longer than the queue: a loop */
	TB_CHAIN_NEXT_RANGE,	/* next index >= queue size */
	TB_CHAIN_INDIRECT,	/* indirect descriptor, not negotiated */
	TB_CHAIN_BAD_ADDR,	/* buffer not inside one guest memory region */
	TB_CHAIN_COUNT
};

/* a readable or writable piece of a chain, already translated */
struct tb_vring_seg {
	const uint8_t *host;
	uint64_t gpa;
	uint32_t len;
	bool write;
};

/**
 * struct tb_vring_chain - one popped descriptor chain
 * @head: descriptor index to return in the used ring
 * @err: TB_CHAIN_OK, or why the chain must not be processed
 * @nsegs: valid entries of @segs
 * @segs: points into the ring's segment array (valid until the next pop)
 */
struct tb_vring_chain {
	uint16_t head;
	enum tb_chain_err err;
	unsigned int nsegs;
	struct tb_vring_seg *segs;
};

/**
 * struct tb_vring - one split virtqueue as seen by the device
 * @num: queue size, 0 when not set up
 * @desc, @avail, @used: host pointers into guest memory
 * @last_avail: next available-ring slot the device will read
 * @used_idx: next used-ring slot the device will write
 * @broken: the driver violated the protocol in a way that leaves no safe
 *	way to continue (avail index jump, head out of range); nothing more is
 *	processed until the ring is set up again
 * @segs: segment scratch array of @num entries
 */
struct tb_vring {
	uint32_t num;
	volatile struct tb_vring_desc *desc;
	volatile uint16_t *avail;
	volatile uint8_t *used;
	uint16_t last_avail;
	uint16_t used_idx;
	bool broken;
	struct tb_vring_seg *segs;
};

/* bytes of each ring part for a queue of @num entries */
static inline uint64_t tb_vring_desc_size(uint32_t num) { return 16ULL * num; }
static inline uint64_t tb_vring_avail_size(uint32_t num) { return 6ULL + 2ULL * num; }
static inline uint64_t tb_vring_used_size(uint32_t num) { return 6ULL + 8ULL * num; }

/*
 * Attach the ring to host memory. @num must be 1..TB_VRING_MAX_NUM, the parts
 * suitably aligned (16/2/4). @last_avail is the base from SET_VRING_BASE; the
 * used index is read back from the used ring. Returns 0 or -errno.
 */
int tb_vring_setup(struct tb_vring *vr, uint32_t num, void *desc, void *avail,
		   void *used, uint16_t last_avail);
/* detach and free the scratch array */
void tb_vring_reset(struct tb_vring *vr);

/*
 * Pop the next available chain.
 * Returns 1 with *chain filled (check chain->err), 0 if nothing is pending,
 * -EIO if the ring is (now) broken.
 */
int tb_vring_pop(struct tb_vring *vr, const struct tb_mem *mem,
		 struct tb_vring_chain *chain);

/* Return @head to the driver with @len bytes written. */
void tb_vring_push(struct tb_vring *vr, uint16_t head, uint32_t len);

/* After pushing: does the driver want an interrupt? */
bool tb_vring_need_notify(struct tb_vring *vr);

const char *tb_chain_err_name(enum tb_chain_err err);

#endif /* TB_VRING_H */
