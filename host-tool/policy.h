/* SPDX-License-Identifier: GPL-2.0 */
/*
 * policy.h - the memory policy of `tballoon balance`: from what is known of
 * each VM and of the host, the size each guest should have and the timed
 * command that gets it there; and the split of a host-wide timed reclaim
 * (`tballoon reclaim --total`) across the guests.
 *
 * Pure functions of their inputs: no I/O, no clock, no globals, so that
 * every rule is a table-driven unit test (tests/test_policy.c). The
 * formula is Documentation/policy.rst; keep the two in step. No locking:
 * callers own every structure they pass.
 */
#ifndef TB_POLICY_H
#define TB_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#define TB_POL_NAME_MAX 64
#define TB_POL_WHY_MAX 160

/**
 * struct tb_pol_conf - the policy's knobs (balance.conf, command line)
 * @reserve_bytes, @reserve_pct: a guest's reserve above its working set: the
 *	larger of the two (percent of its RAM)
 * @floor_bytes, @floor_pct: the smallest a guest is ever made: the larger of
 *	the two (percent of its RAM)
 * @host_reserve_bytes: the host's own MemAvailable reserve
 * @host_psi_pct: host memory pressure (PSI "some" avg10, percent) at or
 *	above which reclaim is urgent even with the reserve intact
 * @stale_ms: statistics older than this: the guest is held as it is
 * @swapin_pps, @majflt_ps: a guest swapping in or faulting at or above these
 *	rates (per second) is suffering; so is one with any allocation stall
 *	or direct reclaim (Linux >= 6.12 reports them)
 * @min_change_bytes: smaller changes are not worth a command (hysteresis)
 * @step_pct: a non-urgent shrink moves at most this percent of the guest's
 *	RAM per decision (paced; urgent ones take all the slack at once)
 * @default_rate_pps: inflate rate assumed for a guest not measured yet
 * @deadline_factor: a command's deadline is this many times the time the
 *	guest's measured rate needs for it (at least @min_deadline_ms)
 * @min_deadline_ms: the shortest deadline issued
 */
struct tb_pol_conf {
	uint64_t reserve_bytes;
	unsigned int reserve_pct;
	uint64_t floor_bytes;
	unsigned int floor_pct;
	uint64_t host_reserve_bytes;
	unsigned int host_psi_pct;
	uint64_t stale_ms;
	double swapin_pps;
	double majflt_ps;
	uint64_t min_change_bytes;
	unsigned int step_pct;
	double default_rate_pps;
	double deadline_factor;
	uint64_t min_deadline_ms;
};

/* safe defaults (Documentation/policy.rst, "Configuration") */
void tb_pol_conf_default(struct tb_pol_conf *c);

/*
 * Check a configuration; 0, or -EINVAL with the reason in @why (a floor
 * above the reserve's guest, percentages over 100, a zero rate...).
 */
int tb_pol_conf_check(const struct tb_pol_conf *c, char *why, unsigned int whylen);

/**
 * struct tb_pol_vm - what is known of one VM at decision time
 * @name: its control socket's name (for the log)
 * @ram_bytes: guest RAM
 * @balloon_bytes: the balloon now (the guest has @ram_bytes - this)
 * @have_stats: the guest sent statistics; @stats_age_ms how old they are
 * @avail_bytes: the guest's MemAvailable (what it can still use without
 *	swapping: free plus reclaimable caches)
 * @free_bytes: the guest's MemFree (MOM's "mem_unused"; 0 if not sent)
 * @swapin_pps, @majflt_ps: swap-ins (pages) and major faults per second
 *	over the last period
 * @stalls: allocation stalls plus direct reclaims over the last period
 *	(0 where the guest does not report them)
 * @rate_pps: measured inflate rate (pages/s) of its past commands, 0 if
 *	none yet
 * @busy: a command of ours is still running on it
 */
struct tb_pol_vm {
	char name[TB_POL_NAME_MAX];
	uint64_t ram_bytes;
	uint64_t balloon_bytes;
	bool have_stats;
	uint64_t stats_age_ms;
	uint64_t avail_bytes;
	uint64_t free_bytes;
	double swapin_pps;
	double majflt_ps;
	uint64_t stalls;
	double rate_pps;
	bool busy;
};

