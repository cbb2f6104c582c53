/* SPDX-License-Identifier: GPL-2.0 */
/*
 * dev.h - the timed balloon device model.
 *
 * Holds the 64-byte config space (wire format, little-endian), issues
 * commands, interprets driver reports, releases inflated pages and keeps the
 * counters the control protocol reports. No sockets: the vhost-user layer
 * feeds it config accesses and popped buffers, and it calls back for config
 * change notifications and events.
 */
#ifndef TB_DEV_H
#define TB_DEV_H

#include <stdbool.h>
#include <stdint.h>

#include "mem.h"
#include "punch.h"
#include "util.h"
#include "virtio_tballoon.h"
#include "vring.h"

/* standard balloon feature bits the device offers */
#define TB_BALLOON_F_MUST_TELL_HOST 0
#define TB_BALLOON_F_STATS_VQ 1
#define TB_BALLOON_F_DEFLATE_ON_OOM 2
#define TB_BALLOON_F_FREE_PAGE_HINT 3
#define TB_BALLOON_F_PAGE_POISON 4
#define TB_BALLOON_F_REPORTING 5
/* device features offered (VERSION_1 and PROTOCOL_FEATURES come from vu) */
#define TB_DEV_FEATURES \
	(TB_BIT(TB_BALLOON_F_MUST_TELL_HOST) | TB_BIT(TB_BALLOON_F_STATS_VQ) | \
	 TB_BIT(TB_BALLOON_F_PAGE_POISON) | TB_BIT(VIRTIO_BALLOON_F_TIMED))

/*
 * Host-side command state beyond the wire's TBALLOON_STATE_*: the guest did
 * not report an outcome by deadline + grace (the host watchdog). Terminal,
 * but a later report from the guest still replaces it.
 */
#define TB_STATE_UNRESPONSIVE TBALLOON_STATE_COUNT
#define TB_STATE_NAMES (TBALLOON_STATE_COUNT + 1)

/* default host watchdog grace after the deadline */
#define TB_DEV_GRACE_MS 5000U
/*
 * A command restored from the state file whose balloon (counted from the
 * PFNs) is at the target ends done once the driver has been quiet this long
 * (its final report may have been lost while no daemon ran).
 */
#define TB_DEV_RECOVER_QUIET_MS 1000U
/* default period of guest statistics requests on the stats queue */
#define TB_DEV_STATS_INTERVAL_MS 2000U

/*
 * Bounds on the work one guest can cause per pass of the event loop. Our
 * driver sends at most 4096 PFNs per buffer and Linux's virtio_balloon 256:
 * a longer PFN chain is hostile and refused unread. A pass processes at most
 * TB_DEV_PASS_BUFFERS buffers or TB_DEV_PASS_PFNS PFNs of a queue, then the
 * loop serves every other source before it goes on with that queue.
 */
#define TB_DEV_CHAIN_PFNS_MAX 16384U
#define TB_DEV_PASS_BUFFERS 64U
#define TB_DEV_PASS_PFNS 65536U

/* statistics tags of the standard stats queue (virtio spec 5.5.6.3) */
enum tb_gstat {
	TB_GSTAT_SWAP_IN, TB_GSTAT_SWAP_OUT, TB_GSTAT_MAJFLT, TB_GSTAT_MINFLT,
	TB_GSTAT_MEMFREE, TB_GSTAT_MEMTOT, TB_GSTAT_AVAIL, TB_GSTAT_CACHES,
	TB_GSTAT_HTLB_PGALLOC, TB_GSTAT_HTLB_PGFAIL, TB_GSTAT_OOM_KILL,
	TB_GSTAT_ALLOC_STALL, TB_GSTAT_ASYNC_SCAN, TB_GSTAT_DIRECT_SCAN,
	TB_GSTAT_ASYNC_RECLAIM, TB_GSTAT_DIRECT_RECLAIM,
	TB_GSTAT_COUNT
};
/* one wire entry: __le16 tag, __le64 value, packed */
#define TB_GSTAT_ENTRY_SIZE 10

/**
 * struct tb_guest_stats - the last statistics buffer from the guest
 * @updates: buffers parsed so far (0: none yet)
 * @updated_ms: host monotonic time of the last buffer
 * @have: bit i set if tag i was present in the last buffer
 * @val: values by tag
 * @unknown_tags: entries with tags this device does not know (ignored)
 * @held: a buffer is held by the device (returned to ask for fresh stats)
 * @head: its descriptor head
 * @requested_ms: when the last buffer was returned to the driver
 * @actual_pages: the balloon size when the last buffer arrived (the host's
 *	floor estimate moves the guest's available memory on from there)
 */
