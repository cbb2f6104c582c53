// SPDX-License-Identifier: GPL-2.0
/*
 * dev.c - timed balloon device model.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>

#include "dev.h"
#include "util.h"

/* pin the wire layout */
_Static_assert(sizeof(struct virtio_tballoon_config) == VIRTIO_TBALLOON_CONFIG_SIZE,
	       "config layout");
_Static_assert(offsetof(struct virtio_tballoon_config, ack_cmd_id) == 40,
	       "driver block offset");

#define TB_OFF(field) offsetof(struct virtio_tballoon_config, field)
/* the bytes a driver may write: actual, and the driver block */
#define TB_DRV_ACTUAL_START TB_OFF(actual)
#define TB_DRV_ACTUAL_END (TB_OFF(actual) + 4)
#define TB_DRV_POISON_START TB_OFF(poison_val)
#define TB_DRV_POISON_END (TB_OFF(poison_val) + 4)
#define TB_DRV_BLOCK_START TB_OFF(ack_cmd_id)
#define TB_DRV_BLOCK_END VIRTIO_TBALLOON_CONFIG_SIZE

static const char *const tb_op_names[TBALLOON_OP_COUNT] = {
	[TBALLOON_OP_NONE] = "none",
	[TBALLOON_OP_INFLATE] = "inflate",
	[TBALLOON_OP_DEFLATE] = "deflate",
	[TBALLOON_OP_ABORT] = "abort",
};

static const char *const tb_state_names[TB_STATE_NAMES] = {
	[TBALLOON_STATE_IDLE] = "idle",
	[TBALLOON_STATE_RUNNING] = "running",
	[TBALLOON_STATE_DONE] = "done",
	[TBALLOON_STATE_DEADLINE] = "deadline",
	[TBALLOON_STATE_PRESSURE] = "pressure",
	[TBALLOON_STATE_ABORTED] = "aborted",
	[TBALLOON_STATE_REJECTED] = "rejected",
	[TB_STATE_UNRESPONSIVE] = "guest-unresponsive",
};

static const char *const tb_gstat_names[TB_GSTAT_COUNT] = {
	[TB_GSTAT_SWAP_IN] = "swap-in",
	[TB_GSTAT_SWAP_OUT] = "swap-out",
	[TB_GSTAT_MAJFLT] = "major-faults",
	[TB_GSTAT_MINFLT] = "minor-faults",
	[TB_GSTAT_MEMFREE] = "free-memory",
	[TB_GSTAT_MEMTOT] = "total-memory",
	[TB_GSTAT_AVAIL] = "available-memory",
	[TB_GSTAT_CACHES] = "disk-caches",
	[TB_GSTAT_HTLB_PGALLOC] = "htlb-pgalloc",
	[TB_GSTAT_HTLB_PGFAIL] = "htlb-pgfail",
	[TB_GSTAT_OOM_KILL] = "oom-kills",
	[TB_GSTAT_ALLOC_STALL] = "alloc-stalls",
	[TB_GSTAT_ASYNC_SCAN] = "async-scans",
	[TB_GSTAT_DIRECT_SCAN] = "direct-scans",
	[TB_GSTAT_ASYNC_RECLAIM] = "async-reclaims",
	[TB_GSTAT_DIRECT_RECLAIM] = "direct-reclaims",
};

const char *tb_gstat_name(unsigned int tag)
{
	return tag < TB_GSTAT_COUNT ? tb_gstat_names[tag] : NULL;
}

static const char *const tb_reason_names[TBALLOON_REASON_COUNT] = {
	[TBALLOON_REASON_NONE] = "none",
	[TBALLOON_REASON_BAD_OP] = "bad-op",
	[TBALLOON_REASON_BAD_FLAGS] = "bad-flags",
	[TBALLOON_REASON_BAD_TARGET] = "bad-target",
	[TBALLOON_REASON_BAD_DEADLINE] = "bad-deadline",
	[TBALLOON_REASON_BAD_FLOOR] = "bad-floor",
	[TBALLOON_REASON_DIRECTION] = "direction",
	[TBALLOON_REASON_SUPERSEDED] = "superseded",
	[TBALLOON_REASON_HOST_ABORT] = "host-abort",
	[TBALLOON_REASON_REMOVED] = "removed",
	[TBALLOON_REASON_FLOOR] = "floor",
	[TBALLOON_REASON_ALLOC_FAIL] = "alloc-fail",
	[TBALLOON_REASON_RECLAIM] = "reclaim",
	[TBALLOON_REASON_DEVICE_ERROR] = "device-error",
};

const char *tb_op_name(uint32_t op)
{
	return op < TBALLOON_OP_COUNT ? tb_op_names[op] : "unknown";
}

const char *tb_state_name(uint32_t state)
{
	return state < TB_STATE_NAMES ? tb_state_names[state] : "unknown";
}

const char *tb_reason_name(uint32_t reason)
{
	return reason < TBALLOON_REASON_COUNT ? tb_reason_names[reason] : "unknown";
}

uint32_t tb_dev_cfg_get(const struct tb_dev *dev, size_t off)
{
	return tb_get_le32(dev->config + off);
}

static void tb_dev_cfg_put(struct tb_dev *dev, size_t off, uint32_t v)
{
	tb_put_le32(dev->config + off, v);
}

void tb_dev_init(struct tb_dev *dev, const struct tb_mem *mem,
		 const struct tb_dev_ops *ops, void *opaque)
{
	memset(dev, 0, sizeof(*dev));
	dev->mem = mem;
	dev->ops = ops;
	dev->opaque = opaque;
	dev->punch = tb_mem_punch_fallocate;
	dev->grace_ms = TB_DEV_GRACE_MS;
	dev->stats_interval_ms = TB_DEV_STATS_INTERVAL_MS;
}

bool tb_dev_timed(const struct tb_dev *dev)
{
	return dev->features_set && (dev->features & TB_BIT(VIRTIO_BALLOON_F_TIMED));
}

static const char *const tb_kind_names[TB_KIND_COUNT] = {
	[TB_KIND_VHOST_USER] = "vhost-user",
	[TB_KIND_QMP] = "qmp",
	[TB_KIND_LIBVIRT] = "libvirt",
};

const char *tb_kind_name(enum tb_kind kind)
{
	return (unsigned int)kind < TB_KIND_COUNT ? tb_kind_names[kind] : "unknown";
}

