/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * tballoon.h - the driver's internal contract: struct tballoon, its locks,
 * and what each layer offers the ones above it
 *
 * Locks, outermost first:
 *  - @tb->lock (mutex): the virtqueues (add, kick, get_buf), the PFN
 *    buffers, the balloon lists and counts, @tb->broken. The worker takes it
 *    per batch (tballoon_run(): not while it allocates an inflate batch or
 *    pauses); the OOM notifier and remove/freeze take it; migration only
 *    tries it. Never held across a page allocation, a flush of other work or a
 *    wait for anything but the device, which is bounded
 *    (tballoon_wait_device()).
 *  - @tb->bdi.pages_lock (spinlock, irqsave): the balloon page list, inside
 *    @tb->lock.
 *  - @tb->stop_lock (spinlock, irq-safe): @removing, @suspending, @changed;
 *    taken from the config callback with interrupts off, never held across
 *    anything that sleeps.
 *  - @tb->hint_lock (spinlock): @hint_pages and @hint_blocks; taken by the
 *    hint work, the shrinker and the worker, never with another lock held
 *    and never across anything that sleeps.
 * Free page reporting (tballoon_report.c) takes none of these: the kernel's
 * page_reporting work calls it one report at a time, and it alone uses
 * @report_vq. The hint work (tballoon_hint.c) alone uses @hint_vq.
 * Worker-owned, no lock: @run, @next, @have_next, @last_cmd_id, @report_seq
 * (remove() and freeze() use them once the worker cannot run).
 */
#ifndef TBALLOON_H
#define TBALLOON_H

#include <linux/balloon_compaction.h>
#include <linux/ktime.h>
#include <linux/list.h>
#include <linux/log2.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/notifier.h>
#include <linux/page_reporting.h>
#include <linux/shrinker.h>
#include <linux/sizes.h>
#include <linux/spinlock.h>
#include <linux/virtio.h>
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
/* transient send failures (-ENOMEM) a run retries before the device is broken */
#define TBALLOON_SEND_RETRIES		10
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
/*
 * FREE_PAGE_HINT: order of a hinted block, pageblock-sized (2 MiB on x86)
 * as the balloon's own blocks; allocated from free memory only, never with
 * reclaim or the emergency reserves.
 */
#define TBALLOON_HINT_ORDER		min_t(unsigned int, pageblock_order, \
					      TBALLOON_BLOCK_MAX_ORDER)
#define TBALLOON_HINT_GFP		((GFP_KERNEL | __GFP_NOWARN | \
					  __GFP_NOMEMALLOC) & ~__GFP_RECLAIM)
/* free_page_hint_cmd_id values with a fixed meaning (virtio spec 5.5.6.7) */
#define TBALLOON_HINT_CMD_STOP		0
#define TBALLOON_HINT_CMD_DONE		1
/* @hint_flags bit: free_page_hint_cmd_id must be read again */
#define TBALLOON_HINT_REREAD		0
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

/* module parameters (virtio_tballoon.c), read at the start of each run */
extern bool tballoon_param_blocks;
extern unsigned int tballoon_param_threads;
extern bool tballoon_param_skip_zero;

/**
 * struct tballoon_buf - one buffer of PFNs for the inflate or deflate queue
 * @pfns: 4 KiB PFNs in the device's byte order (virtio 1.0: little-endian;
 *	a legacy device: the guest's); kmalloc'ed so the device can read it
 * @vdev: the device, for that byte order
 * @num_pfns: entries of @pfns in use; 0 when the buffer is free
 * @pages: the single guest pages behind @pfns, linked through page->lru
 * @blocks: the blocks behind @pfns (first pages, linked through page->lru)
 * @inflate: last sent to the inflate queue (else the deflate queue)
 * @in_flight: added to its queue and not yet returned by the device
 * @acked: the device returned it (used it); false while in flight, when it
 *	never reached the device, or came back only because the queue broke
 */
