/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR BSD-3-Clause */
/*
 * virtio_tballoon.h - wire contract of the timed virtio balloon (protocol v1)
 *
 * The single definition of the numbers shared by the guest driver
 * (driver/virtio_tballoon.c) and the host backend (host-tool/). The normative
 * description is Documentation/protocol.rst; this header and that document
 * must agree.
 *
 * All multi-byte fields are little-endian (VIRTIO_F_VERSION_1 is required for
 * the timed feature). Page counts are in units of 4 KiB "balloon pages",
 * whatever the guest's page size, as for the standard virtio balloon.
 */
#ifndef _UAPI_LINUX_VIRTIO_TBALLOON_H
#define _UAPI_LINUX_VIRTIO_TBALLOON_H

#include <linux/types.h>

/* ------------------------------------------------------------------------
 * Device identity and queues
 * ------------------------------------------------------------------------
 */

/* virtio device ID of the memory balloon (virtio spec 5.5) */
#define VIRTIO_TBALLOON_DEVICE_ID		5

/* inflate queue: driver -> device, buffers of __le32 PFNs being given up */
#define VIRTIO_TBALLOON_VQ_INFLATE		0
/* deflate queue: driver -> device, buffers of __le32 PFNs being taken back */
#define VIRTIO_TBALLOON_VQ_DEFLATE		1
/* statistics queue, only with VIRTIO_BALLOON_F_STATS_VQ */
#define VIRTIO_TBALLOON_VQ_STATS		2
/* free page hinting queue, only with VIRTIO_BALLOON_F_FREE_PAGE_HINT */
#define VIRTIO_TBALLOON_VQ_FREE_PAGE		3
/* free page reporting queue, only with VIRTIO_BALLOON_F_REPORTING */
#define VIRTIO_TBALLOON_VQ_REPORTING		4
/* number of queues in the list above */
#define VIRTIO_TBALLOON_VQ_MAX			5
/*
 * The numbers above are positions in the specification's list of queues,
 * not always virtqueue indexes: a queue whose feature was not negotiated
 * does not exist and takes no index, so a queue's virtqueue index is the
 * number of queues before it in the list that exist. Linux's virtio_balloon
 * and QEMU's virtio-balloon device agree on this (QEMU always has statsq);
 * the specification's text numbers them 0..4 whatever was negotiated.
 * Documentation/protocol.rst, "Virtqueues".
 */

/* a PFN on the inflate/deflate queues addresses a 4 KiB frame */
#define VIRTIO_TBALLOON_PFN_SHIFT		12

/* ------------------------------------------------------------------------
 * Feature bits
 * ------------------------------------------------------------------------
 */

/*
 * Timed commands through the config space block below. Proposed bit, not yet
 * assigned by OASIS: device-specific bits 0..5 are assigned by the virtio
 * spec and bit 6 was used by an unmerged proposal, so v1 takes bit 12.
 * Requires VIRTIO_F_VERSION_1.
 */
#define VIRTIO_BALLOON_F_TIMED			12

/* ------------------------------------------------------------------------
 * Config space
 * ------------------------------------------------------------------------
 */

/* size of the standard virtio_balloon_config (num_pages .. poison_val) */
#define VIRTIO_TBALLOON_STD_CONFIG_SIZE		16
/* size of the whole config space when VIRTIO_BALLOON_F_TIMED is offered */
#define VIRTIO_TBALLOON_CONFIG_SIZE		64

/**
 * struct virtio_tballoon_config - config space of the timed balloon
 * @num_pages: device writes: standard balloon target; with TIMED negotiated
 *	the device mirrors the target of the last command here and the driver
 *	ignores it
 * @actual: driver writes: pages currently in the balloon
 * @free_page_hint_cmd_id: device writes: standard, unused by tballoon
 * @poison_val: device writes: standard, unused by tballoon
 * @cmd_id: device writes: id of the current command; a change announces a
 *	new command, which supersedes the one running
 * @op: device writes: TBALLOON_OP_*
 * @flags: device writes: TBALLOON_FLAG_*
 * @deadline_ms: device writes: time budget, counted from the driver's
 *	acceptance of the command
 * @target_pages: device writes: balloon size to reach
 * @floor_pages: device writes: never let the guest's available memory fall
 *	below this many pages because of inflation (0: no floor)
 * @ack_cmd_id: driver writes: id of the command the report below is about
 * @state: driver writes: TBALLOON_STATE_*
 * @reason: driver writes: TBALLOON_REASON_*, detail for the state
 * @elapsed_ms: driver writes: milliseconds since acceptance, guest clock
 * @start_pages: driver writes: @actual when the command was accepted
 * @report_seq: driver writes: incremented by one per report, written last;
 *	a change tells the device the driver-written block is complete
 */