uint64_t tb_dev_ram_bytes(const struct tb_dev *dev)
{
	uint64_t ram = 0;

	if (!dev->ops || !dev->ops->footprint)
		return tb_mem_ram_bytes(dev->mem);
	/* no resident figure: that costs a read of /proc (QMP) */
	dev->ops->footprint(dev->opaque, &ram, NULL);
	return ram;
}

uint64_t tb_dev_resident_bytes(const struct tb_dev *dev)
{
	uint64_t ram = 0, res = 0;

	if (!dev->ops || !dev->ops->footprint)
		return tb_mem_resident_bytes(dev->mem);
	dev->ops->footprint(dev->opaque, &ram, &res);
	return res;
}

bool tb_cmd_running(const struct tb_cmd *cmd)
{
	return cmd->cmd_id && cmd->state < TBALLOON_STATE_DONE;
}

static void tb_dev_event(struct tb_dev *dev, enum tb_event ev)
{
	if (dev->ops && dev->ops->event)
		dev->ops->event(dev->opaque, ev, &dev->cmd);
}

/* tell the driver the config changed; 0 or -errno (not told) */
int tb_dev_notify(struct tb_dev *dev)
{
	if (dev->ops && dev->ops->notify_config)
		return dev->ops->notify_config(dev->opaque);
	return 0;
}

/* end the current command with a host-decided or driver-reported outcome */
static void tb_dev_finish(struct tb_dev *dev, uint32_t state, uint32_t reason,
			  uint64_t now_ms)
{
	struct tb_cmd *c = &dev->cmd;

	c->state = state;
	c->reason = reason;
	c->ended_ms = now_ms ? now_ms : 1;
	c->resident_after = tb_dev_resident_bytes(dev);
	if (!c->timed)
		c->elapsed_ms = (uint32_t)(now_ms - c->issued_ms);
	dev->gen++;
	tb_info("command %u (%s) ended: %s (%s), actual %u pages, %u reports",
		c->cmd_id, tb_op_name(c->op), tb_state_name(state),
		tb_reason_name(reason), TB_CFG(dev, actual), c->reports);
	tb_dev_event(dev, TB_EVENT_DONE);
}

void tb_dev_set_features(struct tb_dev *dev, uint64_t features)
{
	dev->features = features;
	dev->features_set = true;
	tb_info("balloon: driver features 0x%llx, timed %s",
		(unsigned long long)features, tb_dev_timed(dev) ? "yes" : "no");
}

/*
 * A device reset, whether the session ended or the driver reset the device:
 * a running command ends ABORTED/REMOVED, the config, the balloon count and
 * the broken mark are cleared. cmd_id 0 means "no command ever", so a guest
 * probing afterwards does not pick up a stale command; the id sequence
 * itself (last_cmd_id) continues, so the next command is still new to a
 * guest that survived a reconnect.
 */
static void tb_dev_clear(struct tb_dev *dev, uint64_t now_ms)
{
	if (tb_cmd_running(&dev->cmd))
		tb_dev_finish(dev, TBALLOON_STATE_ABORTED, TBALLOON_REASON_REMOVED, now_ms);
	memset(dev->config, 0, sizeof(dev->config));
	dev->last_report_seq = 0;
	dev->device_pages = 0;
	memset(dev->counted_valid, 0, sizeof(dev->counted_valid));
	dev->broken = false;
	dev->broken_why[0] = 0;
	dev->gen++;
}

void tb_dev_session(struct tb_dev *dev, bool up, uint64_t now_ms)
{
	bool was = dev->connected;

	dev->connected = up;
	dev->last_driver_ms = now_ms;
	dev->driver_ok = false;
	dev->features = 0;
	dev->features_set = false;
	if (up) {
		if (!was)
			tb_dev_event(dev, TB_EVENT_CONNECTED);
		return;
	}
	/* The session is gone: a device reset (Documentation/protocol.rst). */
	tb_dev_clear(dev, now_ms);
	memset(&dev->gstats, 0, sizeof(dev->gstats));
	if (was)
		tb_dev_event(dev, TB_EVENT_DISCONNECTED);
}

void tb_dev_reset(struct tb_dev *dev, uint64_t now_ms)
{
	dev->stats.resets++;
	tb_info("balloon: device reset (guest reboot or driver reload): "
		"driver block, actual and balloon count cleared");
	tb_dev_clear(dev, now_ms);
	dev->gstats.held = false;
	tb_dev_event(dev, TB_EVENT_RESET);
}

void tb_dev_set_broken(struct tb_dev *dev, const char *why, uint64_t now_ms)
{
	if (dev->broken)
		return;
	dev->broken = true;
	snprintf(dev->broken_why, sizeof(dev->broken_why), "%s", why);
	tb_err("balloon: device marked broken, rings no longer processed until "
	       "reset: %s", why);
	if (tb_cmd_running(&dev->cmd))
		tb_dev_finish(dev, TBALLOON_STATE_ABORTED, TBALLOON_REASON_DEVICE_ERROR,
			      now_ms);
	dev->gen++;
	tb_dev_event(dev, TB_EVENT_BROKEN);
}

void tb_dev_get_config(const struct tb_dev *dev, uint8_t *buf, uint32_t off,
		       uint32_t size)
{
	if (!tb_range_ok(off, size, sizeof(dev->config)))
		return;
	memcpy(buf, dev->config + off, size);
}

/* copy the part of [src_off, src_off+size) that falls inside [lo, hi) */
static void tb_dev_take(struct tb_dev *dev, const uint8_t *buf, uint32_t off,
			uint32_t size, uint32_t lo, uint32_t hi)
{
	uint32_t a = off > lo ? off : lo;
	uint32_t b = off + size < hi ? off + size : hi;

	if (a < b)
		memcpy(dev->config + a, buf + (a - off), b - a);
}

static bool tb_state_terminal(uint32_t state)
{
	return state >= TBALLOON_STATE_DONE && state < TBALLOON_STATE_COUNT;
}

