// SPDX-License-Identifier: GPL-2.0-only
/*
 * tballoon_cmd.c - commands: config space, the stop flags and the worker
 *
 * Owns the device side of the protocol: reading a command from config space
 * (tballoon_read_cmd()), writing reports and actual (tballoon_report(),
 * tballoon_write_actual()), the stop flags the config callback, the PM and
 * reboot notifiers and remove() set (tballoon_kick(), tballoon_interrupted(),
 * tballoon_removing()), and the worker that feeds commands (TIMED) or
 * num_pages (standard) to the engine (tballoon_work()).
 *
 * Locks: the stop flags take @tb->stop_lock (irq-safe: the config callback
 * runs with interrupts off). Everything else runs in the worker, which owns
 * @tb->run, @tb->next, @tb->last_cmd_id and @tb->report_seq; the engine
 * takes @tb->lock inside tballoon_run(). Reports and actual are written
 * with @tb->lock held: the OOM notifier changes num_pages and writes actual
 * under it, so an unlocked report could overwrite a fresher actual.
 */

#include <linux/ktime.h>
#include <linux/lockdep.h>
#include <linux/virtio_config.h>

#include "tballoon.h"

/* Must the worker stop or look at the config? Any context that sleeps. */
bool tballoon_interrupted(struct tballoon *tb)
{
	bool ret;

	spin_lock_irq(&tb->stop_lock);
	ret = tb->removing || tb->suspending || tb->changed;
	spin_unlock_irq(&tb->stop_lock);
	return ret;
}

/* Must the worker stop: removal, or suspend? */
bool tballoon_removing(struct tballoon *tb)
{
	bool ret;

	spin_lock_irq(&tb->stop_lock);
	ret = tb->removing || tb->suspending;
	spin_unlock_irq(&tb->stop_lock);
	return ret;
}

/* Clear the "config changed" note; return whether it was set. */
bool tballoon_take_changed(struct tballoon *tb)
{
	bool ret;

	spin_lock_irq(&tb->stop_lock);
	ret = tb->changed;
	tb->changed = false;
	spin_unlock_irq(&tb->stop_lock);
	return ret;
}

/**
 * tballoon_change_is_noise() - forget a config change that brought nothing
 * @tb: the balloon, TIMED, during a run (the worker)
 *
 * A device may announce any write to config space, or none at all; only a
 * new cmd_id is a new command. A fill that stopped for every announcement
 * would drop its partly filled batch each time (a noisy device can keep a
 * run from ever completing a batch), so the fill asks here first.
 *
 * Return: true if the only reason to stop was a change that left cmd_id
 * as it is (the note is cleared); false if the worker must stop or look
 * (removal, suspend, a new cmd_id, the standard balloon's num_pages): the
 * note stays for tballoon_check().
 */
bool tballoon_change_is_noise(struct tballoon *tb)
{
	u32 id;

	if (!tb->timed || tballoon_removing(tb) || !tballoon_take_changed(tb))
		return false;
	/* Cleared first: a change from now on sets the note again. */
	virtio_cread_le(tb->vdev, struct virtio_tballoon_config, cmd_id, &id);
	if (id == tb->run.cmd.cmd_id)
		return true;
	spin_lock_irq(&tb->stop_lock);
	tb->changed = true;
	spin_unlock_irq(&tb->stop_lock);
	return false;
}

/* Note a change and queue the worker, unless remove() runs. */
void tballoon_kick(struct tballoon *tb)
{
	unsigned long flags;

	spin_lock_irqsave(&tb->stop_lock, flags);
	if (!tb->removing) {
		tb->changed = true;
		queue_work(system_freezable_wq, &tb->work);
	}
	spin_unlock_irqrestore(&tb->stop_lock, flags);
	wake_up(&tb->wake);
}

/* The device announced a change: note it, leave the work to the worker. */
void tballoon_config_changed(struct virtio_device *vdev)
{
	struct tballoon *tb = vdev->priv;

	tballoon_hint_changed(tb);
	tballoon_kick(tb);
}

