// SPDX-License-Identifier: GPL-2.0-only
/*
 * virtio_tballoon.c - timed virtio balloon driver
 *
 * A virtio memory balloon (device ID 5) that, with VIRTIO_BALLOON_F_TIMED,
 * runs timed commands: "bring the balloon to N pages within D ms, never push
 * the guest's available memory below F pages", and reports progress and the
 * outcome in config space. Without TIMED it is a standard balloon driver that
 * follows num_pages; with TIMED it ignores num_pages (the device mirrors the
 * last command's target there). Protocol: Documentation/protocol.rst.
 *
 * Standard features, in both modes: STATS_VQ (the standard tags, refilled
 * each time the device returns the buffer), DEFLATE_ON_OOM (an OOM notifier
 * gives TBALLOON_OOM_PAGES back instead of an OOM kill; the balloon then
 * stays in MemTotal, as upstream), balloon page migration for compaction.
 *
 * Layers, bottom up; each may only call the ones below it:
 *  - buffers: tballoon_send(), tballoon_reap(), tballoon_complete() move PFN
 *    buffers through the inflate and deflate queues;
 *  - the engine: tballoon_run() walks the balloon towards tb->run.cmd in
 *    batches (two buffers in flight: one is filled while the device works on
 *    the other) until tballoon_policy_stop() or an interruption says stop;
 *  - commands: tballoon_handle() validates a command, reports, runs it;
 *  - the worker: tballoon_work() reads the config and feeds commands (TIMED)
 *    or num_pages (standard) to the layers above.
 * Decisions (validity, batch size, stop, pacing) are in tballoon_policy.c.
 */

#include <linux/balloon_compaction.h>
#include <linux/delay.h>
#include <linux/jiffies.h>
#include <linux/ktime.h>
#include <linux/list.h>
#include <linux/log2.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/oom.h>
#include <linux/reboot.h>
#include <linux/scatterlist.h>
#include <linux/sizes.h>
#include <linux/slab.h>
#include <linux/suspend.h>
#include <linux/spinlock.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/vmstat.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <uapi/linux/virtio_balloon.h>

#include "virtio_tballoon.h"
#include "tballoon_compat.h"
#include "tballoon_policy.h"

/* 4 KiB balloon pages per guest page */
#define TBALLOON_PAGES_PER_PAGE \
	((unsigned int)(PAGE_SIZE >> VIRTIO_TBALLOON_PFN_SHIFT))
/* PFN buffers the worker may have in flight */
#define TBALLOON_NR_BUFS		2
/* PFNs per buffer */
#define TBALLOON_BUF_PFNS		TBALLOON_BATCH_MAX
/* standard mode: pause after an allocation failure before trying again */
#define TBALLOON_RETRY_MS		200
/* deflate: pause while every balloon page is isolated for migration */
#define TBALLOON_ISOLATED_MS		20
/*
 * A device that keeps a buffer longer than this is dead or hostile: it is
 * marked broken (virtio_break_device()), so that no wait of ours outlives
 * it: a run ends ABORTED/DEVICE_ERROR, removal and reboot complete. Long
 * enough for a backend restart (the fd store keeps the session meanwhile).
 */
#define TBALLOON_ACK_TIMEOUT_MS		15000
/* the same bound once the driver is being removed or the guest suspended */
#define TBALLOON_ACK_STOP_MS		2000
/* how often a wait for the device looks at the queues and the clock */
#define TBALLOON_ACK_POLL_MS		100
/* DEFLATE_ON_OOM: 4 KiB pages given back per OOM notification (4 MiB) */
#define TBALLOON_OOM_PAGES		1024U
/* helpers: other CPUs that allocate blocks for the worker during a fill */
#define TBALLOON_HELPERS_MAX		3
/* largest block: one allocation of up to 2 MiB (a pageblock on x86) */
#define TBALLOON_BLOCK_MAX_ORDER	ilog2(SZ_2M >> PAGE_SHIFT)
/*
 * Blocks: free memory only (no __GFP_RECLAIM: no direct reclaim, no
 * compaction, no kswapd wake-up; when no free block is left the fill goes
 * on with single balloon pages, which may reclaim), never the emergency
 * reserves, never ZONE_MOVABLE (no __GFP_HIGHMEM): a block cannot migrate.
 *
 * Migratetype: a block is a whole pageblock, so it mixes no unmovable page
 * into a movable pageblock whatever its type. Movable, so that it comes
 * from and goes back to the free lists user memory is allocated from: an
 * unmovable block would turn its pageblock unmovable, and after a deflate
 * user allocations would avoid it (the guest then reuses other memory and
 * the next inflate takes back the same host holes, zeroing faults them in
 * on the host just before they are released again). With CONFIG_CMA a
 * movable block could sit in a CMA area that cma_alloc() then cannot
 * empty: unmovable there.
 */
#ifdef CONFIG_CMA
#define TBALLOON_BLOCK_GFP_TYPE	GFP_USER
#else
#define TBALLOON_BLOCK_GFP_TYPE	(GFP_USER | __GFP_MOVABLE)
#endif
#define TBALLOON_BLOCK_GFP	((TBALLOON_BLOCK_GFP_TYPE | __GFP_NOWARN | \
				  __GFP_NOMEMALLOC) & ~__GFP_RECLAIM)

/*
 * Inflate in blocks. Blocks are not migratable: a balloon made only of
 * blocks gives compaction nothing to move (and needs nothing moved: each
 * block is a whole pageblock). Read at the start of each run.
 */
static bool blocks = true;
module_param(blocks, bool, 0644);
MODULE_PARM_DESC(blocks, "inflate in 2 MiB blocks while free memory has them (default: on)");

/*
 * CPUs that allocate the blocks of one inflate batch: the worker and up to
 * threads - 1 helpers on system_unbound_wq. Zeroing the pages
 * (init_on_alloc), and on the host faulting in the pages that a deflate left
 * as holes, is most of what an inflate costs; both scale with CPUs. Capped
 * by the online CPUs and 1 + TBALLOON_HELPERS_MAX; read at the start of
 * each run.
 */
static unsigned int threads = 2;
module_param(threads, uint, 0644);
MODULE_PARM_DESC(threads, "CPUs that allocate the blocks of an inflate, 1 to 4 (default 2)");

/**
 * struct tballoon_buf - one buffer of PFNs for the inflate or deflate queue
 * @pfns: 4 KiB PFNs, little-endian; kmalloc'ed so the device can read it
 * @num_pfns: entries of @pfns in use; 0 when the buffer is free
 * @pages: the single guest pages behind @pfns, linked through page->lru
 * @blocks: the blocks behind @pfns (first pages, linked through page->lru)
 * @vq: the queue the buffer was last added to
 * @in_flight: added to @vq and not yet returned by the device
 */
struct tballoon_buf {
	__le32 *pfns;
	unsigned int num_pfns;
	struct list_head pages;
	struct list_head blocks;
	struct virtqueue *vq;
	bool in_flight;
};