/* a complete driver report (report_seq changed) */
static void tb_dev_report(struct tb_dev *dev, uint64_t now_ms)
{
	struct tb_cmd *c = &dev->cmd;
	uint32_t ack = TB_CFG(dev, ack_cmd_id);
	uint32_t state = TB_CFG(dev, state);
	uint32_t reason = TB_CFG(dev, reason);

	if (state >= TBALLOON_STATE_COUNT || reason >= TBALLOON_REASON_COUNT) {
		dev->stats.bad_reports++;
		tb_warn("balloon: report with invalid state %u / reason %u ignored",
			state, reason);
		return;
	}
	if (!c->cmd_id || ack != c->cmd_id || !c->timed) {
		tb_dbg("balloon: report for command %u (%s), current is %u", ack,
		       tb_state_name(state), c->cmd_id);
		return;
	}
	dev->last_driver_ms = now_ms;
	if (!tb_cmd_running(c) && c->state != TB_STATE_UNRESPONSIVE && !c->recovered) {
		tb_dbg("balloon: late report for ended command %u", ack);
		return;
	}
	if (!tb_cmd_running(c)) {
		/* the guest's report is authoritative for the outcome */
		tb_info("balloon: command %u: the guest reported after all", ack);
		c->state = TBALLOON_STATE_RUNNING;
		c->ended_ms = 0;
	}
	c->elapsed_ms = TB_CFG(dev, elapsed_ms);
	c->start_pages = TB_CFG(dev, start_pages);
	c->report_seq = TB_CFG(dev, report_seq);
	c->reports++;
	tb_dbg("balloon: report %u for command %u: %s, actual %u, %u ms",
	       c->report_seq, ack, tb_state_name(state), TB_CFG(dev, actual),
	       c->elapsed_ms);
	if (tb_state_terminal(state)) {
		tb_dev_finish(dev, state, reason, now_ms);
		return;
	}
	c->state = state == TBALLOON_STATE_IDLE ? TBALLOON_STATE_RUNNING : state;
	c->reason = reason;
	dev->gen++;
	tb_dev_event(dev, TB_EVENT_PROGRESS);
}

static uint32_t tb_dev_ram_pages(const struct tb_dev *dev)
{
	uint64_t pages = tb_dev_ram_bytes(dev) >> TB_PAGE_SHIFT;

	return pages > UINT32_MAX ? UINT32_MAX : (uint32_t)pages;
}

/*
 * The host's paced target @elapsed_ms into a standard command from @start
 * to @target (the next step's, TB_HOST_PACE_MS on).
 */
static uint32_t tb_dev_pace_step(uint32_t start, uint32_t target, uint32_t deadline_ms,
				 uint64_t elapsed_ms)
{
	uint64_t span = (uint64_t)deadline_ms * TB_HOST_PACE_SHARE / 100;
	uint64_t t = elapsed_ms + TB_HOST_PACE_MS;
	int64_t delta = (int64_t)target - (int64_t)start;

	if (!span || t >= span)
		return target;
	return (uint32_t)((int64_t)start + delta * (int64_t)t / (int64_t)span);
}

/*
 * Stop the standard balloon where it is: num_pages = actual and tell the
 * driver, or the peer's own stop (which reads `actual` afresh first).
 */
static int tb_dev_stop_here(struct tb_dev *dev)
{
	if (dev->ops && dev->ops->stop)
		return dev->ops->stop(dev->opaque);
	tb_dev_cfg_put(dev, TB_OFF(num_pages), TB_CFG(dev, actual));
	return tb_dev_notify(dev);
}

/* the guest's available memory now, estimated from its last statistics */
static bool tb_dev_est_avail(const struct tb_dev *dev, uint64_t *avail)
{
	const struct tb_guest_stats *g = &dev->gstats;
	int64_t moved = (int64_t)TB_CFG(dev, actual) - (int64_t)g->actual_pages;
	int64_t est;

	if (!g->updates || !(g->have & (1U << TB_GSTAT_AVAIL)))
		return false;
	est = (int64_t)(g->val[TB_GSTAT_AVAIL] >> TB_PAGE_SHIFT) - moved;
	*avail = est > 0 ? (uint64_t)est : 0;
	return true;
}

/* a counter of the statistics grew by more than @limit since the command began */
static bool tb_dev_stat_grew(const struct tb_dev *dev, unsigned int tag, uint64_t limit)
{
	const struct tb_guest_stats *g = &dev->gstats;
	const struct tb_host_watch *w = &dev->watch;
	uint32_t bit = 1U << tag;

	/* 6.12's counters read as absent on older guests, never as growth */
	if (!(g->have & bit) || !(w->base_have & bit) || g->val[tag] == UINT64_MAX ||
	    w->base[tag] == UINT64_MAX)
		return false;
	return g->val[tag] > w->base[tag] && g->val[tag] - w->base[tag] > limit;
}

/*
 * Host enforcement of a running standard inflate (the guest does not
 * enforce it): stop it at the floor or under pressure (see dev.h).
 */
static void tb_dev_host_check(struct tb_dev *dev, uint64_t now_ms)
{
	struct tb_cmd *c = &dev->cmd;
	uint64_t avail, lead = 0, moved;

	if (!tb_cmd_running(c) || c->timed || c->op != TBALLOON_OP_INFLATE)
		return;
	if (c->floor_pages && tb_dev_est_avail(dev, &avail)) {
		moved = TB_CFG(dev, actual) > c->start_pages ?
			TB_CFG(dev, actual) - c->start_pages : 0;
		if (now_ms > c->issued_ms)
			lead = moved * TB_HOST_STOP_LEAD_MS / (now_ms - c->issued_ms);
		tb_dbg("command %u: floor check: statistics say %llu pages available at "
		       "balloon %u (%llu ms ago), balloon now %u: about %llu pages, "
		       "lead %llu", c->cmd_id,
		       (unsigned long long)(dev->gstats.val[TB_GSTAT_AVAIL] >> TB_PAGE_SHIFT),
		       dev->gstats.actual_pages,
		       (unsigned long long)(now_ms - dev->gstats.updated_ms),
		       TB_CFG(dev, actual), (unsigned long long)avail,
		       (unsigned long long)lead);
		if (avail <= (uint64_t)c->floor_pages + lead) {
			tb_info("command %u: guest available memory about %llu pages "
				"(statistics %llu ms old), floor %u pages: stopped by the host",
				c->cmd_id, (unsigned long long)avail,
				(unsigned long long)(now_ms - dev->gstats.updated_ms),
				c->floor_pages);
			tb_dev_stop_here(dev);
			tb_dev_finish(dev, TBALLOON_STATE_PRESSURE, TBALLOON_REASON_FLOOR,
				      now_ms);
			return;
		}
	}
	if (dev->gstats.updates > dev->watch.base_updates &&
	    (tb_dev_stat_grew(dev, TB_GSTAT_SWAP_IN, 0) ||
	     tb_dev_stat_grew(dev, TB_GSTAT_ALLOC_STALL, 0) ||
	     tb_dev_stat_grew(dev, TB_GSTAT_DIRECT_RECLAIM, 0) ||
	     tb_dev_stat_grew(dev, TB_GSTAT_MAJFLT, TB_HOST_MAJFLT_PRESSURE))) {
		tb_info("command %u: the guest is under memory pressure (swap-in, "
			"stalls, direct reclaim or major faults since it began): "
			"stopped by the host", c->cmd_id);
		tb_dev_stop_here(dev);
		tb_dev_finish(dev, TBALLOON_STATE_PRESSURE, TBALLOON_REASON_RECLAIM, now_ms);
	}
}

