// SPDX-License-Identifier: GPL-2.0-only
/*
 * tballoon_vq.c - buffers: PFN buffers through the inflate and deflate queues
 *
 * Owns @tb->bufs, @tb->mig_buf and @tb->oom_buf on their way through the
 * queues: filling PFNs (tballoon_buf_add_range()), sending, reaping used
 * buffers, the bounded wait for the device (tballoon_wait_device(): a
 * device that keeps a buffer too long is broken), and completing a used
 * buffer (the balloon count, managed-page accounting, freeing deflated
 * pages). Nothing above this layer touches a virtqueue.
 *
 * Locks: every function here expects @tb->lock held.
 */

#include <linux/delay.h>
#include <linux/jiffies.h>
#include <linux/scatterlist.h>
#include <linux/virtio_config.h>

#include "tballoon.h"

/* Add the 4 KiB frames of @nr_pages guest pages from @page on to @buf. */
void tballoon_buf_add_range(struct tballoon_buf *buf, struct page *page,
			    unsigned long nr_pages)
{
	unsigned long pfn = page_to_pfn(page);
	unsigned long i, n = nr_pages * TBALLOON_PAGES_PER_PAGE;

	BUILD_BUG_ON(PAGE_SHIFT < VIRTIO_TBALLOON_PFN_SHIFT);
	/* Guest page -> its 4 KiB frames, the first at the start of the page. */
	pfn *= TBALLOON_PAGES_PER_PAGE;
	for (i = 0; i < n; i++)
		buf->pfns[buf->num_pfns++] = cpu_to_virtio32(buf->vdev, pfn + i);
}

void tballoon_buf_add_pfns(struct tballoon_buf *buf, struct page *page)
{
	tballoon_buf_add_range(buf, page, 1);
}

/**
 * tballoon_send() - add a filled buffer to a queue and notify the device
 * @tb: the balloon
 * @inflate: to the inflate queue, else the deflate queue
 * @buf: the buffer, @buf->num_pfns > 0
 *
 * Return: 0, or the error of virtqueue_add_outbuf() (-ENOSPC: the ring is
 * full; -ENOMEM: no memory for it now, try again; -EIO: the queue is
 * broken). A failed kick marks @tb broken; the buffer then comes back
 * through tballoon_reap(), not acknowledged. Fails with -ENOMEM on purpose
 * when the fault attribute fail_send says so (tballoon_fault.c), so that
 * the callers' handling of a transient failure can be tested: the debug
 * lane's driver-send-fails-once.
 */
int tballoon_send(struct tballoon *tb, bool inflate, struct tballoon_buf *buf)
{
	struct virtqueue *vq = inflate ? tb->inflate_vq : tb->deflate_vq;
	struct scatterlist sg;
	int err;

	buf->inflate = inflate;
	if (tb->broken)
		return -EIO;
	if (tballoon_should_fail(TBALLOON_FAIL_SEND))
		return -ENOMEM;
	sg_init_one(&sg, buf->pfns, buf->num_pfns * sizeof(buf->pfns[0]));
	err = virtqueue_add_outbuf(vq, &sg, 1, buf, GFP_KERNEL);
	if (err)
		return err;
	buf->in_flight = true;
	if (!virtqueue_kick(vq))
		tb->broken = true;
	return 0;
}

/*
 * Collect the buffers the device used. A broken queue will not return its
 * buffers: they count as used, so inflated pages stay out of the guest.
 */
static void tballoon_reap(struct tballoon *tb)
{
	struct tballoon_buf *buf;
	unsigned int len, i;

	/* No queues: deleted by freeze and not set up again by restore. */
	if (tb->inflate_vq && tb->deflate_vq) {
		while ((buf = virtqueue_get_buf(tb->inflate_vq, &len))) {
			buf->in_flight = false;
			buf->acked = true;
		}
		while ((buf = virtqueue_get_buf(tb->deflate_vq, &len))) {
			buf->in_flight = false;
			buf->acked = true;
		}
		if (virtqueue_is_broken(tb->inflate_vq) ||
		    virtqueue_is_broken(tb->deflate_vq))
			tb->broken = true;
	}
	if (!tb->broken)
		return;
	for (i = 0; i < TBALLOON_NR_BUFS; i++)
		tb->bufs[i].in_flight = false;
	tb->mig_buf.in_flight = false;
	tb->oom_buf.in_flight = false;
}

static bool tballoon_buf_returned(struct tballoon *tb, struct tballoon_buf *buf)
{
	tballoon_reap(tb);
	return !buf->in_flight;
}

static bool tballoon_any_returned(struct tballoon *tb)
{
	unsigned int i;

	tballoon_reap(tb);
	for (i = 0; i < TBALLOON_NR_BUFS; i++)
		if (tb->bufs[i].num_pfns && !tb->bufs[i].in_flight)
			return true;
	return false;
}

