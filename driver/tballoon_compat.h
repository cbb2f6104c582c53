/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * tballoon_compat.h - kernel API differences between supported kernels
 *
 * The driver builds against Linux 6.1 (Debian 12) and 6.12 (Debian 12
 * bookworm-backports). Every API difference of the driver is handled in
 * this file, keyed on TBALLOON_HAVE_* macros that Kbuild defines by probing
 * the kernel headers (feature tests, not version tests); the driver calls
 * the tballoon_*() wrappers below.
 *
 * Differences handled:
 *  - TBALLOON_HAVE_VIRTQUEUE_INFO: virtio_find_vqs() takes one struct
 *    virtqueue_info array (since 6.11) instead of separate callback and
 *    name arrays.
 *
 * Not differences (checked, same API on 6.1 and 6.12): the balloon page
 * API (balloon_page_alloc/list_enqueue/list_dequeue/insert/finalize,
 * balloon_dev_info.migratepage), register_oom_notifier(),
 * adjust_managed_page_count(). The driver registers no shrinker, so the
 * register_shrinker() -> shrinker_alloc() change (6.7) does not apply.
 */
#ifndef _TBALLOON_COMPAT_H
#define _TBALLOON_COMPAT_H

#include <linux/bug.h>
#include <linux/kernel.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>

/* most virtqueues tballoon_find_vqs() sets up */
#define TBALLOON_COMPAT_MAX_VQS		4

/**
 * struct tballoon_vq_info - one virtqueue to set up
 * @name: virtqueue name (debugging, /sys)
 * @callback: used-buffer notification, or NULL
 */
struct tballoon_vq_info {
	const char *name;
	vq_callback_t *callback;
};

/**
 * tballoon_find_vqs() - set up the device's virtqueues
 * @vdev: the device
 * @nvqs: number of virtqueues, at most TBALLOON_COMPAT_MAX_VQS
 * @vqs: receives the virtqueues
 * @info: name and callback of each virtqueue, @nvqs entries
 *
 * virtio_find_vqs() with the calling convention of the kernel built against.
 *
 * Return: 0 or a negative errno from the transport.
 */
static inline int tballoon_find_vqs(struct virtio_device *vdev,
				    unsigned int nvqs, struct virtqueue *vqs[],
				    const struct tballoon_vq_info *info)
{
#ifdef TBALLOON_HAVE_VIRTQUEUE_INFO
	struct virtqueue_info vqs_info[TBALLOON_COMPAT_MAX_VQS] = {};
	unsigned int i;

	if (WARN_ON(nvqs > ARRAY_SIZE(vqs_info)))
		return -EINVAL;
	for (i = 0; i < nvqs; i++) {
		vqs_info[i].name = info[i].name;
		vqs_info[i].callback = info[i].callback;
	}
	return virtio_find_vqs(vdev, nvqs, vqs, vqs_info, NULL);
#else
	vq_callback_t *callbacks[TBALLOON_COMPAT_MAX_VQS] = {};
	const char *names[TBALLOON_COMPAT_MAX_VQS] = {};
	unsigned int i;

	if (WARN_ON(nvqs > ARRAY_SIZE(names)))
		return -EINVAL;
	for (i = 0; i < nvqs; i++) {
		names[i] = info[i].name;
		callbacks[i] = info[i].callback;
	}
	return virtio_find_vqs(vdev, nvqs, vqs, callbacks, names, NULL);
#endif
}

#endif /* _TBALLOON_COMPAT_H */