/* without TIMED: the standard balloon moves `actual` towards num_pages */
static void tb_dev_std_progress(struct tb_dev *dev, uint64_t now_ms)
{
	struct tb_cmd *c = &dev->cmd;

	if (!tb_cmd_running(c)) {
		/* the guest (deflate-on-oom, a reset) or QEMU moved it */
		tb_dev_event(dev, TB_EVENT_CHANGE);
		return;
	}
	if (c->timed)
		return;
	c->reports++;
	c->elapsed_ms = (uint32_t)(now_ms - c->issued_ms);
	dev->watch.moved = true;
	if (TB_CFG(dev, actual) == c->target_pages) {
		tb_dev_finish(dev, TBALLOON_STATE_DONE, TBALLOON_REASON_NONE, now_ms);
		return;
	}
	tb_dev_host_check(dev, now_ms);
	if (tb_cmd_running(c))
		tb_dev_event(dev, TB_EVENT_PROGRESS);
}

void tb_dev_peer_link(struct tb_dev *dev, bool up, uint64_t now_ms)
{
	if (!up) {
		if (dev->connected)
			tb_dev_session(dev, false, now_ms);
		return;
	}
	tb_dev_session(dev, true, now_ms);
	tb_dev_set_features(dev, TB_BIT(TB_BALLOON_F_STATS_VQ));
	dev->driver_ok = true;
	dev->notify_ok = true;
	dev->gen++;
}

void tb_dev_peer_target(struct tb_dev *dev, uint64_t pages)
{
	uint64_t ram = tb_dev_ram_pages(dev);

	tb_dev_cfg_put(dev, TB_OFF(num_pages), (uint32_t)(pages > ram ? ram : pages));
	dev->gen++;
}

void tb_dev_peer_actual(struct tb_dev *dev, uint64_t pages, uint64_t now_ms)
{
	uint64_t ram = tb_dev_ram_pages(dev);

	if (pages > ram)
		pages = ram;
	dev->device_pages = pages;
	if (TB_CFG(dev, actual) == pages)
		return;
	tb_dev_cfg_put(dev, TB_OFF(actual), (uint32_t)pages);
	dev->gen++;
	tb_dev_std_progress(dev, now_ms);
}

void tb_dev_peer_stats(struct tb_dev *dev, uint32_t have,
		       const uint64_t val[TB_GSTAT_COUNT], uint32_t at_pages,
		       uint64_t now_ms)
{
	struct tb_guest_stats *g = &dev->gstats;

	for (unsigned int i = 0; i < TB_GSTAT_COUNT; i++)
		g->val[i] = (have & (1U << i)) ? val[i] : 0;
	g->have = have;
	g->updates++;
	g->updated_ms = now_ms;
	g->actual_pages = at_pages;
	tb_dev_host_check(dev, now_ms);
}

int tb_dev_set_config(struct tb_dev *dev, const uint8_t *buf, uint32_t off,
		      uint32_t size, uint64_t now_ms)
{
	uint32_t old_actual = TB_CFG(dev, actual);
	uint8_t before[sizeof(dev->config)];

	if (!tb_range_ok(off, size, sizeof(dev->config)))
		return -EINVAL;
	memcpy(before, dev->config, sizeof(before));
	/* only the driver-written fields; the rest is the device's */
	tb_dev_take(dev, buf, off, size, TB_DRV_ACTUAL_START, TB_DRV_ACTUAL_END);
	/*
	 * The value the guest's free pages hold (PAGE_POISON). Taken whatever
	 * the features say: a vhost-user front-end passes config writes on at
	 * once but the features only at DRIVER_OK, after the driver wrote it.
	 */
	tb_dev_take(dev, buf, off, size, TB_DRV_POISON_START, TB_DRV_POISON_END);
	tb_dev_take(dev, buf, off, size, TB_DRV_BLOCK_START, TB_DRV_BLOCK_END);
	/*
	 * Every field the driver changed is state: the front-end hears back
	 * only once it is durable (a daemon restarted after the ack of a
	 * report's first fields but before report_seq must still have them).
	 */
	if (memcmp(before, dev->config, sizeof(before)))
		dev->gen++;

	if (tb_dev_timed(dev)) {
		uint32_t seq = TB_CFG(dev, report_seq);

		if (seq != dev->last_report_seq) {
			dev->last_report_seq = seq;
			tb_dev_report(dev, now_ms);
		}
		/* the driver moved it outside a command (deflate-on-oom) */
		if (TB_CFG(dev, actual) != old_actual && !tb_cmd_running(&dev->cmd))
			tb_dev_event(dev, TB_EVENT_CHANGE);
	} else if (TB_CFG(dev, actual) != old_actual) {
		tb_dev_std_progress(dev, now_ms);
	}
	return 0;
}

#define tb_refuse(...) \
	do { \
		snprintf(err, errlen, __VA_ARGS__); \
		return 0; \
	} while (0)

