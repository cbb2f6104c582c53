// SPDX-License-Identifier: GPL-2.0-only
/*
 * tballoon_fault.c - fault injection points for tests
 *
 * With CONFIG_FAULT_INJECTION_DEBUG_FS, the kernel's fault attributes
 * (Documentation/fault-injection/fault-injection.rst) under
 * /sys/kernel/debug/virtio_tballoon/: fail_init_vqs makes setting up the
 * queues fail (probe, restore), fail_send makes adding a PFN buffer fail
 * with -ENOMEM, as a ring without memory for it would. All start with
 * probability 0. The debug lane's scenarios use them; a production kernel
 * without fault injection compiles none of this.
 *
 * Built only with CONFIG_FAULT_INJECTION_DEBUG_FS (Kbuild).
 *
 * Locks: none; should_fail() may be called with @tb->lock held.
 */

#include <linux/debugfs.h>
#include <linux/fault-inject.h>

#include "tballoon.h"

static DECLARE_FAULT_ATTR(tballoon_fail_init_vqs);
static DECLARE_FAULT_ATTR(tballoon_fail_send);

static struct fault_attr *const tballoon_faults[TBALLOON_FAIL_NR] = {
	[TBALLOON_FAIL_INIT_VQS] = &tballoon_fail_init_vqs,
	[TBALLOON_FAIL_SEND] = &tballoon_fail_send,
};

static struct dentry *tballoon_fault_dir;

bool tballoon_should_fail(enum tballoon_fail which)
{
	return should_fail(tballoon_faults[which], 1);
}

void tballoon_fault_init(void)
{
	tballoon_fault_dir = debugfs_create_dir(KBUILD_MODNAME, NULL);
	fault_create_debugfs_attr("fail_init_vqs", tballoon_fault_dir,
				  &tballoon_fail_init_vqs);
	fault_create_debugfs_attr("fail_send", tballoon_fault_dir,
				  &tballoon_fail_send);
}

void tballoon_fault_exit(void)
{
	debugfs_remove_recursive(tballoon_fault_dir);
}