static bool tballoon_dead(struct tballoon *tb)
{
	return tb->broken || virtqueue_is_broken(tb->inflate_vq) ||
	       virtqueue_is_broken(tb->deflate_vq);
}

static bool tballoon_returned(struct tballoon *tb, struct tballoon_buf *buf)
{
	return buf ? tballoon_buf_returned(tb, buf) : tballoon_any_returned(tb);
}

/**
 * tballoon_wait_device() - wait, bounded, for the device to return a buffer
 * @tb: the balloon; @tb->lock held
 * @buf: the buffer to wait for, or NULL for any of @tb->bufs
 *
 * Every wait for the device goes through here: the queues are looked at
 * every TBALLOON_ACK_POLL_MS (a broken queue never calls back), and after
 * TBALLOON_ACK_TIMEOUT_MS (TBALLOON_ACK_STOP_MS once removal or suspend
 * began) the device is declared dead: it is broken with
 * virtio_break_device(), @tb->broken is set and every buffer counts as
 * returned (tballoon_reap()), so the caller goes on and stops.
 *
 * Return: true if the buffer came back from a working device, false if the
 * device is broken.
 */
bool tballoon_wait_device(struct tballoon *tb, struct tballoon_buf *buf)
{
	unsigned long start = jiffies;
	unsigned long end = start + msecs_to_jiffies(TBALLOON_ACK_TIMEOUT_MS);
	bool stopping = false;

	while (!tballoon_returned(tb, buf)) {
		if (tballoon_dead(tb))
			break;
		if (wait_event_timeout(tb->acked, tballoon_returned(tb, buf) ||
				       tballoon_dead(tb),
				       msecs_to_jiffies(TBALLOON_ACK_POLL_MS)))
			continue;
		if (!stopping && tballoon_removing(tb)) {
			unsigned long soon = jiffies + msecs_to_jiffies(TBALLOON_ACK_STOP_MS);

			stopping = true;
			if (time_before(soon, end))
				end = soon;
		}
		if (time_after(jiffies, end)) {
			dev_err(&tb->vdev->dev,
				"device kept a buffer for %u ms: treating it as broken\n",
				jiffies_to_msecs(jiffies - start));
			virtio_break_device(tb->vdev);
			tb->broken = true;
			tballoon_reap(tb);
			break;
		}
	}
	return !tballoon_dead(tb);
}

/* Give the pages of a buffer that never reached the device back. */
void tballoon_unfill(struct tballoon *tb, struct tballoon_buf *buf,
		     bool inflate)
{
	struct page *page, *next;

	if (inflate) {
		list_for_each_entry_safe(page, next, &buf->pages, lru) {
			list_del(&page->lru);
			put_page(page);
		}
		list_for_each_entry_safe(page, next, &buf->blocks, lru) {
			list_del(&page->lru);
			__free_pages(page, tb->block_order);
		}
	} else {
		balloon_page_list_enqueue(&tb->bdi, &buf->pages);
		list_splice_init(&buf->blocks, &tb->blocks);
	}
	buf->num_pfns = 0;
	buf->acked = false;
}

/*
 * @buf is back: inflated pages join the balloon and leave the guest's
 * managed memory (also when the device broke before it acknowledged them:
 * it may have discarded them already); deflated pages go back to the guest
 * only if the device acknowledged them (VIRTIO_BALLOON_F_MUST_TELL_HOST):
 * a deflate the device never confirmed stays in the balloon until a reset
 * (tballoon_release()).
 */
static void tballoon_complete(struct tballoon *tb, struct tballoon_buf *buf)
{
	long block = 1L << tb->block_order;
	struct page *page, *next;

	if (!buf->inflate && !buf->acked) {
		tb->inflight_pages -= buf->num_pfns;
		tballoon_unfill(tb, buf, false);
		return;
	}
	if (buf->inflate) {
		if (tb->adjust_managed) {
			list_for_each_entry(page, &buf->pages, lru)
				adjust_managed_page_count(page, -1);
			list_for_each_entry(page, &buf->blocks, lru)
				adjust_managed_page_count(page, -block);
		}
		list_for_each_entry(page, &buf->blocks, lru)
			tballoon_block_join(tb, page);
		balloon_page_list_enqueue(&tb->bdi, &buf->pages);
		list_splice_tail_init(&buf->blocks, &tb->blocks);
		tb->num_pages += buf->num_pfns;
	} else {
		list_for_each_entry_safe(page, next, &buf->pages, lru) {
			list_del(&page->lru);
			if (tb->adjust_managed)
				adjust_managed_page_count(page, 1);
			put_page(page);
		}
		list_for_each_entry_safe(page, next, &buf->blocks, lru) {
			list_del(&page->lru);
			if (tb->adjust_managed)
				adjust_managed_page_count(page, block);
			tballoon_block_leave(tb, page);
			__free_pages(page, tb->block_order);
		}
		tb->num_pages -= buf->num_pfns;
	}
	tb->inflight_pages -= buf->num_pfns;
	buf->num_pfns = 0;
	buf->acked = false;
}