/**
 * struct tballoon_run - one walk of the balloon towards a target
 * @cmd: what to do; deadline_ms is TBALLOON_NO_DEADLINE in standard mode,
 *	floor_pages at least the driver's reserve
 * @start: acceptance time, guest monotonic clock
 * @start_pages: balloon size at acceptance
 * @start_stalls: tballoon_direct_reclaims() at acceptance
 * @prev_batch: size of the previous batch (0: none yet)
 * @room_pages: room above the floor when the current batch was sized
 * @no_blocks: a block allocation failed: single pages for the rest of the run
 * @threads: CPUs that allocate blocks (the worker and threads - 1 helpers)
 * @state: TBALLOON_STATE_* outcome (RUNNING while it runs)
 * @reason: TBALLOON_REASON_* detail of @state
 * @wait_ms: paced: how long to wait before the next batch is due
 */
struct tballoon_run {
	struct tballoon_cmd cmd;
	ktime_t start;
	u32 start_pages;
	u64 start_stalls;
	u32 prev_batch;
	u32 room_pages;
	bool no_blocks;
	unsigned int threads;
	u32 state;
	u32 reason;
	u32 wait_ms;
};

/**
 * struct tballoon_helper - allocates blocks on another CPU during a fill
 * @work: tballoon_helper_work() on system_unbound_wq; queued and flushed
 *	only by the worker, within one tballoon_fill_blocks()
 * @tb: the balloon
 * @want: blocks to allocate
 * @got: blocks on @blocks
 * @failed: a block allocation failed
 * @blocks: what it allocated (first pages, linked through page->lru); the
 *	worker takes them once @work is flushed
 */
struct tballoon_helper {
	struct work_struct work;
	struct tballoon *tb;
	unsigned int want;
	unsigned int got;
	bool failed;
	struct list_head blocks;
};

/**
 * struct tballoon - one timed balloon device, at vdev->priv
 * @vdev: the virtio device
 * @inflate_vq: inflateq; used under @lock
 * @deflate_vq: deflateq; used under @lock
 * @stats_vq: statsq (VIRTIO_BALLOON_F_STATS_VQ) or NULL; used only by
 *	@stats_work once the first buffer is queued at start
 * @timed: VIRTIO_BALLOON_F_TIMED negotiated; fixed at probe
 * @adjust_managed: the balloon's pages leave the guest's managed memory
 *	(MemTotal drops); false with VIRTIO_BALLOON_F_DEFLATE_ON_OOM, like the
 *	standard driver, since the guest may take them back at any time
 * @ram_pages: guest RAM at probe, 4 KiB pages: the bound of target and floor
 * @reserve_pages: MemAvailable inflation never takes (tballoon_policy_reserve())
 * @block_order: order of a block (one allocation moved and accounted as a
 *	unit, never migrated); fixed at probe
 * @block_pfns: 4 KiB pages in a block, 0 when the driver uses no blocks
 * @work: the one worker, on system_freezable_wq
 * @stop_lock: protects @removing, @suspending and @changed; taken from the
 *	config change callback, which runs with interrupts off
 * @removing: remove() runs: nothing may queue @work any more
 * @suspending: the guest prepares to suspend or hibernate: the worker ends
 *	a running command (ABORTED/REMOVED) and starts none until it resumes
 * @changed: the config changed since the worker last read it
 * @wake: woken when @changed, @removing or @suspending is set; cuts pauses
 *	short
 * @pm_nb: suspend/hibernate notifier that sets and clears @suspending
 * @reboot_nb: reboot/halt/power-off notifier: sets @suspending and waits
 *	for the worker, so a running command is reported ABORTED/REMOVED
 *	before the device is shut down
 * @oom_nb: OOM notifier, registered with VIRTIO_BALLOON_F_DEFLATE_ON_OOM
 * @helpers: block allocators for the worker (tballoon_fill_blocks())
 * @helpers_stop: the worker tells its helpers to stop after the current block
 * @stats_work: refills @stats and returns the buffer on @stats_vq; queued
 *	from the statsq callback unless @removing
 * @stats: the statistics buffer (standard tags, virtio endian)
 * @acked: woken by the virtqueue callbacks when the device used a buffer
 * @lock: protects @inflate_vq, @deflate_vq (add, kick, get_buf), @bufs,
 *	@mig_buf, @mig_pfns, @oom_buf, @blocks, @num_pages, @inflight_pages,
 *	@broken. The worker holds it as long as it has buffers in flight;
 *	migration only tries it. Nests outside @bdi.pages_lock.
 * @bufs: the worker's PFN buffers
 * @mig_buf: the buffer of a page migration (one guest page)
 * @mig_pfns: storage of @mig_buf
 * @oom_buf: the buffer of a deflate on OOM (TBALLOON_OOM_PAGES)
 * @blocks: the balloon's blocks (first pages, linked through page->lru);
 *	the balloon's single pages are in @bdi
 * @num_pages: balloon size in 4 KiB pages: pages whose inflate buffer the
 *	device used and whose deflate buffer it did not use yet
 * @inflight_pages: 4 KiB pages in @bufs in flight, all in one direction
 * @broken: a virtqueue failed; nothing more is sent
 * @bdi: the balloon's pages, for the balloon page API and compaction
 * @run: the current walk; owned by the worker (remove() and freeze() use
 *	it only once the worker cannot run)
 * @next: a newer command seen while @run ran; owned by the worker
 * @have_next: @next is valid
 * @last_cmd_id: id of the last command handled; owned by the worker
 * @report_seq: last report_seq written; owned by the worker
 * @last_report: time of the last report
 * @last_report_pages: @num_pages in the last report (or actual write)
 */
struct tballoon {
	struct virtio_device *vdev;
	struct virtqueue *inflate_vq;
	struct virtqueue *deflate_vq;
	struct virtqueue *stats_vq;
	bool timed;
	bool adjust_managed;
	u64 ram_pages;
	u32 reserve_pages;
	unsigned int block_order;
	u32 block_pfns;

	struct work_struct work;
	struct tballoon_helper helpers[TBALLOON_HELPERS_MAX];
	bool helpers_stop;

	spinlock_t stop_lock;		/* protects removing, suspending, changed */
	bool removing;
	bool suspending;
	bool changed;
	wait_queue_head_t wake;
	struct notifier_block pm_nb;
	struct notifier_block reboot_nb;
	struct notifier_block oom_nb;

	struct work_struct stats_work;
	struct virtio_balloon_stat stats[VIRTIO_BALLOON_S_NR];

	wait_queue_head_t acked;

	struct mutex lock;		/* protects the vqs, buffers, counts */
	struct tballoon_buf bufs[TBALLOON_NR_BUFS];
	struct tballoon_buf mig_buf;
	__le32 mig_pfns[TBALLOON_PAGES_PER_PAGE];
	struct tballoon_buf oom_buf;
	struct list_head blocks;
	u32 num_pages;
	u32 inflight_pages;
	bool broken;

	struct balloon_dev_info bdi;

	struct tballoon_run run;
	struct tballoon_cmd next;
	bool have_next;
	u32 last_cmd_id;
	u32 report_seq;
	ktime_t last_report;
	u32 last_report_pages;
};

