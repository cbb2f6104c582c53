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
 *    name arrays. The driver passes only the queues that exist (no NULL
 *    names: 6.12's virtio-pci skips them but then finds the wrong queue
 *    state by index when the queues are deleted).
 *  - TBALLOON_HAVE_SHRINKER_ALLOC: shrinkers are allocated by the kernel
 *    (shrinker_alloc(), shrinker_register(), shrinker_free(), since 6.7)
 *    instead of embedded and registered with register_shrinker().
 *  - TBALLOON_HAVE_GFP_SKIP_ZERO: the kernel carries
 *    driver/patches/{6.1,6.12}/0001-mm-let-any-caller-skip-init_on_alloc.patch, so
 *    __GFP_SKIP_ZERO skips init_on_alloc's zeroing for any caller (no
 *    distribution kernel does: upstream honours it only for hardware
 *    tag-based KASAN). TBALLOON_GFP_NO_INIT is then __GFP_SKIP_ZERO, else 0.
 *
 * Not differences (checked, same API on 6.1 and 6.12): the balloon page
 * API (balloon_page_alloc/list_enqueue/list_dequeue/insert/finalize,
 * balloon_dev_info.migratepage), register_oom_notifier(),
 * adjust_managed_page_count(), page_reporting_register() (with @order),
 * want_init_on_free(), page_poisoning_enabled_static().
 */
#ifndef _TBALLOON_COMPAT_H
#define _TBALLOON_COMPAT_H

#include <linux/bug.h>
#include <linux/gfp.h>
#include <linux/kernel.h>
#include <linux/shrinker.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>

/* gfp bit that skips init_on_alloc for the balloon's blocks, or 0 */
#ifdef TBALLOON_HAVE_GFP_SKIP_ZERO
#define TBALLOON_GFP_NO_INIT		__GFP_SKIP_ZERO
#define TBALLOON_CAN_SKIP_ZERO		true
#else
#define TBALLOON_GFP_NO_INIT		((__force gfp_t)0)
#define TBALLOON_CAN_SKIP_ZERO		false
#endif

/* most virtqueues tballoon_find_vqs() sets up */
#define TBALLOON_COMPAT_MAX_VQS		5

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

/**
 * struct tballoon_shrinker - a shrinker and the object it shrinks
 * @s: the shrinker (allocated by the kernel since 6.7, embedded before)
 * @owner: what tballoon_shrinker_owner() returns in the callbacks
 */
struct tballoon_shrinker {
#ifdef TBALLOON_HAVE_SHRINKER_ALLOC
	struct shrinker *s;
#else
	struct shrinker s;
#endif
	void *owner;
};

/**
 * tballoon_shrinker_register() - register a shrinker
 * @ts: the shrinker to fill in
 * @owner: passed back by tballoon_shrinker_owner()
 * @count: count_objects callback
 * @scan: scan_objects callback
 * @name: the shrinker's name (debugfs with CONFIG_SHRINKER_DEBUG)
 *
 * Return: 0 or -ENOMEM.
 */
static inline int tballoon_shrinker_register(struct tballoon_shrinker *ts,
					     void *owner,
					     unsigned long (*count)(struct shrinker *,
								    struct shrink_control *),
					     unsigned long (*scan)(struct shrinker *,
								   struct shrink_control *),
					     const char *name)
{
	ts->owner = owner;
#ifdef TBALLOON_HAVE_SHRINKER_ALLOC
	ts->s = shrinker_alloc(0, "%s", name);
	if (!ts->s)
		return -ENOMEM;
	ts->s->count_objects = count;
	ts->s->scan_objects = scan;
	ts->s->private_data = ts;
	shrinker_register(ts->s);
	return 0;
#else
	ts->s.count_objects = count;
	ts->s.scan_objects = scan;
	ts->s.seeks = DEFAULT_SEEKS;
	return register_shrinker(&ts->s, "%s", name);
#endif
}

static inline void tballoon_shrinker_unregister(struct tballoon_shrinker *ts)
{
#ifdef TBALLOON_HAVE_SHRINKER_ALLOC
	shrinker_free(ts->s);
	ts->s = NULL;
#else
	unregister_shrinker(&ts->s);
#endif
}

/* the @owner given to tballoon_shrinker_register(), in a callback */
static inline void *tballoon_shrinker_owner(struct shrinker *s)
{
#ifdef TBALLOON_HAVE_SHRINKER_ALLOC
	return ((struct tballoon_shrinker *)s->private_data)->owner;
#else
	return container_of(s, struct tballoon_shrinker, s)->owner;
#endif
}

#endif /* _TBALLOON_COMPAT_H */
