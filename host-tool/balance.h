/* SPDX-License-Identifier: GPL-2.0 */
/*
 * balance.h - `tballoon balance`, the host's memory policy daemon, and its
 * clients `balance --status` and `reclaim --total`.
 *
 * The daemon manages every VM whose `tballoon serve` control socket is in
 * one directory (DIR/NAME.ctl, picked up and dropped as they come and go):
 * each period it reads each VM's status and guest statistics, the host's
 * MemAvailable and memory pressure (PSI), asks policy.h what each guest
 * should have, and issues timed commands. It listens on a control socket
 * of its own (DIR/balance.sock; the QMP-style protocol of ctl.h) for
 * query-balance and reclaim. The formula and the configuration are
 * Documentation/policy.rst.
 *
 * One thread, one poll loop; every wait on a VM is bounded by its timeout
 * (a VM that does not answer is skipped, with a backoff). No locking.
 */
#ifndef TB_BALANCE_H
#define TB_BALANCE_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"

#define TB_BAL_DEFAULT_DIR "/run/tballoon"
#define TB_BAL_DEFAULT_CONFIG "/etc/tballoon/balance.conf"
#define TB_BAL_SOCKET_NAME "balance.sock"
#define TB_BAL_SUFFIX ".ctl"

/**
 * struct tb_bal_conf - the daemon's configuration
 * @pol: the policy's knobs
 * @period_ms: one balancing decision every this long
 * @hold_ms: after a host-wide reclaim, no guest grows for this long unless
 *	it suffers (the memory was freed for something)
 * @vm_timeout_ms: a VM's control socket that does not answer within this
 *	is skipped this period
 * @host_budget: the host memory the VMs may use (0: the host's own
 *	MemAvailable and MemTotal); with it, the host's available memory is
 *	the budget less the VMs' resident guest memory
 * @mom: decide with oVirt MOM's rules (tb_pol_mom_decide), for comparison
 */
struct tb_bal_conf {
	struct tb_pol_conf pol;
	uint64_t period_ms;
	uint64_t hold_ms;
	uint64_t vm_timeout_ms;
	uint64_t host_budget;
	bool mom;
};

void tb_bal_conf_default(struct tb_bal_conf *c);

/*
 * Set one key of the configuration ("floor-pct", "reserve", "period", ...:
 * the table in policy.rst) from its text. 0, or -1 with the reason in @why.
 */
int tb_bal_conf_set(struct tb_bal_conf *c, const char *key, const char *value,
		    char *why, size_t whylen);

/*
 * Read a configuration file: "key = value" lines, '#' comments, blank lines.
 * 0, or -1 with "FILE:LINE: reason" in @why. A missing file is an error
 * only when @must_exist.
 */
int tb_bal_conf_load(struct tb_bal_conf *c, const char *path, bool must_exist,
		     char *why, size_t whylen);

/* the whole configuration checked (tb_pol_conf_check and the daemon's own) */
int tb_bal_conf_check(const struct tb_bal_conf *c, char *why, size_t whylen);

/* @key ("MemAvailable", "MemTotal") in bytes from /proc/meminfo's text; -1 if absent */
int tb_bal_parse_meminfo(const char *text, const char *key, uint64_t *bytes);

/* "some avg10=" (percent) from /proc/pressure/memory's text; -1 if absent */
int tb_bal_parse_psi(const char *text, double *avg10);

/**
 * struct tb_bal_sample - what one VM's last poll left for the rates
 * @updates: the guest statistics' update count at the last sample
 * @t_ms: when those statistics were taken (host monotonic, ms)
 * @swapin_bytes, @majflt, @stalls: their counters then
 * @valid: there was a previous sample
 */
struct tb_bal_sample {
	uint64_t updates;
	uint64_t t_ms;
	uint64_t swapin_bytes;
	uint64_t majflt;
	uint64_t stalls;
	bool valid;
};

/*
 * Fill @vm from a VM's query-balloon (@status) and query-stats (@gstats)
 * answers at host time @now_ms, computing swap-in, fault and stall rates
 * against @prev (updated). Returns 0, or -1 with the reason in @why when
 * the VM cannot be managed yet (no guest connected, driver not ready,
 * guest RAM not known).
 */
int tb_bal_sample_vm(struct tb_pol_vm *vm, struct tb_bal_sample *prev, json_object *status,
		     json_object *gstats, uint64_t now_ms, char *why, size_t whylen);

/**
 * struct tb_bal_opts - `tballoon balance` from the command line
 * @dir: where the VMs' control sockets are
 * @listen: the daemon's own socket (NULL: DIR/balance.sock)
 * @textfile: Prometheus text file rewritten each period (NULL: none)
 * @dry_run: log the decisions, issue nothing
 * @once: one period, then exit (with @dry_run: what it would do now)
 * @json: decision log as one JSON object per line
 * @conf: the configuration
 */
struct tb_bal_opts {
	const char *dir;
	const char *listen;
	const char *textfile;
	bool dry_run;
	bool once;
	bool json;
	struct tb_bal_conf conf;
};

/* run the daemon until SIGINT/SIGTERM; an exit code (client.h) */
int tb_balance_run(const struct tb_bal_opts *o);

/* `balance --status`: each VM's size, target, last outcome and why */
int tb_balance_status(const char *sock, bool json);

/* `reclaim --total`: free @total_bytes of host memory within @deadline_ms */
int tb_balance_reclaim(const char *sock, uint64_t total_bytes, uint64_t deadline_ms,
		       bool wait, bool json);

#endif /* TB_BALANCE_H */