uint32_t tb_dev_issue(struct tb_dev *dev, uint32_t op, uint32_t target_pages,
		      uint32_t deadline_ms, uint32_t floor_pages, uint32_t flags,
		      uint64_t now_ms, char *err, size_t errlen)
{
	bool timed = tb_dev_timed(dev);
	uint32_t ram = tb_dev_ram_pages(dev);
	uint32_t actual = TB_CFG(dev, actual);
	bool running = tb_cmd_running(&dev->cmd);
	uint8_t saved[VIRTIO_TBALLOON_CONFIG_SIZE];
	struct tb_cmd *c = &dev->cmd;
	uint32_t id;
	int rc;

	/* not yet: the same command may succeed later */
	dev->refused_retry = true;
	if (!dev->connected)
		tb_refuse("no front-end (QEMU) is connected");
	/* broken needs the guest (or an operator), not patience */
	dev->refused_retry = false;
	if (dev->broken)
		tb_refuse("the device is broken until the guest resets it: %s",
			  dev->broken_why);
	dev->refused_retry = true;
	if (!dev->driver_ok)
		tb_refuse("the guest driver is not ready");
	if (!dev->notify_ok)
		tb_refuse("the front-end gave no backend channel: "
			  "config changes cannot be announced");
	dev->refused_retry = false;
	switch (op) {
	case TBALLOON_OP_INFLATE:
	case TBALLOON_OP_DEFLATE:
		if (deadline_ms == 0 || deadline_ms > TBALLOON_DEADLINE_MAX_MS)
			tb_refuse("deadline must be 1..%u ms", TBALLOON_DEADLINE_MAX_MS);
		if (target_pages > ram)
			tb_refuse("target %u pages is beyond guest RAM (%u pages)",
				  target_pages, ram);
		if (floor_pages > ram)
			tb_refuse("floor %u pages is beyond guest RAM (%u pages)",
				  floor_pages, ram);
		if (flags & ~TBALLOON_FLAGS_ALL)
			tb_refuse("unknown flags 0x%x", flags);
		if (!timed && (flags & TBALLOON_FLAG_GENTLE))
			tb_refuse("gentle needs the timed protocol (the guest's driver "
				  "yields to the guest's work); this driver has none");
		if (!timed && floor_pages &&
		    !(dev->features & TB_BIT(TB_BALLOON_F_STATS_VQ)))
			tb_refuse("a floor needs the guest's statistics, and this driver "
				  "does not send them (no timed protocol, no stats queue)");
		if (!timed && floor_pages && op == TBALLOON_OP_INFLATE &&
		    !(dev->gstats.have & (1U << TB_GSTAT_AVAIL))) {
			dev->refused_retry = true;
			tb_refuse("a floor needs the guest's available memory, and no "
				  "statistics holding it have arrived yet; try again");
		}
		/* actual is stable only while nothing runs */
		if (!running && op == TBALLOON_OP_INFLATE && target_pages < actual)
			tb_refuse("inflate target %u pages is below the balloon (%u pages)",
				  target_pages, actual);
		if (!running && op == TBALLOON_OP_DEFLATE && target_pages > actual)
			tb_refuse("deflate target %u pages is above the balloon (%u pages)",
				  target_pages, actual);
		break;
	case TBALLOON_OP_ABORT:
		if (!running)
			tb_refuse("no command is running");
		target_pages = deadline_ms = floor_pages = flags = 0;
		break;
	default:
		tb_refuse("unknown op %u", op);
	}

	/* never 0 after the first command: the id wraps to 1 */
	id = dev->last_cmd_id == UINT32_MAX ? 1 : dev->last_cmd_id + 1;

	/*
	 * The config first, then the notification; a driver that cannot be
	 * told (the front-end does not read its backend channel) never sees
	 * the new config: it is put back and the command is not issued. Only
	 * then does the new command replace the running one.
	 */
	memcpy(saved, dev->config, sizeof(saved));
	if (timed) {
		/* the command fields first, then the id that announces them */
		tb_dev_cfg_put(dev, TB_OFF(op), op);
		tb_dev_cfg_put(dev, TB_OFF(flags), flags);
		tb_dev_cfg_put(dev, TB_OFF(deadline_ms), deadline_ms);
		tb_dev_cfg_put(dev, TB_OFF(target_pages), target_pages);
		tb_dev_cfg_put(dev, TB_OFF(floor_pages), floor_pages);
		if (op != TBALLOON_OP_ABORT)
			tb_dev_cfg_put(dev, TB_OFF(num_pages), target_pages);
		tb_dev_cfg_put(dev, TB_OFF(cmd_id), id);
		rc = tb_dev_notify(dev);
	} else if (op == TBALLOON_OP_ABORT) {
		rc = tb_dev_stop_here(dev);
	} else {
		tb_dev_cfg_put(dev, TB_OFF(num_pages), (flags & TBALLOON_FLAG_PACED) ?
			       tb_dev_pace_step(actual, target_pages, deadline_ms, 0) :
			       target_pages);
		rc = tb_dev_notify(dev);
	}
	if (rc < 0) {
		memcpy(dev->config, saved, sizeof(saved));
		tb_warn("command not issued: the driver could not be notified: %s",
			strerror(-rc));
		dev->refused_retry = rc == -EAGAIN || rc == -ENOTCONN;
		tb_refuse("not issued: the guest could not be notified (backend channel: %s)",
			  rc == -EAGAIN ? "the front-end does not read it" : strerror(-rc));
	}

	if (running)
		tb_dev_finish(dev, TBALLOON_STATE_ABORTED,
			      op == TBALLOON_OP_ABORT ? TBALLOON_REASON_HOST_ABORT :
							TBALLOON_REASON_SUPERSEDED,
			      now_ms);
	dev->last_cmd_id = id;

	memset(c, 0, sizeof(*c));
	c->cmd_id = id;
	c->op = op;
	c->flags = flags;
	c->deadline_ms = deadline_ms;
	c->target_pages = target_pages;
	c->floor_pages = floor_pages;
	c->state = TBALLOON_STATE_RUNNING;
	c->reason = TBALLOON_REASON_NONE;
	c->start_pages = actual;
	c->timed = timed;
	c->issued_ms = now_ms;
	c->resident_before = tb_dev_resident_bytes(dev);
	dev->watch.base_updates = dev->gstats.updates;
	dev->watch.base_have = dev->gstats.have;
	memcpy(dev->watch.base, dev->gstats.val, sizeof(dev->watch.base));
	dev->watch.moved = false;
	dev->gen++;
	tb_info("command %u: %s target %u pages deadline %u ms floor %u flags 0x%x%s",
		id, tb_op_name(op), target_pages, deadline_ms, floor_pages, flags,
		timed ? "" : " (standard balloon)");

	/* the standard balloon has nothing to report if already there */
	if (!timed && (op == TBALLOON_OP_ABORT || actual == target_pages))
		tb_dev_finish(dev, TBALLOON_STATE_DONE, TBALLOON_REASON_NONE, now_ms);
	return id;
}