struct tb_guest_stats {
	uint64_t updates;
	uint64_t updated_ms;
	uint32_t have;
	uint64_t val[TB_GSTAT_COUNT];
	uint64_t unknown_tags;
	bool held;
	uint16_t head;
	uint64_t requested_ms;
	uint32_t actual_pages;
};

/*
 * What is on the other side of the daemon. TB_KIND_VHOST_USER is our device
 * model behind QEMU's vhost-user device (the guest enforces a timed command
 * when its driver negotiates TIMED); the others are a stock virtio-balloon
 * driven from outside, through QEMU's QMP or libvirt (the host enforces
 * every command: see "Host-enforced commands" in Documentation/host-tool.rst).
 */
enum tb_kind {
	TB_KIND_VHOST_USER,
	TB_KIND_QMP,
	TB_KIND_LIBVIRT,
	TB_KIND_COUNT
};

/*
 * Host enforcement of a command the guest does not enforce itself (no
 * TIMED): how it is stopped early.
 *
 * Floor: the guest's available memory, from its last statistics and moved
 * on by the pages inflated since (the statistics are up to one polling
 * period old), must stay above the floor plus what the balloon still
 * inflates in TB_HOST_STOP_LEAD_MS at its rate so far (the stop takes
 * that long to reach the guest).
 * Pressure: since the statistics before the command, any swap-in, any
 * allocation stall or direct reclaim (where the guest reports them: Linux
 * >= 6.12), or more than TB_HOST_MAJFLT_PRESSURE major faults.
 * Unresponsive: a balloon that has not moved TB_DEV_GRACE_MS (--grace)
 * after the command was issued.
 */
#define TB_HOST_STOP_LEAD_MS 100U
#define TB_HOST_MAJFLT_PRESSURE 256U
/*
 * Host pacing of a paced standard command: the target moves in steps every
 * TB_HOST_PACE_MS, linearly from the start to the target over
 * TB_HOST_PACE_SHARE percent of the deadline (the rest is the guest's
 * slack to catch up with the last step).
 */
#define TB_HOST_PACE_MS 100U
#define TB_HOST_PACE_SHARE 80U

enum tb_event {
	TB_EVENT_PROGRESS,	/* a driver report for the current command */
	TB_EVENT_DONE,		/* the command reached a terminal state */
	TB_EVENT_CONNECTED,	/* a front-end (or a peer's VM) came */
	TB_EVENT_DISCONNECTED,	/* ... and went */
	TB_EVENT_RESET,		/* the guest reset the device */
	TB_EVENT_BROKEN,	/* the device was marked broken */
	TB_EVENT_CHANGE,	/* the balloon moved with no command running */
	TB_EVENT_COUNT
};

/**
 * struct tb_cmd - host-side record of one command
 * @cmd_id: id written to the config, 0 if there has been no command
 * @op, @flags, @deadline_ms, @target_pages, @floor_pages: as issued
 * @state, @reason: TBALLOON_STATE_* / TBALLOON_REASON_*: from driver reports,
 *	or set by the host (superseded, disconnect, host-side deadline)
 * @elapsed_ms: guest clock from the driver (host clock without TIMED)
 * @start_pages: balloon size at acceptance
 * @report_seq: the driver's report_seq of the last report applied
 * @reports: driver reports seen for this command
 * @timed: issued through the timed block (else via num_pages)
 * @issued_ms, @ended_ms: host monotonic clock; @ended_ms 0 while running
 * @resident_before, @resident_after: host memory backing the guest
 * @recovered: the record was restored from the state file by a restarted
 *	daemon (the command was in progress when the previous one died)
 */
struct tb_cmd {
	uint32_t cmd_id;
	uint32_t op;
	uint32_t flags;
	uint32_t deadline_ms;
	uint32_t target_pages;
	uint32_t floor_pages;
	uint32_t state;
	uint32_t reason;
	uint32_t elapsed_ms;
	uint32_t start_pages;
	uint32_t report_seq;
	uint32_t reports;
	bool timed;
	uint64_t issued_ms;
	uint64_t ended_ms;
	uint64_t resident_before;
	uint64_t resident_after;
	bool recovered;
};