struct virtio_tballoon_config {
	/* standard virtio_balloon_config, offsets 0..15 */
	__le32 num_pages;
	__le32 actual;
	__le32 free_page_hint_cmd_id;
	__le32 poison_val;
	/* timed block, device writes, offsets 16..39 */
	__le32 cmd_id;
	__le32 op;
	__le32 flags;
	__le32 deadline_ms;
	__le32 target_pages;
	__le32 floor_pages;
	/* timed block, driver writes, offsets 40..63 */
	__le32 ack_cmd_id;
	__le32 state;
	__le32 reason;
	__le32 elapsed_ms;
	__le32 start_pages;
	__le32 report_seq;
};

/* ------------------------------------------------------------------------
 * Operations (config field "op")
 * ------------------------------------------------------------------------
 */

/* no command has been issued yet */
#define TBALLOON_OP_NONE			0
/* grow the balloon to target_pages (target_pages >= actual) */
#define TBALLOON_OP_INFLATE			1
/* shrink the balloon to target_pages (target_pages <= actual) */
#define TBALLOON_OP_DEFLATE			2
/* stop the running command; the balloon keeps its current size */
#define TBALLOON_OP_ABORT			3
/* number of ops; op values >= this are rejected */
#define TBALLOON_OP_COUNT			4

/* ------------------------------------------------------------------------
 * Command flags (config field "flags")
 * ------------------------------------------------------------------------
 */

/* spread the work evenly over the deadline instead of as fast as possible */
#define TBALLOON_FLAG_PACED			0x00000001U
/*
 * yield to the guest's own work: for the first half of its deadline an
 * inflate allocates only at the lowest CPU priority, on CPUs the guest's
 * tasks leave idle (slower when the guest is busy, its tasks less slowed),
 * then as usual; a deflate ignores it
 */
#define TBALLOON_FLAG_GENTLE			0x00000002U
/* every flag bit defined by v1; a command with any other bit is rejected */
#define TBALLOON_FLAGS_ALL			(TBALLOON_FLAG_PACED | TBALLOON_FLAG_GENTLE)

/* ------------------------------------------------------------------------
 * Limits
 * ------------------------------------------------------------------------
 */

/* longest deadline a command may carry: one hour */
#define TBALLOON_DEADLINE_MAX_MS		3600000U
/* minimum interval between two running-state reports */
#define TBALLOON_REPORT_INTERVAL_MS		50U

/* ------------------------------------------------------------------------
 * States (config field "state")
 * ------------------------------------------------------------------------
 */

/* no command accepted since the driver started */
#define TBALLOON_STATE_IDLE			0
/* command accepted and in progress */
#define TBALLOON_STATE_RUNNING			1
/* target reached */
#define TBALLOON_STATE_DONE			2
/* deadline passed before the target; the pages moved so far stay moved */
#define TBALLOON_STATE_DEADLINE			3
/* stopped to protect the guest (floor, allocation failure, reclaim) */
#define TBALLOON_STATE_PRESSURE			4
/* stopped by an abort op, a newer command, or driver removal */
#define TBALLOON_STATE_ABORTED			5
/* command invalid, nothing done; reason says why */
#define TBALLOON_STATE_REJECTED			6
/* number of states */
#define TBALLOON_STATE_COUNT			7

/* ------------------------------------------------------------------------
 * Reasons (config field "reason"), detail for the state
 * ------------------------------------------------------------------------
 */

/* nothing to add to the state */
#define TBALLOON_REASON_NONE			0
/* rejected: op unknown (or NONE) */
#define TBALLOON_REASON_BAD_OP			1
/* rejected: unknown flag bits set */
#define TBALLOON_REASON_BAD_FLAGS		2
/* rejected: target_pages beyond guest RAM */
#define TBALLOON_REASON_BAD_TARGET		3
/* rejected: deadline_ms is zero or above TBALLOON_DEADLINE_MAX_MS */
#define TBALLOON_REASON_BAD_DEADLINE		4
/* rejected: floor_pages beyond guest RAM */
#define TBALLOON_REASON_BAD_FLOOR		5
/* rejected: inflate to a target below actual, or deflate above it */
#define TBALLOON_REASON_DIRECTION		6
/* aborted: a newer command id superseded this one */
#define TBALLOON_REASON_SUPERSEDED		7
/* aborted: the device sent TBALLOON_OP_ABORT */
#define TBALLOON_REASON_HOST_ABORT		8
/* aborted: the driver is being removed or the guest suspended */
#define TBALLOON_REASON_REMOVED			9
/* pressure: available memory would fall below floor_pages */
#define TBALLOON_REASON_FLOOR			10
/* pressure: the guest could not allocate more pages cheaply */
#define TBALLOON_REASON_ALLOC_FAIL		11
/* pressure: the guest's direct reclaim surged during the run */
#define TBALLOON_REASON_RECLAIM			12
/* aborted: a virtqueue operation failed (device broken or full) */
#define TBALLOON_REASON_DEVICE_ERROR		13
/* number of reasons */
#define TBALLOON_REASON_COUNT			14

#endif /* _UAPI_LINUX_VIRTIO_TBALLOON_H */
