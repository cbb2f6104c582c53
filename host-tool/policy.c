// SPDX-License-Identifier: GPL-2.0
/*
 * policy.c - the balancing policy and the reclaim split (policy.h). The
 * formula, with the reasons for each rule, is Documentation/policy.rst.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "policy.h"

#define PAGE 4096ULL
#define MIB (1ULL << 20)

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

static uint64_t pct_of(uint64_t v, unsigned int pct)
{
	return v / 100 * pct + v % 100 * pct / 100;
}

static uint64_t page_down(uint64_t v)
{
	return v & ~(PAGE - 1);
}

void tb_pol_conf_default(struct tb_pol_conf *c)
{
	*c = (struct tb_pol_conf){
		.reserve_bytes = 128 * MIB,
		.reserve_pct = 10,
		.floor_bytes = 256 * MIB,
		.floor_pct = 25,
		.host_reserve_bytes = 1024 * MIB,
		.host_psi_pct = 10,
		.stale_ms = 5000,
		.swapin_pps = 64,
		.majflt_ps = 256,
		.min_change_bytes = 32 * MIB,
		.step_pct = 10,
		.default_rate_pps = 65536,	/* 256 MiB/s: slower than we measure */
		.deadline_factor = 3.0,
		.min_deadline_ms = 1000,
	};
}

int tb_pol_conf_check(const struct tb_pol_conf *c, char *why, unsigned int whylen)
{
	const char *bad = NULL;

	if (c->reserve_pct > 100 || c->floor_pct > 100 || c->step_pct > 100 ||
	    c->host_psi_pct > 100)
		bad = "a percentage is over 100";
	else if (!c->step_pct)
		bad = "step-pct 0 would never shrink a guest";
	else if (!(c->default_rate_pps > 0))
		bad = "default-rate must be above 0";
	else if (!(c->deadline_factor >= 1.0))
		bad = "deadline-factor must be at least 1";
	else if (!c->min_deadline_ms)
		bad = "min-deadline must be above 0";
	else if (!c->stale_ms)
		bad = "stale 0 would hold every guest";
	else if (c->swapin_pps < 0 || c->majflt_ps < 0)
		bad = "a pressure rate is negative";
	if (bad) {
		snprintf(why, whylen, "%s", bad);
		return -EINVAL;
	}
	return 0;
}

uint64_t tb_pol_floor(const struct tb_pol_conf *c, const struct tb_pol_vm *vm)
{
	return page_down(min_u64(vm->ram_bytes,
				 max_u64(c->floor_bytes, pct_of(vm->ram_bytes, c->floor_pct))));
}

uint64_t tb_pol_reserve(const struct tb_pol_conf *c, const struct tb_pol_vm *vm)
{
	return page_down(max_u64(c->reserve_bytes, pct_of(vm->ram_bytes, c->reserve_pct)));
}

uint64_t tb_pol_cmd_floor(const struct tb_pol_conf *c, const struct tb_pol_vm *vm)
{
	return page_down(tb_pol_reserve(c, vm) / 2);
}

static uint64_t vm_size(const struct tb_pol_vm *vm)
{
	return vm->balloon_bytes < vm->ram_bytes ? vm->ram_bytes - vm->balloon_bytes : 0;
}

static bool vm_suffering(const struct tb_pol_conf *c, const struct tb_pol_vm *vm)
{
	return vm->swapin_pps >= c->swapin_pps || vm->majflt_ps >= c->majflt_ps ||
	       vm->stalls > 0;
}

static bool vm_stale(const struct tb_pol_conf *c, const struct tb_pol_vm *vm)
{
	return !vm->have_stats || vm->stats_age_ms > c->stale_ms;
}

/* the guest size the policy wants: working set plus reserve, floor to RAM */
static uint64_t vm_want(const struct tb_pol_conf *c, const struct tb_pol_vm *vm,
			bool suffering)
{
	uint64_t size = vm_size(vm), reserve = tb_pol_reserve(c, vm);
	uint64_t used = vm->avail_bytes < size ? size - vm->avail_bytes : 0;
	uint64_t want = used + reserve;

	/* a suffering guest grows by a reserve at least, whatever it says */
	if (suffering)
		want = max_u64(want, size + reserve);
	return page_down(min_u64(vm->ram_bytes, max_u64(want, tb_pol_floor(c, vm))));
}

