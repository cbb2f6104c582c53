// SPDX-License-Identifier: GPL-2.0-only
/*
 * tballoon_engine.c - the engine: one run of the balloon towards a target
 *
 * Owns @tb->run while it runs: tballoon_run() fills one buffer while the
 * device works on the other, in batches sized by the policy, until
 * tballoon_check() (removal, a broken device, a newer command, the policy's
 * stop) or an allocation failure ends it; it returns with nothing in
 * flight. Also the inflate fill (blocks first, then single balloon pages),
 * the deflate fill (blocks first, then single pages, splitting a block when
 * needed), pacing and the progress reports.
 *
 * Locks: tballoon_run() is called without @tb->lock and takes it per batch:
 * it lets go while an inflate batch is allocated (tballoon_fill_inflate()
 * and the block helpers run without it) and while it pauses. The other
 * functions expect it held. The stop flags are peeked at through
 * tballoon_cmd.c.
 */

#include <linux/balloon_compaction.h>
#include <linux/ktime.h>
#include <linux/vmstat.h>

#include "tballoon.h"

static bool tballoon_inflating(struct tballoon *tb)
{
	return tb->run.cmd.op == TBALLOON_OP_INFLATE;
}

/* Balloon size counting the buffers in flight and @extra pages. */
static u32 tballoon_done_pages(struct tballoon *tb, u32 extra)
{
	/*
	 * An inflate fill reads these without @tb->lock (tballoon_run()):
	 * only a deflate on OOM or a migration may change them meanwhile, and
	 * a count one batch old is good enough for a stop test.
	 */
	u32 num = READ_ONCE(tb->num_pages), inflight = READ_ONCE(tb->inflight_pages);

	if (tballoon_inflating(tb))
		return num + inflight + extra;
	return num - inflight - extra;
}

/* |a - b| for page counts */
static u32 tballoon_dist(u32 a, u32 b)
{
	return a > b ? a - b : b - a;
}

/* MemAvailable in 4 KiB pages, only when a floor applies (else 0). */
static u64 tballoon_avail_pages(struct tballoon *tb)
{
	if (!tballoon_inflating(tb) || !tb->run.cmd.floor_pages)
		return 0;
	return (u64)si_mem_available() * TBALLOON_PAGES_PER_PAGE;
}

/* Direct reclaim entries in the guest so far (all CPUs, all zones). */
u64 tballoon_direct_reclaims(void)
{
	u64 sum = 0;
#ifdef CONFIG_VM_EVENT_COUNTERS
	int cpu, zid;

	for_each_online_cpu(cpu)
		for (zid = 0; zid < MAX_NR_ZONES; zid++)
			sum += per_cpu(vm_event_states, cpu).event[ALLOCSTALL_NORMAL -
								   ZONE_NORMAL + zid];
#endif
	return sum;
}

static u32 tballoon_policy_check(struct tballoon *tb, u32 extra, u32 *reason)
{
	struct tballoon_progress prog = {
		.done_pages = tballoon_done_pages(tb, extra),
		.elapsed_ms = tballoon_elapsed_ms(&tb->run),
		.avail_pages = tballoon_avail_pages(tb),
		.granule = TBALLOON_PAGES_PER_PAGE,
	};

	/* Only a timed inflate stops for reclaim; the standard balloon waits. */
	if (tb->timed && tballoon_inflating(tb))
		prog.reclaim_stalls = tballoon_direct_reclaims() -
				      tb->run.start_stalls;

	return tballoon_policy_stop(&tb->run.cmd, &prog, reason);
}

/**
 * tballoon_check() - must the run stop before the next batch?
 * @tb: the balloon
 *
 * Stops on removal, a broken device, a config change (TIMED: only if it
 * carries a newer command, kept in @tb->next; standard: always, the worker
 * reads num_pages again), then whatever the policy says.
 *
 * Return: true with @tb->run.state and .reason set to the outcome.
 */
