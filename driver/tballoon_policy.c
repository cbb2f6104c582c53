// SPDX-License-Identifier: GPL-2.0-only
/*
 * tballoon_policy.c - decisions of the timed virtio balloon driver
 *
 * See tballoon_policy.h. Nothing here touches the device, sleeps, takes a
 * lock or reads a clock; every input is an argument.
 */

#include <linux/export.h>
#include <linux/kernel.h>
#include <linux/math64.h>
#include <linux/minmax.h>
#include <kunit/visibility.h>

#include "tballoon_policy.h"

/**
 * tballoon_policy_validate() - check a new command against the guest
 * @cmd: the command as read from the device
 * @actual_pages: balloon size now
 * @ram_pages: guest RAM as the driver saw it at probe
 * @reason: set to a TBALLOON_REASON_* detail for the returned state
 *
 * The checks run in the order of the protocol (Documentation/protocol.rst,
 * "Command lifecycle"); the first failure decides the reason.
 *
 * Return: TBALLOON_STATE_REJECTED for an invalid command,
 * TBALLOON_STATE_DONE for an ABORT op or a target equal to @actual_pages,
 * TBALLOON_STATE_RUNNING for a command with work to do.
 */
u32 tballoon_policy_validate(const struct tballoon_cmd *cmd, u32 actual_pages,
			     u64 ram_pages, u32 *reason)
{
	*reason = TBALLOON_REASON_NONE;

	if (cmd->op == TBALLOON_OP_NONE || cmd->op >= TBALLOON_OP_COUNT) {
		*reason = TBALLOON_REASON_BAD_OP;
		return TBALLOON_STATE_REJECTED;
	}
	if (cmd->flags & ~TBALLOON_FLAGS_ALL) {
		*reason = TBALLOON_REASON_BAD_FLAGS;
		return TBALLOON_STATE_REJECTED;
	}
	if (cmd->op == TBALLOON_OP_ABORT)
		return TBALLOON_STATE_DONE;
	if (cmd->target_pages > ram_pages) {
		*reason = TBALLOON_REASON_BAD_TARGET;
		return TBALLOON_STATE_REJECTED;
	}
	if (!cmd->deadline_ms || cmd->deadline_ms > TBALLOON_DEADLINE_MAX_MS) {
		*reason = TBALLOON_REASON_BAD_DEADLINE;
		return TBALLOON_STATE_REJECTED;
	}
	if (cmd->floor_pages > ram_pages) {
		*reason = TBALLOON_REASON_BAD_FLOOR;
		return TBALLOON_STATE_REJECTED;
	}
	if ((cmd->op == TBALLOON_OP_INFLATE && cmd->target_pages < actual_pages) ||
	    (cmd->op == TBALLOON_OP_DEFLATE && cmd->target_pages > actual_pages)) {
		*reason = TBALLOON_REASON_DIRECTION;
		return TBALLOON_STATE_REJECTED;
	}
	if (cmd->target_pages == actual_pages)
		return TBALLOON_STATE_DONE;
	return TBALLOON_STATE_RUNNING;
}
EXPORT_SYMBOL_IF_KUNIT(tballoon_policy_validate);

/**
 * tballoon_policy_superseded_reason() - why a running command ends early
 * @next: the command with the newer id
 *
 * A valid ABORT op ends the running command as aborted by the host; any
 * other newer command (valid or not) supersedes it.
 *
 * Return: TBALLOON_REASON_HOST_ABORT or TBALLOON_REASON_SUPERSEDED.
 */
u32 tballoon_policy_superseded_reason(const struct tballoon_cmd *next)
{
	if (next->op == TBALLOON_OP_ABORT && !(next->flags & ~TBALLOON_FLAGS_ALL))
		return TBALLOON_REASON_HOST_ABORT;
	return TBALLOON_REASON_SUPERSEDED;
}
EXPORT_SYMBOL_IF_KUNIT(tballoon_policy_superseded_reason);

/**
 * tballoon_policy_reserve() - available memory the driver never inflates into
 * @ram_pages: guest RAM
 *
 * The balloon's own allocations never invoke the OOM killer, but left alone
 * they take free memory down to the watermarks and the guest's next
 * allocations do. Inflation therefore always stops this far above zero
 * MemAvailable; a command's floor_pages can only raise the limit.
 *
 * Return: max(TBALLOON_RESERVE_MIN_PAGES, @ram_pages / TBALLOON_RESERVE_RAM_DIV).
 */