/**
 * struct tb_host_watch - host-side view of a running standard command
 * @base_updates: statistics buffers seen when it was issued
 * @base_have, @base: the statistics then (pressure counts from there)
 * @moved: the balloon moved since it was issued
 */
struct tb_host_watch {
	uint64_t base_updates;
	uint32_t base_have;
	uint64_t base[TB_GSTAT_COUNT];
	bool moved;
};

/* counters since the daemon started */
struct tb_dev_stats {
	uint64_t released_bytes;	/* bytes punched (successfully) */
	uint64_t inflated_pages;	/* valid PFNs received on inflateq */
	uint64_t deflated_pages;	/* valid PFNs received on deflateq */
	uint64_t guest_deflated_pages;	/* of those, with no deflate command
					 * running: taken back by the guest on
					 * its own (DEFLATE_ON_OOM, removal) */
	uint64_t migrated_pages;	/* balloon pages moved by compaction: a
					 * one-page inflate, then a one-page
					 * deflate (neither driver sends that
					 * otherwise); not taken back */
	uint64_t refused_pfns;		/* PFNs outside guest RAM */
	uint64_t bad_buffers;		/* chains refused (malformed, writable...) */
	uint64_t punch_errors;		/* fallocate failures */
	uint64_t bad_reports;		/* reports with invalid state/reason */
	uint64_t broken_rings;		/* rings stopped for protocol violations */
	uint64_t resets;		/* device resets (guest reboot, driver reload) */
	uint64_t unresponsive;		/* commands ended by the host watchdog */
	uint64_t reports;		/* free page reports (REPORTING buffers) */
	uint64_t reported_bytes;	/* of those, bytes discarded (punched) */
	uint64_t reported_kept_bytes;	/* bytes kept: the guest poisons free
					 * pages (poison_val != 0) */
};

struct tb_dev;

/**
 * struct tb_dev_ops - what the device model needs from its host
 * @notify_config: tell the driver the config changed (backend channel);
 *	0, or -errno if it could not be told (a command is then not issued)
 * @event: a command made progress or ended
 * @commit: persist the state now (called once per pass of a queue, after its
 *	PFN buffers were accounted and before any of them is returned to the
 *	driver, so a daemon killed at any point never loses a buffer it already
 *	returned); may be NULL
 * @stop: stop the balloon where it is now (host-enforced deadline, floor,
 *	pressure, abort); NULL: num_pages = actual, then @notify_config. A
 *	peer whose view of `actual` lags (QMP) reads it afresh first.
 * @footprint: guest RAM and the host memory backing it (@resident_bytes may
 *	be NULL: only the RAM wanted), for a VM whose
 *	memory the daemon does not map (QMP, libvirt); NULL: from @mem
 */
struct tb_dev_ops {
	int (*notify_config)(void *opaque);
	void (*event)(void *opaque, enum tb_event ev, const struct tb_cmd *cmd);
	void (*commit)(void *opaque);
	int (*stop)(void *opaque);
	void (*footprint)(void *opaque, uint64_t *ram_bytes, uint64_t *resident_bytes);
};

/**
 * struct tb_dev - the balloon device
 * @config: config space as the driver sees it
 * @mem: guest memory (owned by the vhost-user layer)
 * @connected: a front-end session is up
 * @driver_ok: the driver's inflate and deflate queues are running
 * @notify_ok: config change notifications can be sent (backend channel)
 * @features: acked features, valid if @features_set
 * @last_cmd_id: last id issued (survives reconnects; the config is reset)
 * @last_report_seq: report_seq last seen from the driver
 * @cmd: the current (or last) command
 * @punch, @punch_opaque: page release function (tests replace it)
 * @pool: the punch pool, or NULL: release inline in tb_dev_process_queue()
 * @device_pages: the device's own view of the balloon: valid PFNs received
 *	on inflateq minus those on deflateq (clamped to 0..guest RAM). Needs no
 *	driver report, so it survives lost config writes (daemon restarts).
 * @grace_ms: host watchdog: deadline + @grace_ms without an outcome ends a
 *	command TB_STATE_UNRESPONSIVE
 * @broken: the guest violated the protocol; no ring is processed until the
 *	next device reset (NEEDS_RESET-style); @broken_why says how
 * @gstats: guest statistics (stats queue)
 * @stats_interval_ms: period of fresh statistics requests (0: only on demand)
 * @stats_wanted: a client asked for fresh statistics (query-stats)
 * @gen: incremented on every change the state file must record
 * @restored: the config and command came from a state file
 * @last_driver_ms: last driver report, or session start
 * @kind: what the daemon serves (TB_KIND_*)
 * @refused_retry: the last command tb_dev_issue() refused may succeed
 *	later as it is (no front-end, driver not ready, no statistics yet)
 * @watch: host enforcement of the running standard command
 * @counted_pos: per PFN queue, the ring position up to which buffers are in
 *	@device_pages and the counters (valid if @counted_valid): a restarted
 *	daemon may see buffers again that its predecessor counted but had not
 *	returned yet; it releases them again but does not count them twice
 */