static bool tballoon_check(struct tballoon *tb)
{
	struct tballoon_run *run = &tb->run;
	struct tballoon_interrupt_in in = {
		.removing = tballoon_removing(tb),
		.broken = tb->broken,
		.timed = tb->timed,
	};
	u32 state, reason;

	/* The config is read only when nothing of higher precedence stops. */
	if (!in.removing && !in.broken) {
		if (!tb->timed) {
			in.changed = tballoon_interrupted(tb);
		} else if (tballoon_take_changed(tb)) {
			if (!tballoon_read_cmd(tb, &tb->next))
				return false;	/* removal: caught next time */
			if (tb->next.cmd_id != run->cmd.cmd_id) {
				tb->have_next = true;
				in.next = &tb->next;
			}
		}
	}
	state = tballoon_policy_interrupt(&in, &reason);
	if (state == TBALLOON_STATE_RUNNING)
		state = tballoon_policy_check(tb, 0, &reason);
	if (state == TBALLOON_STATE_RUNNING)
		return false;
	run->state = state;
	run->reason = reason;
	return true;
}

/**
 * tballoon_next_batch() - pages for the next batch
 * @tb: the balloon
 *
 * Return: pages (a multiple of TBALLOON_PAGES_PER_PAGE), or 0 with
 * @tb->run.wait_ms set when a paced command is ahead of its schedule.
 */
static u32 tballoon_next_batch(struct tballoon *tb)
{
	struct tballoon_run *run = &tb->run;
	struct tballoon_cmd *cmd = &run->cmd;
	u32 done = tballoon_done_pages(tb, 0);
	u32 elapsed = tballoon_elapsed_ms(run);
	u32 moved = tballoon_dist(tb->num_pages, run->start_pages);
	u64 elapsed_us = ktime_us_delta(ktime_get(), run->start);
	struct tballoon_batch_in in = {
		.remaining_pages = tballoon_dist(cmd->target_pages, done),
		.remaining_ms = TBALLOON_NO_DEADLINE,
		.prev_pages = run->prev_batch,
		.room_pages = U32_MAX,
		.granule = TBALLOON_PAGES_PER_PAGE,
	};
	u32 n;

	if (cmd->deadline_ms != TBALLOON_NO_DEADLINE)
		in.remaining_ms = elapsed < cmd->deadline_ms ?
				  cmd->deadline_ms - elapsed : 0;
	if (moved && elapsed_us)
		in.rate_pps = min_t(u64, div64_u64((u64)moved * USEC_PER_SEC,
						   elapsed_us), U32_MAX);
	if (tballoon_inflating(tb) && cmd->floor_pages)
		in.room_pages = tballoon_policy_floor_room(cmd->floor_pages,
							   tballoon_avail_pages(tb));
	n = tballoon_policy_batch(&in);
	run->room_pages = in.room_pages;

	if (n && (cmd->flags & TBALLOON_FLAG_PACED)) {
		struct tballoon_pace_in pace = {
			.distance = tballoon_dist(cmd->target_pages, run->start_pages),
			.ahead = tballoon_dist(done, run->start_pages),
			.elapsed_ms = elapsed,
			.deadline_ms = cmd->deadline_ms,
			.remaining_pages = in.remaining_pages,
			.granule = TBALLOON_PAGES_PER_PAGE,
		};

		n = tballoon_policy_paced_batch(&pace, n, &run->wait_ms);
	}
	return n;
}

/*
 * Between two chunks of a fill: must it stop? Peeks at the stop flags (a
 * config change that left cmd_id alone is not one: the batch goes on) and
 * asks the policy, counting the @extra pages already in the buffer.
 */
u32 tballoon_fill_check(struct tballoon *tb, u32 extra)
{
	u32 reason;

	if (tballoon_interrupted(tb) && !tballoon_change_is_noise(tb))
		return TBALLOON_STATE_ABORTED;
	return tballoon_policy_check(tb, extra, &reason);
}

