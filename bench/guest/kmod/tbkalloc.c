// SPDX-License-Identifier: GPL-2.0
/*
 * tbkalloc - in-kernel limit for the balloon benchmark.
 *
 *   insmod tbkalloc.ko pages=N [sample_ms=MS] [threads=T] [order=9 [skip_zero=1]]
 *
 * Allocates N pages the way a balloon driver does (balloon_page_alloc(): no
 * retry, no warning, no emergency reserves; with order=O, blocks of 2^O pages
 * the way virtio_tballoon allocates its inflate's blocks, no reclaim, then
 * single pages once no block is free; skip_zero=1 adds __GFP_SKIP_ZERO on
 * a kernel carrying the driver's patch, where init_on_alloc then leaves the
 * blocks alone as it does the driver's), keeps them on a list, then
 * frees them all, and times both loops with ktime_get(). With threads=T the
 * allocation is split over T kernel threads, at most one per CPU (each keeps its own
 * list; the time is until the last one finishes): what a driver allocating
 * on several CPUs can reach. Freeing stays on one CPU. No virtqueue, no
 * config space, no host: what page allocation alone costs the guest. Prints
 *
 *   tbkalloc: sample alloc|free T_US PAGES    (about every sample_ms)
 *   tbkalloc: pages N alloc_us A free_us F
 *
 * then stays loaded, doing nothing, until rmmod (an init that fails makes
 * busybox insmod retry through init_module(), which would run it twice).
 */
#include <linux/balloon_compaction.h>
#include <linux/gfp.h>
#include <linux/kernel.h>
#include <linux/completion.h>
#include <linux/kthread.h>
#include <linux/ktime.h>
#include <linux/list.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/sched.h>
#include <linux/slab.h>

static unsigned long pages = 262144;
module_param(pages, ulong, 0444);
MODULE_PARM_DESC(pages, "pages to allocate and free (default 262144 = 1 GiB)");

static unsigned int sample_ms = 20;
module_param(sample_ms, uint, 0444);
MODULE_PARM_DESC(sample_ms, "progress sample interval in ms (default 20)");

static unsigned int threads = 1;
module_param(threads, uint, 0444);
MODULE_PARM_DESC(threads, "allocating threads, one per CPU (default 1)");

static unsigned int order;
module_param(order, uint, 0444);
MODULE_PARM_DESC(order, "allocate blocks of 2^order pages first (default 0: single pages)");

static bool skip_zero;
module_param(skip_zero, bool, 0444);
MODULE_PARM_DESC(skip_zero, "blocks skip init_on_alloc, on a kernel with the driver's patch");

/* virtio_tballoon's block allocation (driver/tballoon.h TBALLOON_BLOCK_GFP) */
#define TBK_BLOCK_GFP	((GFP_USER | __GFP_MOVABLE | __GFP_NOWARN | __GFP_NOMEMALLOC) & \
			 ~__GFP_RECLAIM)
#ifdef TBK_HAVE_GFP_SKIP_ZERO
#define TBK_GFP_NO_INIT	__GFP_SKIP_ZERO
#else
#define TBK_GFP_NO_INIT	((__force gfp_t)0)
#endif

/* the largest order on x86 with 6.1's and 6.12's defaults (4 MiB) */
#define TBK_MAX_BLOCK_ORDER 10
#define TBK_MAX_SAMPLES 2048
#define TBK_MAX_THREADS 64

struct tbk_thread {
	unsigned long want;
	unsigned long got;
	struct list_head list;		/* single pages */
	struct list_head blocks;	/* blocks of 2^order pages */
	struct completion done;
};

static struct tbk_thread tbk_threads[TBK_MAX_THREADS];
static atomic_long_t tbk_allocated;

struct tbk_sample {
	char phase;
	s64 t_us;
	unsigned long pages;
};

static struct tbk_sample *samples;
static unsigned int nsamples;

static void tbk_record(char phase, s64 t_us, unsigned long n)
{
	if (nsamples < TBK_MAX_SAMPLES)
		samples[nsamples++] = (struct tbk_sample){ phase, t_us, n };
}

/*
 * Allocate @th's share on to its own list; @t0 non-NULL: also record a
 * sample of the total about every sample_ms (the first thread does).
 */
