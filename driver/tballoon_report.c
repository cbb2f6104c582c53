// SPDX-License-Identifier: GPL-2.0-only
/*
 * tballoon_report.c - free page reporting (VIRTIO_BALLOON_F_REPORTING)
 *
 * Owns @tb->report_vq and @tb->pr_dev. The kernel's page reporting
 * (mm/page_reporting.c) takes free pages of at least @pr_dev.order off the
 * free lists, calls tballoon_report_pages() with them as a scatterlist, and
 * puts them back marked "reported" once it returns; the device discards
 * what each entry covers (its contents read as zero, or as poison_val, the
 * next time the guest uses it). The guest keeps the pages: they are free
 * memory, never balloon pages, and never enter @tb->num_pages or `actual`,
 * so a report never touches a timed command's accounting.
 *
 * Locks: none of the balloon's. The kernel calls tballoon_report_pages()
 * from one work item, one report at a time, and no one else uses
 * @report_vq; it waits on @tb->acked, which the queue's callback wakes.
 */

#include <linux/page_reporting.h>
#include <linux/scatterlist.h>
#include <linux/virtio_config.h>

#include "tballoon.h"

/*
 * Hand one scatterlist of free pages to the device and wait until it used
 * it. The wait is bounded: a device that keeps the buffer for
 * TBALLOON_ACK_TIMEOUT_MS is broken (virtio_break_device()), and the
 * pages go back to the free lists unreported. Only a device that is alive
 * but wrong could still discard them after that, and such a device can
 * write any guest memory anyway.
 */
static int tballoon_report_pages(struct page_reporting_dev_info *pr,
				 struct scatterlist *sg, unsigned int nents)
{
	struct tballoon *tb = container_of(pr, struct tballoon, pr_dev);
	struct virtqueue *vq = tb->report_vq;
	unsigned int len;
	long left;
	int err;

	if (virtqueue_is_broken(vq))
		return -EIO;
	/* device-writable, as the standard driver adds them */
	err = virtqueue_add_inbuf(vq, sg, nents, tb, GFP_NOWAIT | __GFP_NOWARN);
	if (err)
		return err;
	virtqueue_kick(vq);
	left = wait_event_timeout(tb->acked, virtqueue_get_buf(vq, &len) ||
				  virtqueue_is_broken(vq),
				  msecs_to_jiffies(TBALLOON_ACK_TIMEOUT_MS));
	if (virtqueue_is_broken(vq))
		return -EIO;
	if (!left) {
		dev_err(&tb->vdev->dev,
			"the device kept a free page report for %u ms: broken\n",
			TBALLOON_ACK_TIMEOUT_MS);
		virtio_break_device(tb->vdev);
		wake_up(&tb->acked);
		return -EIO;
	}
	return 0;
}

/**
 * tballoon_report_start() - start free page reporting
 * @tb: the balloon, its queues set up and the device ready
 *
 * Registers with the kernel's page reporting when REPORTING was negotiated.
 * Only one device of the guest can report: a second one, or a queue too
 * small for a report, runs without it (the device then simply gets none).
 *
 * Return: 0; reporting is an optimisation, its absence is not an error.
 */
int tballoon_report_start(struct tballoon *tb)
{
	int err;

	if (!tb->report_vq)
		return 0;
	if (virtqueue_get_vring_size(tb->report_vq) < PAGE_REPORTING_CAPACITY) {
		dev_warn(&tb->vdev->dev,
			 "reporting queue of %u entries, %u needed: no free page reporting\n",
			 virtqueue_get_vring_size(tb->report_vq),
			 PAGE_REPORTING_CAPACITY);
		return 0;
	}
	tb->pr_dev.report = tballoon_report_pages;
	/* 0: the kernel's default order (a pageblock, 2 MiB on x86) */
	tb->pr_dev.order = 0;
	err = page_reporting_register(&tb->pr_dev);
	if (err) {
		dev_warn(&tb->vdev->dev,
			 "free page reporting not started: %d (another device reports?)\n",
			 err);
		return 0;
	}
	tb->pr_registered = true;
	return 0;
}

/*
 * tballoon_report_stop() - stop free page reporting (remove, freeze)
 * @tb: the balloon, its queues still set up
 *
 * Waits for a report in progress to end, which is bounded by
 * tballoon_report_pages(); none starts after this returns.
 */
void tballoon_report_stop(struct tballoon *tb)
{
	if (!tb->pr_registered)
		return;
	page_reporting_unregister(&tb->pr_dev);
	tb->pr_registered = false;
}