struct tballoon_buf {
	__virtio32 *pfns;
	struct virtio_device *vdev;
	unsigned int num_pfns;
	struct list_head pages;
	struct list_head blocks;
	bool inflate;
	bool in_flight;
	bool acked;
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
 * @gentle: TBALLOON_FLAG_GENTLE inflate: only helpers allocate blocks, at
 *	the lowest priority (tballoon_fill_blocks())
 * @block_gfp: TBALLOON_BLOCK_GFP, plus TBALLOON_GFP_NO_INIT with skip_zero
 * @state: TBALLOON_STATE_* outcome (RUNNING while it runs)
 * @reason: TBALLOON_REASON_* detail of @state
 * @wait_ms: paced: how long to wait before the next batch is due
 * @send_retries: transient send failures (-ENOMEM) so far
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
	bool gentle;
	gfp_t block_gfp;
	u32 state;
	u32 reason;
	u32 wait_ms;
	u32 send_retries;
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
 * @hint_vq: free_page_vq (VIRTIO_BALLOON_F_FREE_PAGE_HINT) or NULL; used
 *	only by @hint_work
 * @report_vq: reporting_vq (VIRTIO_BALLOON_F_REPORTING) or NULL; used only
 *	by tballoon_report_pages(), which the kernel calls one at a time
 * @pr_dev: free page reporting registration (@pr_registered)
 * @pr_registered: @pr_dev is registered with the kernel
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
 * @hint_work: one free page hinting pass per command id of the device
 * @hint_lock: protects @hint_pages and @hint_blocks
 * @hint_pages: hinted blocks the guest holds until the device says DONE
 *	(first pages, linked through page->lru), so that a pass hints others
 * @hint_blocks: blocks on @hint_pages
 * @hint_shrinker: gives @hint_pages back under memory pressure
 * @hint_cmd_id: the device's command id the last pass started for; owned
 *	by @hint_work
 * @hint_cmd_cached: free_page_hint_cmd_id as last read; owned by @hint_work
 * @hint_flags: TBALLOON_HINT_REREAD: the config changed since that read
 * @hint_yield: an inflate runs: hinting stops taking free memory from it
 * @hint_id_start: buffer of the id that opens a pass (device byte order)
 * @hint_id_stop: buffer of the STOP id that closes it
 * @poison: VIRTIO_BALLOON_F_PAGE_POISON negotiated: the guest poisons or
 *	zeroes freed pages and told the device the value (poison_val)
 * @acked: woken by the virtqueue callbacks when the device used a buffer
 * @lock: protects @inflate_vq, @deflate_vq (add, kick, get_buf), @bufs,
 *	@mig_buf, @mig_pfns, @oom_buf, @blocks, @num_pages, @inflight_pages,
 *	@broken. The worker takes it per batch (see tballoon_run());
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
	struct virtqueue *hint_vq;
	struct virtqueue *report_vq;
	struct page_reporting_dev_info pr_dev;
	bool pr_registered;
	bool poison;
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

	struct work_struct hint_work;
	spinlock_t hint_lock;		/* protects hint_pages, hint_blocks */
	struct list_head hint_pages;
	unsigned long hint_blocks;
	struct tballoon_shrinker hint_shrinker;
	u32 hint_cmd_id;
	u32 hint_cmd_cached;
	unsigned long hint_flags;
	bool hint_yield;
	__virtio32 hint_id_start;
	__virtio32 hint_id_stop;

	wait_queue_head_t acked;

