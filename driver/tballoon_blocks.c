// SPDX-License-Identifier: GPL-2.0-only
/*
 * tballoon_blocks.c - 2 MiB blocks and balloon page migration
 *
 * Owns the block helpers (@tb->helpers: other CPUs that allocate blocks
 * for the worker within one fill, or all of them, at the lowest priority,
 * for a gentle inflate), splitting a block into single balloon
 * pages, and the compaction callback that migrates a single balloon page
 * through the device.
 *
 * Locks: tballoon_fill_blocks() runs without @tb->lock (the worker's inflate
 * fill), so that flushing its helpers never happens under it; helpers never
 * take it and are flushed before it returns. tballoon_split_block() expects
 * @tb->lock held. tballoon_migratepage() only tries
 * @tb->lock (compaction retries later) and nests @bdi.pages_lock inside.
 */

#include <linux/balloon_compaction.h>
#include <linux/migrate.h>
#include <linux/mm.h>
#include <linux/sched.h>
#include <linux/vmstat.h>
#include <linux/workqueue.h>

#include "tballoon.h"

/*
 * A block joins the balloon: every page of it is PageOffline, as a single
 * balloon page is (balloon_page_insert()), so that /proc/kcore, kdump's
 * makedumpfile and hibernation skip it instead of reading memory the host
 * has discarded (which would fault it back in on the host), and the
 * balloon vmstat events count it. tballoon_block_leave() undoes both
 * before the block is freed or split.
 */
void tballoon_block_join(struct tballoon *tb, struct page *page)
{
	unsigned long i, n = 1UL << tb->block_order;

	for (i = 0; i < n; i++)
		__SetPageOffline(page + i);
	count_vm_events(BALLOON_INFLATE, n);
}

void tballoon_block_leave(struct tballoon *tb, struct page *page)
{
	unsigned long i, n = 1UL << tb->block_order;

	for (i = 0; i < n; i++)
		__ClearPageOffline(page + i);
	count_vm_events(BALLOON_DEFLATE, n);
}

/*
 * A helper's stop test: the worker's word, a stop flag, the deadline, or
 * the floor. The floor is looked at here too, not only by the worker after
 * its own blocks: a program growing while the batch is allocated may take
 * the room the batch was sized for, and a helper whose share outlasts the
 * worker's would go on unchecked until the flush.
 */
static bool tballoon_helper_stop(struct tballoon *tb)
{
	u32 deadline = tb->run.cmd.deadline_ms;
	u32 floor = tb->run.cmd.floor_pages;

	if (READ_ONCE(tb->helpers_stop) || tballoon_interrupted(tb))
		return true;
	if (floor && (u64)si_mem_available() * TBALLOON_PAGES_PER_PAGE <= floor)
		return true;
	return deadline != TBALLOON_NO_DEADLINE &&
	       tballoon_elapsed_ms(&tb->run) >= deadline;
}

/*
 * Allocate up to @want blocks on this CPU, stopping after any block when
 * tballoon_helper_stop() says so. Takes no lock: the worker waits for this
 * in tballoon_fill_blocks(), without tb->lock. For a gentle inflate the
 * kworker runs at the lowest nice level while it allocates: the guest's
 * own tasks take the CPU whenever they want it, and the scheduler moves
 * the helper to an idle CPU. Once half the deadline has passed it goes on
 * at the kworker's own level, so that a guest with no idle CPU still gets
 * the rest done in time. That level is put back before it returns to its
 * pool.
 */
void tballoon_helper_work(struct work_struct *work)
{
	struct tballoon_helper *h = container_of(work, struct tballoon_helper,
						 work);
	struct tballoon *tb = h->tb;
	bool gentle = READ_ONCE(tb->run.gentle);
	long nice = task_nice(current);
	struct page *page;

	if (gentle)
		set_user_nice(current, MAX_NICE);
	while (h->got < h->want && !tballoon_helper_stop(tb)) {
		if (gentle && tb->run.cmd.deadline_ms != TBALLOON_NO_DEADLINE &&
		    tballoon_elapsed_ms(&tb->run) >= tb->run.cmd.deadline_ms / 2) {
			set_user_nice(current, nice);
			gentle = false;
		}
		page = alloc_pages(tb->run.block_gfp, tb->block_order);
		if (!page) {
			h->failed = true;
			break;
		}
		list_add_tail(&page->lru, &h->blocks);
		h->got++;
		cond_resched();
	}
	if (gentle)
		set_user_nice(current, nice);
}

/**
 * tballoon_fill_blocks() - allocate the blocks of a batch on several CPUs
 * @tb: the balloon
 * @buf: a free buffer
 * @n: pages wanted
 *
 * With @tb->run.threads > 1 and at least two blocks wanted, helpers take a
 * share of the blocks on other CPUs while the worker allocates its own
 * share, checking the clock, the floor and the stop flags after each block
 * as tballoon_fill_inflate() does; any reason to stop stops the helpers
 * after their current block (they also watch the deadline and the stop
 * flags themselves). A gentle inflate (@tb->run.gentle) gives every block
 * to up to @tb->run.threads helpers, which run at the lowest priority on
 * unbound CPUs, and only waits: the worker is bound to the CPU that took
 * the command, which may be the one the guest's work runs on. Every block
 * ends up in @buf. Otherwise does nothing and leaves the blocks to
 * tballoon_fill_inflate().
 *
 * Return: 0, -ETIME or -EINTR as tballoon_fill_inflate().
 */
