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
 * stays in MemTotal, as upstream), REPORTING (free memory handed back to
 * the host as the kernel finds it), FREE_PAGE_HINT (free memory a live
 * migration need not send), PAGE_POISON (the value freed pages hold),
 * balloon page migration for compaction.
 *
 * This file owns the device's life: module parameters, the feature table,
 * probe, remove, freeze and restore, the virtqueues' set-up, and the PM,
 * reboot and OOM notifiers. struct tballoon and the locking rules are in
 * tballoon.h. The other files, bottom up:
 *  - tballoon_vq.c: PFN buffers through the inflate and deflate queues;
 *  - tballoon_blocks.c: 2 MiB blocks, their helpers, page migration (a
 *    block fill asks the engine's tballoon_fill_check() between blocks);
 *  - tballoon_engine.c: one run of the balloon towards a target;
 *  - tballoon_cmd.c: on top, the worker that turns config space into runs;
 *    below everything, the config accessors, reports and stop flags that
 *    every layer uses;
 *  - tballoon_stats.c: the statistics queue, on its own;
 *  - tballoon_report.c, tballoon_hint.c: free page reporting and hinting,
 *    each with its own queue, beside the balloon (never balloon pages).
 * Decisions (validity, batch size, stop, pacing) are in tballoon_policy.c.
 *
 * Locks: probe and restore run before the worker can; remove and freeze
 * stop it (tballoon_stop_worker(), the frozen workqueue) before they touch
 * the balloon, and take @tb->lock for it. The OOM notifier takes @tb->lock.
 */

#include <linux/balloon_compaction.h>
#include <linux/delay.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/oom.h>
#include <linux/pci.h>
#include <linux/poison.h>
#include <linux/reboot.h>
#include <linux/slab.h>
#include <linux/suspend.h>
#include <linux/virtio_config.h>
#include <linux/virtio_pci.h>

#include "tballoon.h"

/*
 * Inflate in blocks. Blocks are not migratable: a balloon made only of
 * blocks gives compaction nothing to move (and needs nothing moved: each
 * block is a whole pageblock). Read at the start of each run.
 */
bool tballoon_param_blocks = true;
module_param_named(blocks, tballoon_param_blocks, bool, 0644);
MODULE_PARM_DESC(blocks, "inflate in 2 MiB blocks while free memory has them (default: on)");

/*
 * Allocate an inflate's blocks without init_on_alloc's zeroing, on a kernel
 * that lets any caller ask for that (driver/patches/, TBALLOON_GFP_NO_INIT
 * in tballoon_compat.h); no effect on any other kernel. The pages go to the
 * host unread, and come back through the page allocator, which initialises
 * them for their next user.
 */
bool tballoon_param_skip_zero = true;
module_param_named(skip_zero, tballoon_param_skip_zero, bool, 0644);
MODULE_PARM_DESC(skip_zero, "inflate's blocks not zeroed on allocation, on a kernel with the __GFP_SKIP_ZERO patch (default: on; no effect elsewhere)");

/*
 * CPUs that allocate the blocks of one inflate batch: the worker and up to
 * threads - 1 helpers on system_unbound_wq. Zeroing the pages
 * (init_on_alloc), and on the host faulting in the pages that a deflate left
 * as holes, is most of what an inflate costs; both scale with CPUs. Capped
 * by the online CPUs; values outside 1 to 1 + TBALLOON_HELPERS_MAX are
 * refused (insmod fails, a write to the parameter returns -EINVAL). Read at
 * the start of each run.
 */
unsigned int tballoon_param_threads = 2;

/* threads: 1 to 1 + TBALLOON_HELPERS_MAX, anything else is refused */
static int tballoon_threads_set(const char *val, const struct kernel_param *kp)
{
	unsigned int n;
	int err = kstrtouint(val, 0, &n);

	if (err)
		return err;
	if (n < 1 || n > 1 + TBALLOON_HELPERS_MAX)
		return -EINVAL;
	WRITE_ONCE(*(unsigned int *)kp->arg, n);
	return 0;
}

static const struct kernel_param_ops tballoon_threads_ops = {
	.set = tballoon_threads_set,
	.get = param_get_uint,
};

module_param_cb(threads, &tballoon_threads_ops, &tballoon_param_threads, 0644);
MODULE_PARM_DESC(threads, "CPUs that allocate the blocks of an inflate, 1 to 4 (default 2; more than the online CPUs counts as all of them)");

static const struct virtio_device_id tballoon_id_table[] = {
	{ VIRTIO_TBALLOON_DEVICE_ID, VIRTIO_DEV_ANY_ID },
	{ 0 },
};

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
	case PM_RESTORE_PREPARE:	/* a hibernation image is about to be loaded */
		suspending = true;
		break;
	case PM_POST_SUSPEND:
	case PM_POST_HIBERNATION:
	case PM_POST_RESTORE:
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

/*
 * Set up the queues (probe, restore). Fails on purpose when the fault
 * attribute fail_init_vqs says so (tballoon_fault.c), so that a failed
 * restore can be tested: the debug lane's driver-restore-fails.
 */
static int tballoon_init_vqs(struct tballoon *tb)
{
	static const struct {
		struct tballoon_vq_info info;
		unsigned int feature;		/* 0: always there */
	} all[VIRTIO_TBALLOON_VQ_MAX] = {
		[VIRTIO_TBALLOON_VQ_INFLATE] = { { "inflate", tballoon_ack }, 0 },
		[VIRTIO_TBALLOON_VQ_DEFLATE] = { { "deflate", tballoon_ack }, 0 },
		[VIRTIO_TBALLOON_VQ_STATS] = { { "stats", tballoon_stats_request },
					       VIRTIO_BALLOON_F_STATS_VQ },
		[VIRTIO_TBALLOON_VQ_FREE_PAGE] = { { "free_page_vq", tballoon_ack },
						   VIRTIO_BALLOON_F_FREE_PAGE_HINT },
		[VIRTIO_TBALLOON_VQ_REPORTING] = { { "reporting_vq", tballoon_ack },
						   VIRTIO_BALLOON_F_REPORTING },
	};
	struct virtio_device *vdev = tb->vdev;
	struct tballoon_vq_info info[VIRTIO_TBALLOON_VQ_MAX];
	struct virtqueue *got[VIRTIO_TBALLOON_VQ_MAX];
	struct virtqueue *vqs[VIRTIO_TBALLOON_VQ_MAX] = {};
	unsigned int role[VIRTIO_TBALLOON_VQ_MAX];
	unsigned int i, n = 0;
	int err;

	BUILD_BUG_ON(ARRAY_SIZE(info) > TBALLOON_COMPAT_MAX_VQS);
	if (tballoon_should_fail(TBALLOON_FAIL_INIT_VQS))
		return -ENOMEM;
	/*
	 * Only the queues of negotiated features, packed: each takes the next
	 * index (proto/virtio_tballoon.h). Not NULL names for the absent ones:
	 * 6.12's virtio-pci gives them no index either, but then looks a
	 * queue's state up by its index on removal and finds the wrong one.
	 */
	for (i = 0; i < VIRTIO_TBALLOON_VQ_MAX; i++) {
		if (all[i].feature && !virtio_has_feature(vdev, all[i].feature))
			continue;
		info[n] = all[i].info;
		role[n++] = i;
	}
	err = tballoon_find_vqs(vdev, n, got, info);
	if (err)
		return err;
	for (i = 0; i < n; i++)
		vqs[role[i]] = got[i];
	tb->inflate_vq = vqs[VIRTIO_TBALLOON_VQ_INFLATE];
	tb->deflate_vq = vqs[VIRTIO_TBALLOON_VQ_DEFLATE];
	tb->stats_vq = vqs[VIRTIO_TBALLOON_VQ_STATS];
	tb->hint_vq = vqs[VIRTIO_TBALLOON_VQ_FREE_PAGE];
	tb->report_vq = vqs[VIRTIO_TBALLOON_VQ_REPORTING];
	tb->broken = false;
	return 0;
}

/*
 * Delete the queues (remove, freeze). Until tballoon_init_vqs() succeeds
 * again the device counts as broken and no queue pointer is left: a restore
 * that failed leaves a balloon that ends every run ABORTED/DEVICE_ERROR and
 * touches no freed queue. @tb->lock held, or the worker cannot run.
 */
static void tballoon_del_vqs(struct tballoon *tb)
{
	tb->vdev->config->del_vqs(tb->vdev);
	tb->broken = true;
	tb->inflate_vq = NULL;
	tb->deflate_vq = NULL;
	tb->stats_vq = NULL;
	tb->hint_vq = NULL;
	tb->report_vq = NULL;
}

/*
 * Does the guest poison or zero the pages it frees? Then a free page the
 * device discarded reads back wrong (zero, or not zero) unless the device
 * knows the value: PAGE_POISON and poison_val.
 */
static bool tballoon_guest_poisons(void)
{
	return want_init_on_free() || page_poisoning_enabled_static();
}

/* Start (probe, restore): read what survives in the device, then go. */
static void tballoon_start(struct tballoon *tb)
{
	if (tb->poison) {
		/* 0 when freed pages are zeroed, else PAGE_POISON in each byte */
		u32 val = 0;

		if (!want_init_on_free())
			memset(&val, PAGE_POISON, sizeof(val));
		virtio_cwrite_le(tb->vdev, struct virtio_tballoon_config,
				 poison_val, &val);
	}
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
	tballoon_report_start(tb);
	/* a migration may have started before the driver: look at the id */
	tballoon_hint_changed(tb);
	tballoon_kick(tb);
}

/*
 * Return the balloon's pages to the guest through the deflate queue, as
 * far as the device acknowledges them. The worker must not run. What is
 * left (a broken device, pages isolated for migration, a failed send) stays
 * in the balloon until the caller has reset the device: tballoon_release().
 */
static void tballoon_empty(struct tballoon *tb)
{
	mutex_lock(&tb->lock);
	while (tb->num_pages &&
	       tballoon_deflate_sync(tb, &tb->bufs[0],
				     min(tb->num_pages, TBALLOON_BUF_PFNS)) > 0)
		;
	tballoon_write_actual(tb);
	mutex_unlock(&tb->lock);
}

/*
 * VIRTIO_BALLOON_F_DEFLATE_ON_OOM: the guest ran out of memory; give it
 * TBALLOON_OOM_PAGES back instead of letting the OOM killer pick a victim.
 * Waits for the worker to let go of @tb->lock: at most one send or one
 * bounded wait for the device, never a whole run (the worker allocates
 * without the lock, and its allocations never enter the OOM path).
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

/*
 * Length of a virtio-pci device's config space: the length field of its
 * first device-config capability, as virtio_pci_modern maps it (it also
 * bounds it by the BAR, which a device offering a timed block does not
 * reach). U32_MAX when the transport is not PCI. Linux 6.1 has no config
 * size in the virtio API.
 */
static u32 tballoon_pci_config_len(struct virtio_device *vdev)
{
	struct device *parent = vdev->dev.parent;
	struct pci_dev *pdev;
	u32 len;
	u8 pos, type;

	if (!parent || !dev_is_pci(parent))
		return U32_MAX;
	pdev = to_pci_dev(parent);
	for (pos = pci_find_capability(pdev, PCI_CAP_ID_VNDR); pos;
	     pos = pci_find_next_capability(pdev, pos, PCI_CAP_ID_VNDR)) {
		pci_read_config_byte(pdev, pos + offsetof(struct virtio_pci_cap,
							  cfg_type), &type);
		if (type != VIRTIO_PCI_CAP_DEVICE_CFG)
			continue;
		pci_read_config_dword(pdev, pos + offsetof(struct virtio_pci_cap,
							   length), &len);
		return len;
	}
	return U32_MAX;
}

/*
 * Does config space reach the end of the timed block? Not if the
 * transport says it is shorter (virtio-pci would hit BUG_ON on access),
 * nor if the last word reads all ones: QEMU answers reads past a device's
 * config_len (vhost-user-test-device-pci,config_size=16) with ~0 and drops
 * the writes, and a block the device resets to 0 never holds ~0 in
 * report_seq before the driver's first report.
 */
static bool tballoon_timed_block_present(struct virtio_device *vdev, u32 *len)
{
	u32 seq;

	*len = tballoon_pci_config_len(vdev);
	if (*len < VIRTIO_TBALLOON_CONFIG_SIZE)
		return false;
	virtio_cread_le(vdev, struct virtio_tballoon_config, report_seq, &seq);
	return seq != U32_MAX;
}

static int tballoon_validate(struct virtio_device *vdev)
{
	u32 len;

	if (!vdev->config->get) {
		dev_err(&vdev->dev, "config access disabled\n");
		return -EINVAL;
	}
	/* The timed block is little-endian: modern devices only. */
	if (!virtio_has_feature(vdev, VIRTIO_F_VERSION_1))
		__virtio_clear_bit(vdev, VIRTIO_BALLOON_F_TIMED);
	/*
	 * A device offering TIMED with a config space too short for the
	 * timed block: every access to the block would hit virtio-pci's
	 * BUG_ON, or (QEMU) go nowhere, and no command would ever arrive. Run
	 * it as a standard balloon.
	 */
	if (virtio_has_feature(vdev, VIRTIO_BALLOON_F_TIMED) &&
	    !tballoon_timed_block_present(vdev, &len)) {
		if (len < VIRTIO_TBALLOON_CONFIG_SIZE)
			dev_warn(&vdev->dev,
				 "TIMED offered with %u bytes of config space (%u needed): standard balloon\n",
				 len, VIRTIO_TBALLOON_CONFIG_SIZE);
		else
			dev_warn(&vdev->dev,
				 "TIMED offered, but the timed block of config space reads all ones: standard balloon\n");
		__virtio_clear_bit(vdev, VIRTIO_BALLOON_F_TIMED);
	}
	/*
	 * Poisoned (or zeroed) free pages: reporting and hinting only when the
	 * device takes poison_val into account. The standard driver drops
	 * reporting only; a hinted page that the destination of a migration
	 * never received reads as zero there, so hinting goes too.
	 */
	if (!tballoon_guest_poisons()) {
		__virtio_clear_bit(vdev, VIRTIO_BALLOON_F_PAGE_POISON);
	} else if (!virtio_has_feature(vdev, VIRTIO_BALLOON_F_PAGE_POISON)) {
		if (virtio_has_feature(vdev, VIRTIO_BALLOON_F_REPORTING) ||
		    virtio_has_feature(vdev, VIRTIO_BALLOON_F_FREE_PAGE_HINT))
			dev_info(&vdev->dev,
				 "the guest poisons free pages and the device does not offer PAGE_POISON: no free page reporting or hinting\n");
		__virtio_clear_bit(vdev, VIRTIO_BALLOON_F_REPORTING);
		__virtio_clear_bit(vdev, VIRTIO_BALLOON_F_FREE_PAGE_HINT);
	}
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
	tb->poison = virtio_has_feature(vdev, VIRTIO_BALLOON_F_PAGE_POISON);
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
		tb->bufs[i].vdev = vdev;
		INIT_LIST_HEAD(&tb->bufs[i].pages);
		INIT_LIST_HEAD(&tb->bufs[i].blocks);
		tb->bufs[i].pfns = kmalloc_array(TBALLOON_BUF_PFNS,
						 sizeof(__virtio32), GFP_KERNEL);
		if (!tb->bufs[i].pfns) {
			err = -ENOMEM;
			goto err_free_bufs;
		}
	}
	INIT_LIST_HEAD(&tb->mig_buf.pages);
	INIT_LIST_HEAD(&tb->mig_buf.blocks);
	tb->mig_buf.pfns = tb->mig_pfns;
	tb->mig_buf.vdev = vdev;
	tb->oom_buf.vdev = vdev;
	INIT_LIST_HEAD(&tb->oom_buf.pages);
	INIT_LIST_HEAD(&tb->oom_buf.blocks);
	tb->oom_buf.pfns = kmalloc_array(TBALLOON_OOM_PAGES, sizeof(__virtio32),
					 GFP_KERNEL);
	if (!tb->oom_buf.pfns) {
		err = -ENOMEM;
		goto err_free_bufs;
	}

	err = tballoon_hint_init(tb);
	if (err)
		goto err_free_bufs;
	err = tballoon_init_vqs(tb);
	if (err)
		goto err_hint;

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
	if (TBALLOON_CAN_SKIP_ZERO)
		dev_info(&vdev->dev, "blocks may skip init_on_alloc (skip_zero=%d)\n",
			 READ_ONCE(tballoon_param_skip_zero));
	return 0;

err_reboot:
	unregister_reboot_notifier(&tb->reboot_nb);
err_pm:
	unregister_pm_notifier(&tb->pm_nb);
err_del_vqs:
	vdev->config->del_vqs(vdev);
err_hint:
	tballoon_hint_exit(tb);
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
	tballoon_report_stop(tb);
	tballoon_hint_exit(tb);
	tballoon_empty(tb);
	virtio_reset_device(vdev);
	tballoon_release(tb);
	tballoon_del_vqs(tb);
	tballoon_free_bufs(tb);
	kfree(tb);
}