/* a deadline the guest's measured rate meets with room to spare */
static uint64_t vm_deadline(const struct tb_pol_conf *c, const struct tb_pol_vm *vm,
			    uint64_t bytes)
{
	double rate = vm->rate_pps > 0 ? vm->rate_pps : c->default_rate_pps;
	double ms = (double)(bytes / PAGE) / rate * 1000.0 * c->deadline_factor;

	return ms < (double)c->min_deadline_ms ? c->min_deadline_ms : (uint64_t)ms;
}

/* bytes a guest can give in @deadline_ms at its rate */
static uint64_t vm_reach(const struct tb_pol_conf *c, const struct tb_pol_vm *vm,
			 uint64_t deadline_ms)
{
	double rate = vm->rate_pps > 0 ? vm->rate_pps : c->default_rate_pps;
	double bytes = rate * (double)deadline_ms / 1000.0 * (double)PAGE;

	return bytes >= 1e18 ? UINT64_MAX : page_down((uint64_t)bytes);
}

#define MAX_VMS_SORT 256

/* indexes of the VMs with key[i] > 0, largest key first (stable) */
static unsigned int by_key_desc(const uint64_t *key, unsigned int n, unsigned int *idx)
{
	unsigned int m = 0;

	for (unsigned int i = 0; i < n && m < MAX_VMS_SORT; i++) {
		unsigned int j;

		if (!key[i])
			continue;
		j = m++;
		while (j > 0 && key[idx[j - 1]] < key[i]) {
			idx[j] = idx[j - 1];
			j--;
		}
		idx[j] = i;
	}
	return m;
}

uint64_t tb_pol_decide(const struct tb_pol_conf *c, const struct tb_pol_host *h,
		       const struct tb_pol_vm *vms, unsigned int n,
		       struct tb_pol_decision *out)
{
	uint64_t slack[MAX_VMS_SORT] = { 0 }, grow[MAX_VMS_SORT] = { 0 };
	uint64_t shrink[MAX_VMS_SORT] = { 0 }, urgent_part[MAX_VMS_SORT] = { 0 };
	unsigned int order[MAX_VMS_SORT];
	uint64_t host_need, spare, grow_total = 0, need, slack_total = 0;
	bool psi = h->psi_some_avg10 >= (double)c->host_psi_pct;
	bool held[MAX_VMS_SORT] = { false };
	unsigned int m;

	if (n > MAX_VMS_SORT)
		n = MAX_VMS_SORT;
	host_need = h->avail_bytes < c->host_reserve_bytes ?
		    c->host_reserve_bytes - h->avail_bytes : 0;
	spare = h->avail_bytes > c->host_reserve_bytes ?
		h->avail_bytes - c->host_reserve_bytes : 0;

	/* 1. each guest: hold, grow or give */
	for (unsigned int i = 0; i < n; i++) {
		const struct tb_pol_vm *vm = &vms[i];
		struct tb_pol_decision *d = &out[i];
		uint64_t size = vm_size(vm);

		memset(d, 0, sizeof(*d));
		d->action = TB_POL_HOLD;
		d->target_bytes = vm->balloon_bytes;
		if (vm_stale(c, vm)) {
			held[i] = true;
			snprintf(d->why, sizeof(d->why), vm->have_stats ?
				 "statistics %llu ms old: held" : "no statistics yet: held",
				 (unsigned long long)vm->stats_age_ms);
			continue;
		}
		d->suffering = vm_suffering(c, vm);
		d->want_bytes = vm_want(c, vm, d->suffering);
		if (vm->busy && !d->suffering) {
			held[i] = true;
			snprintf(d->why, sizeof(d->why), "a command is running: held");
			continue;
		}
		if (d->want_bytes > size &&
		    (d->suffering || d->want_bytes - size >= c->min_change_bytes)) {
			grow[i] = min_u64(d->want_bytes - size, vm->balloon_bytes);
			grow_total += grow[i];
		} else if (size > d->want_bytes && !d->suffering) {
			slack[i] = size - d->want_bytes;
			slack_total += slack[i];
		}
	}