static u32 tballoon_config_gen(struct virtio_device *vdev)
{
	return vdev->config->generation ? vdev->config->generation(vdev) : 0;
}

/**
 * tballoon_read_cmd() - read the device's current command
 * @tb: the balloon
 * @cmd: filled with the command
 *
 * Reads the device-written timed block under the config generation counter
 * and reads cmd_id again after the other fields, until both are stable
 * across a read (the device writes cmd_id last).
 *
 * Return: true, or false if remove() started (then @cmd is not stable).
 */
bool tballoon_read_cmd(struct tballoon *tb, struct tballoon_cmd *cmd)
{
	struct virtio_device *vdev = tb->vdev;
	u32 gen, again;

	do {
		if (tballoon_removing(tb))
			return false;
		cond_resched();
		gen = tballoon_config_gen(vdev);
		virtio_cread_le(vdev, struct virtio_tballoon_config, cmd_id,
				&cmd->cmd_id);
		virtio_cread_le(vdev, struct virtio_tballoon_config, op,
				&cmd->op);
		virtio_cread_le(vdev, struct virtio_tballoon_config, flags,
				&cmd->flags);
		virtio_cread_le(vdev, struct virtio_tballoon_config, deadline_ms,
				&cmd->deadline_ms);
		virtio_cread_le(vdev, struct virtio_tballoon_config,
				target_pages, &cmd->target_pages);
		virtio_cread_le(vdev, struct virtio_tballoon_config,
				floor_pages, &cmd->floor_pages);
		virtio_cread_le(vdev, struct virtio_tballoon_config, cmd_id,
				&again);
	} while (gen != tballoon_config_gen(vdev) || again != cmd->cmd_id);

	return true;
}

u32 tballoon_elapsed_ms(const struct tballoon_run *run)
{
	s64 ms = ktime_ms_delta(ktime_get(), run->start);

	return clamp_t(s64, ms, 0, U32_MAX - 1);
}

/* Standard report of the balloon size. */
void tballoon_write_actual(struct tballoon *tb)
{
	u32 actual = tb->num_pages;

	lockdep_assert_held(&tb->lock);
	virtio_cwrite_le(tb->vdev, struct virtio_tballoon_config, actual,
			 &actual);
	tb->last_report_pages = actual;
}

/**
 * tballoon_report() - write a report about tb->run to the device
 * @tb: the balloon
 * @full: write every field (acceptance, final); else actual and elapsed_ms
 *
 * Writes in protocol order: actual, elapsed_ms, start_pages, reason,
 * state, ack_cmd_id, and last report_seq. Worker context (or remove/freeze
 * once the worker cannot run), @tb->lock held.
 */
void tballoon_report(struct tballoon *tb, bool full)
{
	struct virtio_device *vdev = tb->vdev;
	struct tballoon_run *run = &tb->run;
	u32 v;

	tballoon_write_actual(tb);
	v = tballoon_elapsed_ms(run);
	virtio_cwrite_le(vdev, struct virtio_tballoon_config, elapsed_ms, &v);
	if (full) {
		virtio_cwrite_le(vdev, struct virtio_tballoon_config,
				 start_pages, &run->start_pages);
		virtio_cwrite_le(vdev, struct virtio_tballoon_config, reason,
				 &run->reason);
		virtio_cwrite_le(vdev, struct virtio_tballoon_config, state,
				 &run->state);
		virtio_cwrite_le(vdev, struct virtio_tballoon_config, ack_cmd_id,
				 &run->cmd.cmd_id);
	}
	tb->report_seq++;
	virtio_cwrite_le(vdev, struct virtio_tballoon_config, report_seq,
			 &tb->report_seq);
	tb->last_report = ktime_get();
}

/**
 * tballoon_handle() - validate, accept, run and report one TIMED command
 * @tb: the balloon
 * @cmd: the command; its id is new
 *
 * Leaves @tb->have_next set when a newer command ended this one.
 */