struct tb_dev {
	uint8_t config[VIRTIO_TBALLOON_CONFIG_SIZE];
	const struct tb_mem *mem;
	bool connected;
	bool driver_ok;
	bool notify_ok;
	uint64_t features;
	bool features_set;
	uint32_t last_cmd_id;
	uint32_t last_report_seq;
	struct tb_cmd cmd;
	struct tb_dev_stats stats;
	tb_punch_fn punch;
	void *punch_opaque;
	struct tb_punch_pool *pool;
	const struct tb_dev_ops *ops;
	void *opaque;
	uint64_t device_pages;
	uint32_t grace_ms;
	bool broken;
	char broken_why[160];
	struct tb_guest_stats gstats;
	uint32_t stats_interval_ms;
	bool stats_wanted;
	uint64_t gen;
	bool restored;
	uint64_t last_driver_ms;
	uint16_t counted_pos[2];
	bool counted_valid[2];
	/* the last PFN buffer counted was a one-page inflate (migration?) */
	bool one_page_inflate;
	enum tb_kind kind;
	struct tb_host_watch watch;
	bool refused_retry;
	/* punch threads running (0: inline), for the status */
	unsigned int punch_threads;
	/* test only (x-test-withhold-buffers): PFN buffers and reports stay in the ring */
	bool test_withhold;
	/*
	 * test only (x-test-punch-delay): each punch first sleeps this long;
	 * read by the punch threads (atomic access)
	 */
	uint32_t test_punch_delay_ms;
};

void tb_dev_init(struct tb_dev *dev, const struct tb_mem *mem,
		 const struct tb_dev_ops *ops, void *opaque);

/* TIMED negotiated */
bool tb_dev_timed(const struct tb_dev *dev);

/* guest RAM, and the host memory backing it now (bytes) */
uint64_t tb_dev_ram_bytes(const struct tb_dev *dev);
uint64_t tb_dev_resident_bytes(const struct tb_dev *dev);

/* "vhost-user", "qmp", "libvirt" */
const char *tb_kind_name(enum tb_kind kind);

/*
 * A peer (QMP, libvirt) found the VM's balloon (@up) or lost it. Up: the
 * device is connected and ready, with statistics; down ends a running
 * command (aborted, removed) as a vhost-user disconnect does.
 */
void tb_dev_peer_link(struct tb_dev *dev, bool up, uint64_t now_ms);
/* the peer set the balloon's target to @pages itself (a stop) */
void tb_dev_peer_target(struct tb_dev *dev, uint64_t pages);
/* the balloon is @pages now (from an event or a query) */
void tb_dev_peer_actual(struct tb_dev *dev, uint64_t pages, uint64_t now_ms);
/*
 * Fresh guest statistics from a peer: @have bit i set if tag i is in @val.
 * @at_pages is the balloon size at the earliest moment the guest may have
 * taken them (the peer's previous look that did not see them yet): the
 * floor estimate counts the pages inflated since then, so a sample of
 * unknown age errs towards stopping early. Drives host enforcement of a
 * running command.
 */
void tb_dev_peer_stats(struct tb_dev *dev, uint32_t have,
		       const uint64_t val[TB_GSTAT_COUNT], uint32_t at_pages,
		       uint64_t now_ms);

/* session up/down; down ends a running command (aborted, removed) */
void tb_dev_session(struct tb_dev *dev, bool up, uint64_t now_ms);
void tb_dev_set_features(struct tb_dev *dev, uint64_t features);

/* config access, [off, off+size) already bounds-checked by the caller */
void tb_dev_get_config(const struct tb_dev *dev, uint8_t *buf, uint32_t off,
		       uint32_t size);
/*
 * A driver write: takes only `actual` and the driver-written block
 * (offsets 40..63) and ignores everything else. Returns 0, or -EINVAL if
 * [off, off+size) is out of bounds.
 */