int tballoon_fill_blocks(struct tballoon *tb, struct tballoon_buf *buf,
			 u32 n)
{
	struct tballoon_run *run = &tb->run;
	u32 k, mine, state = TBALLOON_STATE_RUNNING;
	unsigned int i, nr_helpers;
	struct tballoon_helper *h;
	struct page *page, *next;

	if (run->no_blocks || (run->threads < 2 && !run->gentle))
		return 0;
	k = tballoon_policy_blocks(n, run->room_pages, tb->block_pfns);
	if (k < (run->gentle ? 1 : 2))
		return 0;
	if (run->gentle)
		nr_helpers = min3(run->threads, k, (u32)TBALLOON_HELPERS_MAX);
	else
		nr_helpers = min(run->threads - 1, k - 1);

	WRITE_ONCE(tb->helpers_stop, false);
	mine = k;
	for (i = 0; i < nr_helpers; i++) {
		h = &tb->helpers[i];
		h->want = k / (nr_helpers + !run->gentle);
		/* gentle: the first helper takes what does not divide */
		if (run->gentle && !i)
			h->want += k % nr_helpers;
		h->got = 0;
		h->failed = false;
		mine -= h->want;
		queue_work(system_unbound_wq, &h->work);
	}

	while (mine--) {
		page = alloc_pages(tb->run.block_gfp, tb->block_order);
		if (!page) {
			run->no_blocks = true;
			break;
		}
		tballoon_buf_add_range(buf, page, 1UL << tb->block_order);
		list_add_tail(&page->lru, &buf->blocks);
		state = tballoon_fill_check(tb, buf->num_pfns);
		if (state != TBALLOON_STATE_RUNNING)
			break;
	}
	if (state != TBALLOON_STATE_RUNNING || run->no_blocks)
		WRITE_ONCE(tb->helpers_stop, true);

	for (i = 0; i < nr_helpers; i++) {
		h = &tb->helpers[i];
		flush_work(&h->work);
		if (h->failed)
			run->no_blocks = true;
		list_for_each_entry_safe(page, next, &h->blocks, lru) {
			tballoon_buf_add_range(buf, page,
					       1UL << tb->block_order);
			list_move_tail(&page->lru, &buf->blocks);
		}
	}
	if (state == TBALLOON_STATE_DEADLINE)
		return -ETIME;
	return state == TBALLOON_STATE_RUNNING ? 0 : -EINTR;
}

/*
 * Break the balloon's first block into single balloon pages (they stay in
 * the balloon, accounted as before), for a deflate that wants less than a
 * block and finds no single page.
 */
void tballoon_split_block(struct tballoon *tb)
{
	struct page *page = list_first_entry(&tb->blocks, struct page, lru);
	unsigned long i;
	LIST_HEAD(pages);

	list_del(&page->lru);
	/* balloon_page_list_enqueue() marks and counts them again, one by one */
	tballoon_block_leave(tb, page);
	split_page(page, tb->block_order);
	for (i = 0; i < 1UL << tb->block_order; i++)
		list_add_tail(&page[i].lru, &pages);
	balloon_page_list_enqueue(&tb->bdi, &pages);
}

#ifdef CONFIG_BALLOON_COMPACTION
/**
 * tballoon_migratepage() - move a balloon page for compaction
 * @bdi: the balloon
 * @newpage: the page taking @page's place in the balloon
 * @page: the isolated balloon page to give back
 * @mode: migration mode (unused)
 *
 * Inflates @newpage, then deflates @page, through the device. Gives up
 * (-EAGAIN, compaction retries later) while the worker has buffers in
 * flight. Called with both pages locked.
 *
 * Return: MIGRATEPAGE_SUCCESS or -EAGAIN.
 */
int tballoon_migratepage(struct balloon_dev_info *bdi,
			 struct page *newpage, struct page *page,
			 enum migrate_mode mode)
{
	struct tballoon *tb = container_of(bdi, struct tballoon, bdi);
	unsigned long flags;
	int err;

	if (!mutex_trylock(&tb->lock))
		return -EAGAIN;

	/* The device must know @newpage before it is in the balloon. */
	err = tballoon_send_page_sync(tb, true, newpage);
	if (err) {
		mutex_unlock(&tb->lock);
		return -EAGAIN;
	}

	get_page(newpage);	/* the balloon's reference */
	if (tb->adjust_managed && page_zone(page) != page_zone(newpage)) {
		adjust_managed_page_count(page, 1);
		adjust_managed_page_count(newpage, -1);
	}
	spin_lock_irqsave(&bdi->pages_lock, flags);
	balloon_page_insert(bdi, newpage);
	bdi->isolated_pages--;
	__count_vm_event(BALLOON_MIGRATE);
	spin_unlock_irqrestore(&bdi->pages_lock, flags);

	err = tballoon_send_page_sync(tb, false, page);
	/* Never told the device: @page must not return to the guest. */
	if (err)
		dev_warn_ratelimited(&tb->vdev->dev,
				     "migration: deflate failed (%d), page leaked\n",
				     err);
	mutex_unlock(&tb->lock);

	balloon_page_finalize(page);
	if (!err)
		put_page(page);	/* the balloon's reference */
	return MIGRATEPAGE_SUCCESS;
}
#endif /* CONFIG_BALLOON_COMPACTION */