static void tballoon_handle(struct tballoon *tb, const struct tballoon_cmd *cmd)
{
	struct tballoon_run *run = &tb->run;
	u32 ppp = TBALLOON_PAGES_PER_PAGE;

	/*
	 * Acceptance and the final report under @tb->lock: the OOM notifier
	 * changes num_pages and writes actual under it, and a report that
	 * read num_pages before it would overwrite a fresher actual.
	 */
	mutex_lock(&tb->lock);
	tb->last_cmd_id = cmd->cmd_id;
	tb->have_next = false;
	memset(run, 0, sizeof(*run));
	run->cmd = *cmd;
	run->start_pages = tb->num_pages;
	run->state = tballoon_policy_validate(cmd, tb->num_pages, tb->ram_pages,
					      &run->reason);
	/* Acceptance: time starts now. */
	run->start = ktime_get();
	run->start_stalls = tballoon_direct_reclaims();
	if (run->state != TBALLOON_STATE_RUNNING) {
		tballoon_report(tb, true);
		mutex_unlock(&tb->lock);
		return;
	}

	/* Whole guest pages only, like the standard balloon. */
	run->cmd.target_pages = ALIGN(cmd->target_pages, ppp);
	run->cmd.floor_pages = max(cmd->floor_pages, tb->reserve_pages);
	tballoon_report(tb, true);
	mutex_unlock(&tb->lock);
	tballoon_run(tb);
	mutex_lock(&tb->lock);
	tballoon_report(tb, true);
	mutex_unlock(&tb->lock);
}

/* Standard balloon: follow num_pages, no deadline, actual after each batch. */
static void tballoon_work_standard(struct tballoon *tb)
{
	struct tballoon_run *run = &tb->run;
	u32 num_pages, target;

	while (!tballoon_removing(tb)) {
		tballoon_take_changed(tb);
		virtio_cread_le(tb->vdev, struct virtio_tballoon_config,
				num_pages, &num_pages);
		target = ALIGN(num_pages, TBALLOON_PAGES_PER_PAGE);
		if (target == tb->num_pages)
			break;

		mutex_lock(&tb->lock);
		memset(run, 0, sizeof(*run));
		run->cmd.op = target > tb->num_pages ? TBALLOON_OP_INFLATE :
						       TBALLOON_OP_DEFLATE;
		run->cmd.target_pages = target;
		run->cmd.deadline_ms = TBALLOON_NO_DEADLINE;
		run->cmd.floor_pages = tb->reserve_pages;
		run->start_pages = tb->num_pages;
		run->start = ktime_get();
		mutex_unlock(&tb->lock);
		tballoon_run(tb);
		mutex_lock(&tb->lock);
		tballoon_write_actual(tb);
		mutex_unlock(&tb->lock);

		if (run->reason == TBALLOON_REASON_DEVICE_ERROR)
			break;
		if (run->state == TBALLOON_STATE_PRESSURE) {
			dev_info_ratelimited(&tb->vdev->dev,
					     "memory pressure at %u of %u pages\n",
					     tb->num_pages, target);
			wait_event_timeout(tb->wake, tballoon_interrupted(tb),
					   msecs_to_jiffies(TBALLOON_RETRY_MS));
		}
	}
}

void tballoon_work(struct work_struct *work)
{
	struct tballoon *tb = container_of(work, struct tballoon, work);
	struct tballoon_cmd cmd;

	if (!tb->timed) {
		tballoon_work_standard(tb);
		return;
	}

	tballoon_take_changed(tb);
	if (!tballoon_read_cmd(tb, &cmd))
		return;
	/* cmd_id 0: no command ever (protocol.rst, "Issuing") */
	while (cmd.cmd_id && cmd.cmd_id != tb->last_cmd_id && !tballoon_removing(tb)) {
		tballoon_handle(tb, &cmd);
		if (!tb->have_next)
			break;
		cmd = tb->next;
	}
}