int tb_dev_set_config(struct tb_dev *dev, const uint8_t *buf, uint32_t off,
		      uint32_t size, uint64_t now_ms);

/* config field helpers (offsetof in struct virtio_tballoon_config) */
uint32_t tb_dev_cfg_get(const struct tb_dev *dev, size_t off);
#define TB_CFG(dev, field) \
	tb_dev_cfg_get(dev, offsetof(struct virtio_tballoon_config, field))

/**
 * tb_dev_issue() - validate and issue a command
 * @op: TBALLOON_OP_INFLATE, _DEFLATE or _ABORT
 * @err: receives a message when the command is refused
 * Returns the new cmd_id, or 0 if refused.
 */
uint32_t tb_dev_issue(struct tb_dev *dev, uint32_t op, uint32_t target_pages,
		      uint32_t deadline_ms, uint32_t floor_pages, uint32_t flags,
		      uint64_t now_ms, char *err, size_t errlen);

/* command record is not in a terminal state */
bool tb_cmd_running(const struct tb_cmd *cmd);

/*
 * Tell the driver the config changed: 0 or -errno (not told). Also the
 * test-only x-test-config-notify, with nothing changed.
 */
int tb_dev_notify(struct tb_dev *dev);

/* Host-side timers; returns ms until the next call is due, or -1. */
int64_t tb_dev_tick(struct tb_dev *dev, uint64_t now_ms);

/*
 * Process queue @idx: pop available chains, release/account their PFNs,
 * commit the state once, then return them to the driver -- with @pool set,
 * the buffers of the inflate and reporting queues go to the pool instead
 * and come back through tb_dev_punched(). *notify is set if the driver
 * should be signalled. At most one pass of work (the
 * TB_DEV_PASS_* bounds): returns 1 if buffers may be left for the next
 * pass, 0 if the queue is drained, or -EIO if the ring broke (caller
 * reports it on the err fd).
 */
int tb_dev_process_queue(struct tb_dev *dev, unsigned int idx,
			 struct tb_vring *vr, bool *notify);

/*
 * The pool released @job's ranges: count them. Released bytes bump the
 * generation, so the caller's next state write records them; it returns
 * the buffer only after that write.
 */
void tb_dev_punched(struct tb_dev *dev, const struct tb_punch_job *job);

/*
 * What virtqueue @idx is, VIRTIO_TBALLOON_VQ_* (a position in the
 * specification's list), given the negotiated features: a queue whose
 * feature was not negotiated takes no index (proto/virtio_tballoon.h).
 * VIRTIO_TBALLOON_VQ_MAX if no queue has that index.
 */
unsigned int tb_dev_queue_role(const struct tb_dev *dev, unsigned int idx);

/*
 * The guest broke the protocol: stop processing its rings until the next
 * device reset, end a running command (aborted, device-error), log @why.
 */
void tb_dev_set_broken(struct tb_dev *dev, const char *why, uint64_t now_ms);

/*
 * Device reset seen on a live session (guest reboot, driver reload): the
 * driver-written block, `actual`, the device's balloon count and a broken
 * mark are cleared; a running command ends aborted (removed).
 */
void tb_dev_reset(struct tb_dev *dev, uint64_t now_ms);

/*
 * Stats queue: return the held buffer to the driver so that it refills it
 * (the standard "request fresh statistics"). *notify as for
 * tb_dev_process_queue(). Returns true if a buffer was returned.
 */
bool tb_dev_stats_request(struct tb_dev *dev, struct tb_vring *vr,
			  uint64_t now_ms, bool *notify);
/* ms until the next periodic statistics request is due, or -1 */
int64_t tb_dev_stats_due(const struct tb_dev *dev, uint64_t now_ms);
/*
 * Queue @idx (ring @vr) is being stopped (VM pause, reset, disconnect): a
 * held statistics buffer is un-popped (the ring's position moves back by
 * one), so that the position the front-end gets back makes the device take
 * it again when the queue restarts; the driver never loses its buffer.
 */
void tb_dev_queue_stopped(struct tb_dev *dev, unsigned int idx, struct tb_vring *vr);

/* statistics tag name ("swap-in", ...) or NULL */
const char *tb_gstat_name(unsigned int tag);

/* names for the control protocol */
const char *tb_op_name(uint32_t op);
const char *tb_state_name(uint32_t state);
const char *tb_reason_name(uint32_t reason);

#endif /* TB_DEV_H */