u32 tballoon_policy_reserve(u64 ram_pages)
{
	u64 share = div_u64(ram_pages, TBALLOON_RESERVE_RAM_DIV);

	return max_t(u64, TBALLOON_RESERVE_MIN_PAGES, min_t(u64, share, U32_MAX));
}
EXPORT_SYMBOL_IF_KUNIT(tballoon_policy_reserve);

/**
 * tballoon_policy_floor_room() - pages that may be inflated above the floor
 * @floor_pages: available memory to keep (0: no floor)
 * @avail_pages: available memory now
 *
 * Return: U32_MAX without a floor, else how far @avail_pages is above
 * @floor_pages (0 at or below it), clamped to U32_MAX.
 */
u32 tballoon_policy_floor_room(u32 floor_pages, u64 avail_pages)
{
	if (!floor_pages)
		return U32_MAX;
	if (avail_pages <= floor_pages)
		return 0;
	return min_t(u64, avail_pages - floor_pages, U32_MAX);
}
EXPORT_SYMBOL_IF_KUNIT(tballoon_policy_floor_room);

/**
 * tballoon_policy_stop() - should an accepted command stop now?
 * @cmd: the accepted command (op INFLATE or DEFLATE)
 * @prog: where it stands
 * @reason: set to a TBALLOON_REASON_* detail for the returned state
 *
 * The first matching condition wins: target reached, deadline passed, then
 * (inflate only) the floor, then a surge of direct reclaim (more than
 * TBALLOON_RECLAIM_STALLS entries since acceptance: the guest is paying
 * for the inflation in allocation stalls). A @cmd->deadline_ms of
 * TBALLOON_NO_DEADLINE never passes.
 *
 * Return: TBALLOON_STATE_RUNNING to go on, else the terminal state
 * (DONE, DEADLINE or PRESSURE).
 */
u32 tballoon_policy_stop(const struct tballoon_cmd *cmd,
			 const struct tballoon_progress *prog, u32 *reason)
{
	bool inflate = cmd->op == TBALLOON_OP_INFLATE;
	u32 granule = max(prog->granule, 1U);

	*reason = TBALLOON_REASON_NONE;

	if (inflate ? prog->done_pages >= cmd->target_pages :
		      prog->done_pages <= cmd->target_pages)
		return TBALLOON_STATE_DONE;
	if (cmd->deadline_ms != TBALLOON_NO_DEADLINE &&
	    prog->elapsed_ms >= cmd->deadline_ms)
		return TBALLOON_STATE_DEADLINE;
	if (inflate &&
	    tballoon_policy_floor_room(cmd->floor_pages, prog->avail_pages) < granule) {
		*reason = TBALLOON_REASON_FLOOR;
		return TBALLOON_STATE_PRESSURE;
	}
	if (inflate && prog->reclaim_stalls > TBALLOON_RECLAIM_STALLS) {
		*reason = TBALLOON_REASON_RECLAIM;
		return TBALLOON_STATE_PRESSURE;
	}
	return TBALLOON_STATE_RUNNING;
}
EXPORT_SYMBOL_IF_KUNIT(tballoon_policy_stop);

/**
 * tballoon_policy_batch() - size of the next batch
 * @in: remaining distance, time, throughput, previous batch, floor room
 *
 * Batches start at TBALLOON_BATCH_FIRST and double up to TBALLOON_BATCH_MAX
 * (one full buffer). Once the throughput is known and a deadline applies, a
 * batch is capped to what that throughput moves in 1/TBALLOON_BATCH_TIME_DIV
 * of the time left (but not below TBALLOON_BATCH_MIN), so that the buffers
 * in flight when the deadline passes finish soon after it. The batch never
 * exceeds the remaining distance or the room above the floor.
 *
 * Return: pages for the next batch, a multiple of @in->granule; 0 when no
 * page may be moved now.
 */
u32 tballoon_policy_batch(const struct tballoon_batch_in *in)
{
	u32 granule = max(in->granule, 1U);
	u32 n;

	if (in->prev_pages)
		n = in->prev_pages >= TBALLOON_BATCH_MAX / 2 ?
			TBALLOON_BATCH_MAX : in->prev_pages * 2;
	else
		n = TBALLOON_BATCH_FIRST;
	n = min(n, TBALLOON_BATCH_MAX);

	if (in->remaining_ms != TBALLOON_NO_DEADLINE && in->rate_pps) {
		u64 budget = div_u64((u64)in->rate_pps * in->remaining_ms,
				     1000U * TBALLOON_BATCH_TIME_DIV);

		budget = max_t(u64, budget, TBALLOON_BATCH_MIN);
		n = min_t(u64, n, budget);
	}

	n = min(n, in->remaining_pages);
	n = min(n, in->room_pages);
	return n - n % granule;
}
EXPORT_SYMBOL_IF_KUNIT(tballoon_policy_batch);

