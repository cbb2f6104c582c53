// SPDX-License-Identifier: GPL-2.0-only
/*
 * tballoon_stats.c - statistics (VIRTIO_BALLOON_F_STATS_VQ)
 *
 * Owns @tb->stats and @tb->stats_vq: the device holds one buffer of the
 * standard tags and returns it to ask for fresh values; @tb->stats_work
 * refills and returns it.
 *
 * Locks: none of @tb->lock; @tb->stats_work is the only user of the queue
 * after start. The queue callback takes @tb->stop_lock to queue the work.
 */

#include <linux/mm.h>
#include <linux/scatterlist.h>
#include <linux/vmstat.h>
#include <linux/virtio_config.h>

#include "tballoon.h"

static void tballoon_stat(struct tballoon *tb, unsigned int i, u16 tag,
			  u64 val)
{
	tb->stats[i].tag = cpu_to_virtio16(tb->vdev, tag);
	tb->stats[i].val = cpu_to_virtio64(tb->vdev, val);
}

/*
 * The reclaim tags (10-15), where the kernel's virtio_balloon.h defines
 * them (6.12; the 6.1 header stops at 9 and they are absent there, as with
 * the standard driver on that kernel). Scans and reclaims in bytes:
 * "async" is the background reclaimers (kswapd, khugepaged), "direct" the
 * allocating tasks; stalls count direct reclaim entries in all zones.
 */
static unsigned int tballoon_stats_reclaim(struct tballoon *tb, unsigned int i,
					   const unsigned long *ev)
{
#if defined(VIRTIO_BALLOON_S_DIRECT_RECLAIM) && defined(CONFIG_VM_EVENT_COUNTERS)
	unsigned int first = i, zid;
	u64 stalls = 0;

	for (zid = 0; zid < MAX_NR_ZONES; zid++)
		stalls += ev[ALLOCSTALL_NORMAL - ZONE_NORMAL + zid];
	tballoon_stat(tb, i++, VIRTIO_BALLOON_S_OOM_KILL, ev[OOM_KILL]);
	tballoon_stat(tb, i++, VIRTIO_BALLOON_S_ALLOC_STALL, stalls);
	tballoon_stat(tb, i++, VIRTIO_BALLOON_S_ASYNC_SCAN,
		      (u64)(ev[PGSCAN_KSWAPD] + ev[PGSCAN_KHUGEPAGED]) << PAGE_SHIFT);
	tballoon_stat(tb, i++, VIRTIO_BALLOON_S_DIRECT_SCAN,
		      (u64)ev[PGSCAN_DIRECT] << PAGE_SHIFT);
	tballoon_stat(tb, i++, VIRTIO_BALLOON_S_ASYNC_RECLAIM,
		      (u64)(ev[PGSTEAL_KSWAPD] + ev[PGSTEAL_KHUGEPAGED]) << PAGE_SHIFT);
	tballoon_stat(tb, i++, VIRTIO_BALLOON_S_DIRECT_RECLAIM,
		      (u64)ev[PGSTEAL_DIRECT] << PAGE_SHIFT);
	return i - first;
#else
	return 0;
#endif
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
	i += tballoon_stats_reclaim(tb, i, ev);
	return i;
}

/* Hand the device fresh statistics. Only @stats_work and start call this. */
void tballoon_stats_send(struct tballoon *tb)
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

void tballoon_stats_work(struct work_struct *work)
{
	struct tballoon *tb = container_of(work, struct tballoon, stats_work);
	unsigned int len;

	/* The device returns the buffer to ask for fresh statistics. */
	if (tb->stats_vq && virtqueue_get_buf(tb->stats_vq, &len))
		tballoon_stats_send(tb);
}

/* statsq callback (interrupt context): the device wants statistics. */
void tballoon_stats_request(struct virtqueue *vq)
{
	struct tballoon *tb = vq->vdev->priv;
	unsigned long flags;

	spin_lock_irqsave(&tb->stop_lock, flags);
	if (!tb->removing)
		queue_work(system_freezable_wq, &tb->stats_work);
	spin_unlock_irqrestore(&tb->stop_lock, flags);
}