static const struct virtio_device_id tballoon_id_table[] = {
	{ VIRTIO_TBALLOON_DEVICE_ID, VIRTIO_DEV_ANY_ID },
	{ 0 },
};

/* ------------------------------------------------------------------------
 * Stop flags
 * ------------------------------------------------------------------------
 */

/* Must the worker stop or look at the config? Any context that sleeps. */
static bool tballoon_interrupted(struct tballoon *tb)
{
	bool ret;

	spin_lock_irq(&tb->stop_lock);
	ret = tb->removing || tb->suspending || tb->changed;
	spin_unlock_irq(&tb->stop_lock);
	return ret;
}

/* Must the worker stop: removal, or suspend? */
static bool tballoon_removing(struct tballoon *tb)
{
	bool ret;

	spin_lock_irq(&tb->stop_lock);
	ret = tb->removing || tb->suspending;
	spin_unlock_irq(&tb->stop_lock);
	return ret;
}

/* Clear the "config changed" note; return whether it was set. */
static bool tballoon_take_changed(struct tballoon *tb)
{
	bool ret;

	spin_lock_irq(&tb->stop_lock);
	ret = tb->changed;
	tb->changed = false;
	spin_unlock_irq(&tb->stop_lock);
	return ret;
}

/* Note a change and queue the worker, unless remove() runs. */
static void tballoon_kick(struct tballoon *tb)
{
	unsigned long flags;

	spin_lock_irqsave(&tb->stop_lock, flags);
	if (!tb->removing) {
		tb->changed = true;
		queue_work(system_freezable_wq, &tb->work);
	}
	spin_unlock_irqrestore(&tb->stop_lock, flags);
	wake_up(&tb->wake);
}

/* The device announced a change: note it, leave the work to the worker. */
static void tballoon_config_changed(struct virtio_device *vdev)
{
	tballoon_kick(vdev->priv);
}

/* ------------------------------------------------------------------------
 * Config space
 * ------------------------------------------------------------------------
 */

static u32 tballoon_config_gen(struct virtio_device *vdev)
{
	return vdev->config->generation ? vdev->config->generation(vdev) : 0;
}

/**
 * tballoon_read_cmd() - read the device's current command
 * @tb: the balloon
 * @cmd: filled with the command
 *
 * Reads the device-written timed block under the config generation counter
 * and reads cmd_id again after the other fields, until both are stable
 * across a read (the device writes cmd_id last).
 *
 * Return: true, or false if remove() started (then @cmd is not stable).
 */
static bool tballoon_read_cmd(struct tballoon *tb, struct tballoon_cmd *cmd)
{
	struct virtio_device *vdev = tb->vdev;
	u32 gen, again;

	do {
		if (tballoon_removing(tb))
			return false;
		cond_resched();
		gen = tballoon_config_gen(vdev);
		virtio_cread_le(vdev, struct virtio_tballoon_config, cmd_id,
				&cmd->cmd_id);
		virtio_cread_le(vdev, struct virtio_tballoon_config, op,
				&cmd->op);
		virtio_cread_le(vdev, struct virtio_tballoon_config, flags,
				&cmd->flags);
		virtio_cread_le(vdev, struct virtio_tballoon_config, deadline_ms,
				&cmd->deadline_ms);
		virtio_cread_le(vdev, struct virtio_tballoon_config,
				target_pages, &cmd->target_pages);
		virtio_cread_le(vdev, struct virtio_tballoon_config,
				floor_pages, &cmd->floor_pages);
		virtio_cread_le(vdev, struct virtio_tballoon_config, cmd_id,
				&again);
	} while (gen != tballoon_config_gen(vdev) || again != cmd->cmd_id);

	return true;
}

static u32 tballoon_elapsed_ms(const struct tballoon_run *run)
{
	s64 ms = ktime_ms_delta(ktime_get(), run->start);

	return clamp_t(s64, ms, 0, U32_MAX - 1);
}

/* Standard report of the balloon size. */
static void tballoon_write_actual(struct tballoon *tb)
{
	u32 actual = tb->num_pages;

	virtio_cwrite_le(tb->vdev, struct virtio_tballoon_config, actual,
			 &actual);
	tb->last_report_pages = actual;
}

/**
 * tballoon_report() - write a report about tb->run to the device
 * @tb: the balloon
 * @full: write every field (acceptance, final); else actual and elapsed_ms
 *
 * Writes in protocol order: actual, elapsed_ms, start_pages, reason,
 * state, ack_cmd_id, and last report_seq. Worker context (or remove/freeze
 * once the worker cannot run); may be called with @tb->lock held.
 */
static void tballoon_report(struct tballoon *tb, bool full)
{
	struct virtio_device *vdev = tb->vdev;
	struct tballoon_run *run = &tb->run;
	u32 v;

	tballoon_write_actual(tb);
	v = tballoon_elapsed_ms(run);
	virtio_cwrite_le(vdev, struct virtio_tballoon_config, elapsed_ms, &v);
	if (full) {
		virtio_cwrite_le(vdev, struct virtio_tballoon_config,
				 start_pages, &run->start_pages);
		virtio_cwrite_le(vdev, struct virtio_tballoon_config, reason,
				 &run->reason);
		virtio_cwrite_le(vdev, struct virtio_tballoon_config, state,
				 &run->state);
		virtio_cwrite_le(vdev, struct virtio_tballoon_config, ack_cmd_id,
				 &run->cmd.cmd_id);
	}
	tb->report_seq++;
	virtio_cwrite_le(vdev, struct virtio_tballoon_config, report_seq,
			 &tb->report_seq);
	tb->last_report = ktime_get();
}

/* ------------------------------------------------------------------------
 * Buffers. All of these must be called with tb->lock held.
 * ------------------------------------------------------------------------
 */

/* Add the 4 KiB frames of @nr_pages guest pages from @page on to @buf. */
static void tballoon_buf_add_range(struct tballoon_buf *buf, struct page *page,
				   unsigned long nr_pages)
{
	unsigned long pfn = page_to_pfn(page);
	unsigned long i, n = nr_pages * TBALLOON_PAGES_PER_PAGE;

	BUILD_BUG_ON(PAGE_SHIFT < VIRTIO_TBALLOON_PFN_SHIFT);
	/* Guest page -> its 4 KiB frames, the first at the start of the page. */
	pfn *= TBALLOON_PAGES_PER_PAGE;
	for (i = 0; i < n; i++)
		buf->pfns[buf->num_pfns++] = cpu_to_le32(pfn + i);
}

static void tballoon_buf_add_pfns(struct tballoon_buf *buf, struct page *page)
{
	tballoon_buf_add_range(buf, page, 1);
}

/**
 * tballoon_send() - add a filled buffer to a queue and notify the device
 * @tb: the balloon
 * @vq: @tb->inflate_vq or @tb->deflate_vq
 * @buf: the buffer, @buf->num_pfns > 0
 *
 * Return: 0, or the error of virtqueue_add_outbuf() (-ENOSPC: the ring is
 * full; -EIO: the queue is broken). A failed kick marks @tb broken; the
 * buffer then comes back through tballoon_reap().
 */