static void tbk_alloc_share(struct tbk_thread *th, const ktime_t *t0)
{
	s64 interval_us = (s64)sample_ms * 1000, last = 0, t;
	unsigned long step, reported = 0;
	bool blocks = order && order <= TBK_MAX_BLOCK_ORDER;
	gfp_t gfp = TBK_BLOCK_GFP | (skip_zero ? TBK_GFP_NO_INIT : 0);
	struct page *page;

	for (th->got = 0; th->got < th->want; th->got += step) {
		page = NULL;
		step = 1;
		if (blocks && th->want - th->got >= (1UL << order)) {
			page = alloc_pages(gfp, order);
			if (page) {
				list_add(&page->lru, &th->blocks);
				step = 1UL << order;
			} else {
				blocks = false;	/* none left: single pages from here */
			}
		}
		if (!page) {
			page = balloon_page_alloc();
			if (!page)
				break;
			list_add(&page->lru, &th->list);
		}
		if (th->got + step - reported < 512)
			continue;
		atomic_long_add(th->got + step - reported, &tbk_allocated);
		reported = th->got + step;
		cond_resched();
		if (!t0)
			continue;
		t = ktime_us_delta(ktime_get(), *t0);
		if (t - last >= interval_us) {
			tbk_record('a', t, atomic_long_read(&tbk_allocated));
			last = t;
		}
	}
}

/* One allocating thread besides the first. */
static int tbk_alloc_thread(void *arg)
{
	struct tbk_thread *th = arg;

	tbk_alloc_share(th, NULL);
	complete(&th->done);
	return 0;
}

static int __init tbkalloc_init(void)
{
	s64 interval_us = (s64)sample_ms * 1000, alloc_us, free_us, last, t;
	unsigned int i, nthreads;
	struct page *page, *next;
	struct task_struct *task;
	struct tbk_thread *th;
	unsigned long n, left;
	ktime_t t0;
	LIST_HEAD(list);
	LIST_HEAD(blocks);

	samples = kcalloc(TBK_MAX_SAMPLES, sizeof(*samples), GFP_KERNEL);
	if (!samples)
		return -ENOMEM;

	nthreads = clamp_t(unsigned int, threads, 1,
			   min_t(unsigned int, num_online_cpus(), TBK_MAX_THREADS));
	for (i = 0; i < nthreads; i++) {
		th = &tbk_threads[i];
		th->want = pages / nthreads + (i < pages % nthreads);
		th->got = 0;
		INIT_LIST_HEAD(&th->list);
		INIT_LIST_HEAD(&th->blocks);
		init_completion(&th->done);
	}
	atomic_long_set(&tbk_allocated, 0);

	t0 = ktime_get();
	tbk_record('a', 0, 0);
	for (i = 1; i < nthreads; i++) {
		task = kthread_create(tbk_alloc_thread, &tbk_threads[i],
				      "tbkalloc/%u", i);
		if (IS_ERR(task)) {
			complete(&tbk_threads[i].done);
			continue;
		}
		wake_up_process(task);
	}
	/* thread 0 is this one; it also takes the samples */
	tbk_alloc_share(&tbk_threads[0], &t0);
	for (i = 1; i < nthreads; i++)
		wait_for_completion(&tbk_threads[i].done);
	for (n = 0, i = 0; i < nthreads; i++) {
		n += tbk_threads[i].got;
		list_splice_init(&tbk_threads[i].list, &list);
		list_splice_init(&tbk_threads[i].blocks, &blocks);
	}
	alloc_us = ktime_us_delta(ktime_get(), t0);
	tbk_record('a', alloc_us, n);

	t0 = ktime_get();
	last = 0;
	left = n;
	tbk_record('f', 0, left);
	list_for_each_entry_safe(page, next, &blocks, lru) {
		list_del(&page->lru);
		__free_pages(page, order);
		left -= 1UL << order;
		cond_resched();
	}
	list_for_each_entry_safe(page, next, &list, lru) {
		list_del(&page->lru);
		__free_page(page);
		if (--left % 512 == 0) {
			cond_resched();
			t = ktime_us_delta(ktime_get(), t0);
			if (t - last >= interval_us) {
				tbk_record('f', t, left);
				last = t;
			}
		}
	}
	free_us = ktime_us_delta(ktime_get(), t0);
	tbk_record('f', free_us, 0);

	for (i = 0; i < nsamples; i++)
		pr_info("tbkalloc: sample %s %lld %lu\n",
			samples[i].phase == 'a' ? "alloc" : "free",
			samples[i].t_us, samples[i].pages);
	pr_info("tbkalloc: threads %u order %u skip_zero %d\n", nthreads, order,
		skip_zero && TBK_GFP_NO_INIT);
	pr_info("tbkalloc: pages %lu alloc_us %lld free_us %lld\n", n, alloc_us,
		free_us);
	kfree(samples);
	return 0;
}

static void __exit tbkalloc_exit(void)
{
}

module_init(tbkalloc_init);
module_exit(tbkalloc_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("tballoon bench: in-kernel page allocation limit");