/**
 * tballoon_fill_inflate() - allocate pages into a buffer
 * @tb: the balloon; @tb->lock not held (the worker's fill)
 * @buf: a free buffer
 * @n: pages wanted
 *
 * Takes blocks (TBALLOON_BLOCK_GFP, free memory only) while
 * tballoon_policy_use_block() allows and until one fails, then single pages
 * with the balloon page API (no retry, no warning, no emergency reserves:
 * never the OOM killer). Checks the clock, the floor and the stop flags
 * after at most TBALLOON_CHECK_PAGES pages or one block.
 *
 * Return: 0 when @n pages are in @buf; -ENOMEM when an allocation failed;
 * -ETIME when the deadline passed, -EINTR when something else says stop
 * (abort, newer command, removal, floor): the caller drops the partial
 * buffer, so no page moves after the driver saw the reason to stop.
 */
int tballoon_fill_inflate(struct tballoon *tb, struct tballoon_buf *buf,
			  u32 n)
{
	struct tballoon_run *run = &tb->run;
	u32 state, checked = 0;
	struct page *page;
	int err;

	err = tballoon_fill_blocks(tb, buf, n);
	if (err)
		return err;
	for (;;) {
		if (buf->num_pfns &&
		    (buf->num_pfns - checked >= TBALLOON_CHECK_PAGES ||
		     buf->num_pfns >= n)) {
			checked = buf->num_pfns;
			/* Also when full: nothing is sent after the deadline. */
			state = tballoon_fill_check(tb, buf->num_pfns);
			if (state == TBALLOON_STATE_DEADLINE)
				return -ETIME;
			if (buf->num_pfns >= n)
				return 0;
			if (state != TBALLOON_STATE_RUNNING)
				return -EINTR;
			cond_resched();
		}
		if (!run->no_blocks &&
		    tballoon_policy_use_block(n - buf->num_pfns,
					      run->room_pages - min(run->room_pages,
								    buf->num_pfns),
					      tb->block_pfns)) {
			page = alloc_pages(tb->run.block_gfp, tb->block_order);
			if (page) {
				tballoon_buf_add_range(buf, page,
						       1UL << tb->block_order);
				list_add_tail(&page->lru, &buf->blocks);
				continue;
			}
			run->no_blocks = true;
		}
		page = balloon_page_alloc();
		if (!page)
			return -ENOMEM;
		tballoon_buf_add_pfns(buf, page);
		list_add_tail(&page->lru, &buf->pages);
	}
}

/* The count says the balloon has pages, but neither list nor migration does. */
static bool tballoon_pages_lost(struct tballoon *tb)
{
	unsigned long flags;
	bool lost;

	spin_lock_irqsave(&tb->bdi.pages_lock, flags);
	lost = list_empty(&tb->bdi.pages) && !tb->bdi.isolated_pages &&
	       list_empty(&tb->blocks);
	spin_unlock_irqrestore(&tb->bdi.pages_lock, flags);
	return WARN_ONCE(lost, "tballoon: %u pages in no list\n", tb->num_pages);
}

/**
 * tballoon_fill_deflate() - take pages out of the balloon into a buffer
 * @tb: the balloon
 * @buf: a free buffer
 * @n: pages wanted, at most the balloon size not already in flight
 *
 * Takes whole blocks first (one free and one accounting step each on
 * completion), then single pages; splits a block when single pages are
 * wanted and there are none.
 *
 * Return: 0 (possibly fewer than @n pages: some may be isolated for
 * migration or locked), -EAGAIN when no page could be taken now, -ENOENT
 * when the balloon has no page to take although @tb->num_pages says so.
 */