/**
 * struct tb_pol_host - the host at decision time
 * @avail_bytes: MemAvailable
 * @psi_some_avg10: /proc/pressure/memory "some" avg10 (percent)
 */
struct tb_pol_host {
	uint64_t avail_bytes;
	double psi_some_avg10;
};

enum tb_pol_action { TB_POL_HOLD, TB_POL_INFLATE, TB_POL_DEFLATE };

/**
 * struct tb_pol_decision - what to do with one VM
 * @action: hold, or a command
 * @target_bytes: the balloon size the command asks for
 * @deadline_ms: its deadline
 * @floor_bytes: its floor (the guest's MemAvailable it must keep)
 * @paced: spread over the deadline (not urgent)
 * @want_bytes: the guest size the policy computed (RAM minus balloon)
 * @suffering: the guest showed swap-ins, faults or stalls
 * @why: one line for the log
 */
struct tb_pol_decision {
	enum tb_pol_action action;
	uint64_t target_bytes;
	uint64_t deadline_ms;
	uint64_t floor_bytes;
	bool paced;
	uint64_t want_bytes;
	bool suffering;
	char why[TB_POL_WHY_MAX];
};

/* the smallest size a guest is ever made, and its reserve */
uint64_t tb_pol_floor(const struct tb_pol_conf *c, const struct tb_pol_vm *vm);
uint64_t tb_pol_reserve(const struct tb_pol_conf *c, const struct tb_pol_vm *vm);
/*
 * the floor an inflate of ours carries: the guest stops it when its
 * MemAvailable falls to this (half its reserve)
 */
uint64_t tb_pol_cmd_floor(const struct tb_pol_conf *c, const struct tb_pol_vm *vm);

/*
 * One balancing decision for @n VMs: @out[i] for @vms[i]. Returns the
 * bytes the host still needs after the plan (0: its reserve is covered).
 */
uint64_t tb_pol_decide(const struct tb_pol_conf *c, const struct tb_pol_host *h,
		       const struct tb_pol_vm *vms, unsigned int n,
		       struct tb_pol_decision *out);

/**
 * struct tb_pol_share - one guest's part of a host-wide reclaim
 * @bytes: what it is asked to give by the deadline (0: not asked)
 * @target_bytes: the balloon size that means (its command's target)
 * @reachable_bytes: what it could give by the deadline at its rate, down
 *	to its floor and to its command floor of MemAvailable
 */
struct tb_pol_share {
	uint64_t bytes;
	uint64_t target_bytes;
	uint64_t reachable_bytes;
};

/*
 * Split @total bytes to be freed within @deadline_ms across @n VMs: first
 * from each guest's slack above its working set and reserve, largest first,
 * then, if that is not enough, from what lies between that and its floor;
 * no guest is asked for more than its measured rate gives by the deadline,
 * nor for more than its MemAvailable above its command floor (the guest
 * stops the inflate there).
 * A suffering or statistics-stale guest is not asked. Returns the bytes
 * planned; less than @total is the expected shortfall.
 */
uint64_t tb_pol_reclaim_plan(const struct tb_pol_conf *c, const struct tb_pol_vm *vms,
			     unsigned int n, uint64_t total, uint64_t deadline_ms,
			     struct tb_pol_share *out);

/*
 * For comparison (make bench-policy), oVirt MOM's default balloon rules
 * (its doc/balloon.rules) on the same inputs: with the host's free memory
 * below 20% of its total (@host_free_frac), each guest shrinks by at most
 * 5% of its size per decision, down to what it uses (size - MemFree) plus a
 * free share that falls with the host's free memory (forced below what it
 * uses when the host has under 5% free), never below the smaller of that
 * and its floor; otherwise each ballooned guest grows by 5% per decision,
 * at least to what it uses plus 20%. Changes under 0.25% of its size are
 * not made. The commands it yields have a long deadline, no floor and no
 * pacing: MOM sets balloon targets and has no notion of time.
 */
void tb_pol_mom_decide(const struct tb_pol_conf *c, double host_free_frac,
		       const struct tb_pol_vm *vms, unsigned int n,
		       struct tb_pol_decision *out);

#endif /* TB_POLICY_H */