int64_t tb_dev_tick(struct tb_dev *dev, uint64_t now_ms)
{
	struct tb_cmd *c = &dev->cmd;
	uint64_t due;

	if (!tb_cmd_running(c))
		return -1;
	if (c->timed) {
		/*
		 * The timed driver enforces its deadline; the host only watches
		 * for a guest that never reports an outcome. A command restored
		 * after a daemon restart whose final report was lost is over
		 * when the balloon (as counted from the PFNs) is at the target.
		 */
		if (c->recovered && c->op != TBALLOON_OP_ABORT &&
		    dev->device_pages == c->target_pages && dev->connected &&
		    now_ms >= dev->last_driver_ms + TB_DEV_RECOVER_QUIET_MS) {
			tb_put_le32(dev->config + TB_OFF(actual), c->target_pages);
			tb_info("balloon: recovered command %u reached its target "
				"(counted from the PFNs)", c->cmd_id);
			tb_dev_finish(dev, TBALLOON_STATE_DONE, TBALLOON_REASON_NONE, now_ms);
			return -1;
		}
		due = c->issued_ms + c->deadline_ms + dev->grace_ms;
		if (now_ms < due)
			return (int64_t)(due - now_ms > 200 && c->recovered ?
					 200 : due - now_ms);
		dev->stats.unresponsive++;
		tb_warn("balloon: command %u: no outcome from the guest %u ms after "
			"its deadline", c->cmd_id, dev->grace_ms);
		tb_dev_finish(dev, TB_STATE_UNRESPONSIVE, TBALLOON_REASON_NONE, now_ms);
		return -1;
	}
	/* a balloon that never moved: nobody drives it in the guest */
	if (!dev->watch.moved && dev->grace_ms < c->deadline_ms &&
	    now_ms >= c->issued_ms + dev->grace_ms) {
		dev->stats.unresponsive++;
		tb_warn("balloon: command %u: the balloon did not move in %u ms: "
			"no working balloon driver in the guest?", c->cmd_id, dev->grace_ms);
		tb_dev_stop_here(dev);
		tb_dev_finish(dev, TB_STATE_UNRESPONSIVE, TBALLOON_REASON_NONE, now_ms);
		return -1;
	}
	due = c->issued_ms + c->deadline_ms;
	if (!dev->watch.moved && dev->grace_ms < c->deadline_ms &&
	    c->issued_ms + dev->grace_ms < due)
		due = c->issued_ms + dev->grace_ms;
	if (now_ms < due && (c->flags & TBALLOON_FLAG_PACED) &&
	    TB_CFG(dev, num_pages) != c->target_pages) {
		/* host pacing: the next step of the target */
		uint64_t el = now_ms - c->issued_ms;
		uint32_t step = tb_dev_pace_step(c->start_pages, c->target_pages,
						 c->deadline_ms, el);

		if (step != TB_CFG(dev, num_pages)) {
			tb_dev_cfg_put(dev, TB_OFF(num_pages), step);
			dev->gen++;
			tb_dev_notify(dev);
		}
		if (due - now_ms > TB_HOST_PACE_MS)
			due = now_ms + TB_HOST_PACE_MS - el % TB_HOST_PACE_MS;
	}
	if (now_ms < due)
		return (int64_t)(due - now_ms);
	/* stop the standard balloon where it is */
	tb_dev_stop_here(dev);
	tb_dev_finish(dev, TBALLOON_STATE_DEADLINE, TBALLOON_REASON_NONE, now_ms);
	return -1;
}

/*
 * Feed the PFNs of one chain to the batch. Returns false if the chain is
 * not a valid PFN buffer (writable part, length not a multiple of 4).
 */
static bool tb_dev_chain_pfns(const struct tb_vring_chain *ch,
			      struct tb_pfn_batch *b)
{
	uint64_t total = 0;
	uint8_t carry[4];
	unsigned int ncarry = 0;

	for (unsigned int i = 0; i < ch->nsegs; i++) {
		if (ch->segs[i].write && ch->segs[i].len)
			return false;
		total += ch->segs[i].len;
	}
	if (total % 4)
		return false;
	/* bounded work per buffer: a longer chain is refused unread */
	if (total / 4 > TB_DEV_CHAIN_PFNS_MAX) {
		tb_warn("balloon: chain %u holds %llu PFNs, more than %u: refused",
			ch->head, (unsigned long long)(total / 4), TB_DEV_CHAIN_PFNS_MAX);
		return false;
	}

	for (unsigned int i = 0; i < ch->nsegs; i++) {
		const uint8_t *p = ch->segs[i].host;
		uint32_t len = ch->segs[i].len;

		/* a PFN may straddle two descriptors */
		while (ncarry && len) {
			carry[ncarry++] = *p++;
			len--;
			if (ncarry == 4) {
				tb_pfn_batch_add(b, tb_get_le32(carry));
				ncarry = 0;
			}
		}
		for (; len >= 4; p += 4, len -= 4)
			tb_pfn_batch_add(b, tb_get_le32(p));
		while (len--)
			carry[ncarry++] = *p++;
	}
	tb_pfn_batch_flush(b);
	return true;
}

/*
 * Parse a statistics buffer: TB_GSTAT_ENTRY_SIZE-byte entries, possibly
 * split across descriptors. Returns false if it is not one (writable part,
 * length not a multiple of the entry size).
 */
static bool tb_dev_chain_stats(struct tb_dev *dev, const struct tb_vring_chain *ch,
			       uint64_t now_ms)
{
	uint8_t e[TB_GSTAT_ENTRY_SIZE];
	unsigned int ne = 0;
	uint64_t total = 0;
	uint32_t have = 0;

	for (unsigned int i = 0; i < ch->nsegs; i++) {
		if (ch->segs[i].write && ch->segs[i].len)
			return false;
		total += ch->segs[i].len;
	}
	if (total % TB_GSTAT_ENTRY_SIZE)
		return false;
	for (unsigned int i = 0; i < ch->nsegs; i++) {
		for (uint32_t j = 0; j < ch->segs[i].len; j++) {
			uint16_t tag;

			e[ne++] = ch->segs[i].host[j];
			if (ne < TB_GSTAT_ENTRY_SIZE)
				continue;
			ne = 0;
			tag = tb_get_le16(e);
			if (tag >= TB_GSTAT_COUNT) {
				dev->gstats.unknown_tags++;
				continue;
			}
			dev->gstats.val[tag] = tb_get_le64(e + 2);
			have |= 1U << tag;
		}
	}
	dev->gstats.have = have;
	dev->gstats.updates++;
	dev->gstats.updated_ms = now_ms;
	dev->gstats.actual_pages = TB_CFG(dev, actual);
	tb_dev_host_check(dev, now_ms);
	return true;
}

/*
 * The PFN queues: release (inflate) or account (deflate) the frames. Sets
 * *@commit when the state changed and must be committed before the buffer
 * goes back; *@pfns gets the number of PFNs read.
 */