/**
 * tballoon_policy_use_block() - may the next allocation of a fill be a block?
 * @left_pages: pages the batch still wants
 * @room_pages: pages that may still be allocated above the floor, or
 *	U32_MAX when no floor applies
 * @block_pages: pages in one block (0: the driver has no blocks)
 *
 * A block is one high-order allocation of @block_pages pages, moved and
 * accounted as a unit. The driver takes one only when the batch wants all
 * of it and the guest is far from the floor (at least
 * TBALLOON_BLOCK_ROOM_BLOCKS blocks of room); near the floor it takes single
 * pages, which leave the balloon for compaction and come back one by one.
 *
 * Return: true to allocate a block, false for a single page.
 */
bool tballoon_policy_use_block(u32 left_pages, u32 room_pages, u32 block_pages)
{
	if (!block_pages || left_pages < block_pages)
		return false;
	return room_pages / TBALLOON_BLOCK_ROOM_BLOCKS >= block_pages;
}
EXPORT_SYMBOL_IF_KUNIT(tballoon_policy_use_block);

/**
 * tballoon_policy_blocks() - blocks a fill may take in a row
 * @left_pages: pages the batch wants
 * @room_pages: pages that may be allocated above the floor, or U32_MAX
 * @block_pages: pages in one block (0: the driver has no blocks)
 *
 * How many times in a row tballoon_policy_use_block() says yes when every
 * block taken lowers both @left_pages and @room_pages by @block_pages: the
 * blocks of a batch that may be allocated on several CPUs at once.
 *
 * Return: the number of blocks, at most @left_pages / @block_pages.
 */
u32 tballoon_policy_blocks(u32 left_pages, u32 room_pages, u32 block_pages)
{
	u64 need;

	if (!block_pages)
		return 0;
	need = (u64)TBALLOON_BLOCK_ROOM_BLOCKS * block_pages;
	if (room_pages < need)
		return 0;
	return min_t(u64, left_pages / block_pages,
		     (room_pages - need) / block_pages + 1);
}
EXPORT_SYMBOL_IF_KUNIT(tballoon_policy_blocks);

/**
 * tballoon_policy_pace_horizon() - when a paced schedule ends
 * @deadline_ms: the command's deadline
 *
 * The schedule is a straight line from acceptance to the horizon, which is
 * the deadline less a margin for the last batch to reach the device:
 * TBALLOON_PACE_MARGIN_MS, or 1/TBALLOON_PACE_MARGIN_DIV of the deadline if
 * that is less. The host sees the balloon follow the line from acceptance
 * to the deadline within that margin.
 *
 * Return: the horizon in ms since acceptance, at least 1.
 */
u32 tballoon_policy_pace_horizon(u32 deadline_ms)
{
	u32 margin = min(deadline_ms / TBALLOON_PACE_MARGIN_DIV,
			 TBALLOON_PACE_MARGIN_MS);

	return max(deadline_ms - margin, 1U);
}
EXPORT_SYMBOL_IF_KUNIT(tballoon_policy_pace_horizon);

/**
 * tballoon_policy_paced_due() - pages a paced command should have moved
 * @distance: pages between the start size and the target
 * @elapsed_ms: time since acceptance
 * @deadline_ms: the command's deadline
 *
 * The schedule is linear from 0 at acceptance to @distance at the pacing
 * horizon (tballoon_policy_pace_horizon()), which leaves the last batch time
 * to finish before the deadline.
 *
 * Return: pages due by @elapsed_ms, at most @distance.
 */
u32 tballoon_policy_paced_due(u32 distance, u32 elapsed_ms, u32 deadline_ms)
{
	u32 horizon = tballoon_policy_pace_horizon(deadline_ms);

	if (elapsed_ms >= horizon)
		return distance;
	return div_u64((u64)distance * elapsed_ms, horizon);
}
EXPORT_SYMBOL_IF_KUNIT(tballoon_policy_paced_due);

/**
 * tballoon_policy_paced_time() - when a paced command may move more pages
 * @distance: pages between the start size and the target
 * @pages: pages moved so far plus the pages the next batch wants
 * @deadline_ms: the command's deadline
 *
 * Inverse of tballoon_policy_paced_due().
 *
 * Return: the earliest elapsed time, in ms, at which @pages are due.
 */