void tballoon_complete_returned(struct tballoon *tb)
{
	unsigned int i;

	tballoon_reap(tb);
	for (i = 0; i < TBALLOON_NR_BUFS; i++)
		if (tb->bufs[i].num_pfns && !tb->bufs[i].in_flight)
			tballoon_complete(tb, &tb->bufs[i]);
}

/* Wait until nothing is in flight. */
void tballoon_drain(struct tballoon *tb)
{
	unsigned int i;

	for (i = 0; i < TBALLOON_NR_BUFS; i++)
		if (tb->bufs[i].num_pfns)
			tballoon_wait_device(tb, &tb->bufs[i]);
	tballoon_complete_returned(tb);
}

/* A buffer of @tb->bufs that is in flight, or NULL. */
struct tballoon_buf *tballoon_busy_buf(struct tballoon *tb)
{
	unsigned int i;

	tballoon_reap(tb);
	for (i = 0; i < TBALLOON_NR_BUFS; i++)
		if (tb->bufs[i].in_flight)
			return &tb->bufs[i];
	return NULL;
}

struct tballoon_buf *tballoon_free_buf(struct tballoon *tb)
{
	unsigned int i;

	for (i = 0; i < TBALLOON_NR_BUFS; i++)
		if (!tb->bufs[i].num_pfns)
			return &tb->bufs[i];
	return NULL;
}

/**
 * tballoon_deflate_sync() - give up to @n pages back and wait for the device
 * @tb: the balloon; @tb->lock held and nothing in flight
 * @buf: a free buffer with room for @n PFNs
 * @n: pages wanted
 *
 * Only pages the device acknowledged come back; if it could not be told
 * (broken, or the send failed) they stay in the balloon.
 *
 * Return: pages given back, -EIO if the device did not acknowledge them,
 * the error of tballoon_send() (e.g. -ENOMEM, transient) or of
 * tballoon_fill_deflate().
 */
int tballoon_deflate_sync(struct tballoon *tb, struct tballoon_buf *buf,
			  u32 n)
{
	u32 pages;
	int err;

	if (!n)
		return 0;
	err = tballoon_fill_deflate(tb, buf, n);
	if (err)
		return err;
	pages = buf->num_pfns;
	tb->inflight_pages += pages;
	buf->inflate = false;
	err = tballoon_send(tb, false, buf);
	if (!err && !tballoon_wait_device(tb, buf))
		err = -EIO;
	if (!err && !buf->acked)
		err = -EIO;
	buf->in_flight = false;
	tballoon_complete(tb, buf);
	return err ? err : pages;
}

/**
 * tballoon_release() - give every balloon page back after a device reset
 * @tb: the balloon; the device is reset, the worker cannot run
 *
 * The reset emptied the device's balloon, so the pages need no telling
 * (remove and freeze: what tballoon_empty() could not deflate through a
 * broken device). Waits for pages isolated for migration to come back.
 */
void tballoon_release(struct tballoon *tb)
{
	struct tballoon_buf *buf = &tb->bufs[0];
	int err;

	mutex_lock(&tb->lock);
	while (tb->num_pages) {
		err = tballoon_fill_deflate(tb, buf, min(tb->num_pages, TBALLOON_BUF_PFNS));
		if (err == -ENOENT)
			break;
		if (err) {
			mutex_unlock(&tb->lock);
			msleep(TBALLOON_ISOLATED_MS);
			mutex_lock(&tb->lock);
			continue;
		}
		tb->inflight_pages += buf->num_pfns;
		buf->inflate = false;
		buf->acked = true;	/* by the reset */
		tballoon_complete(tb, buf);
	}
	mutex_unlock(&tb->lock);
}

#ifdef CONFIG_BALLOON_COMPACTION
/* Tell the device about one guest page and wait. tb->lock held. */
int tballoon_send_page_sync(struct tballoon *tb, bool inflate, struct page *page)
{
	struct tballoon_buf *buf = &tb->mig_buf;
	int err;

	buf->num_pfns = 0;
	tballoon_buf_add_pfns(buf, page);
	err = tballoon_send(tb, inflate, buf);
	if (!err && !tballoon_wait_device(tb, buf))
		err = -EIO;
	buf->num_pfns = 0;
	return err;
}

#endif