static bool tb_dev_pfn_chain(struct tb_dev *dev, unsigned int idx,
			     const struct tb_vring_chain *ch, uint16_t pos, uint32_t num,
			     struct tb_punch_job *job, bool *commit, uint64_t *pfns)
{
	bool inflate = idx == VIRTIO_TBALLOON_VQ_INFLATE;
	uint64_t ram = tb_mem_ram_bytes(dev->mem) >> TB_PAGE_SHIFT;
	struct tb_pfn_batch b;
	uint16_t ahead = (uint16_t)(dev->counted_pos[idx] - pos);
	/*
	 * A buffer counted (and committed to the state file) by a daemon that
	 * died before returning it comes again after the restart: release it
	 * again (idempotent) but count it once.
	 */
	bool counted = dev->counted_valid[idx] && ahead && ahead <= num;

	/* with the punch pool, the ranges go to @job and are punched later */
	if (!inflate)
		tb_pfn_batch_init(&b, dev->mem, NULL, NULL);
	else if (job)
		tb_pfn_batch_init(&b, dev->mem, tb_punch_job_add, job);
	else
		tb_pfn_batch_init(&b, dev->mem, dev->punch, dev->punch_opaque);
	if (!tb_dev_chain_pfns(ch, &b)) {
		tb_warn("balloon: queue %u chain %u is not a PFN buffer", idx, ch->head);
		return false;
	}
	if (counted) {
		tb_info("balloon: queue %u buffer at %u was counted before a restart: "
			"released again, not counted", idx, pos);
		return true;
	}
	if (inflate) {
		dev->stats.inflated_pages += b.pages;
		dev->device_pages += b.pages;
		if (dev->device_pages > ram)
			dev->device_pages = ram;
		dev->one_page_inflate = b.pages == 1;
	} else {
		dev->stats.deflated_pages += b.pages;
		/*
		 * Compaction moving a balloon page: ours and Linux's driver tell
		 * the new page (one-page inflate), then the old (one-page
		 * deflate), under the lock that keeps every other send out. The
		 * guest took nothing back. (A deflate on OOM gives up to 256
		 * pages at once; one page only when the balloon holds one.)
		 */
		if (b.pages == 1 && dev->one_page_inflate)
			dev->stats.migrated_pages++;
		else if (!tb_cmd_running(&dev->cmd) || dev->cmd.op != TBALLOON_OP_DEFLATE)
			dev->stats.guest_deflated_pages += b.pages;
		dev->one_page_inflate = false;
		dev->device_pages -= b.pages < dev->device_pages ? b.pages : dev->device_pages;
	}
	dev->stats.refused_pfns += b.refused;
	if (!job)
		dev->stats.released_bytes += b.bytes;	/* else when punched */
	dev->stats.punch_errors += b.errors;
	dev->counted_pos[idx] = (uint16_t)(pos + 1);
	dev->counted_valid[idx] = true;
	if (b.pages) {
		dev->gen++;
		*commit = true;
	}
	*pfns = b.pages + b.refused + b.repeats;
	if (b.refused)
		tb_warn("balloon: %llu PFNs outside guest RAM refused",
			(unsigned long long)b.refused);
	if (b.repeats)
		tb_warn("balloon: %llu repeated PFNs in one buffer counted once",
			(unsigned long long)b.repeats);
	tb_dbg("balloon: queue %u: %llu pages in %llu ranges, %llu bytes released",
	       idx, (unsigned long long)b.pages, (unsigned long long)b.ranges,
	       (unsigned long long)b.bytes);
	return true;
}

unsigned int tb_dev_queue_role(const struct tb_dev *dev, unsigned int idx)
{
	static const unsigned int feature[VIRTIO_TBALLOON_VQ_MAX] = {
		[VIRTIO_TBALLOON_VQ_STATS] = TB_BALLOON_F_STATS_VQ,
		[VIRTIO_TBALLOON_VQ_FREE_PAGE] = TB_BALLOON_F_FREE_PAGE_HINT,
		[VIRTIO_TBALLOON_VQ_REPORTING] = TB_BALLOON_F_REPORTING,
	};
	unsigned int n = 0;

	for (unsigned int role = 0; role < VIRTIO_TBALLOON_VQ_MAX; role++) {
		if (role > VIRTIO_TBALLOON_VQ_DEFLATE &&
		    !(dev->features & TB_BIT(feature[role])))
			continue;
		if (n++ == idx)
			return role;
	}
	return VIRTIO_TBALLOON_VQ_MAX;
}

/*
 * A free page report (REPORTING): device-writable ranges of free guest
 * memory, 4 KiB aligned, that the device may discard. Discarded unless the
 * guest's free pages hold a poison value (poison_val != 0), which a hole
 * would not read back (QEMU keeps those too). Nothing is written to the
 * buffer. *@pages gets the 4 KiB pages it covers, for the pass's budget.
 */
static bool tb_dev_report_chain(struct tb_dev *dev, const struct tb_vring_chain *ch,
				struct tb_punch_job *job, uint64_t *pages)
{
	bool keep = TB_CFG(dev, poison_val) != 0;
	uint64_t bytes = 0;

	if (!ch->nsegs)
		return false;
	for (unsigned int i = 0; i < ch->nsegs; i++) {
		const struct tb_vring_seg *sg = &ch->segs[i];
		uint64_t off;

		if (!sg->write || !sg->len || (sg->gpa | sg->len) & (TB_PAGE_SIZE - 1) ||
		    tb_mem_gpa_to_fd(dev->mem, sg->gpa, sg->len, &off) < 0)
			return false;
		bytes += sg->len;
	}
	*pages = bytes >> TB_PAGE_SHIFT;
	dev->stats.reports++;
	if (keep) {
		dev->stats.reported_kept_bytes += bytes;
		return true;
	}
	for (unsigned int i = 0; i < ch->nsegs; i++) {
		const struct tb_vring_seg *sg = &ch->segs[i];
		uint64_t off;
		int r = tb_mem_gpa_to_fd(dev->mem, sg->gpa, sg->len, &off);

		if (job) {
			/* counted in reported_bytes when punched */
			if (tb_punch_job_add(job, dev->mem->r[r].punch_fd, off, sg->len) < 0)
				dev->stats.punch_errors++;
		} else if (dev->punch && dev->punch(dev->punch_opaque, dev->mem->r[r].punch_fd,
						    off, sg->len) == 0) {
			dev->stats.reported_bytes += sg->len;
		} else {
			dev->stats.punch_errors++;
		}
	}
	return true;
}

