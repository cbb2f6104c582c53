// SPDX-License-Identifier: GPL-2.0
/*
 * tbkalloc - in-kernel limit for the balloon benchmark.
 *
 *   insmod tbkalloc.ko pages=N [sample_ms=MS]
 *
 * Allocates N pages the way a balloon driver does (balloon_page_alloc(): no
 * retry, no warning, no emergency reserves), keeps them on a list, then
 * frees them all, and times both loops with ktime_get(). No virtqueue, no
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

#define TBK_MAX_SAMPLES 2048

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

static int __init tbkalloc_init(void)
{
	s64 interval_us = (s64)sample_ms * 1000, alloc_us, free_us, last, t;
	struct page *page, *next;
	unsigned long n, left;
	ktime_t t0;
	LIST_HEAD(list);
	unsigned int i;

	samples = kcalloc(TBK_MAX_SAMPLES, sizeof(*samples), GFP_KERNEL);
	if (!samples)
		return -ENOMEM;

	t0 = ktime_get();
	last = 0;
	tbk_record('a', 0, 0);
	for (n = 0; n < pages; n++) {
		page = balloon_page_alloc();
		if (!page)
			break;
		list_add(&page->lru, &list);
		if (n % 512 == 511) {
			cond_resched();
			t = ktime_us_delta(ktime_get(), t0);
			if (t - last >= interval_us) {
				tbk_record('a', t, n + 1);
				last = t;
			}
		}
	}
	alloc_us = ktime_us_delta(ktime_get(), t0);
	tbk_record('a', alloc_us, n);

	t0 = ktime_get();
	last = 0;
	left = n;
	tbk_record('f', 0, left);
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
