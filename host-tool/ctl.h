/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ctl.h - the control protocol: QMP-style JSON, one object per line.
 *
 *   server greeting: {"QMP":{"version":{...},"capabilities":[]}}
 *   request:  {"execute":NAME,"arguments":{...},"id":ANY}
 *   response: {"return":{...},"id":ANY} or
 *             {"error":{"class":"GenericError","desc":"..."},"id":ANY}
 *   events:   {"event":"BALLOON_PROGRESS"|"BALLOON_DONE","data":STATUS,
 *              "timestamp":{"seconds":N,"microseconds":N}}
 *
 * Commands: qmp_capabilities, query-balloon, query-stats, inflate, deflate,
 * abort.
 * inflate/deflate arguments: target-pages (required), deadline-ms (required),
 * floor-pages (default 0), paced and gentle (default false).
 * Every command that succeeds returns the status object (see
 * tb_ctl_status()), except qmp_capabilities which returns {}.
 *
 * No sockets here: a line in, a JSON object out.
 */
#ifndef TB_CTL_H
#define TB_CTL_H

#include <json-c/json.h>
#include <stdint.h>

#include "dev.h"

/* longest request line accepted (bytes, without the newline) */
#define TB_CTL_LINE_MAX 65536

/* add @key: @v to object @o */
void tb_json_add_u64(json_object *o, const char *key, uint64_t v);
void tb_json_add_i64(json_object *o, const char *key, int64_t v);

/* the greeting sent to every new client */
json_object *tb_ctl_greeting(void);

/*
 * Execute one request line (without its newline) of a client whose
 * capabilities negotiation state is *@negotiated: as in QEMU's QMP, until
 * it sent qmp_capabilities every other command is refused (CommandNotFound),
 * and qmp_capabilities afterwards too. Always returns a response object
 * (the caller owns it).
 */
json_object *tb_ctl_handle_line(struct tb_dev *dev, const char *line, size_t len,
				uint64_t now_ms, bool *negotiated);

/* {"error":{"class":"GenericError","desc":DESC}} (+ "id" if @id) */
json_object *tb_ctl_error(json_object *id, const char *desc);
/* the same with another error class (QMP's CommandNotFound, ...) */
json_object *tb_ctl_error_class(json_object *id, const char *cls, const char *desc);

/* the status object (query-balloon, status --json, event data) */
json_object *tb_ctl_status(const struct tb_dev *dev, uint64_t now_ms);

/*
 * query-stats: accounting and the last guest statistics with their age;
 * also asks the device for fresh statistics (dev->stats_wanted)
 */
json_object *tb_ctl_guest_stats(struct tb_dev *dev, uint64_t now_ms);

/* an event object; takes ownership of @data */
json_object *tb_ctl_event(enum tb_event ev, json_object *data);

/* event names on the wire */
const char *tb_ctl_event_name(enum tb_event ev);

#endif /* TB_CTL_H */
