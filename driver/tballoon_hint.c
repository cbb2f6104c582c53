// SPDX-License-Identifier: GPL-2.0-only
/*
 * tballoon_hint.c - free page hinting (VIRTIO_BALLOON_F_FREE_PAGE_HINT)
 *
 * Owns @tb->hint_vq, @tb->hint_work, @tb->hint_pages and the hint
 * shrinker. During a live migration the device writes a new command id to
 * free_page_hint_cmd_id; a pass then tells it which guest memory is free,
 * so that it need not send those pages: the id on the queue (out), then
 * free blocks of TBALLOON_HINT_ORDER (in, one per buffer), then the STOP id
 * (out) once free memory is used up or the device wrote STOP. A hint
 * stays true only as long as the page is not written; the device's dirty
 * log sees a later write, so the guest may take a hinted block back at any
 * time. It holds them until the device writes DONE only so that the next
 * pass hints other memory: the shrinker gives them back under memory
 * pressure, an inflate takes them back when it starts (they are the free
 * memory it needs), and remove and freeze free them.
 *
 * Hinted blocks are neither balloon pages nor counted in `actual`.
 *
 * Locks: @tb->hint_lock for @hint_pages and @hint_blocks (hint work,
 * shrinker, worker); @hint_flags is atomic (set from the config callback).
 * @hint_work alone uses @hint_vq, @hint_cmd_id and @hint_cmd_cached, and
 * waits on @tb->acked, bounded.
 */

#include <linux/gfp.h>
#include <linux/mm.h>
#include <linux/scatterlist.h>
#include <linux/shrinker.h>
#include <linux/virtio_config.h>

#include "tballoon.h"

#define TBALLOON_HINT_PAGES	BIT(TBALLOON_HINT_ORDER)
#define TBALLOON_HINT_BYTES	(TBALLOON_HINT_PAGES << PAGE_SHIFT)

/*
 * The device's command id, read again only after a config change: QEMU
 * shows the id only until the pass's first buffer arrives and 0 (STOP)
 * afterwards, without a config change, until it really stops the pass.
 * Only @hint_work calls this.
 */
static u32 tballoon_hint_cmd_id(struct tballoon *tb)
{
	if (test_and_clear_bit(TBALLOON_HINT_REREAD, &tb->hint_flags))
		virtio_cread_le(tb->vdev, struct virtio_tballoon_config,
				free_page_hint_cmd_id, &tb->hint_cmd_cached);
	return tb->hint_cmd_cached;
}

/* Free up to @max hinted blocks (all: ULONG_MAX); returns the pages freed. */
static unsigned long tballoon_hint_free(struct tballoon *tb, unsigned long max)
{
	unsigned long blocks = 0;
	struct page *page, *next;
	LIST_HEAD(freed);

	spin_lock(&tb->hint_lock);
	list_for_each_entry_safe(page, next, &tb->hint_pages, lru) {
		if (blocks == max)
			break;
		list_move(&page->lru, &freed);
		blocks++;
	}
	tb->hint_blocks -= blocks;
	spin_unlock(&tb->hint_lock);
	list_for_each_entry_safe(page, next, &freed, lru) {
		list_del(&page->lru);
		__free_pages(page, TBALLOON_HINT_ORDER);
	}
	return blocks * TBALLOON_HINT_PAGES;
}

/**
 * tballoon_hint_release() - give every hinted block back to the guest
 * @tb: the balloon
 *
 * For the device's DONE, an inflate about to start, remove and freeze. Any
 * context that may sleep; takes only @tb->hint_lock.
 */
void tballoon_hint_release(struct tballoon *tb)
{
	if (tb->hint_vq)
		tballoon_hint_free(tb, ULONG_MAX);
}

static unsigned long tballoon_hint_count(struct shrinker *s,
					 struct shrink_control *sc)
{
	struct tballoon *tb = tballoon_shrinker_owner(s);

	return READ_ONCE(tb->hint_blocks) * TBALLOON_HINT_PAGES;
}

static unsigned long tballoon_hint_scan(struct shrinker *s,
					struct shrink_control *sc)
{
	struct tballoon *tb = tballoon_shrinker_owner(s);
	unsigned long freed;

	freed = tballoon_hint_free(tb, DIV_ROUND_UP(sc->nr_to_scan,
						    TBALLOON_HINT_PAGES));
	return freed ? freed : SHRINK_STOP;
}

/* Collect the buffers the device used; the blocks stay on @hint_pages. */
static void tballoon_hint_collect(struct virtqueue *vq)
{
	unsigned int len;

	while (virtqueue_get_buf(vq, &len))
		;
}

/*
 * Wait until the queue has room for @need more entries: bounded by
 * TBALLOON_ACK_TIMEOUT_MS, after which the device is broken. Returns false
 * when the pass must end (broken, removed, suspending, or no room).
 */