int tballoon_fill_deflate(struct tballoon *tb, struct tballoon_buf *buf,
			  u32 n)
{
	struct page *page;
	size_t want;
	LIST_HEAD(pages);

	while (tb->block_pfns && n - buf->num_pfns >= tb->block_pfns &&
	       !list_empty(&tb->blocks)) {
		page = list_first_entry(&tb->blocks, struct page, lru);
		list_move_tail(&page->lru, &buf->blocks);
		tballoon_buf_add_range(buf, page, 1UL << tb->block_order);
	}
	want = (n - buf->num_pfns) / TBALLOON_PAGES_PER_PAGE;
	if (want && !balloon_page_list_dequeue(&tb->bdi, &pages, want) &&
	    !list_empty(&tb->blocks)) {
		tballoon_split_block(tb);
		balloon_page_list_dequeue(&tb->bdi, &pages, want);
	}
	list_for_each_entry(page, &pages, lru)
		tballoon_buf_add_pfns(buf, page);
	list_splice_tail(&pages, &buf->pages);
	if (!buf->num_pfns)
		return tballoon_pages_lost(tb) ? -ENOENT : -EAGAIN;
	return 0;
}

/*
 * Drain, then sleep without the lock for up to @ms or until interrupted.
 * Lets migration in while the worker waits.
 */
static void tballoon_pause(struct tballoon *tb, unsigned int ms)
{
	tballoon_drain(tb);
	mutex_unlock(&tb->lock);
	wait_event_timeout(tb->wake, tballoon_interrupted(tb),
			   msecs_to_jiffies(ms));
	mutex_lock(&tb->lock);
}

/*
 * Progress: TIMED, a report at most every TBALLOON_REPORT_INTERVAL_MS and
 * only when actual changed; standard, actual after each batch.
 */
static void tballoon_progress(struct tballoon *tb)
{
	switch (tballoon_policy_report(tb->timed, tb->num_pages, tb->last_report_pages,
				       ktime_ms_delta(ktime_get(), tb->last_report))) {
	case TBALLOON_REPORT_ACTUAL:
		tballoon_write_actual(tb);
		break;
	case TBALLOON_REPORT_RUNNING:
		tballoon_report(tb, false);
		break;
	case TBALLOON_REPORT_NONE:
		break;
	}
}

/*
 * Send a filled buffer. A full ring waits for the buffer in flight (not for
 * "any buffer": @buf itself would count as one and the wait would spin), or
 * tries once more if that buffer is already back (collecting it made room).
 * Return: 0 (its pages are in flight), or the error of tballoon_send().
 */
static int tballoon_queue(struct tballoon *tb, bool inflate, struct tballoon_buf *buf)
{
	struct tballoon_buf *busy;
	bool again = true;
	int err;

	while ((err = tballoon_send(tb, inflate, buf)) == -ENOSPC) {
		busy = tballoon_busy_buf(tb);
		if (busy)
			tballoon_wait_device(tb, busy);
		else if (!again)
			break;		/* full with nothing in flight */
		again = !!busy;
	}
	if (!err)
		tb->inflight_pages += buf->num_pfns;
	return err;
}

/**
 * tballoon_run() - walk the balloon towards @tb->run.cmd
 * @tb: the balloon; @tb->lock must not be held
 *
 * Fills one buffer while the device works on the other, until
 * tballoon_check() or a failure ends the run. Returns with nothing in
 * flight and @tb->run.state/.reason set to the outcome. Holds @tb->lock
 * per batch: not while an inflate batch is allocated, nor while it pauses.
 */