void tb_dev_punched(struct tb_dev *dev, const struct tb_punch_job *job)
{
	if (job->kind == TB_PUNCH_REPORT) {
		dev->stats.reported_bytes += job->bytes;
	} else if (job->bytes || job->errors) {
		dev->stats.released_bytes += job->bytes;
		dev->gen++;	/* the state file records it before the buffer goes back */
	}
	dev->stats.punch_errors += job->errors;
}

int tb_dev_process_queue(struct tb_dev *dev, unsigned int idx,
			 struct tb_vring *vr, bool *notify)
{
	unsigned int role = tb_dev_queue_role(dev, idx);
	uint16_t heads[TB_DEV_PASS_BUFFERS + 1];
	struct tb_punch_job *jobs[TB_DEV_PASS_BUFFERS];
	unsigned int nheads = 0, nbuf = 0, njobs = 0;
	/* buffers that release memory go through the punch pool, if any */
	bool pooled = dev->pool && idx < TB_PUNCH_MAX_QUEUES &&
		      (role == VIRTIO_TBALLOON_VQ_INFLATE ||
		       role == VIRTIO_TBALLOON_VQ_REPORTING);
	struct tb_vring_chain ch;
	uint64_t pfns = 0;
	bool commit = false, more = false;
	int rc = 0;

	*notify = false;
	if (dev->broken)
		return 0;
	if (dev->test_withhold && (role == VIRTIO_TBALLOON_VQ_INFLATE ||
				   role == VIRTIO_TBALLOON_VQ_DEFLATE ||
				   role == VIRTIO_TBALLOON_VQ_REPORTING))
		return 0;
	for (;;) {
		uint16_t pos = vr->last_avail;
		struct tb_punch_job *job = NULL;
		uint64_t n = 0;
		bool ok = false;

		if (nbuf == TB_DEV_PASS_BUFFERS || pfns >= TB_DEV_PASS_PFNS) {
			more = true;
			break;
		}
		if (pooled) {
			job = tb_punch_job_new(idx, 0, role == VIRTIO_TBALLOON_VQ_INFLATE ?
					       TB_PUNCH_INFLATE : TB_PUNCH_REPORT);
			if (!job) {
				/* out of memory: the buffer waits for a later pass */
				more = true;
				break;
			}
		}
		rc = tb_vring_pop(vr, dev->mem, &ch);
		if (rc <= 0) {
			tb_punch_job_free(job);
			break;
		}
		nbuf++;
		if (ch.err != TB_CHAIN_OK) {
			tb_warn("balloon: queue %u chain %u refused: %s", idx, ch.head,
				tb_chain_err_name(ch.err));
		} else if (role == VIRTIO_TBALLOON_VQ_INFLATE ||
			   role == VIRTIO_TBALLOON_VQ_DEFLATE) {
			ok = tb_dev_pfn_chain(dev, idx, &ch, pos, vr->num, job, &commit, &n);
			pfns += n;
		} else if (role == VIRTIO_TBALLOON_VQ_REPORTING) {
			ok = tb_dev_report_chain(dev, &ch, job, &n);
			pfns += n;
			if (!ok)
				tb_warn("balloon: queue %u chain %u is not a free page report",
					idx, ch.head);
		} else if (role == VIRTIO_TBALLOON_VQ_STATS) {
			ok = tb_dev_chain_stats(dev, &ch, tb_now_ms());
			if (ok) {
				/* keep it: returning it asks for fresh stats */
				if (dev->gstats.held) {
					tb_warn("balloon: a second statistics buffer, "
						"returning the first");
					heads[nheads++] = dev->gstats.head;
				}
				dev->gstats.held = true;
				dev->gstats.head = ch.head;
				continue;
			}
			tb_warn("balloon: queue %u chain %u is not a statistics buffer",
				idx, ch.head);
		} else {
			tb_warn("balloon: buffer on queue %u, which is not offered", idx);
		}
		if (!ok)
			dev->stats.bad_buffers++;
		/* nothing is written to the driver's buffers */
		if (job) {
			/* a refused buffer is a job with nothing to punch: in order */
			if (!ok)
				job->nr = 0;
			job->head = ch.head;
			jobs[njobs++] = job;
		} else {
			heads[nheads++] = ch.head;
		}
	}
	/*
	 * One durable state write for the whole pass, then the buffers go
	 * back: now, or (pool) once their memory is released, tb_dev_reap().
	 */
	if (commit && dev->ops && dev->ops->commit)
		dev->ops->commit(dev->opaque);
	for (unsigned int i = 0; i < njobs; i++)
		tb_punch_submit(dev->pool, jobs[i]);
	for (unsigned int i = 0; i < nheads; i++)
		tb_vring_push(vr, heads[i], 0);
	if (nheads)
		*notify = tb_vring_need_notify(vr);
	if (rc < 0) {
		char why[96];

		dev->stats.broken_rings++;
		snprintf(why, sizeof(why), "queue %u: the driver broke the ring", idx);
		tb_dev_set_broken(dev, why, tb_now_ms());
		return -EIO;
	}
	return more ? 1 : 0;
}

bool tb_dev_stats_request(struct tb_dev *dev, struct tb_vring *vr,
			  uint64_t now_ms, bool *notify)
{
	*notify = false;
	dev->stats_wanted = false;
	if (!dev->gstats.held || dev->broken || !vr->num || vr->broken)
		return false;
	dev->gstats.held = false;
	dev->gstats.requested_ms = now_ms;
	tb_vring_push(vr, dev->gstats.head, 0);
	*notify = tb_vring_need_notify(vr);
	return true;
}

int64_t tb_dev_stats_due(const struct tb_dev *dev, uint64_t now_ms)
{
	uint64_t due;

	if (!dev->gstats.held || dev->broken)
		return -1;
	if (dev->stats_wanted)
		return 0;
	if (!dev->stats_interval_ms)
		return -1;
	due = dev->gstats.updated_ms + dev->stats_interval_ms;
	return now_ms >= due ? 0 : (int64_t)(due - now_ms);
}

void tb_dev_queue_stopped(struct tb_dev *dev, unsigned int idx, struct tb_vring *vr)
{
	if (tb_dev_queue_role(dev, idx) != VIRTIO_TBALLOON_VQ_STATS || !dev->gstats.held)
		return;
	dev->gstats.held = false;
	/*
	 * The driver keeps one statistics buffer in flight and adds the next
	 * only after it got this one back, so the held buffer is the last one
	 * popped and its avail entry is still in place.
	 */
	if (vr && vr->num)
		vr->last_avail--;
}