u32 tballoon_policy_paced_time(u32 distance, u32 pages, u32 deadline_ms)
{
	u32 horizon = tballoon_policy_pace_horizon(deadline_ms);

	if (!distance || !pages)
		return 0;
	if (pages >= distance)
		return horizon;
	return div_u64((u64)pages * horizon + distance - 1, distance);
}
EXPORT_SYMBOL_IF_KUNIT(tballoon_policy_paced_time);

/**
 * tballoon_policy_paced_batch() - cut a batch down to a paced schedule
 * @in: where the paced command stands
 * @n: the batch tballoon_policy_batch() would take (a multiple of granule)
 * @wait_ms: set when the command is ahead of its schedule
 *
 * A paced command moves only what is due: the batch ends at the schedule
 * (a multiple of @in->granule), and when not even TBALLOON_PACE_CHUNK
 * pages (or what remains, if less) are due yet, it waits until they are.
 *
 * Return: pages for the batch, or 0 with @wait_ms (at least 1) set.
 */
u32 tballoon_policy_paced_batch(const struct tballoon_pace_in *in, u32 n,
				u32 *wait_ms)
{
	u32 due = tballoon_policy_paced_due(in->distance, in->elapsed_ms,
					    in->deadline_ms);
	u32 want = min(TBALLOON_PACE_CHUNK, in->remaining_pages);
	u32 granule = in->granule ?: 1;

	if (due < in->ahead + want) {
		u32 at = tballoon_policy_paced_time(in->distance, in->ahead + want,
						    in->deadline_ms);

		*wait_ms = at > in->elapsed_ms ? at - in->elapsed_ms : 1;
		return 0;
	}
	n = min(n, due - in->ahead);
	n -= n % granule;
	if (!n)
		*wait_ms = 1;
	return n;
}
EXPORT_SYMBOL_IF_KUNIT(tballoon_policy_paced_batch);

/**
 * tballoon_policy_report() - is a progress report due?
 * @timed: VIRTIO_BALLOON_F_TIMED (else the standard balloon: actual only)
 * @pages: the balloon's size now
 * @last_pages: its size in the last report (or actual write)
 * @since_ms: time since the last report
 *
 * Nothing when the size did not change; the standard balloon writes actual
 * after each batch; a timed command reports at most every
 * TBALLOON_REPORT_INTERVAL_MS (protocol.rst, "Reports").
 *
 * Return: TBALLOON_REPORT_NONE, _ACTUAL or _RUNNING.
 */
enum tballoon_report tballoon_policy_report(bool timed, u32 pages, u32 last_pages,
					    s64 since_ms)
{
	if (pages == last_pages)
		return TBALLOON_REPORT_NONE;
	if (!timed)
		return TBALLOON_REPORT_ACTUAL;
	return since_ms >= TBALLOON_REPORT_INTERVAL_MS ? TBALLOON_REPORT_RUNNING :
							 TBALLOON_REPORT_NONE;
}
EXPORT_SYMBOL_IF_KUNIT(tballoon_policy_report);

/**
 * tballoon_policy_interrupt() - must the run stop for something outside it?
 * @in: what happened since the last check
 * @reason: set to the TBALLOON_REASON_* detail when it must
 *
 * In this order: removal or suspend (ABORTED/REMOVED), a broken device
 * (ABORTED/DEVICE_ERROR), a config change of the standard balloon (it
 * reads num_pages again: ABORTED/SUPERSEDED), a newer timed command
 * (ABORTED, tballoon_policy_superseded_reason()). Only then may
 * tballoon_policy_stop() decide.
 *
 * Return: TBALLOON_STATE_ABORTED, or TBALLOON_STATE_RUNNING to go on.
 */
u32 tballoon_policy_interrupt(const struct tballoon_interrupt_in *in, u32 *reason)
{
	if (in->removing)
		*reason = TBALLOON_REASON_REMOVED;
	else if (in->broken)
		*reason = TBALLOON_REASON_DEVICE_ERROR;
	else if (!in->timed && in->changed)
		*reason = TBALLOON_REASON_SUPERSEDED;
	else if (in->timed && in->next)
		*reason = tballoon_policy_superseded_reason(in->next);
	else
		return TBALLOON_STATE_RUNNING;
	return TBALLOON_STATE_ABORTED;
}
EXPORT_SYMBOL_IF_KUNIT(tballoon_policy_interrupt);