void tballoon_run(struct tballoon *tb)
{
	struct tballoon_run *run = &tb->run;
	bool inflate = tballoon_inflating(tb);
	struct tballoon_buf *buf;
	bool alloc_failed;
	u32 n;
	int err;

	/*
	 * Free page hinting holds free blocks an inflate needs: hand them
	 * back, and keep a hint pass from taking more while this runs.
	 */
	if (inflate) {
		WRITE_ONCE(tb->hint_yield, true);
		tballoon_hint_release(tb);
	}
	run->no_blocks = !tb->block_pfns || !READ_ONCE(tballoon_param_blocks);
	run->threads = clamp_t(unsigned int, READ_ONCE(tballoon_param_threads), 1,
			       min(num_online_cpus(), 1U + TBALLOON_HELPERS_MAX));
	run->gentle = inflate && (run->cmd.flags & TBALLOON_FLAG_GENTLE);
	run->block_gfp = TBALLOON_BLOCK_GFP;
	if (READ_ONCE(tballoon_param_skip_zero))
		run->block_gfp |= TBALLOON_GFP_NO_INIT;
	mutex_lock(&tb->lock);
	for (;;) {
		tballoon_complete_returned(tb);
		tballoon_progress(tb);
		if (tballoon_check(tb))
			break;

		buf = tballoon_free_buf(tb);
		if (!buf) {
			tballoon_wait_device(tb, NULL);
			continue;
		}
		n = tballoon_next_batch(tb);
		if (!n) {
			if (tb->inflight_pages) {
				tballoon_wait_device(tb, NULL);
			} else {
				/*
				 * Paced and ahead of schedule, or MemAvailable
				 * fell to the floor since tballoon_check(): look
				 * again shortly.
				 */
				tballoon_pause(tb, max(run->wait_ms, 1U));
				run->wait_ms = 0;
			}
			continue;
		}
		run->prev_batch = n;

		if (inflate) {
			/*
			 * The slow part of a batch (allocating and zeroing,
			 * the helpers' work) runs without the lock: the OOM
			 * notifier and migration wait for at most one send or
			 * one wait for the device, not for the whole run, and
			 * no other work is flushed under it. @buf is the
			 * worker's: nobody else touches a free buffer.
			 */
			mutex_unlock(&tb->lock);
			err = tballoon_fill_inflate(tb, buf, n);
			mutex_lock(&tb->lock);
		} else {
			err = tballoon_fill_deflate(tb, buf, n);
			if (err == -EAGAIN) {
				tballoon_pause(tb, TBALLOON_ISOLATED_MS);
				continue;
			}
			if (err) {
				run->state = TBALLOON_STATE_ABORTED;
				run->reason = TBALLOON_REASON_DEVICE_ERROR;
				break;
			}
		}
		/* A partly filled buffer still goes out, then the run stops. */
		alloc_failed = err == -ENOMEM;
		if (err == -ETIME || err == -EINTR || !buf->num_pfns) {
			/* Nothing the device saw: give it back, and decide. */
			tballoon_unfill(tb, buf, inflate);
		} else {
			/*
			 * Report before the kick rather than after it: a
			 * config write waits for the device model, which
			 * answers it between two buffers, and the device has
			 * most likely finished the other buffer by now.
			 */
			tballoon_progress(tb);
			err = tballoon_queue(tb, inflate, buf);
			if (err == -ENOMEM &&
			    ++run->send_retries <= TBALLOON_SEND_RETRIES) {
				/* Transient (no memory for the ring now). */
				dev_warn_ratelimited(&tb->vdev->dev,
						     "cannot queue %u pages now: trying again\n",
						     buf->num_pfns);
				tballoon_unfill(tb, buf, inflate);
				tballoon_pause(tb, TBALLOON_RETRY_MS);
				continue;
			}
			if (err) {
				dev_warn_ratelimited(&tb->vdev->dev,
						     "cannot queue %u pages: %d\n",
						     buf->num_pfns, err);
				tballoon_unfill(tb, buf, inflate);
				tb->broken = true;
			}
		}
		if (alloc_failed) {
			run->state = TBALLOON_STATE_PRESSURE;
			run->reason = TBALLOON_REASON_ALLOC_FAIL;
			break;
		}
	}
	tballoon_drain(tb);
	mutex_unlock(&tb->lock);
	WRITE_ONCE(tb->hint_yield, false);
}