static bool tballoon_hint_room(struct tballoon *tb, unsigned int need)
{
	struct virtqueue *vq = tb->hint_vq;
	unsigned long end = jiffies + msecs_to_jiffies(TBALLOON_ACK_TIMEOUT_MS);

	for (;;) {
		tballoon_hint_collect(vq);
		if (virtqueue_is_broken(vq) || tballoon_removing(tb))
			return false;
		if (vq->num_free >= need)
			return true;
		if (time_after(jiffies, end)) {
			dev_err(&tb->vdev->dev,
				"the device kept the hint queue full for %u ms: broken\n",
				TBALLOON_ACK_TIMEOUT_MS);
			virtio_break_device(tb->vdev);
			return false;
		}
		wait_event_timeout(tb->acked, vq->num_free >= need ||
				   virtqueue_is_broken(vq),
				   msecs_to_jiffies(TBALLOON_ACK_POLL_MS));
	}
}

static int tballoon_hint_send_id(struct tballoon *tb, __virtio32 *buf, u32 id)
{
	struct scatterlist sg;
	int err;

	*buf = cpu_to_virtio32(tb->vdev, id);
	sg_init_one(&sg, buf, sizeof(*buf));
	err = virtqueue_add_outbuf(tb->hint_vq, &sg, 1, buf, GFP_KERNEL);
	if (!err)
		virtqueue_kick(tb->hint_vq);
	return err;
}

/* One pass for command @id: the id, free blocks while it lasts, STOP. */
static void tballoon_hint_pass(struct tballoon *tb, u32 id)
{
	struct virtqueue *vq = tb->hint_vq;
	unsigned long sent = 0;
	struct scatterlist sg;
	struct page *page;

	/* room for the id and, always kept, the STOP that ends the pass */
	if (!tballoon_hint_room(tb, 2) ||
	    tballoon_hint_send_id(tb, &tb->hint_id_start, id))
		return;
	for (;;) {
		if (READ_ONCE(tb->hint_yield) || tballoon_hint_cmd_id(tb) != id)
			break;
		if (!tballoon_hint_room(tb, 2))
			break;
		page = alloc_pages(TBALLOON_HINT_GFP, TBALLOON_HINT_ORDER);
		if (!page)
			break;		/* no free block left: the pass is done */
		sg_init_one(&sg, page_address(page), TBALLOON_HINT_BYTES);
		if (virtqueue_add_inbuf(vq, &sg, 1, page, GFP_KERNEL)) {
			__free_pages(page, TBALLOON_HINT_ORDER);
			break;
		}
		virtqueue_kick(vq);
		spin_lock(&tb->hint_lock);
		list_add(&page->lru, &tb->hint_pages);
		tb->hint_blocks++;
		spin_unlock(&tb->hint_lock);
		sent++;
		cond_resched();
	}
	if (!virtqueue_is_broken(vq) && tballoon_hint_room(tb, 1))
		tballoon_hint_send_id(tb, &tb->hint_id_stop, TBALLOON_HINT_CMD_STOP);
	dev_dbg(&tb->vdev->dev, "free page hint %u: %lu MiB hinted\n", id,
		(sent * TBALLOON_HINT_BYTES) >> 20);
}

static void tballoon_hint_work(struct work_struct *work)
{
	struct tballoon *tb = container_of(work, struct tballoon, hint_work);
	u32 id = tballoon_hint_cmd_id(tb);

	if (id == TBALLOON_HINT_CMD_DONE) {
		tballoon_hint_release(tb);
		return;
	}
	/* STOP ends a pass (it reads the id per block); a known id is done */
	if (id == TBALLOON_HINT_CMD_STOP || id == tb->hint_cmd_id)
		return;
	tb->hint_cmd_id = id;
	tballoon_hint_pass(tb, id);
}

/**
 * tballoon_hint_changed() - config change: the hint command id may be new
 * @tb: the balloon
 *
 * From the config change callback (interrupts off): queues the hint work
 * unless remove() or a suspend is under way.
 */
void tballoon_hint_changed(struct tballoon *tb)
{
	unsigned long flags;

	if (!tb->hint_vq)
		return;
	set_bit(TBALLOON_HINT_REREAD, &tb->hint_flags);
	spin_lock_irqsave(&tb->stop_lock, flags);
	if (!tb->removing && !tb->suspending)
		queue_work(system_freezable_wq, &tb->hint_work);
	spin_unlock_irqrestore(&tb->stop_lock, flags);
}

/**
 * tballoon_hint_init() - prepare hinting (probe)
 * @tb: the balloon, before its queues are set up
 *
 * Return: 0 or -ENOMEM (the shrinker).
 */
int tballoon_hint_init(struct tballoon *tb)
{
	INIT_WORK(&tb->hint_work, tballoon_hint_work);
	spin_lock_init(&tb->hint_lock);
	INIT_LIST_HEAD(&tb->hint_pages);
	if (!virtio_has_feature(tb->vdev, VIRTIO_BALLOON_F_FREE_PAGE_HINT))
		return 0;
	return tballoon_shrinker_register(&tb->hint_shrinker, tb,
					  tballoon_hint_count, tballoon_hint_scan,
					  "virtio-tballoon-hint");
}

/**
 * tballoon_hint_exit() - end hinting (remove, failed probe)
 * @tb: the balloon; nothing queues @hint_work any more (@removing)
 */
void tballoon_hint_exit(struct tballoon *tb)
{
	if (!virtio_has_feature(tb->vdev, VIRTIO_BALLOON_F_FREE_PAGE_HINT))
		return;
	cancel_work_sync(&tb->hint_work);
	tballoon_shrinker_unregister(&tb->hint_shrinker);
	tballoon_hint_free(tb, ULONG_MAX);
}