#ifdef CONFIG_PM_SLEEP
static int tballoon_freeze(struct virtio_device *vdev)
{
	struct tballoon *tb = vdev->priv;

	/* The freezable workqueue is frozen: the worker does not run. */
	cancel_work_sync(&tb->stats_work);
	cancel_work_sync(&tb->hint_work);
	tballoon_report_stop(tb);
	tballoon_hint_release(tb);
	tballoon_empty(tb);
	virtio_reset_device(vdev);
	tballoon_release(tb);
	mutex_lock(&tb->lock);
	tballoon_del_vqs(tb);
	mutex_unlock(&tb->lock);
	return 0;
}

static int tballoon_restore(struct virtio_device *vdev)
{
	struct tballoon *tb = vdev->priv;
	int err;

	err = tballoon_init_vqs(tb);
	if (err) {
		/* The device stays FAILED and broken; remove() still works. */
		dev_err(&vdev->dev, "restore: cannot set up the queues: %d\n", err);
		return err;
	}
	tballoon_start(tb);
	return 0;
}
#endif

static unsigned int tballoon_features[] = {
	VIRTIO_BALLOON_F_MUST_TELL_HOST,
	VIRTIO_BALLOON_F_STATS_VQ,
	VIRTIO_BALLOON_F_DEFLATE_ON_OOM,
	VIRTIO_BALLOON_F_FREE_PAGE_HINT,
	VIRTIO_BALLOON_F_PAGE_POISON,
#ifdef CONFIG_PAGE_REPORTING
	VIRTIO_BALLOON_F_REPORTING,
#endif
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

static int __init tballoon_init(void)
{
	int err;

	tballoon_fault_init();
	err = register_virtio_driver(&tballoon_driver);
	if (err)
		tballoon_fault_exit();
	return err;
}
module_init(tballoon_init);

static void __exit tballoon_exit(void)
{
	unregister_virtio_driver(&tballoon_driver);
	tballoon_fault_exit();
}
module_exit(tballoon_exit);
MODULE_DEVICE_TABLE(virtio, tballoon_id_table);
MODULE_DESCRIPTION("Timed virtio balloon driver");
MODULE_LICENSE("GPL");
