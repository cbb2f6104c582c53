// SPDX-License-Identifier: GPL-2.0
/*
 * vring.c - hostile-input-safe split virtqueue walker.
 */
#include <errno.h>
#include <stdlib.h>

#include "util.h"
#include "vring.h"

static const char *const tb_chain_err_names[TB_CHAIN_COUNT] = {
	[TB_CHAIN_OK] = "ok",
	[TB_CHAIN_LOOP] = "descriptor loop",
	[TB_CHAIN_NEXT_RANGE] = "next index out of range",
	[TB_CHAIN_INDIRECT] = "indirect descriptor not negotiated",
	[TB_CHAIN_BAD_ADDR] = "buffer outside guest memory",
};

const char *tb_chain_err_name(enum tb_chain_err err)
{
	return (unsigned int)err < TB_CHAIN_COUNT ? tb_chain_err_names[err] : "?";
}

int tb_vring_setup(struct tb_vring *vr, uint32_t num, void *desc, void *avail,
		   void *used, uint16_t last_avail)
{
	struct tb_vring_seg *segs;

	if (num == 0 || num > TB_VRING_MAX_NUM || !desc || !avail || !used)
		return -EINVAL;
	if (((uintptr_t)desc & 15) || ((uintptr_t)avail & 1) || ((uintptr_t)used & 3))
		return -EINVAL;
	segs = calloc(num, sizeof(*segs));
	if (!segs)
		return -ENOMEM;
	free(vr->segs);
	vr->segs = segs;
	vr->num = num;
	vr->desc = desc;
	vr->avail = avail;
	vr->used = used;
	vr->last_avail = last_avail;
	vr->broken = false;
	/* the used index lives in guest memory: it survives reconnects */
	vr->used_idx = le16toh(*(volatile uint16_t *)(vr->used + 2));
	return 0;
}

void tb_vring_reset(struct tb_vring *vr)
{
	free(vr->segs);
	vr->segs = NULL;
	vr->num = 0;
	vr->desc = NULL;
	vr->avail = NULL;
	vr->used = NULL;
	vr->broken = false;
}

int tb_vring_pop(struct tb_vring *vr, const struct tb_mem *mem,
		 struct tb_vring_chain *chain)
{
	uint16_t avail_idx, pending, head, idx;
	unsigned int n = 0;

	if (vr->broken || vr->num == 0)
		return -EIO;

	avail_idx = le16toh(__atomic_load_n(&vr->avail[1], __ATOMIC_RELAXED));
	pending = (uint16_t)(avail_idx - vr->last_avail);
	if (pending == 0)
		return 0;
	if (pending > vr->num) {
		tb_warn("vring: avail index jumped by %u on a ring of %u (%u -> %u)",
			pending, vr->num, vr->last_avail, avail_idx);
		vr->broken = true;
		return -EIO;
	}
	/*
	 * Acquire: the driver wrote the ring entry and descriptors before it
	 * published avail->idx (its wmb); do not read them before the index.
	 */
	__atomic_thread_fence(__ATOMIC_ACQUIRE);

	head = le16toh(vr->avail[2 + vr->last_avail % vr->num]);
	if (head >= vr->num) {
		tb_warn("vring: head %u out of range (queue size %u)", head, vr->num);
		vr->broken = true;
		return -EIO;
	}
	vr->last_avail++;

	chain->head = head;
	chain->err = TB_CHAIN_OK;
	chain->nsegs = 0;
	chain->segs = vr->segs;

	idx = head;
	for (;;) {
		struct tb_vring_desc d;
		const void *host;

		/* snapshot once: the guest may rewrite it under our feet */
		d.addr = le64toh(vr->desc[idx].addr);
		d.len = le32toh(vr->desc[idx].len);
		d.flags = le16toh(vr->desc[idx].flags);
		d.next = le16toh(vr->desc[idx].next);

		if (n >= vr->num) {
			chain->err = TB_CHAIN_LOOP;
			break;
		}
		if (d.flags & TB_VRING_DESC_F_INDIRECT) {
			chain->err = TB_CHAIN_INDIRECT;
			break;
		}
		host = d.len ? tb_mem_gpa_to_host(mem, d.addr, d.len) : NULL;
		if (d.len && !host) {
			chain->err = TB_CHAIN_BAD_ADDR;
			break;
		}
		vr->segs[n].host = host;
		vr->segs[n].gpa = d.addr;
		vr->segs[n].len = d.len;
		vr->segs[n].write = d.flags & TB_VRING_DESC_F_WRITE;
		n++;
		if (!(d.flags & TB_VRING_DESC_F_NEXT))
			break;
		if (d.next >= vr->num) {
			chain->err = TB_CHAIN_NEXT_RANGE;
			break;
		}
		idx = d.next;
	}
	chain->nsegs = chain->err == TB_CHAIN_OK ? n : 0;
	return 1;
}

void tb_vring_push(struct tb_vring *vr, uint16_t head, uint32_t len)
{
	volatile struct tb_vring_used_elem *ring =
		(volatile struct tb_vring_used_elem *)(vr->used + 4);
	uint16_t slot = vr->used_idx % vr->num;

	ring[slot].id = htole32(head);
	ring[slot].len = htole32(len);
	vr->used_idx++;
	/*
	 * Release: the element must be visible before the index that
	 * publishes it (pairs with the driver's rmb after reading used->idx).
	 */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	__atomic_store_n((volatile uint16_t *)(vr->used + 2), htole16(vr->used_idx),
			 __ATOMIC_RELAXED);
}

bool tb_vring_need_notify(struct tb_vring *vr)
{
	uint16_t flags;

	/*
	 * Full barrier: order the used->idx store before the avail->flags
	 * load, or we could miss the driver re-enabling interrupts after it
	 * checked used->idx (the classic lost-wakeup; pairs with the driver's
	 * mb in virtqueue_enable_cb).
	 */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	flags = le16toh(__atomic_load_n(&vr->avail[0], __ATOMIC_RELAXED));
	return !(flags & TB_VRING_AVAIL_F_NO_INTERRUPT);
}