	struct mutex lock;		/* protects the vqs, buffers, counts */
	struct tballoon_buf bufs[TBALLOON_NR_BUFS];
	struct tballoon_buf mig_buf;
	__virtio32 mig_pfns[TBALLOON_PAGES_PER_PAGE];
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

/* tballoon_vq.c: buffers; all with @tb->lock held */
void tballoon_buf_add_pfns(struct tballoon_buf *buf, struct page *page);
void tballoon_buf_add_range(struct tballoon_buf *buf, struct page *page,
			    unsigned long nr_pages);
void tballoon_complete_returned(struct tballoon *tb);
void tballoon_release(struct tballoon *tb);
int tballoon_deflate_sync(struct tballoon *tb, struct tballoon_buf *buf, u32 n);
void tballoon_drain(struct tballoon *tb);
struct tballoon_buf *tballoon_free_buf(struct tballoon *tb);
struct tballoon_buf *tballoon_busy_buf(struct tballoon *tb);
int tballoon_send(struct tballoon *tb, bool inflate, struct tballoon_buf *buf);
void tballoon_unfill(struct tballoon *tb, struct tballoon_buf *buf,
		     bool inflate);
bool tballoon_wait_device(struct tballoon *tb, struct tballoon_buf *buf);
#ifdef CONFIG_BALLOON_COMPACTION
int tballoon_send_page_sync(struct tballoon *tb, bool inflate, struct page *page);
#endif

/* tballoon_blocks.c: blocks and migration */
int tballoon_fill_blocks(struct tballoon *tb, struct tballoon_buf *buf, u32 n);
void tballoon_helper_work(struct work_struct *work);
void tballoon_split_block(struct tballoon *tb);
void tballoon_block_join(struct tballoon *tb, struct page *page);
void tballoon_block_leave(struct tballoon *tb, struct page *page);
#ifdef CONFIG_BALLOON_COMPACTION
int tballoon_migratepage(struct balloon_dev_info *bdi, struct page *newpage,
			 struct page *page, enum migrate_mode mode);
#endif

/* tballoon_engine.c: runs; tballoon_run() without @tb->lock, the rest with it */
u64 tballoon_direct_reclaims(void);
u32 tballoon_fill_check(struct tballoon *tb, u32 extra);
int tballoon_fill_deflate(struct tballoon *tb, struct tballoon_buf *buf, u32 n);
int tballoon_fill_inflate(struct tballoon *tb, struct tballoon_buf *buf, u32 n);
void tballoon_run(struct tballoon *tb);

/* tballoon_cmd.c: config space, stop flags, the worker */
void tballoon_config_changed(struct virtio_device *vdev);
u32 tballoon_elapsed_ms(const struct tballoon_run *run);
bool tballoon_interrupted(struct tballoon *tb);
void tballoon_kick(struct tballoon *tb);
bool tballoon_read_cmd(struct tballoon *tb, struct tballoon_cmd *cmd);
bool tballoon_removing(struct tballoon *tb);
void tballoon_report(struct tballoon *tb, bool full);
bool tballoon_take_changed(struct tballoon *tb);
bool tballoon_change_is_noise(struct tballoon *tb);
void tballoon_work(struct work_struct *work);
void tballoon_write_actual(struct tballoon *tb);

/*
 * tballoon_fault.c: fault injection for tests (CONFIG_FAULT_INJECTION_DEBUG_FS:
 * /sys/kernel/debug/virtio_tballoon/fail_*, Documentation/fault-injection);
 * without it tballoon_should_fail() is false and nothing is created.
 */
enum tballoon_fail {
	TBALLOON_FAIL_INIT_VQS,		/* fail_init_vqs: queue set-up */
	TBALLOON_FAIL_SEND,		/* fail_send: adding a PFN buffer */
	TBALLOON_FAIL_NR,
};

#ifdef CONFIG_FAULT_INJECTION_DEBUG_FS
bool tballoon_should_fail(enum tballoon_fail which);
void tballoon_fault_init(void);
void tballoon_fault_exit(void);
#else
static inline bool tballoon_should_fail(enum tballoon_fail which)
{
	return false;
}

static inline void tballoon_fault_init(void) { }
static inline void tballoon_fault_exit(void) { }
#endif

/* tballoon_report.c: free page reporting (VIRTIO_BALLOON_F_REPORTING) */
int tballoon_report_start(struct tballoon *tb);
void tballoon_report_stop(struct tballoon *tb);

/* tballoon_hint.c: free page hinting (VIRTIO_BALLOON_F_FREE_PAGE_HINT) */
int tballoon_hint_init(struct tballoon *tb);
void tballoon_hint_exit(struct tballoon *tb);
void tballoon_hint_changed(struct tballoon *tb);
void tballoon_hint_release(struct tballoon *tb);

/* tballoon_stats.c: the statistics queue */
void tballoon_stats_request(struct virtqueue *vq);
void tballoon_stats_send(struct tballoon *tb);
void tballoon_stats_work(struct work_struct *work);

#endif /* TBALLOON_H */