static int tballoon_send(struct tballoon *tb, struct virtqueue *vq,
			 struct tballoon_buf *buf)
{
	struct scatterlist sg;
	int err;

	if (tb->broken)
		return -EIO;
	sg_init_one(&sg, buf->pfns, buf->num_pfns * sizeof(buf->pfns[0]));
	err = virtqueue_add_outbuf(vq, &sg, 1, buf, GFP_KERNEL);
	if (err)
		return err;
	buf->vq = vq;
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

	while ((buf = virtqueue_get_buf(tb->inflate_vq, &len)))
		buf->in_flight = false;
	while ((buf = virtqueue_get_buf(tb->deflate_vq, &len)))
		buf->in_flight = false;

	if (virtqueue_is_broken(tb->inflate_vq) ||
	    virtqueue_is_broken(tb->deflate_vq))
		tb->broken = true;
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
static bool tballoon_wait_device(struct tballoon *tb, struct tballoon_buf *buf)
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
static void tballoon_unfill(struct tballoon *tb, struct tballoon_buf *buf,
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
}

/*
 * The device used @buf: inflated pages join the balloon and leave the
 * guest's managed memory; deflated pages go back to the guest.
 */
static void tballoon_complete(struct tballoon *tb, struct tballoon_buf *buf)
{
	long block = 1L << tb->block_order;
	struct page *page, *next;

	if (buf->vq == tb->inflate_vq) {
		if (tb->adjust_managed) {
			list_for_each_entry(page, &buf->pages, lru)
				adjust_managed_page_count(page, -1);
			list_for_each_entry(page, &buf->blocks, lru)
				adjust_managed_page_count(page, -block);
		}
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
			__free_pages(page, tb->block_order);
		}
		tb->num_pages -= buf->num_pfns;
	}
	tb->inflight_pages -= buf->num_pfns;
	buf->num_pfns = 0;
}

static void tballoon_complete_returned(struct tballoon *tb)
{
	unsigned int i;

	tballoon_reap(tb);
	for (i = 0; i < TBALLOON_NR_BUFS; i++)
		if (tb->bufs[i].num_pfns && !tb->bufs[i].in_flight)
			tballoon_complete(tb, &tb->bufs[i]);
}

/* Wait until nothing is in flight. */
static void tballoon_drain(struct tballoon *tb)
{
	unsigned int i;

	for (i = 0; i < TBALLOON_NR_BUFS; i++)
		if (tb->bufs[i].num_pfns)
			tballoon_wait_device(tb, &tb->bufs[i]);
	tballoon_complete_returned(tb);
}

static struct tballoon_buf *tballoon_free_buf(struct tballoon *tb)
{
	unsigned int i;

	for (i = 0; i < TBALLOON_NR_BUFS; i++)
		if (!tb->bufs[i].num_pfns)
			return &tb->bufs[i];
	return NULL;
}

/* ------------------------------------------------------------------------
 * The engine. Called with tb->lock held unless said otherwise.
 * ------------------------------------------------------------------------
 */

static bool tballoon_inflating(struct tballoon *tb)
{
	return tb->run.cmd.op == TBALLOON_OP_INFLATE;
}

/* Balloon size counting the buffers in flight and @extra pages. */
static u32 tballoon_done_pages(struct tballoon *tb, u32 extra)
{
	if (tballoon_inflating(tb))
		return tb->num_pages + tb->inflight_pages + extra;
	return tb->num_pages - tb->inflight_pages - extra;
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
static u64 tballoon_direct_reclaims(void)
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
	u32 state, reason;

	if (tballoon_removing(tb)) {
		state = TBALLOON_STATE_ABORTED;
		reason = TBALLOON_REASON_REMOVED;
		goto stop;
	}
	if (tb->broken) {
		state = TBALLOON_STATE_ABORTED;
		reason = TBALLOON_REASON_DEVICE_ERROR;
		goto stop;
	}
	if (!tb->timed && tballoon_interrupted(tb)) {
		state = TBALLOON_STATE_ABORTED;
		reason = TBALLOON_REASON_SUPERSEDED;
		goto stop;
	}
	if (tb->timed && tballoon_take_changed(tb)) {
		if (!tballoon_read_cmd(tb, &tb->next))
			return false;	/* removal: caught next time */
		if (tb->next.cmd_id != run->cmd.cmd_id) {
			tb->have_next = true;
			state = TBALLOON_STATE_ABORTED;
			reason = tballoon_policy_superseded_reason(&tb->next);
			goto stop;
		}
	}
	state = tballoon_policy_check(tb, 0, &reason);
	if (state == TBALLOON_STATE_RUNNING)
		return false;
stop:
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
		u32 distance = tballoon_dist(cmd->target_pages, run->start_pages);
		u32 ahead = tballoon_dist(done, run->start_pages);
		u32 due = tballoon_policy_paced_due(distance, elapsed,
						    cmd->deadline_ms);
		u32 want = min(TBALLOON_PACE_CHUNK, in.remaining_pages);

		if (due < ahead + want) {
			u32 at = tballoon_policy_paced_time(distance, ahead + want,
							    cmd->deadline_ms);

			run->wait_ms = at > elapsed ? at - elapsed : 1;
			return 0;
		}
		n = min(n, due - ahead);
		n -= n % TBALLOON_PAGES_PER_PAGE;
	}
	return n;
}

/*
 * Between two chunks of a fill: must it stop? Peeks at the stop flags and
 * asks the policy, counting the @extra pages already in the buffer.
 */
static u32 tballoon_fill_check(struct tballoon *tb, u32 extra)
{
	u32 reason;

	if (tballoon_interrupted(tb))
		return TBALLOON_STATE_ABORTED;
	return tballoon_policy_check(tb, extra, &reason);
}

/* A helper's stop test: the worker's word, a stop flag, or the deadline. */
static bool tballoon_helper_stop(struct tballoon *tb)
{
	u32 deadline = tb->run.cmd.deadline_ms;

	if (READ_ONCE(tb->helpers_stop) || tballoon_interrupted(tb))
		return true;
	return deadline != TBALLOON_NO_DEADLINE &&
	       tballoon_elapsed_ms(&tb->run) >= deadline;
}

/*
 * Allocate up to @want blocks on this CPU, stopping after any block when
 * tballoon_helper_stop() says so. Does not take tb->lock: the worker holds
 * it and waits for this in tballoon_fill_blocks().
 */
static void tballoon_helper_work(struct work_struct *work)
{
	struct tballoon_helper *h = container_of(work, struct tballoon_helper,
						 work);
	struct tballoon *tb = h->tb;
	struct page *page;

	while (h->got < h->want && !tballoon_helper_stop(tb)) {
		page = alloc_pages(TBALLOON_BLOCK_GFP, tb->block_order);
		if (!page) {
			h->failed = true;
			break;
		}
		list_add_tail(&page->lru, &h->blocks);
		h->got++;
		cond_resched();
	}
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
 * flags themselves). Every block ends up in @buf. Otherwise does nothing
 * and leaves the blocks to tballoon_fill_inflate().
 *
 * Return: 0, -ETIME or -EINTR as tballoon_fill_inflate().
 */
