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
#include "util.h"
#include "virtio_tballoon.h"
#include "vring.h"

/* standard balloon feature bits the device offers */
#define TB_BALLOON_F_MUST_TELL_HOST 0
/* device features offered (VERSION_1 and PROTOCOL_FEATURES come from vu) */
#define TB_DEV_FEATURES \
	(TB_BIT(TB_BALLOON_F_MUST_TELL_HOST) | TB_BIT(VIRTIO_BALLOON_F_TIMED))

enum tb_event {
	TB_EVENT_PROGRESS,	/* a driver report for the current command */
	TB_EVENT_DONE,		/* the command reached a terminal state */
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
};

/* counters since the daemon started */
struct tb_dev_stats {
	uint64_t released_bytes;	/* bytes punched (successfully) */
	uint64_t inflated_pages;	/* valid PFNs received on inflateq */
	uint64_t deflated_pages;	/* valid PFNs received on deflateq */
	uint64_t refused_pfns;		/* PFNs outside guest RAM */
	uint64_t bad_buffers;		/* chains refused (malformed, writable...) */
	uint64_t punch_errors;		/* fallocate failures */
	uint64_t bad_reports;		/* reports with invalid state/reason */
	uint64_t broken_rings;		/* rings stopped for protocol violations */
};

struct tb_dev;

/**
 * struct tb_dev_ops - what the device model needs from its host
 * @notify_config: tell the driver the config changed (backend channel)
 * @event: a command made progress or ended
 */
struct tb_dev_ops {
	void (*notify_config)(void *opaque);
	void (*event)(void *opaque, enum tb_event ev, const struct tb_cmd *cmd);
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
	const struct tb_dev_ops *ops;
	void *opaque;
};

void tb_dev_init(struct tb_dev *dev, const struct tb_mem *mem,
		 const struct tb_dev_ops *ops, void *opaque);

/* TIMED negotiated */
bool tb_dev_timed(const struct tb_dev *dev);

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

/* Host-side timers; returns ms until the next call is due, or -1. */
int64_t tb_dev_tick(struct tb_dev *dev, uint64_t now_ms);

/*
 * Process queue @idx: pop every available chain, release/account its PFNs,
 * return it to the driver. *notify is set if the driver should be signalled.
 * Returns 0, or -EIO if the ring broke (caller reports it on the err fd).
 */
int tb_dev_process_queue(struct tb_dev *dev, unsigned int idx,
			 struct tb_vring *vr, bool *notify);

/* names for the control protocol */
const char *tb_op_name(uint32_t op);
const char *tb_state_name(uint32_t state);
const char *tb_reason_name(uint32_t reason);

#endif /* TB_DEV_H */