	/*
	 * 2. growth comes from the host's spare memory first; what that does
	 * not cover, and the host's own shortfall, is taken from slack now
	 */
	need = host_need + (grow_total > spare ? grow_total - spare : 0);
	if (need > slack_total) {
		/* not enough slack: the non-suffering guests' growth waits first */
		uint64_t cut = min_u64(need - slack_total, grow_total);

		for (int pass = 0; pass < 2 && cut; pass++)
			for (unsigned int i = 0; i < n && cut; i++) {
				uint64_t c_i;

				if (!grow[i] || out[i].suffering != (pass == 1))
					continue;
				c_i = min_u64(grow[i], cut);
				grow[i] -= c_i;
				grow_total -= c_i;
				cut -= c_i;
			}
		need = host_need + (grow_total > spare ? grow_total - spare : 0);
	}
	m = by_key_desc(slack, n, order);
	for (unsigned int k = 0; k < m && need; k++) {
		unsigned int i = order[k];

		urgent_part[i] = min_u64(slack[i], need);
		need -= urgent_part[i];
	}
	/* 3. idle guests give their slack gradually, paced */
	for (unsigned int i = 0; i < n; i++) {
		uint64_t step = pct_of(vms[i].ram_bytes, c->step_pct);

		if (!slack[i])
			continue;
		shrink[i] = psi ? slack[i] : max_u64(urgent_part[i], min_u64(slack[i], step));
		shrink[i] = page_down(shrink[i]);
	}

	/* 4. the commands */
	for (unsigned int i = 0; i < n; i++) {
		const struct tb_pol_vm *vm = &vms[i];
		struct tb_pol_decision *d = &out[i];
		uint64_t mib_want = d->want_bytes / MIB;

		if (held[i])
			continue;
		grow[i] = page_down(grow[i]);
		if (grow[i] && (d->suffering || grow[i] >= c->min_change_bytes)) {
			d->action = TB_POL_DEFLATE;
			d->target_bytes = vm->balloon_bytes - grow[i];
			d->deadline_ms = vm_deadline(c, vm, grow[i]);
			snprintf(d->why, sizeof(d->why), "%s: grow by %llu MiB to %llu MiB",
				 d->suffering ? "suffering (swap-ins, faults or stalls)" :
				 "below its working set and reserve",
				 (unsigned long long)(grow[i] / MIB), (unsigned long long)mib_want);
		} else if (shrink[i] >= c->min_change_bytes ||
			   (urgent_part[i] && shrink[i])) {
			bool urgent = urgent_part[i] || psi;

			d->action = TB_POL_INFLATE;
			d->target_bytes = vm->balloon_bytes + shrink[i];
			d->deadline_ms = vm_deadline(c, vm, shrink[i]);
			d->floor_bytes = tb_pol_cmd_floor(c, vm);
			d->paced = !urgent;
			snprintf(d->why, sizeof(d->why), "%s: give %llu MiB of %llu MiB slack",
				 urgent_part[i] ? "the host needs memory" :
				 psi ? "host memory pressure" : "idle memory",
				 (unsigned long long)(shrink[i] / MIB),
				 (unsigned long long)(slack[i] / MIB));
		} else if (d->suffering || d->want_bytes >= vm_size(vm) + c->min_change_bytes) {
			snprintf(d->why, sizeof(d->why), "%s, %s",
				 d->suffering ? "suffering" : "below its working set and reserve",
				 vm->balloon_bytes ? "but the host cannot spare memory now" :
				 "and it has all its RAM");
		} else {
			snprintf(d->why, sizeof(d->why), "within %llu MiB of the size it needs (%llu MiB)",
				 (unsigned long long)(c->min_change_bytes / MIB),
				 (unsigned long long)mib_want);
		}
	}
	return need;
}

uint64_t tb_pol_reclaim_plan(const struct tb_pol_conf *c, const struct tb_pol_vm *vms,
			     unsigned int n, uint64_t total, uint64_t deadline_ms,
			     struct tb_pol_share *out)
{
	uint64_t tier1[MAX_VMS_SORT] = { 0 }, tier2[MAX_VMS_SORT] = { 0 };
	unsigned int order[MAX_VMS_SORT], m;
	uint64_t left = page_down(total), planned = 0;