static int tballoon_fill_blocks(struct tballoon *tb, struct tballoon_buf *buf,
				u32 n)
{
	struct tballoon_run *run = &tb->run;
	u32 k, mine, state = TBALLOON_STATE_RUNNING;
	unsigned int i, nr_helpers;
	struct tballoon_helper *h;
	struct page *page, *next;

	if (run->threads < 2 || run->no_blocks)
		return 0;
	k = tballoon_policy_blocks(n, run->room_pages, tb->block_pfns);
	if (k < 2)
		return 0;
	nr_helpers = min(run->threads - 1, k - 1);

	WRITE_ONCE(tb->helpers_stop, false);
	mine = k;
	for (i = 0; i < nr_helpers; i++) {
		h = &tb->helpers[i];
		h->want = k / (nr_helpers + 1);
		h->got = 0;
		h->failed = false;
		mine -= h->want;
		queue_work(system_unbound_wq, &h->work);
	}

	while (mine--) {
		page = alloc_pages(TBALLOON_BLOCK_GFP, tb->block_order);
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

/**
 * tballoon_fill_inflate() - allocate pages into a buffer
 * @tb: the balloon
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
static int tballoon_fill_inflate(struct tballoon *tb, struct tballoon_buf *buf,
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
			page = alloc_pages(TBALLOON_BLOCK_GFP, tb->block_order);
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

/*
 * Break the balloon's first block into single balloon pages (they stay in
 * the balloon, accounted as before), for a deflate that wants less than a
 * block and finds no single page.
 */
static void tballoon_split_block(struct tballoon *tb)
{
	struct page *page = list_first_entry(&tb->blocks, struct page, lru);
	unsigned long i;
	LIST_HEAD(pages);

	list_del(&page->lru);
	split_page(page, tb->block_order);
	for (i = 0; i < 1UL << tb->block_order; i++)
		list_add_tail(&page[i].lru, &pages);
	balloon_page_list_enqueue(&tb->bdi, &pages);
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
static int tballoon_fill_deflate(struct tballoon *tb, struct tballoon_buf *buf,
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
	if (tb->num_pages == tb->last_report_pages)
		return;
	if (!tb->timed) {
		tballoon_write_actual(tb);
		return;
	}
	if (ktime_ms_delta(ktime_get(), tb->last_report) >=
	    TBALLOON_REPORT_INTERVAL_MS)
		tballoon_report(tb, false);
}

/**
 * tballoon_run() - walk the balloon towards @tb->run.cmd
 * @tb: the balloon; @tb->lock must not be held
 *
 * Fills one buffer while the device works on the other, until
 * tballoon_check() or a failure ends the run. Returns with nothing in
 * flight and @tb->run.state/.reason set to the outcome.
 */
static void tballoon_run(struct tballoon *tb)
{
	struct tballoon_run *run = &tb->run;
	bool inflate = tballoon_inflating(tb);
	struct virtqueue *vq = inflate ? tb->inflate_vq : tb->deflate_vq;
	struct tballoon_buf *buf;
	u32 n;
	int err;

	run->no_blocks = !tb->block_pfns || !READ_ONCE(blocks);
	run->threads = clamp_t(unsigned int, READ_ONCE(threads), 1,
			       min(num_online_cpus(), 1U + TBALLOON_HELPERS_MAX));
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
			err = tballoon_fill_inflate(tb, buf, n);
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
			while ((err = tballoon_send(tb, vq, buf)) == -ENOSPC &&
			       tb->inflight_pages)
				tballoon_wait_device(tb, NULL);
			if (err) {
				dev_warn_ratelimited(&tb->vdev->dev,
						     "cannot queue %u pages: %d\n",
						     buf->num_pfns, err);
				tballoon_unfill(tb, buf, inflate);
				tb->broken = true;
			} else {
				tb->inflight_pages += buf->num_pfns;
			}
		}
		if (err == -ENOMEM) {
			run->state = TBALLOON_STATE_PRESSURE;
			run->reason = TBALLOON_REASON_ALLOC_FAIL;
			break;
		}
	}
	tballoon_drain(tb);
	mutex_unlock(&tb->lock);
}

/* ------------------------------------------------------------------------
 * Commands and the worker
 * ------------------------------------------------------------------------
 */

/**
 * tballoon_handle() - validate, accept, run and report one TIMED command
 * @tb: the balloon
 * @cmd: the command; its id is new
 *
 * Leaves @tb->have_next set when a newer command ended this one.
 */
static void tballoon_handle(struct tballoon *tb, const struct tballoon_cmd *cmd)
{
	struct tballoon_run *run = &tb->run;
	u32 ppp = TBALLOON_PAGES_PER_PAGE;

	tb->last_cmd_id = cmd->cmd_id;
	tb->have_next = false;
	memset(run, 0, sizeof(*run));
	run->cmd = *cmd;
	run->start_pages = tb->num_pages;
	run->state = tballoon_policy_validate(cmd, tb->num_pages, tb->ram_pages,
					      &run->reason);
	/* Acceptance: time starts now. */
	run->start = ktime_get();
	run->start_stalls = tballoon_direct_reclaims();
	if (run->state != TBALLOON_STATE_RUNNING) {
		tballoon_report(tb, true);
		return;
	}

	/* Whole guest pages only, like the standard balloon. */
	run->cmd.target_pages = ALIGN(cmd->target_pages, ppp);
	run->cmd.floor_pages = max(cmd->floor_pages, tb->reserve_pages);
	tballoon_report(tb, true);
	tballoon_run(tb);
	tballoon_report(tb, true);
}

/* Standard balloon: follow num_pages, no deadline, actual after each batch. */
static void tballoon_work_standard(struct tballoon *tb)
{
	struct tballoon_run *run = &tb->run;
	u32 num_pages, target;

	while (!tballoon_removing(tb)) {
		tballoon_take_changed(tb);
		virtio_cread_le(tb->vdev, struct virtio_tballoon_config,
				num_pages, &num_pages);
		target = ALIGN(num_pages, TBALLOON_PAGES_PER_PAGE);
		if (target == tb->num_pages)
			break;

		memset(run, 0, sizeof(*run));
		run->cmd.op = target > tb->num_pages ? TBALLOON_OP_INFLATE :
						       TBALLOON_OP_DEFLATE;
		run->cmd.target_pages = target;
		run->cmd.deadline_ms = TBALLOON_NO_DEADLINE;
		run->cmd.floor_pages = tb->reserve_pages;
		run->start_pages = tb->num_pages;
		run->start = ktime_get();
		tballoon_run(tb);
		tballoon_write_actual(tb);

		if (run->reason == TBALLOON_REASON_DEVICE_ERROR)
			break;
		if (run->state == TBALLOON_STATE_PRESSURE) {
			dev_info_ratelimited(&tb->vdev->dev,
					     "memory pressure at %u of %u pages\n",
					     tb->num_pages, target);
			wait_event_timeout(tb->wake, tballoon_interrupted(tb),
					   msecs_to_jiffies(TBALLOON_RETRY_MS));
		}
	}
}

static void tballoon_work(struct work_struct *work)
{
	struct tballoon *tb = container_of(work, struct tballoon, work);
	struct tballoon_cmd cmd;

	if (!tb->timed) {
		tballoon_work_standard(tb);
		return;
	}

	tballoon_take_changed(tb);
	if (!tballoon_read_cmd(tb, &cmd))
		return;
	while (cmd.cmd_id != tb->last_cmd_id && !tballoon_removing(tb)) {
		tballoon_handle(tb, &cmd);
		if (!tb->have_next)
			break;
		cmd = tb->next;
	}
}

/* ------------------------------------------------------------------------
 * Migration
 * ------------------------------------------------------------------------
 */

#ifdef CONFIG_BALLOON_COMPACTION
/* Tell the device about one guest page and wait. tb->lock held. */
static int tballoon_send_page_sync(struct tballoon *tb, struct virtqueue *vq,
				   struct page *page)
{
	struct tballoon_buf *buf = &tb->mig_buf;
	int err;

	buf->num_pfns = 0;
	tballoon_buf_add_pfns(buf, page);
	err = tballoon_send(tb, vq, buf);
	if (!err && !tballoon_wait_device(tb, buf))
		err = -EIO;
	buf->num_pfns = 0;
	return err;
}

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
static int tballoon_migratepage(struct balloon_dev_info *bdi,
				struct page *newpage, struct page *page,
				enum migrate_mode mode)
{
	struct tballoon *tb = container_of(bdi, struct tballoon, bdi);
	unsigned long flags;
	int err;

	if (!mutex_trylock(&tb->lock))
		return -EAGAIN;

	/* The device must know @newpage before it is in the balloon. */
	err = tballoon_send_page_sync(tb, tb->inflate_vq, newpage);
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

	err = tballoon_send_page_sync(tb, tb->deflate_vq, page);
	mutex_unlock(&tb->lock);

	balloon_page_finalize(page);
	if (err)
		/* Never told the device: @page must not return to the guest. */
		dev_warn_ratelimited(&tb->vdev->dev,
				     "migration: deflate failed (%d), page leaked\n",
				     err);
	else
		put_page(page);	/* the balloon's reference */
	return MIGRATEPAGE_SUCCESS;
}
#endif /* CONFIG_BALLOON_COMPACTION */

/* ------------------------------------------------------------------------
 * Device setup and teardown
 * ------------------------------------------------------------------------
 */

/*
 * Suspend and hibernation freeze the workqueue, which waits for a running
 * command to end: end it now (ABORTED/REMOVED, as the protocol says for a
 * suspend) instead of holding the freezer up until its deadline.
 */
static int tballoon_pm_notify(struct notifier_block *nb, unsigned long action,
			      void *data)
{
	struct tballoon *tb = container_of(nb, struct tballoon, pm_nb);
	bool suspending;

	switch (action) {
	case PM_SUSPEND_PREPARE:
	case PM_HIBERNATION_PREPARE:
		suspending = true;
		break;
	case PM_POST_SUSPEND:
	case PM_POST_HIBERNATION:
		suspending = false;
		break;
	default:
		return NOTIFY_DONE;
	}

	spin_lock_irq(&tb->stop_lock);
	tb->suspending = suspending;
	spin_unlock_irq(&tb->stop_lock);
	if (suspending)
		wake_up(&tb->wake);
	else
		tballoon_kick(tb);	/* pick up what came meanwhile */
	return NOTIFY_OK;
}

/*
 * The guest is going down: end a running command with its report while the
 * device still works (device_shutdown() comes after the reboot notifiers),
 * instead of letting the reset break the run (ABORTED/DEVICE_ERROR).
 */
static int tballoon_reboot_notify(struct notifier_block *nb,
				  unsigned long action, void *data)
{
	struct tballoon *tb = container_of(nb, struct tballoon, reboot_nb);

	spin_lock_irq(&tb->stop_lock);
	tb->suspending = true;
	spin_unlock_irq(&tb->stop_lock);
	wake_up(&tb->wake);
	flush_work(&tb->work);
	return NOTIFY_DONE;
}

static void tballoon_ack(struct virtqueue *vq)
{
	struct tballoon *tb = vq->vdev->priv;

	wake_up(&tb->acked);
}

/* ------------------------------------------------------------------------
 * Statistics (VIRTIO_BALLOON_F_STATS_VQ)
 * ------------------------------------------------------------------------
 */

static void tballoon_stat(struct tballoon *tb, unsigned int i, u16 tag,
			  u64 val)
{
	tb->stats[i].tag = cpu_to_virtio16(tb->vdev, tag);
	tb->stats[i].val = cpu_to_virtio64(tb->vdev, val);
}

/* Fill @tb->stats with the standard tags, values in bytes or events. */
static unsigned int tballoon_stats_fill(struct tballoon *tb)
{
	unsigned long ev[NR_VM_EVENT_ITEMS] = { 0 };
	unsigned int i = 0;
	struct sysinfo si;

#ifdef CONFIG_VM_EVENT_COUNTERS
	all_vm_events(ev);
#endif
	si_meminfo(&si);
	tballoon_stat(tb, i++, VIRTIO_BALLOON_S_SWAP_IN,
		      (u64)ev[PSWPIN] << PAGE_SHIFT);
	tballoon_stat(tb, i++, VIRTIO_BALLOON_S_SWAP_OUT,
		      (u64)ev[PSWPOUT] << PAGE_SHIFT);
	tballoon_stat(tb, i++, VIRTIO_BALLOON_S_MAJFLT, ev[PGMAJFAULT]);
	tballoon_stat(tb, i++, VIRTIO_BALLOON_S_MINFLT, ev[PGFAULT]);
	tballoon_stat(tb, i++, VIRTIO_BALLOON_S_MEMFREE,
		      (u64)si.freeram << PAGE_SHIFT);
	tballoon_stat(tb, i++, VIRTIO_BALLOON_S_MEMTOT,
		      (u64)si.totalram << PAGE_SHIFT);
	tballoon_stat(tb, i++, VIRTIO_BALLOON_S_AVAIL,
		      (u64)si_mem_available() << PAGE_SHIFT);
	tballoon_stat(tb, i++, VIRTIO_BALLOON_S_CACHES,
		      (u64)global_node_page_state(NR_FILE_PAGES) << PAGE_SHIFT);
#ifdef CONFIG_HUGETLB_PAGE
	tballoon_stat(tb, i++, VIRTIO_BALLOON_S_HTLB_PGALLOC,
		      ev[HTLB_BUDDY_PGALLOC]);
	tballoon_stat(tb, i++, VIRTIO_BALLOON_S_HTLB_PGFAIL,
		      ev[HTLB_BUDDY_PGALLOC_FAIL]);
#endif
	return i;
}

/* Hand the device fresh statistics. Only @stats_work and start call this. */
static void tballoon_stats_send(struct tballoon *tb)
{
	struct scatterlist sg;
	unsigned int n = tballoon_stats_fill(tb);

	sg_init_one(&sg, tb->stats, n * sizeof(tb->stats[0]));
	if (virtqueue_add_outbuf(tb->stats_vq, &sg, 1, tb, GFP_KERNEL)) {
		dev_warn_ratelimited(&tb->vdev->dev, "cannot queue statistics\n");
		return;
	}
	virtqueue_kick(tb->stats_vq);
}

static void tballoon_stats_work(struct work_struct *work)
{
	struct tballoon *tb = container_of(work, struct tballoon, stats_work);
	unsigned int len;

	/* The device returns the buffer to ask for fresh statistics. */
	if (virtqueue_get_buf(tb->stats_vq, &len))
		tballoon_stats_send(tb);
}

/* statsq callback (interrupt context): the device wants statistics. */
static void tballoon_stats_request(struct virtqueue *vq)
{
	struct tballoon *tb = vq->vdev->priv;
	unsigned long flags;

	spin_lock_irqsave(&tb->stop_lock, flags);
	if (!tb->removing)
		queue_work(system_freezable_wq, &tb->stats_work);
	spin_unlock_irqrestore(&tb->stop_lock, flags);
}

static int tballoon_init_vqs(struct tballoon *tb)
{
	struct virtqueue *vqs[VIRTIO_TBALLOON_VQ_MAX];
	static const struct tballoon_vq_info info[] = {
		[VIRTIO_TBALLOON_VQ_INFLATE] = { "inflate", tballoon_ack },
		[VIRTIO_TBALLOON_VQ_DEFLATE] = { "deflate", tballoon_ack },
		[VIRTIO_TBALLOON_VQ_STATS] = { "stats", tballoon_stats_request },
	};
	bool stats = virtio_has_feature(tb->vdev, VIRTIO_BALLOON_F_STATS_VQ);
	int err;

	BUILD_BUG_ON(ARRAY_SIZE(info) != VIRTIO_TBALLOON_VQ_MAX);
	BUILD_BUG_ON(ARRAY_SIZE(info) > TBALLOON_COMPAT_MAX_VQS);
	err = tballoon_find_vqs(tb->vdev, stats ? VIRTIO_TBALLOON_VQ_MAX :
					 VIRTIO_TBALLOON_VQ_STATS,
				vqs, info);
	if (err)
		return err;
	tb->inflate_vq = vqs[VIRTIO_TBALLOON_VQ_INFLATE];
	tb->deflate_vq = vqs[VIRTIO_TBALLOON_VQ_DEFLATE];
	tb->stats_vq = stats ? vqs[VIRTIO_TBALLOON_VQ_STATS] : NULL;
	tb->broken = false;
	return 0;
}

/* Start (probe, restore): read what survives in the device, then go. */
static void tballoon_start(struct tballoon *tb)
{
	if (tb->timed) {
		/* A command not acknowledged yet is new (protocol, "Issuing"). */
		virtio_cread_le(tb->vdev, struct virtio_tballoon_config,
				ack_cmd_id, &tb->last_cmd_id);
		virtio_cread_le(tb->vdev, struct virtio_tballoon_config,
				report_seq, &tb->report_seq);
	}
	virtio_device_ready(tb->vdev);
	/* The device holds one statistics buffer and returns it to ask. */
	if (tb->stats_vq)
		tballoon_stats_send(tb);
	tballoon_kick(tb);
}

/**
 * tballoon_deflate_sync() - give up to @n pages back and wait for the device
 * @tb: the balloon; @tb->lock held and nothing in flight
 * @buf: a free buffer with room for @n PFNs
 * @n: pages wanted
 *
 * With a broken device the pages come back untold (the device is reset or
 * already unusable).
 *
 * Return: pages given back, or the error of tballoon_fill_deflate().
 */
static int tballoon_deflate_sync(struct tballoon *tb, struct tballoon_buf *buf,
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
	if (!tballoon_send(tb, tb->deflate_vq, buf))
		tballoon_wait_device(tb, buf);
	buf->vq = tb->deflate_vq;
	buf->in_flight = false;
	tballoon_complete(tb, buf);
	return pages;
}

/*
 * Return every page to the guest through the deflate queue. The worker must
 * not run. With a broken device the pages come back untold: the device is
 * reset right after, which empties its balloon.
 */
static void tballoon_empty(struct tballoon *tb)
{
	int err;

	mutex_lock(&tb->lock);
	while (tb->num_pages) {
		err = tballoon_deflate_sync(tb, &tb->bufs[0],
					    min(tb->num_pages, TBALLOON_BUF_PFNS));
		if (err == -ENOENT)
			break;
		if (err < 0) {
			mutex_unlock(&tb->lock);
			msleep(TBALLOON_ISOLATED_MS);
			mutex_lock(&tb->lock);
		}
	}
	tballoon_write_actual(tb);
	mutex_unlock(&tb->lock);
}

/*
 * VIRTIO_BALLOON_F_DEFLATE_ON_OOM: the guest ran out of memory; give it
 * TBALLOON_OOM_PAGES back instead of letting the OOM killer pick a victim.
 * Waits for the worker to let go of @tb->lock (its allocations never enter
 * the OOM path, so it cannot be waiting for us).
 */
static int tballoon_oom_notify(struct notifier_block *nb, unsigned long dummy,
			       void *parm)
{
	struct tballoon *tb = container_of(nb, struct tballoon, oom_nb);
	unsigned long *freed = parm;
	int pages;

	mutex_lock(&tb->lock);
	pages = tballoon_deflate_sync(tb, &tb->oom_buf,
				      min(tb->num_pages, TBALLOON_OOM_PAGES));
	if (pages > 0) {
		tballoon_write_actual(tb);
		*freed += pages / TBALLOON_PAGES_PER_PAGE;
	}
	mutex_unlock(&tb->lock);
	return NOTIFY_OK;
}

/* Stop the worker for good (remove). */
static void tballoon_stop_worker(struct tballoon *tb)
{
	spin_lock_irq(&tb->stop_lock);
	tb->removing = true;
	spin_unlock_irq(&tb->stop_lock);
	wake_up(&tb->wake);
	cancel_work_sync(&tb->work);
	cancel_work_sync(&tb->stats_work);
}

static void tballoon_free_bufs(struct tballoon *tb)
{
	unsigned int i;

	for (i = 0; i < TBALLOON_NR_BUFS; i++)
		kfree(tb->bufs[i].pfns);
	kfree(tb->oom_buf.pfns);
}

static int tballoon_validate(struct virtio_device *vdev)
{
	if (!vdev->config->get) {
		dev_err(&vdev->dev, "config access disabled\n");
		return -EINVAL;
	}
	/* The timed block is little-endian: modern devices only. */
	if (!virtio_has_feature(vdev, VIRTIO_F_VERSION_1))
		__virtio_clear_bit(vdev, VIRTIO_BALLOON_F_TIMED);
	return 0;
}

static int tballoon_probe(struct virtio_device *vdev)
{
	struct tballoon *tb;
	unsigned int i;
	int err;

	BUILD_BUG_ON(sizeof(struct virtio_tballoon_config) !=
		     VIRTIO_TBALLOON_CONFIG_SIZE);
	BUILD_BUG_ON(TBALLOON_BUF_PFNS % TBALLOON_PAGES_PER_PAGE);
	BUILD_BUG_ON(TBALLOON_CHECK_PAGES % TBALLOON_PAGES_PER_PAGE);

	tb = kzalloc(sizeof(*tb), GFP_KERNEL);
	if (!tb)
		return -ENOMEM;
	vdev->priv = tb;
	tb->vdev = vdev;
	tb->timed = virtio_has_feature(vdev, VIRTIO_BALLOON_F_TIMED);
	tb->adjust_managed = !virtio_has_feature(vdev,
						 VIRTIO_BALLOON_F_DEFLATE_ON_OOM);
	INIT_WORK(&tb->work, tballoon_work);
	INIT_WORK(&tb->stats_work, tballoon_stats_work);
	for (i = 0; i < TBALLOON_HELPERS_MAX; i++) {
		tb->helpers[i].tb = tb;
		INIT_WORK(&tb->helpers[i].work, tballoon_helper_work);
		INIT_LIST_HEAD(&tb->helpers[i].blocks);
	}
	spin_lock_init(&tb->stop_lock);
	init_waitqueue_head(&tb->wake);
	init_waitqueue_head(&tb->acked);
	mutex_init(&tb->lock);
	balloon_devinfo_init(&tb->bdi);
	INIT_LIST_HEAD(&tb->blocks);
	tb->block_order = min_t(unsigned int, pageblock_order,
				TBALLOON_BLOCK_MAX_ORDER);
	if (tb->block_order)
		tb->block_pfns = (1U << tb->block_order) * TBALLOON_PAGES_PER_PAGE;
#ifdef CONFIG_BALLOON_COMPACTION
	tb->bdi.migratepage = tballoon_migratepage;
#endif

	for (i = 0; i < TBALLOON_NR_BUFS; i++) {
		INIT_LIST_HEAD(&tb->bufs[i].pages);
		INIT_LIST_HEAD(&tb->bufs[i].blocks);
		tb->bufs[i].pfns = kmalloc_array(TBALLOON_BUF_PFNS,
						 sizeof(__le32), GFP_KERNEL);
		if (!tb->bufs[i].pfns) {
			err = -ENOMEM;
			goto err_free_bufs;
		}
	}
	INIT_LIST_HEAD(&tb->mig_buf.pages);
	INIT_LIST_HEAD(&tb->mig_buf.blocks);
	tb->mig_buf.pfns = tb->mig_pfns;
	INIT_LIST_HEAD(&tb->oom_buf.pages);
	INIT_LIST_HEAD(&tb->oom_buf.blocks);
	tb->oom_buf.pfns = kmalloc_array(TBALLOON_OOM_PAGES, sizeof(__le32),
					 GFP_KERNEL);
	if (!tb->oom_buf.pfns) {
		err = -ENOMEM;
		goto err_free_bufs;
	}

	err = tballoon_init_vqs(tb);
	if (err)
		goto err_free_bufs;

	tb->pm_nb.notifier_call = tballoon_pm_notify;
	err = register_pm_notifier(&tb->pm_nb);
	if (err)
		goto err_del_vqs;
	tb->reboot_nb.notifier_call = tballoon_reboot_notify;
	err = register_reboot_notifier(&tb->reboot_nb);
	if (err)
		goto err_pm;
	if (!tb->adjust_managed) {
		tb->oom_nb.notifier_call = tballoon_oom_notify;
		err = register_oom_notifier(&tb->oom_nb);
		if (err)
			goto err_reboot;
	}

	tb->ram_pages = (u64)totalram_pages() * TBALLOON_PAGES_PER_PAGE;
	tb->reserve_pages = tballoon_policy_reserve(tb->ram_pages);
	tballoon_start(tb);
	dev_info(&vdev->dev, "%s balloon, %llu MiB of guest RAM\n",
		 tb->timed ? "timed" : "standard",
		 tb->ram_pages >> (20 - VIRTIO_TBALLOON_PFN_SHIFT));
	return 0;

err_reboot:
	unregister_reboot_notifier(&tb->reboot_nb);
err_pm:
	unregister_pm_notifier(&tb->pm_nb);
err_del_vqs:
	vdev->config->del_vqs(vdev);
err_free_bufs:
	tballoon_free_bufs(tb);
	kfree(tb);
	vdev->priv = NULL;
	return err;
}

static void tballoon_remove(struct virtio_device *vdev)
{
	struct tballoon *tb = vdev->priv;

	if (!tb->adjust_managed)
		unregister_oom_notifier(&tb->oom_nb);
	unregister_reboot_notifier(&tb->reboot_nb);
	unregister_pm_notifier(&tb->pm_nb);
	/* The worker reports a running command ABORTED/REMOVED as it stops. */
	tballoon_stop_worker(tb);
	tballoon_empty(tb);
	virtio_reset_device(vdev);
	vdev->config->del_vqs(vdev);
	tballoon_free_bufs(tb);
	kfree(tb);
}

#ifdef CONFIG_PM_SLEEP
static int tballoon_freeze(struct virtio_device *vdev)
{
	struct tballoon *tb = vdev->priv;

	/* The freezable workqueue is frozen: the worker does not run. */
	cancel_work_sync(&tb->stats_work);
	tballoon_empty(tb);
	virtio_reset_device(vdev);
	vdev->config->del_vqs(vdev);
	return 0;
}

static int tballoon_restore(struct virtio_device *vdev)
{
	struct tballoon *tb = vdev->priv;
	int err;

	err = tballoon_init_vqs(tb);
	if (err)
		return err;
	tballoon_start(tb);
	return 0;
}
#endif

static unsigned int tballoon_features[] = {
	VIRTIO_BALLOON_F_MUST_TELL_HOST,
	VIRTIO_BALLOON_F_STATS_VQ,
	VIRTIO_BALLOON_F_DEFLATE_ON_OOM,
	VIRTIO_BALLOON_F_TIMED,
};

static struct virtio_driver tballoon_driver = {
	.feature_table = tballoon_features,
	.feature_table_size = ARRAY_SIZE(tballoon_features),
	.driver.name = KBUILD_MODNAME,
	.driver.owner = THIS_MODULE,
	.id_table = tballoon_id_table,
	.validate = tballoon_validate,
	.probe = tballoon_probe,
	.remove = tballoon_remove,
	.config_changed = tballoon_config_changed,
#ifdef CONFIG_PM_SLEEP
	.freeze = tballoon_freeze,
	.restore = tballoon_restore,
#endif
};

module_virtio_driver(tballoon_driver);
MODULE_DEVICE_TABLE(virtio, tballoon_id_table);
MODULE_DESCRIPTION("Timed virtio balloon driver");
MODULE_LICENSE("GPL");
