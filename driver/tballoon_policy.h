/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * tballoon_policy.h - decisions of the timed virtio balloon driver
 *
 * Pure functions: no virtio, no locks, no allocation, no clock. The driver
 * (tballoon_engine.c) samples the world (config space, the clock,
 * MemAvailable) and asks these functions what to do next, so the decisions
 * can be tested on their own (kunit/tballoon_policy_test.c, on UML).
 *
 * Every page count here is in 4 KiB balloon pages, the unit of the wire
 * protocol, whatever the guest's page size.
 */
#ifndef _TBALLOON_POLICY_H
#define _TBALLOON_POLICY_H

#include <linux/types.h>

#include "virtio_tballoon.h"

/* largest batch: PFNs in one buffer (16 KiB of __le32) */
#define TBALLOON_BATCH_MAX		4096U
/* first batch of a command, before any throughput is known */
#define TBALLOON_BATCH_FIRST		512U
/* smallest batch the time budget may shrink a batch to */
#define TBALLOON_BATCH_MIN		256U
/* the clock, the floor and the command id are checked at least this often */
#define TBALLOON_CHECK_PAGES		256U
/* a batch may use at most 1/TBALLOON_BATCH_TIME_DIV of the time left */
#define TBALLOON_BATCH_TIME_DIV		4U
/*
 * a paced command's schedule ends TBALLOON_PACE_MARGIN_MS before the
 * deadline, or 1/TBALLOON_PACE_MARGIN_DIV of it for deadlines under 800 ms:
 * time for the last batch to reach the device before the deadline
 */
#define TBALLOON_PACE_MARGIN_MS		100U
#define TBALLOON_PACE_MARGIN_DIV	8U
/* a paced command does not wake up for fewer pages than this */
#define TBALLOON_PACE_CHUNK		256U
/* MemAvailable the driver always keeps, whatever the floor: 32 MiB ... */
#define TBALLOON_RESERVE_MIN_PAGES	8192U
/* ... or 1/TBALLOON_RESERVE_RAM_DIV of guest RAM if that is more */
#define TBALLOON_RESERVE_RAM_DIV	64U
/* inflating stops (PRESSURE/RECLAIM) after this many direct reclaims */
#define TBALLOON_RECLAIM_STALLS		512U
/*
 * inflate takes whole blocks (2 MiB) only while the room above the floor is
 * at least this many blocks; closer to the floor it takes single pages
 */
#define TBALLOON_BLOCK_ROOM_BLOCKS	4U
/* "no deadline": remaining time of a command without one */
#define TBALLOON_NO_DEADLINE		U32_MAX

/**
 * struct tballoon_cmd - a command as read from the device
 * @cmd_id: command id (0: no command was ever issued)
 * @op: TBALLOON_OP_*
 * @flags: TBALLOON_FLAG_*
 * @deadline_ms: time budget from acceptance
 * @target_pages: balloon size to reach
 * @floor_pages: MemAvailable to keep while inflating (0: none)
 */
struct tballoon_cmd {
	u32 cmd_id;
	u32 op;
	u32 flags;
	u32 deadline_ms;
	u32 target_pages;
	u32 floor_pages;
};

/**
 * struct tballoon_progress - where an accepted command stands
 * @done_pages: balloon size, counting buffers still in flight
 * @elapsed_ms: time since acceptance
 * @avail_pages: the guest's available memory (MemAvailable)
 * @reclaim_stalls: direct reclaim entries in the guest since acceptance
 * @granule: balloon pages per guest page (1 with 4 KiB guest pages)
 */
struct tballoon_progress {
	u32 done_pages;
	u32 elapsed_ms;
	u64 avail_pages;
	u64 reclaim_stalls;
	u32 granule;
};

/**
 * struct tballoon_batch_in - what the next batch size depends on
 * @remaining_pages: distance still to cover, excluding buffers in flight
 * @remaining_ms: time to the deadline, or TBALLOON_NO_DEADLINE
 * @rate_pps: measured throughput in pages per second, 0 if not known yet
 * @prev_pages: size of the previous batch, 0 for the first one
 * @room_pages: pages that may still be allocated above the floor, or
 *	U32_MAX when no floor applies
 * @granule: balloon pages per guest page; the result is a multiple of it
 */
struct tballoon_batch_in {
	u32 remaining_pages;
	u32 remaining_ms;
	u32 rate_pps;
	u32 prev_pages;
	u32 room_pages;
	u32 granule;
};

/**
 * struct tballoon_pace_in - where a paced command stands
 * @distance: pages between the start size and the target
 * @ahead: pages moved so far, counting buffers in flight
 * @elapsed_ms: time since acceptance
 * @deadline_ms: the command's deadline
 * @remaining_pages: distance still to cover
 * @granule: balloon pages per guest page
 */
struct tballoon_pace_in {
	u32 distance;
	u32 ahead;
	u32 elapsed_ms;
	u32 deadline_ms;
	u32 remaining_pages;
	u32 granule;
};

/* what tballoon_policy_report() asks for */
enum tballoon_report {
	TBALLOON_REPORT_NONE,		/* nothing changed, or too soon */
	TBALLOON_REPORT_ACTUAL,		/* standard balloon: write actual */
	TBALLOON_REPORT_RUNNING,	/* timed: a running report */
};

/**
 * struct tballoon_interrupt_in - what may end a run from outside
 * @removing: removal, suspend or reboot began
 * @broken: the device is broken
 * @timed: VIRTIO_BALLOON_F_TIMED
 * @changed: the config changed (the standard balloon re-reads num_pages)
 * @next: timed: a newer command than the running one, or NULL
 */
struct tballoon_interrupt_in {
	bool removing;
	bool broken;
	bool timed;
	bool changed;
	const struct tballoon_cmd *next;
};

u32 tballoon_policy_validate(const struct tballoon_cmd *cmd, u32 actual_pages,
			     u64 ram_pages, u32 *reason);
u32 tballoon_policy_superseded_reason(const struct tballoon_cmd *next);
u32 tballoon_policy_reserve(u64 ram_pages);
u32 tballoon_policy_floor_room(u32 floor_pages, u64 avail_pages);
u32 tballoon_policy_stop(const struct tballoon_cmd *cmd,
			 const struct tballoon_progress *prog, u32 *reason);
u32 tballoon_policy_batch(const struct tballoon_batch_in *in);
bool tballoon_policy_use_block(u32 left_pages, u32 room_pages, u32 block_pages);
u32 tballoon_policy_blocks(u32 left_pages, u32 room_pages, u32 block_pages);
u32 tballoon_policy_pace_horizon(u32 deadline_ms);
u32 tballoon_policy_paced_due(u32 distance, u32 elapsed_ms, u32 deadline_ms);
u32 tballoon_policy_paced_time(u32 distance, u32 pages, u32 deadline_ms);
u32 tballoon_policy_paced_batch(const struct tballoon_pace_in *in, u32 n,
				u32 *wait_ms);
enum tballoon_report tballoon_policy_report(bool timed, u32 pages, u32 last_pages,
					    s64 since_ms);
u32 tballoon_policy_interrupt(const struct tballoon_interrupt_in *in, u32 *reason);

#endif /* _TBALLOON_POLICY_H */