	if (n > MAX_VMS_SORT)
		n = MAX_VMS_SORT;
	for (unsigned int i = 0; i < n; i++) {
		const struct tb_pol_vm *vm = &vms[i];
		uint64_t size = vm_size(vm), want, floor;

		memset(&out[i], 0, sizeof(out[i]));
		out[i].target_bytes = vm->balloon_bytes;
		if (vm_stale(c, vm) || vm_suffering(c, vm))
			continue;
		want = vm_want(c, vm, false);
		floor = tb_pol_floor(c, vm);
		tier1[i] = size > want ? size - want : 0;
		tier2[i] = min_u64(size, want) > floor ? min_u64(size, want) - floor : 0;
		out[i].reachable_bytes = min_u64(tier1[i] + tier2[i], vm_reach(c, vm, deadline_ms));
		/* below its command floor of MemAvailable the guest stops */
		out[i].reachable_bytes = min_u64(out[i].reachable_bytes,
						 page_down(vm->avail_bytes > tb_pol_cmd_floor(c, vm) ?
							   vm->avail_bytes - tb_pol_cmd_floor(c, vm) : 0));
	}
	/* slack first, largest first; then down towards the floors */
	for (int pass = 0; pass < 2 && left; pass++) {
		m = by_key_desc(pass ? tier2 : tier1, n, order);
		for (unsigned int k = 0; k < m && left; k++) {
			unsigned int i = order[k];
			uint64_t room = out[i].reachable_bytes - out[i].bytes;
			uint64_t take = min_u64(min_u64(pass ? tier2[i] : tier1[i], room), left);

			take = page_down(take);
			out[i].bytes += take;
			left -= take;
			planned += take;
		}
	}
	for (unsigned int i = 0; i < n; i++)
		out[i].target_bytes = vms[i].balloon_bytes + out[i].bytes;
	return planned;
}

/* MOM's constants (doc/balloon.rules) */
#define MOM_PRESSURE 0.20
#define MOM_CRITICAL 0.05
#define MOM_GUEST_FREE 0.20
#define MOM_MAX_CHANGE 0.05
#define MOM_MIN_CHANGE 0.0025
#define MOM_DEADLINE_MS 30000

void tb_pol_mom_decide(const struct tb_pol_conf *c, double host_free_frac,
		       const struct tb_pol_vm *vms, unsigned int n,
		       struct tb_pol_decision *out)
{
	bool pressure = host_free_frac < MOM_PRESSURE;
	double free_pct = host_free_frac <= MOM_CRITICAL ? host_free_frac - 0.05 :
			  MOM_GUEST_FREE * host_free_frac / MOM_PRESSURE;

	for (unsigned int i = 0; i < n; i++) {
		const struct tb_pol_vm *vm = &vms[i];
		struct tb_pol_decision *d = &out[i];
		double cur = (double)vm_size(vm), ram = (double)vm->ram_bytes;
		double used = cur > (double)vm->free_bytes ? cur - (double)vm->free_bytes : 0;
		double floor = (double)tb_pol_floor(c, vm), lo, want;

		memset(d, 0, sizeof(*d));
		d->action = TB_POL_HOLD;
		d->target_bytes = vm->balloon_bytes;
		if (vm_stale(c, vm) || vm->busy) {
			snprintf(d->why, sizeof(d->why), "mom: %s: held",
				 vm->busy ? "a command is running" : "no fresh statistics");
			continue;
		}
		if (pressure) {
			lo = used + free_pct * cur;
			lo = lo < floor ? lo : floor;
			want = cur * (1 - MOM_MAX_CHANGE);
			if (want < lo)
				want = lo;
			if (want > cur)
				want = cur;
		} else {
			lo = used + MOM_GUEST_FREE * cur;
			lo = lo < floor ? lo : floor;
			want = cur < ram ? cur * (1 + MOM_MAX_CHANGE) : cur;
			if (want > ram)
				want = ram;
			if (want < lo)
				want = lo;
		}
		d->want_bytes = page_down((uint64_t)want);
		if (!(want - cur > MOM_MIN_CHANGE * cur || cur - want > MOM_MIN_CHANGE * cur) ||
		    d->want_bytes == vm_size(vm)) {
			snprintf(d->why, sizeof(d->why), "mom: host %.0f%% free: change too small",
				 host_free_frac * 100);
			continue;
		}
		d->action = d->want_bytes < vm_size(vm) ? TB_POL_INFLATE : TB_POL_DEFLATE;
		d->target_bytes = vm->ram_bytes - d->want_bytes;
		d->deadline_ms = MOM_DEADLINE_MS;
		snprintf(d->why, sizeof(d->why), "mom: host %.0f%% free: %s to %llu MiB",
			 host_free_frac * 100, pressure ? "shrink" : "grow",
			 (unsigned long long)(d->want_bytes / MIB));
	}
}
