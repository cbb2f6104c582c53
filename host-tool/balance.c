// SPDX-License-Identifier: GPL-2.0
/*
 * balance.c - `tballoon balance`, `balance --status` and `reclaim --total`
 * (balance.h): the configuration, the per-VM sampling, the period loop that
 * turns policy.h's decisions into timed commands, the host-wide reclaim
 * with its re-planning, the decision log and the Prometheus text file.
 *
 * Single-threaded: the poll loop owns every structure here.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "balance.h"
#include "client.h"
#include "conn.h"
#include "ctl.h"
#include "parse.h"
#include "serve.h"
#include "util.h"

#define PAGE 4096ULL
#define MIB (1ULL << 20)
#define TB_BAL_MAX_VMS 256
#define TB_BAL_MAX_CLIENTS 16
/* while a reclaim runs, its progress is checked this often */
#define TB_BAL_RECLAIM_TICK_MS 200
/* a VM that did not answer is tried again after at most this long */
#define TB_BAL_MAX_BACKOFF_MS 30000

/* ------------------------------------------------------------------------
 * Configuration
 * ------------------------------------------------------------------------
 */

void tb_bal_conf_default(struct tb_bal_conf *c)
{
	tb_pol_conf_default(&c->pol);
	c->period_ms = 1000;
	c->hold_ms = 10000;
	c->vm_timeout_ms = 1000;
}

enum tb_bal_kind { K_SIZE, K_PCT, K_DUR, K_RATE, K_POLICY };

/**
 * struct tb_bal_key - one configuration key and where its value goes
 * @u: a size (bytes) or duration (ms); @pct: a whole percentage; @d: a rate
 *	or factor; exactly one is set, by @kind
 */
struct tb_bal_key {
	const char *name;
	enum tb_bal_kind kind;
	uint64_t *u;
	unsigned int *pct;
	double *d;
};

int tb_bal_conf_set(struct tb_bal_conf *c, const char *key, const char *value,
		    char *why, size_t whylen)
{
	struct tb_pol_conf *p = &c->pol;
	const struct tb_bal_key keys[] = {
		{ "reserve", K_SIZE, .u = &p->reserve_bytes },
		{ "reserve-pct", K_PCT, .pct = &p->reserve_pct },
		{ "floor", K_SIZE, .u = &p->floor_bytes },
		{ "floor-pct", K_PCT, .pct = &p->floor_pct },
		{ "host-reserve", K_SIZE, .u = &p->host_reserve_bytes },
		{ "host-psi-pct", K_PCT, .pct = &p->host_psi_pct },
		{ "stale", K_DUR, .u = &p->stale_ms },
		{ "swapin-rate", K_RATE, .d = &p->swapin_pps },
		{ "majflt-rate", K_RATE, .d = &p->majflt_ps },
		{ "min-change", K_SIZE, .u = &p->min_change_bytes },
		{ "step-pct", K_PCT, .pct = &p->step_pct },
		{ "default-rate", K_RATE, .d = &p->default_rate_pps },
		{ "deadline-factor", K_RATE, .d = &p->deadline_factor },
		{ "min-deadline", K_DUR, .u = &p->min_deadline_ms },
		{ "period", K_DUR, .u = &c->period_ms },
		{ "reclaim-hold", K_DUR, .u = &c->hold_ms },
		{ "vm-timeout", K_DUR, .u = &c->vm_timeout_ms },
		{ "host-budget", K_SIZE, .u = &c->host_budget },
		{ "policy", K_POLICY, .u = NULL },
	};
	const struct tb_bal_key *k = NULL;
	const char *err = NULL;
	char *end;
	uint64_t u;
	double d;

	for (size_t i = 0; i < TB_ARRAY_SIZE(keys); i++)
		if (!strcmp(keys[i].name, key))
			k = &keys[i];
	if (!k) {
		snprintf(why, whylen, "%s: unknown key", key);
		return -1;
	}
	switch (k->kind) {
	case K_SIZE:
		if (tb_parse_size_pages(value, &u, &err))
			break;
		*k->u = u * PAGE;
		return 0;
	case K_DUR:
		if (tb_parse_duration_ms(value, &u, &err))
			break;
		*k->u = u;
		return 0;
	case K_PCT:
		errno = 0;
		u = strtoull(value, &end, 10);
		if (errno || end == value || (*end && strcmp(end, "%")) || u > 100 ||
		    value[0] == '-') {
			err = "not a whole percentage 0-100";
			break;
		}
		*k->pct = (unsigned int)u;
		return 0;
	case K_POLICY:
		if (strcmp(value, "tballoon") && strcmp(value, "mom")) {
			err = "tballoon or mom";
			break;
		}
		c->mom = !strcmp(value, "mom");
		return 0;
	case K_RATE:
		errno = 0;
		d = strtod(value, &end);
		if (errno || end == value || *end || !isfinite(d) || d < 0) {
			err = "not a number 0 or more";
			break;
		}
		*k->d = d;
		return 0;
	}
	snprintf(why, whylen, "%s = %s: %s", key, value, err ? err : "invalid");
	return -1;
}

static char *tb_trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
		*--e = 0;
	return s;
}

int tb_bal_conf_load(struct tb_bal_conf *c, const char *path, bool must_exist,
		     char *why, size_t whylen)
{
	FILE *f = fopen(path, "re");
	char line[512], sub[256];
	unsigned int n = 0;

	if (!f) {
		if (errno == ENOENT && !must_exist)
			return 0;
		snprintf(why, whylen, "%s: %s", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		char *s, *eq, *hash;

		n++;
		if (!strchr(line, '\n') && !feof(f)) {
			snprintf(why, whylen, "%s:%u: line too long", path, n);
			goto fail;
		}
		hash = strchr(line, '#');
		if (hash)
			*hash = 0;
		s = tb_trim(line);
		if (!*s)
			continue;
		eq = strchr(s, '=');
		if (!eq) {
			snprintf(why, whylen, "%s:%u: not \"key = value\"", path, n);
			goto fail;
		}
		*eq = 0;
		if (tb_bal_conf_set(c, tb_trim(s), tb_trim(eq + 1), sub, sizeof(sub))) {
			snprintf(why, whylen, "%s:%u: %s", path, n, sub);
			goto fail;
		}
	}
	fclose(f);
	return 0;
fail:
	fclose(f);
	return -1;
}

int tb_bal_conf_check(const struct tb_bal_conf *c, char *why, size_t whylen)
{
	if (tb_pol_conf_check(&c->pol, why, (unsigned int)whylen))
		return -1;
	if (c->period_ms < 100 || c->period_ms > 3600000) {
		snprintf(why, whylen, "period must be from 100ms to 1h");
		return -1;
	}
	if (!c->vm_timeout_ms || c->vm_timeout_ms > 60000) {
		snprintf(why, whylen, "vm-timeout must be from 1ms to 60s");
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * Inputs: the host and each VM
 * ------------------------------------------------------------------------
 */

int tb_bal_parse_meminfo(const char *text, const char *key, uint64_t *bytes)
{
	size_t kl = strlen(key);
	const char *p = text;
	unsigned long long kb;

	for (;;) {
		p = strstr(p, key);
		if (!p)
			return -1;
		if ((p == text || p[-1] == '\n') && p[kl] == ':')
			break;
		p += kl;
	}
	if (sscanf(p + kl + 1, "%llu", &kb) != 1)
		return -1;
	*bytes = (uint64_t)kb * 1024;
	return 0;
}

int tb_bal_parse_psi(const char *text, double *avg10)
{
	const char *p = strstr(text, "some ");

	if (!p || (p != text && p[-1] != '\n'))
		return -1;
	p = strstr(p, "avg10=");
	if (!p || sscanf(p + 6, "%lf", avg10) != 1 || !isfinite(*avg10) || *avg10 < 0)
		return -1;
	return 0;
}

static int tb_read_small(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = 0;
	return 0;
}

static uint64_t tb_ju64(json_object *o, const char *key)
{
	json_object *v = tb_jobj(o, key);

	return v && json_object_is_type(v, json_type_int) && json_object_get_int64(v) >= 0 ?
	       json_object_get_uint64(v) : 0;
}

static int64_t tb_ji64(json_object *o, const char *key, int64_t dflt)
{
	json_object *v = tb_jobj(o, key);

	return v && json_object_is_type(v, json_type_int) ? json_object_get_int64(v) : dflt;
}

static const char *tb_js(json_object *o, const char *key)
{
	json_object *v = tb_jobj(o, key);

	return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
}

/* a counter's growth; a counter that went back (guest reboot) grew by 0 */
static uint64_t tb_delta(uint64_t now, uint64_t then)
{
	return now >= then ? now - then : 0;
}

int tb_bal_sample_vm(struct tb_pol_vm *vm, struct tb_bal_sample *prev, json_object *status,
		     json_object *gstats, uint64_t now_ms, char *why, size_t whylen)
{
	json_object *g = tb_jobj(gstats, "guest");
	json_object *cmd = tb_jobj(status, "command");
	int64_t age = tb_ji64(gstats, "age_ms", -1);
	uint64_t updates = tb_ju64(gstats, "updates");
	const char *state = tb_js(cmd, "state");

	vm->ram_bytes = tb_ju64(status, "guest_ram_bytes");
	vm->balloon_bytes = tb_ju64(status, "actual_bytes");
	vm->busy = !strcmp(state, "running");
	if (!tb_jbool(status, "connected")) {
		snprintf(why, whylen, "no guest connected");
		return -1;
	}
	if (!tb_jbool(status, "driver_ok")) {
		snprintf(why, whylen, "balloon driver not ready");
		return -1;
	}
	if (!vm->ram_bytes) {
		snprintf(why, whylen, "guest RAM not known yet");
		return -1;
	}
	if (vm->balloon_bytes > vm->ram_bytes)
		vm->balloon_bytes = vm->ram_bytes;
	vm->have_stats = tb_jbool(gstats, "stats_vq") && updates && age >= 0 &&
			 tb_jobj(g, "available-memory");
	vm->stats_age_ms = age >= 0 ? (uint64_t)age : 0;
	vm->avail_bytes = tb_ju64(g, "available-memory");
	vm->free_bytes = tb_ju64(g, "free-memory");
	if (vm->have_stats) {
		uint64_t t = now_ms > (uint64_t)age ? now_ms - (uint64_t)age : 0;
		uint64_t swapin = tb_ju64(g, "swap-in"), majflt = tb_ju64(g, "major-faults");
		uint64_t stalls = tb_ju64(g, "alloc-stalls") + tb_ju64(g, "direct-reclaims");

		if (prev->valid && updates != prev->updates && t > prev->t_ms) {
			double dt = (double)(t - prev->t_ms) / 1000.0;

			/* Linux sends swap-in in bytes (pages_to_bytes) */
			vm->swapin_pps = (double)tb_delta(swapin, prev->swapin_bytes) / PAGE / dt;
			vm->majflt_ps = (double)tb_delta(majflt, prev->majflt) / dt;
			vm->stalls = tb_delta(stalls, prev->stalls);
		}
		/* no new statistics: what was measured last still holds */
		if (updates != prev->updates || !prev->valid) {
			prev->updates = updates;
			prev->t_ms = t;
			prev->swapin_bytes = swapin;
			prev->majflt = majflt;
			prev->stalls = stalls;
			prev->valid = true;
		}
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * The daemon's state
 * ------------------------------------------------------------------------
 */

/**
 * struct tb_bal_vm - one managed VM
 * @path: its control socket; @pv: the policy's view; @d: the last decision
 * @ready: the last poll answered and the VM can be managed; @why_not: else
 * @next_try_ms, @backoff_ms: a VM that did not answer waits before the next try
 * @last_action, @last_why: the last decision logged (its reason up to a number)
 * @our_cmd: the cmd_id of the last command we issued (0: none running)
 * @our_paced, @our_inflate: how it was issued (paced ones do not measure rate)
 * @timed: the guest's driver keeps the timed protocol (query-balloon): paced
 *	inflates are also gentle
 * @cmd_state, @cmd_reason: the device's command state and reason now
 * @last_outcome: the outcome of our last command, for --status
 * @commands: commands issued
 * @rc_in, @rc_base, @rc_stopped: its part in the running reclaim: balloon
 *	when it began, and whether it stopped early (not asked again)
 */
struct tb_bal_vm {
	char name[TB_POL_NAME_MAX];
	char path[PATH_MAX];
	bool seen;
	bool ready;
	char why_not[96];
	uint64_t next_try_ms;
	uint64_t backoff_ms;
	struct tb_pol_vm pv;
	struct tb_bal_sample prev;
	struct tb_pol_decision d;
	enum tb_pol_action last_action;
	char last_why[TB_POL_WHY_MAX];
	uint64_t our_cmd;
	bool our_paced;
	bool our_inflate;
	bool timed;
	uint64_t cmd_id;
	char cmd_state[32];
	char cmd_reason[32];
	uint64_t cmd_start_pages;
	uint64_t cmd_elapsed_ms;
	uint64_t resident_bytes;
	uint64_t resident_at_ms;
	double resident_bps;
	char last_outcome[96];
	uint64_t commands;
	bool rc_in;
	uint64_t rc_base;
	bool rc_stopped;
	uint64_t rc_asked;
};

struct tb_bal_client {
	int fd;
	bool negotiated;
	char buf[4096];
	size_t len;
};

/**
 * struct tb_bal_reclaim - the host-wide reclaim in progress (or the last)
 * @active: running; @id: its number; @client: who asked (index, -1: gone)
 * @total, @deadline_at, @started_at: what was asked and when
 * @planned: bytes the first plan expected; @replans: plans after the first
 * @outcome: the last reclaim's outcome object (status), owned
 */
struct tb_bal_reclaim {
	bool active;
	uint64_t id;
	int client;
	uint64_t total;
	uint64_t deadline_ms;
	uint64_t deadline_at;
	uint64_t started_at;
	uint64_t planned;
	unsigned int replans;
	uint64_t hold_until;
	json_object *outcome;
};

struct tb_bal {
	const struct tb_bal_opts *o;
	const struct tb_bal_conf *c;
	struct tb_bal_vm *vms;
	unsigned int n;
	struct tb_pol_host host;
	uint64_t host_total;
	bool have_psi;
	uint64_t decisions;
	uint64_t commands;
	uint64_t reclaims;
	uint64_t need_bytes;
	struct tb_bal_client cl[TB_BAL_MAX_CLIENTS];
	struct tb_bal_reclaim rc;
	char listen_path[PATH_MAX];
};

static volatile sig_atomic_t tb_bal_stop;

static void tb_bal_on_signal(int sig)
{
	(void)sig;
	tb_bal_stop = 1;
}

/* ------------------------------------------------------------------------
 * Gathering
 * ------------------------------------------------------------------------
 */

static void tb_bal_host(struct tb_bal *b)
{
	char buf[8192];
	uint64_t v;
	double psi;

	if (!tb_read_small("/proc/meminfo", buf, sizeof(buf))) {
		if (!tb_bal_parse_meminfo(buf, "MemAvailable", &v))
			b->host.avail_bytes = v;
		if (!tb_bal_parse_meminfo(buf, "MemTotal", &v))
			b->host_total = v;
	}
	if (b->c->host_budget) {
		uint64_t used = 0;

		for (unsigned int i = 0; i < b->n; i++)
			used += b->vms[i].resident_bytes;
		b->host_total = b->c->host_budget;
		b->host.avail_bytes = used < b->c->host_budget ? b->c->host_budget - used : 0;
	}
	b->have_psi = !tb_read_small("/proc/pressure/memory", buf, sizeof(buf)) &&
		      !tb_bal_parse_psi(buf, &psi);
	b->host.psi_some_avg10 = b->have_psi ? psi : 0;
}

static int tb_name_cmp(const void *a, const void *b)
{
	return strcmp(((const struct tb_bal_vm *)a)->name, ((const struct tb_bal_vm *)b)->name);
}

/* the VMs in the directory now: new ones added, gone ones dropped */
static void tb_bal_scan(struct tb_bal *b)
{
	DIR *d = opendir(b->o->dir);
	struct dirent *e;
	size_t sl = strlen(TB_BAL_SUFFIX);
	unsigned int w = 0;

	for (unsigned int i = 0; i < b->n; i++)
		b->vms[i].seen = false;
	if (!d) {
		static bool said;

		if (!said)
			tb_warn("balance: %s: %s", b->o->dir, strerror(errno));
		said = true;
	}
	while (d && (e = readdir(d))) {
		size_t len = strlen(e->d_name);
		struct tb_bal_vm *vm = NULL;

		if (len <= sl || len - sl >= TB_POL_NAME_MAX ||
		    strcmp(e->d_name + len - sl, TB_BAL_SUFFIX))
			continue;
		for (unsigned int i = 0; i < b->n; i++)
			if (!strncmp(b->vms[i].name, e->d_name, len - sl) &&
			    !b->vms[i].name[len - sl])
				vm = &b->vms[i];
		if (!vm) {
			if (b->n >= TB_BAL_MAX_VMS)
				continue;
			vm = &b->vms[b->n++];
			memset(vm, 0, sizeof(*vm));
			memcpy(vm->name, e->d_name, len - sl);
			vm->name[len - sl] = 0;
			if (snprintf(vm->path, sizeof(vm->path), "%s/%s", b->o->dir, e->d_name) >=
			    (int)sizeof(vm->path)) {
				b->n--;
				continue;
			}
			tb_info("balance: %s: new VM (%s)", vm->name, vm->path);
		}
		vm->seen = true;
	}
	if (d)
		closedir(d);
	for (unsigned int i = 0; i < b->n; i++) {
		if (b->vms[i].seen) {
			b->vms[w++] = b->vms[i];
			continue;
		}
		tb_info("balance: %s: gone", b->vms[i].name);
	}
	b->n = w;
	qsort(b->vms, b->n, sizeof(*b->vms), tb_name_cmp);
}

/* the end of our last command on @vm: its outcome and its measured rate */
static void tb_bal_cmd_ended(struct tb_bal_vm *vm)
{
	uint64_t now_pages = vm->pv.balloon_bytes / PAGE;
	uint64_t moved = now_pages > vm->cmd_start_pages ? now_pages - vm->cmd_start_pages :
			 vm->cmd_start_pages - now_pages;

	snprintf(vm->last_outcome, sizeof(vm->last_outcome), "%s %s%s%s after %llu ms",
		 vm->our_inflate ? "inflate" : "deflate", vm->cmd_state,
		 strcmp(vm->cmd_reason, "none") ? " " : "",
		 strcmp(vm->cmd_reason, "none") ? vm->cmd_reason : "",
		 (unsigned long long)vm->cmd_elapsed_ms);
	/* paced commands are as slow as we asked: not the guest's rate */
	if (vm->our_inflate && !vm->our_paced && vm->cmd_elapsed_ms && moved >= 256) {
		double r = (double)moved * 1000.0 / (double)vm->cmd_elapsed_ms;

		vm->pv.rate_pps = vm->pv.rate_pps > 0 ? 0.5 * vm->pv.rate_pps + 0.5 * r : r;
	}
	vm->our_cmd = 0;
}

static json_object *tb_bal_request(struct tb_bal_vm *vm, struct tb_conn *c, const char *name,
				   json_object *args)
{
	json_object *r = tb_conn_execute(c, name, args, name);

	if (!r)
		snprintf(vm->why_not, sizeof(vm->why_not), "%s refused or unanswered (%s)",
			 name, c->err_class[0] ? c->err_class : "no answer");
	return r;
}

/* poll one VM: status and statistics */
static void tb_bal_poll(struct tb_bal *b, struct tb_bal_vm *vm, uint64_t now)
{
	struct tb_conn c;
	json_object *st = NULL, *gs = NULL, *cmd;
	double rate = vm->pv.rate_pps;

	vm->ready = false;
	if (now < vm->next_try_ms)
		return;
	if (tb_conn_open_t(&c, vm->path, true, b->c->vm_timeout_ms)) {
		snprintf(vm->why_not, sizeof(vm->why_not), "control socket does not answer");
		goto miss;
	}
	st = tb_bal_request(vm, &c, "query-balloon", NULL);
	gs = st ? tb_bal_request(vm, &c, "query-stats", NULL) : NULL;
	tb_conn_close(&c);
	if (!st || !gs)
		goto miss;
	vm->backoff_ms = 0;
	snprintf(vm->pv.name, sizeof(vm->pv.name), "%s", vm->name);
	vm->pv.rate_pps = rate;
	cmd = tb_jobj(st, "command");
	vm->cmd_id = tb_ju64(cmd, "cmd_id");
	vm->timed = tb_jbool(st, "timed");
	snprintf(vm->cmd_state, sizeof(vm->cmd_state), "%s", tb_js(cmd, "state"));
	snprintf(vm->cmd_reason, sizeof(vm->cmd_reason), "%s", tb_js(cmd, "reason"));
	vm->cmd_start_pages = tb_ju64(cmd, "start_pages");
	vm->cmd_elapsed_ms = tb_ju64(cmd, "elapsed_ms");
	{
		/* the host's own view: the guest's resident memory and its trend */
		uint64_t res = tb_ju64(st, "resident_bytes");

		if (vm->resident_at_ms && now > vm->resident_at_ms)
			vm->resident_bps = ((double)res - (double)vm->resident_bytes) * 1000.0 /
					   (double)(now - vm->resident_at_ms);
		vm->resident_bytes = res;
		vm->resident_at_ms = now;
	}
	vm->ready = !tb_bal_sample_vm(&vm->pv, &vm->prev, st, gs, now, vm->why_not,
				      sizeof(vm->why_not));
	if (vm->our_cmd && (vm->cmd_id != vm->our_cmd || strcmp(vm->cmd_state, "running"))) {
		if (vm->cmd_id != vm->our_cmd) {
			snprintf(vm->cmd_state, sizeof(vm->cmd_state), "superseded");
			snprintf(vm->cmd_reason, sizeof(vm->cmd_reason), "by another client");
		}
		tb_bal_cmd_ended(vm);
	}
	json_object_put(st);
	json_object_put(gs);
	return;
miss:
	json_object_put(st);
	json_object_put(gs);
	vm->backoff_ms = vm->backoff_ms ? vm->backoff_ms * 2 : b->c->period_ms;
	if (vm->backoff_ms > TB_BAL_MAX_BACKOFF_MS)
		vm->backoff_ms = TB_BAL_MAX_BACKOFF_MS;
	vm->next_try_ms = now + vm->backoff_ms;
}

/* ------------------------------------------------------------------------
 * Acting and telling
 * ------------------------------------------------------------------------
 */

static const char *tb_action_name(enum tb_pol_action a)
{
	return a == TB_POL_INFLATE ? "inflate" : a == TB_POL_DEFLATE ? "deflate" : "hold";
}

/* issue one timed command; 0 or -1 (the reason in vm->why_not) */
static int tb_bal_issue(struct tb_bal *b, struct tb_bal_vm *vm, bool inflate, uint64_t target,
			uint64_t deadline_ms, uint64_t floor, bool paced)
{
	struct tb_conn c;
	json_object *args, *r;

	if (tb_conn_open_t(&c, vm->path, true, b->c->vm_timeout_ms)) {
		snprintf(vm->why_not, sizeof(vm->why_not), "control socket does not answer");
		return -1;
	}
	args = json_object_new_object();
	json_object_object_add(args, "target-pages", json_object_new_uint64(target / PAGE));
	json_object_object_add(args, "deadline-ms", json_object_new_uint64(deadline_ms));
	json_object_object_add(args, "floor-pages", json_object_new_uint64(floor / PAGE));
	json_object_object_add(args, "paced", json_object_new_boolean(paced));
	/* not urgent: a guest whose driver can yield to its own work does */
	if (paced && inflate && vm->timed)
		json_object_object_add(args, "gentle", json_object_new_boolean(true));
	r = tb_bal_request(vm, &c, inflate ? "inflate" : "deflate", args);
	tb_conn_close(&c);
	if (!r)
		return -1;
	vm->our_cmd = tb_ju64(tb_jobj(r, "command"), "cmd_id");
	vm->our_inflate = inflate;
	vm->our_paced = paced;
	vm->cmd_start_pages = vm->pv.balloon_bytes / PAGE;
	vm->commands++;
	b->commands++;
	vm->pv.busy = true;
	json_object_put(r);
	return 0;
}

static void tb_bal_emit(struct tb_bal *b, json_object *o, const char *text)
{
	if (b->o->json)
		puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	else
		puts(text);
	fflush(stdout);
}

static json_object *tb_bal_inputs(const struct tb_bal *b, const struct tb_bal_vm *vm)
{
	json_object *in = json_object_new_object();
	const struct tb_pol_vm *p = &vm->pv;

	tb_json_add_u64(in, "ram_bytes", p->ram_bytes);
	tb_json_add_u64(in, "balloon_bytes", p->balloon_bytes);
	json_object_object_add(in, "have_stats", json_object_new_boolean(p->have_stats));
	tb_json_add_u64(in, "stats_age_ms", p->stats_age_ms);
	tb_json_add_u64(in, "avail_bytes", p->avail_bytes);
	json_object_object_add(in, "swapin_pps", json_object_new_double(p->swapin_pps));
	json_object_object_add(in, "majflt_ps", json_object_new_double(p->majflt_ps));
	tb_json_add_u64(in, "stalls", p->stalls);
	json_object_object_add(in, "rate_pps", json_object_new_double(p->rate_pps));
	tb_json_add_u64(in, "resident_bytes", vm->resident_bytes);
	json_object_object_add(in, "resident_bytes_per_s", json_object_new_double(vm->resident_bps));
	json_object_object_add(in, "busy", json_object_new_boolean(p->busy));
	json_object_object_add(in, "host_avail_bytes",
			       json_object_new_uint64(b->host.avail_bytes));
	json_object_object_add(in, "host_psi_some_avg10",
			       json_object_new_double(b->host.psi_some_avg10));
	return in;
}

/* one log line for a decision on @vm (commands always; a hold when it changes) */
static void tb_bal_log_decision(struct tb_bal *b, struct tb_bal_vm *vm, bool acted,
				const char *failed)
{
	const struct tb_pol_decision *d = &vm->d;
	json_object *o = json_object_new_object();
	char line[768], size[32], tgt[32], avail[32];
	uint64_t ram = vm->pv.ram_bytes;

	size_t kind = strcspn(d->why, "0123456789");

	/* a hold is logged when its kind of reason changes, not each period */
	if (d->action == TB_POL_HOLD && vm->last_action == TB_POL_HOLD &&
	    strlen(vm->last_why) == kind && !strncmp(vm->last_why, d->why, kind)) {
		json_object_put(o);
		return;
	}
	snprintf(vm->last_why, sizeof(vm->last_why), "%.*s", (int)kind, d->why);
	vm->last_action = d->action;
	b->decisions++;
	tb_format_bytes(size, sizeof(size), (int64_t)(ram - vm->pv.balloon_bytes));
	tb_format_bytes(tgt, sizeof(tgt), (int64_t)(ram - d->target_bytes));
	tb_format_bytes(avail, sizeof(avail), (int64_t)vm->pv.avail_bytes);
	json_object_object_add(o, "vm", json_object_new_string(vm->name));
	json_object_object_add(o, "action", json_object_new_string(tb_action_name(d->action)));
	tb_json_add_u64(o, "target_bytes", d->target_bytes);
	json_object_object_add(o, "guest_target_bytes",
			       json_object_new_uint64(ram - d->target_bytes));
	tb_json_add_u64(o, "deadline_ms", d->deadline_ms);
	tb_json_add_u64(o, "floor_bytes", d->floor_bytes);
	json_object_object_add(o, "paced", json_object_new_boolean(d->paced));
	tb_json_add_u64(o, "want_bytes", d->want_bytes);
	json_object_object_add(o, "suffering", json_object_new_boolean(d->suffering));
	json_object_object_add(o, "why", json_object_new_string(d->why));
	json_object_object_add(o, "dry_run", json_object_new_boolean(b->o->dry_run));
	json_object_object_add(o, "issued", json_object_new_boolean(acted));
	if (failed)
		json_object_object_add(o, "error", json_object_new_string(failed));
	json_object_object_add(o, "inputs", tb_bal_inputs(b, vm));
	if (d->action == TB_POL_HOLD)
		snprintf(line, sizeof(line), "%s: hold at %s: %s [avail %s, stats %llu ms old]",
			 vm->name, size, d->why, avail,
			 (unsigned long long)vm->pv.stats_age_ms);
	else
		snprintf(line, sizeof(line),
			 "%s: %s %s -> %s within %llu ms%s%s: %s [avail %s, swap-in %.0f/s, "
			 "faults %.0f/s, stalls %llu, stats %llu ms old, host avail %llu MiB, "
			 "psi %.1f]%s%s%s", vm->name, tb_action_name(d->action), size, tgt,
			 (unsigned long long)d->deadline_ms, d->paced ? ", paced" : "",
			 b->o->dry_run ? " (dry run)" : "", d->why, avail, vm->pv.swapin_pps,
			 vm->pv.majflt_ps, (unsigned long long)vm->pv.stalls,
			 (unsigned long long)vm->pv.stats_age_ms,
			 (unsigned long long)(b->host.avail_bytes / MIB), b->host.psi_some_avg10,
			 failed ? " (not issued: " : "", failed ? failed : "", failed ? ")" : "");
	tb_bal_emit(b, o, line);
	json_object_put(o);
}

static void tb_bal_log_event(struct tb_bal *b, json_object *o, const char *text)
{
	tb_bal_emit(b, o, text);
	json_object_put(o);
}

/* ------------------------------------------------------------------------
 * Host-wide reclaim
 * ------------------------------------------------------------------------
 */

/* what one VM gave to the running reclaim: its balloon's growth since the plan */
static uint64_t tb_bal_vm_freed(const struct tb_bal_vm *vm)
{
	return vm->rc_in && vm->pv.balloon_bytes > vm->rc_base ?
	       vm->pv.balloon_bytes - vm->rc_base : 0;
}

static uint64_t tb_bal_freed(const struct tb_bal *b)
{
	uint64_t freed = 0;

	for (unsigned int i = 0; i < b->n; i++)
		freed += tb_bal_vm_freed(&b->vms[i]);
	return freed;
}

static json_object *tb_bal_shares(const struct tb_bal *b, bool all)
{
	json_object *a = json_object_new_array();

	for (unsigned int i = 0; i < b->n; i++) {
		const struct tb_bal_vm *vm = &b->vms[i];
		json_object *v;

		if (!vm->rc_in && !all)
			continue;
		v = json_object_new_object();
		json_object_object_add(v, "vm", json_object_new_string(vm->name));
		tb_json_add_u64(v, "asked_bytes", vm->rc_asked);
		tb_json_add_u64(v, "freed_bytes", tb_bal_vm_freed(vm));
		json_object_object_add(v, "state", json_object_new_string(
			vm->rc_in ? vm->cmd_state : "not asked"));
		json_object_object_add(v, "reason", json_object_new_string(
			vm->rc_in ? vm->cmd_reason : vm->ready ? "no slack above its floor "
			"reachable by the deadline" : vm->why_not));
		json_object_array_add(a, v);
	}
	return a;
}

/*
 * Plan @want bytes over the VMs that are ready, not stopped and not running
 * a command; issue the commands. Returns the bytes planned.
 */
static uint64_t tb_bal_reclaim_plan(struct tb_bal *b, uint64_t want, uint64_t left_ms)
{
	struct tb_pol_vm pv[TB_BAL_MAX_VMS] = { 0 };
	struct tb_pol_share sh[TB_BAL_MAX_VMS];
	unsigned int idx[TB_BAL_MAX_VMS], m = 0;
	uint64_t planned;

	for (unsigned int i = 0; i < b->n; i++) {
		struct tb_bal_vm *vm = &b->vms[i];

		/* a running command of the balancer's own is superseded; another
		 * client's, or this reclaim's, is left alone
		 */
		if (!vm->ready || vm->rc_stopped ||
		    (vm->pv.busy && (!vm->our_cmd || vm->rc_in)))
			continue;
		pv[m] = vm->pv;
		pv[m].busy = false;
		idx[m++] = i;
	}
	planned = tb_pol_reclaim_plan(&b->c->pol, pv, m, want, left_ms, sh);
	for (unsigned int k = 0; k < m; k++) {
		struct tb_bal_vm *vm = &b->vms[idx[k]];

		if (!sh[k].bytes)
			continue;
		if (!vm->rc_in) {
			vm->rc_in = true;
			vm->rc_base = vm->pv.balloon_bytes;
		}
		if (b->o->dry_run) {
			vm->rc_asked += sh[k].bytes;
			continue;
		}
		if (tb_bal_issue(b, vm, true, sh[k].target_bytes, left_ms,
				 tb_pol_cmd_floor(&b->c->pol, &vm->pv), false)) {
			tb_warn("balance: reclaim: %s: %s", vm->name, vm->why_not);
			vm->rc_stopped = true;
			planned -= sh[k].bytes;
			continue;
		}
		vm->rc_asked += sh[k].bytes;
		snprintf(vm->cmd_state, sizeof(vm->cmd_state), "running");
		snprintf(vm->cmd_reason, sizeof(vm->cmd_reason), "none");
	}
	return planned;
}

static void tb_bal_client_close(struct tb_bal *b, int i);
static void tb_bal_client_send(struct tb_bal *b, int i, json_object *o);

static void tb_bal_reclaim_end(struct tb_bal *b, const char *state, const char *why,
			       uint64_t now)
{
	struct tb_bal_reclaim *r = &b->rc;
	uint64_t freed = tb_bal_freed(b);
	json_object *o = json_object_new_object();
	char line[512], fb[32], tb[32];

	tb_json_add_u64(o, "reclaim", r->id);
	json_object_object_add(o, "state", json_object_new_string(state));
	json_object_object_add(o, "why", json_object_new_string(why));
	tb_json_add_u64(o, "total_bytes", r->total);
	tb_json_add_u64(o, "freed_bytes", freed);
	json_object_object_add(o, "shortfall_bytes",
			       json_object_new_uint64(freed < r->total ? r->total - freed : 0));
	json_object_object_add(o, "overshoot_bytes",
			       json_object_new_uint64(freed > r->total ? freed - r->total : 0));
	tb_json_add_u64(o, "planned_bytes", r->planned);
	tb_json_add_u64(o, "deadline_ms", r->deadline_ms);
	tb_json_add_u64(o, "elapsed_ms", now - r->started_at);
	tb_json_add_u64(o, "replans", r->replans);
	json_object_object_add(o, "vms", tb_bal_shares(b, false));
	r->active = false;
	r->hold_until = now + b->c->hold_ms;
	json_object_put(r->outcome);
	r->outcome = json_object_get(o);
	if (r->client >= 0) {
		json_object *ev = tb_ctl_event(TB_EVENT_DONE, json_object_get(o));

		json_object_object_add(ev, "event", json_object_new_string("RECLAIM_DONE"));
		tb_bal_client_send(b, r->client, ev);
		json_object_put(ev);
	}
	tb_format_bytes(fb, sizeof(fb), (int64_t)freed);
	tb_format_bytes(tb, sizeof(tb), (int64_t)r->total);
	snprintf(line, sizeof(line), "reclaim %llu: %s: %s of %s freed in %llu ms (%s)",
		 (unsigned long long)r->id, state, fb, tb,
		 (unsigned long long)(now - r->started_at), why);
	json_object_object_add(o, "event", json_object_new_string("reclaim-end"));
	tb_bal_log_event(b, o, line);
	for (unsigned int i = 0; i < b->n; i++) {
		b->vms[i].rc_in = b->vms[i].rc_stopped = false;
		b->vms[i].rc_asked = 0;
	}
}

/* a reclaim's progress, each tick while it runs */
static void tb_bal_reclaim_step(struct tb_bal *b, uint64_t now)
{
	struct tb_bal_reclaim *r = &b->rc;
	uint64_t freed = tb_bal_freed(b), outstanding = 0;
	bool early = false, running = false;
	char why[256] = "";

	for (unsigned int i = 0; i < b->n; i++) {
		struct tb_bal_vm *vm = &b->vms[i];

		if (!vm->rc_in || vm->rc_stopped)
			continue;
		if (vm->pv.busy) {
			running = true;
			if (vm->rc_base + vm->rc_asked > vm->pv.balloon_bytes)
				outstanding += vm->rc_base + vm->rc_asked - vm->pv.balloon_bytes;
		} else if (strcmp(vm->cmd_state, "done")) {
			/* stopped early: never asked again in this reclaim */
			vm->rc_stopped = true;
			early = true;
			snprintf(why + strlen(why), sizeof(why) - strlen(why), "%s%s: %s %s",
				 why[0] ? "; " : "", vm->name, vm->cmd_state, vm->cmd_reason);
		}
	}
	if (freed >= r->total) {
		tb_bal_reclaim_end(b, "done", "the total is free", now);
		return;
	}
	if (now >= r->deadline_at) {
		tb_bal_reclaim_end(b, "deadline", why[0] ? why : "the guests were not fast enough",
				   now);
		return;
	}
	if (early || !running) {
		uint64_t want = r->total - freed > outstanding ? r->total - freed - outstanding : 0;
		uint64_t planned = want && !b->o->dry_run ?
				   tb_bal_reclaim_plan(b, want, r->deadline_at - now) : 0;

		if (planned)
			r->replans++;
		if (!planned && !running)
			tb_bal_reclaim_end(b, "short", why[0] ? why :
					   "every guest gave what it can above its floor", now);
	}
}

/* start a reclaim; the response object, or NULL with @err set */
static json_object *tb_bal_reclaim_start(struct tb_bal *b, int client, uint64_t total,
					 uint64_t deadline_ms, uint64_t now, const char **err)
{
	struct tb_bal_reclaim *r = &b->rc;
	json_object *o;
	char line[256], tb[32], pb[32];

	if (r->active) {
		*err = "a reclaim is already running";
		return NULL;
	}
	if (!total || total % PAGE) {
		*err = "total-bytes must be a positive multiple of 4096";
		return NULL;
	}
	if (!deadline_ms || deadline_ms > 3600000) {
		*err = "deadline-ms must be from 1 ms to 1 h";
		return NULL;
	}
	/* plan from what the VMs have now, not from the last period's view */
	tb_bal_scan(b);
	for (unsigned int i = 0; i < b->n; i++) {
		b->vms[i].next_try_ms = 0;
		tb_bal_poll(b, &b->vms[i], now);
	}
	r->active = true;
	r->id++;
	r->client = client;
	r->total = total;
	r->deadline_ms = deadline_ms;
	r->started_at = now;
	r->deadline_at = now + deadline_ms;
	r->replans = 0;
	b->reclaims++;
	r->planned = tb_bal_reclaim_plan(b, total, deadline_ms);
	o = json_object_new_object();
	tb_json_add_u64(o, "reclaim", r->id);
	tb_json_add_u64(o, "total_bytes", total);
	tb_json_add_u64(o, "deadline_ms", deadline_ms);
	tb_json_add_u64(o, "planned_bytes", r->planned);
	json_object_object_add(o, "expected_shortfall_bytes",
			       json_object_new_uint64(total > r->planned ? total - r->planned : 0));
	json_object_object_add(o, "dry_run", json_object_new_boolean(b->o->dry_run));
	json_object_object_add(o, "vms", tb_bal_shares(b, true));
	tb_format_bytes(tb, sizeof(tb), (int64_t)total);
	tb_format_bytes(pb, sizeof(pb), (int64_t)r->planned);
	snprintf(line, sizeof(line), "reclaim %llu: %s within %llu ms: %s planned%s",
		 (unsigned long long)r->id, tb, (unsigned long long)deadline_ms, pb,
		 b->o->dry_run ? " (dry run)" : "");
	{
		json_object *ev = json_object_get(o);

		json_object_object_add(ev, "event", json_object_new_string("reclaim-start"));
		tb_bal_emit(b, ev, line);
		json_object_object_del(ev, "event");
		json_object_put(ev);
	}
	if (b->o->dry_run) {
		r->active = false;
		r->client = -1;
		for (unsigned int i = 0; i < b->n; i++) {
			b->vms[i].rc_in = false;
			b->vms[i].rc_asked = 0;
		}
	}
	return o;
}

/* ------------------------------------------------------------------------
 * One period
 * ------------------------------------------------------------------------
 */

static void tb_bal_decide(struct tb_bal *b, uint64_t now)
{
	struct tb_pol_vm pv[TB_BAL_MAX_VMS] = { 0 };
	struct tb_pol_decision d[TB_BAL_MAX_VMS];
	unsigned int idx[TB_BAL_MAX_VMS], m = 0;
	bool hold = b->rc.active || now < b->rc.hold_until;

	for (unsigned int i = 0; i < b->n; i++) {
		struct tb_bal_vm *vm = &b->vms[i];

		if (!vm->ready) {
			memset(&vm->d, 0, sizeof(vm->d));
			vm->d.action = TB_POL_HOLD;
			vm->d.target_bytes = vm->pv.balloon_bytes;
			snprintf(vm->d.why, sizeof(vm->d.why), "not managed: %s", vm->why_not);
			tb_bal_log_decision(b, vm, false, NULL);
			continue;
		}
		pv[m] = vm->pv;
		idx[m++] = i;
	}
	if (b->c->mom) {
		tb_pol_mom_decide(&b->c->pol, b->host_total ? (double)b->host.avail_bytes /
				  (double)b->host_total : 1.0, pv, m, d);
		b->need_bytes = 0;
	} else {
		b->need_bytes = tb_pol_decide(&b->c->pol, &b->host, pv, m, d);
	}
	for (unsigned int k = 0; k < m; k++) {
		struct tb_bal_vm *vm = &b->vms[idx[k]];
		const char *failed = NULL;
		bool acted = false;

		vm->d = d[k];
		/*
		 * during a reclaim and its hold, only a suffering guest grows:
		 * the memory was freed for something; shrinking goes on
		 */
		if (hold && vm->d.action == TB_POL_DEFLATE && !vm->d.suffering) {
			vm->d.action = TB_POL_HOLD;
			vm->d.target_bytes = vm->pv.balloon_bytes;
			vm->d.deadline_ms = 0;
			snprintf(vm->d.why, sizeof(vm->d.why), "%s",
				 b->rc.active ? "a host-wide reclaim is running: grows only if it "
				 "suffers" : "after a host-wide reclaim: grows only if it suffers");
		}
		if (vm->d.action != TB_POL_HOLD && !b->o->dry_run) {
			if (tb_bal_issue(b, vm, vm->d.action == TB_POL_INFLATE, vm->d.target_bytes,
					 vm->d.deadline_ms, vm->d.floor_bytes, vm->d.paced))
				failed = vm->why_not;
			else
				acted = true;
		}
		tb_bal_log_decision(b, vm, acted, failed);
	}
}

static void tb_bal_textfile(struct tb_bal *b)
{
	char tmp[PATH_MAX];
	FILE *f;

	if (!b->o->textfile ||
	    snprintf(tmp, sizeof(tmp), "%s.tmp", b->o->textfile) >= (int)sizeof(tmp))
		return;
	f = fopen(tmp, "we");
	if (!f) {
		tb_warn("balance: %s: %s", tmp, strerror(errno));
		return;
	}
	fprintf(f, "# HELP tballoon_balance_host_available_bytes Host MemAvailable.\n"
		"# TYPE tballoon_balance_host_available_bytes gauge\n"
		"tballoon_balance_host_available_bytes %llu\n"
		"# HELP tballoon_balance_host_psi_some_avg10 Host memory pressure, percent.\n"
		"# TYPE tballoon_balance_host_psi_some_avg10 gauge\n"
		"tballoon_balance_host_psi_some_avg10 %.2f\n"
		"# HELP tballoon_balance_host_need_bytes Host memory still needed after the plan.\n"
		"# TYPE tballoon_balance_host_need_bytes gauge\n"
		"tballoon_balance_host_need_bytes %llu\n"
		"# HELP tballoon_balance_vms VMs managed.\n"
		"# TYPE tballoon_balance_vms gauge\ntballoon_balance_vms %u\n"
		"# HELP tballoon_balance_decisions_total Decisions logged.\n"
		"# TYPE tballoon_balance_decisions_total counter\n"
		"tballoon_balance_decisions_total %llu\n"
		"# HELP tballoon_balance_commands_total Timed commands issued.\n"
		"# TYPE tballoon_balance_commands_total counter\n"
		"tballoon_balance_commands_total %llu\n"
		"# HELP tballoon_balance_reclaims_total Host-wide reclaims started.\n"
		"# TYPE tballoon_balance_reclaims_total counter\n"
		"tballoon_balance_reclaims_total %llu\n",
		(unsigned long long)b->host.avail_bytes, b->host.psi_some_avg10,
		(unsigned long long)b->need_bytes, b->n, (unsigned long long)b->decisions,
		(unsigned long long)b->commands, (unsigned long long)b->reclaims);
	static const char *const g[][2] = {
		{ "guest_ram_bytes", "Guest RAM." },
		{ "balloon_bytes", "Balloon size now." },
		{ "target_bytes", "Balloon size the policy wants." },
		{ "available_bytes", "Guest MemAvailable." },
		{ "want_bytes", "Guest size the policy computed." },
		{ "inflate_rate_pages", "Measured inflate rate, pages per second." },
		{ "stats_age_seconds", "Age of the guest statistics." },
		{ "resident_bytes", "Guest memory resident on the host." },
		{ "managed", "1 if the VM answered and can be managed." },
	};
	for (size_t k = 0; k < TB_ARRAY_SIZE(g); k++) {
		fprintf(f, "# HELP tballoon_balance_vm_%s %s\n# TYPE tballoon_balance_vm_%s gauge\n",
			g[k][0], g[k][1], g[k][0]);
		for (unsigned int i = 0; i < b->n; i++) {
			const struct tb_bal_vm *vm = &b->vms[i];
			double v[] = { (double)vm->pv.ram_bytes, (double)vm->pv.balloon_bytes,
				       (double)vm->d.target_bytes, (double)vm->pv.avail_bytes,
				       (double)vm->d.want_bytes, vm->pv.rate_pps,
				       (double)vm->pv.stats_age_ms / 1000.0,
				       (double)vm->resident_bytes, vm->ready ? 1 : 0 };

			fprintf(f, "tballoon_balance_vm_%s{vm=\"%s\"} %.17g\n", g[k][0], vm->name,
				v[k]);
		}
	}
	fprintf(f, "# HELP tballoon_balance_vm_commands_total Commands issued to the VM.\n"
		"# TYPE tballoon_balance_vm_commands_total counter\n");
	for (unsigned int i = 0; i < b->n; i++)
		fprintf(f, "tballoon_balance_vm_commands_total{vm=\"%s\"} %llu\n", b->vms[i].name,
			(unsigned long long)b->vms[i].commands);
	if (fclose(f) || rename(tmp, b->o->textfile))
		tb_warn("balance: %s: %s", b->o->textfile, strerror(errno));
}

static void tb_bal_tick(struct tb_bal *b, bool decide)
{
	uint64_t now = tb_now_ms();

	tb_bal_scan(b);
	for (unsigned int i = 0; i < b->n; i++)
		tb_bal_poll(b, &b->vms[i], now);
	tb_bal_host(b);
	now = tb_now_ms();
	if (b->rc.active)
		tb_bal_reclaim_step(b, now);
	if (decide) {
		tb_bal_decide(b, now);
		tb_bal_textfile(b);
	}
}

/* ------------------------------------------------------------------------
 * The daemon's control socket
 * ------------------------------------------------------------------------
 */

static json_object *tb_bal_status_obj(const struct tb_bal *b)
{
	json_object *o = json_object_new_object(), *a = json_object_new_array();
	json_object *h = json_object_new_object();
	uint64_t now = tb_now_ms();

	tb_json_add_u64(h, "avail_bytes", b->host.avail_bytes);
	json_object_object_add(h, "psi_some_avg10", b->have_psi ?
			       json_object_new_double(b->host.psi_some_avg10) : NULL);
	json_object_object_add(h, "reserve_bytes",
			       json_object_new_uint64(b->c->pol.host_reserve_bytes));
	tb_json_add_u64(h, "need_bytes", b->need_bytes);
	tb_json_add_u64(h, "total_bytes", b->host_total);
	json_object_object_add(h, "budget", json_object_new_boolean(b->c->host_budget != 0));
	json_object_object_add(o, "host", h);
	json_object_object_add(o, "dir", json_object_new_string(b->o->dir));
	tb_json_add_u64(o, "period_ms", b->c->period_ms);
	json_object_object_add(o, "dry_run", json_object_new_boolean(b->o->dry_run));
	json_object_object_add(o, "policy", json_object_new_string(b->c->mom ? "mom" : "tballoon"));
	tb_json_add_u64(o, "decisions", b->decisions);
	tb_json_add_u64(o, "commands", b->commands);
	tb_json_add_u64(o, "holding_ms", b->rc.hold_until > now ? b->rc.hold_until - now : 0);
	for (unsigned int i = 0; i < b->n; i++) {
		const struct tb_bal_vm *vm = &b->vms[i];
		json_object *v = json_object_new_object();
		uint64_t ram = vm->pv.ram_bytes;

		json_object_object_add(v, "vm", json_object_new_string(vm->name));
		json_object_object_add(v, "managed", json_object_new_boolean(vm->ready));
		tb_json_add_u64(v, "ram_bytes", ram);
		json_object_object_add(v, "balloon_bytes",
				       json_object_new_uint64(vm->pv.balloon_bytes));
		tb_json_add_u64(v, "size_bytes",
				ram > vm->pv.balloon_bytes ? ram - vm->pv.balloon_bytes : 0);
		tb_json_add_u64(v, "want_bytes", vm->d.want_bytes);
		json_object_object_add(v, "target_bytes",
				       json_object_new_uint64(vm->d.target_bytes));
		json_object_object_add(v, "action", json_object_new_string(
			tb_action_name(vm->d.action)));
		json_object_object_add(v, "why", json_object_new_string(vm->d.why));
		tb_json_add_u64(v, "avail_bytes", vm->pv.avail_bytes);
		json_object_object_add(v, "stats_age_ms",
				       json_object_new_uint64(vm->pv.stats_age_ms));
		json_object_object_add(v, "rate_pps", json_object_new_double(vm->pv.rate_pps));
		tb_json_add_u64(v, "resident_bytes", vm->resident_bytes);
		json_object_object_add(v, "resident_bytes_per_s",
				       json_object_new_double(vm->resident_bps));
		json_object_object_add(v, "command_state", json_object_new_string(vm->cmd_state));
		json_object_object_add(v, "last_outcome",
				       json_object_new_string(vm->last_outcome));
		tb_json_add_u64(v, "commands", vm->commands);
		json_object_array_add(a, v);
	}
	json_object_object_add(o, "vms", a);
	json_object_object_add(o, "reclaim_running", json_object_new_boolean(b->rc.active));
	json_object_object_add(o, "last_reclaim", json_object_get(b->rc.outcome));
	return o;
}

static void tb_bal_client_close(struct tb_bal *b, int i)
{
	tb_close_fd(&b->cl[i].fd);
	if (b->rc.client == i)
		b->rc.client = -1;
}

static void tb_bal_client_send(struct tb_bal *b, int i, json_object *o)
{
	size_t len;
	const char *s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);

	if (b->cl[i].fd < 0)
		return;
	/* a client that does not read its answers is dropped, never waited for */
	if (send(b->cl[i].fd, s, len, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)len ||
	    send(b->cl[i].fd, "\n", 1, MSG_NOSIGNAL | MSG_DONTWAIT) != 1)
		tb_bal_client_close(b, i);
}

static json_object *tb_bal_handle(struct tb_bal *b, int ci, const char *line, size_t len)
{
	struct tb_bal_client *c = &b->cl[ci];
	json_tokener *tok = json_tokener_new();
	json_object *req = json_tokener_parse_ex(tok, line, (int)len), *id, *args, *ret;
	const char *name, *err = NULL;

	if (!req || json_tokener_get_error(tok) != json_tokener_success ||
	    !json_object_is_type(req, json_type_object)) {
		json_tokener_free(tok);
		json_object_put(req);
		return tb_ctl_error(NULL, "a request is one JSON object per line");
	}
	json_tokener_free(tok);
	id = tb_jobj(req, "id");
	name = tb_js(req, "execute");
	args = tb_jobj(req, "arguments");
	if (!strcmp(name, "qmp_capabilities")) {
		ret = c->negotiated ? tb_ctl_error_class(id, "CommandNotFound",
							 "capabilities already negotiated") : NULL;
		c->negotiated = true;
		if (!ret) {
			ret = json_object_new_object();
			json_object_object_add(ret, "return", json_object_new_object());
		}
	} else if (!c->negotiated) {
		ret = tb_ctl_error_class(id, "CommandNotFound",
					 "expecting capabilities negotiation with 'qmp_capabilities'");
	} else if (!strcmp(name, "query-balance")) {
		ret = json_object_new_object();
		json_object_object_add(ret, "return", tb_bal_status_obj(b));
	} else if (!strcmp(name, "reclaim")) {
		json_object *t = tb_jobj(args, "total-bytes"), *d = tb_jobj(args, "deadline-ms");
		json_object *r = NULL;

		if (!t || !d || !json_object_is_type(t, json_type_int) ||
		    !json_object_is_type(d, json_type_int) || json_object_get_int64(t) <= 0 ||
		    json_object_get_int64(d) <= 0)
			err = "reclaim needs total-bytes and deadline-ms, positive integers";
		else
			r = tb_bal_reclaim_start(b, ci, json_object_get_uint64(t),
						 json_object_get_uint64(d), tb_now_ms(), &err);
		if (r) {
			ret = json_object_new_object();
			json_object_object_add(ret, "return", r);
		} else {
			ret = tb_ctl_error(id, err);
		}
	} else {
		ret = tb_ctl_error_class(id, "CommandNotFound", "unknown command");
	}
	if (id && !tb_jobj(ret, "id"))
		json_object_object_add(ret, "id", json_object_get(id));
	json_object_put(req);
	return ret;
}

static void tb_bal_client_read(struct tb_bal *b, int i)
{
	struct tb_bal_client *c = &b->cl[i];
	ssize_t n = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
	char *nl;

	if (n <= 0) {
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		tb_bal_client_close(b, i);
		return;
	}
	c->len += (size_t)n;
	while (c->fd >= 0 && (nl = memchr(c->buf, '\n', c->len))) {
		size_t ll = (size_t)(nl - c->buf);
		json_object *r = tb_bal_handle(b, i, c->buf, ll);

		tb_bal_client_send(b, i, r);
		json_object_put(r);
		memmove(c->buf, nl + 1, c->len - ll - 1);
		c->len -= ll + 1;
	}
	if (c->fd >= 0 && c->len == sizeof(c->buf)) {
		json_object *r = tb_ctl_error(NULL, "request line too long");

		tb_bal_client_send(b, i, r);
		json_object_put(r);
		tb_bal_client_close(b, i);
	}
}

static void tb_bal_accept(struct tb_bal *b, int lfd)
{
	int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	json_object *g;

	if (fd < 0)
		return;
	for (int i = 0; i < TB_BAL_MAX_CLIENTS; i++) {
		if (b->cl[i].fd >= 0)
			continue;
		b->cl[i] = (struct tb_bal_client){ .fd = fd };
		g = tb_ctl_greeting();
		tb_bal_client_send(b, i, g);
		json_object_put(g);
		return;
	}
	g = tb_ctl_error(NULL, "too many clients");
	{
		const char *s = json_object_to_json_string(g);

		if (send(fd, s, strlen(s), MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
			tb_dbg("balance: refusing a client: %s", strerror(errno));
	}
	json_object_put(g);
	close(fd);
}

int tb_balance_run(const struct tb_bal_opts *o)
{
	struct tb_bal b = { .o = o, .c = &o->conf };
	struct tb_listener l = { .fd = -1, .lock_fd = -1 };
	struct sigaction sa = { .sa_handler = tb_bal_on_signal };
	uint64_t next = 0;
	int rc;

	b.rc.client = -1;
	b.vms = calloc(TB_BAL_MAX_VMS, sizeof(*b.vms));
	if (!b.vms)
		return TB_EXIT_ERROR;
	for (int i = 0; i < TB_BAL_MAX_CLIENTS; i++)
		b.cl[i].fd = -1;
	if (o->listen)
		snprintf(b.listen_path, sizeof(b.listen_path), "%s", o->listen);
	else
		snprintf(b.listen_path, sizeof(b.listen_path), "%s/%s", o->dir, TB_BAL_SOCKET_NAME);
	if (!o->once) {
		rc = tb_listen_unix_opts(b.listen_path, NULL, &l);
		if (rc) {
			fprintf(stderr, "tballoon: balance: %s: %s\n", b.listen_path,
				rc == -EADDRINUSE ? "another balance daemon serves it" :
				strerror(-rc));
			free(b.vms);
			return TB_EXIT_ERROR;
		}
	}
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	tb_info("balance: managing %s/*%s every %llu ms%s; control %s", o->dir, TB_BAL_SUFFIX,
		(unsigned long long)o->conf.period_ms, o->dry_run ? " (dry run)" : "",
		o->once ? "none (--once)" : b.listen_path);
	while (!tb_bal_stop) {
		struct pollfd pfd[1 + TB_BAL_MAX_CLIENTS];
		int idx[1 + TB_BAL_MAX_CLIENTS], np = 0;
		uint64_t now = tb_now_ms(), tick;
		int timeout;

		if (now >= next) {
			tb_bal_tick(&b, true);
			next = now + o->conf.period_ms;
			if (o->once)
				break;
		} else if (b.rc.active) {
			tb_bal_tick(&b, false);
		}
		now = tb_now_ms();
		tick = b.rc.active ? TB_BAL_RECLAIM_TICK_MS : next > now ? next - now : 0;
		timeout = (int)(next > now ? (tick < next - now ? tick : next - now) : 0);
		pfd[np] = (struct pollfd){ .fd = l.fd, .events = POLLIN };
		idx[np++] = -1;
		for (int i = 0; i < TB_BAL_MAX_CLIENTS; i++) {
			if (b.cl[i].fd < 0)
				continue;
			pfd[np] = (struct pollfd){ .fd = b.cl[i].fd, .events = POLLIN };
			idx[np++] = i;
		}
		if (poll(pfd, (nfds_t)np, timeout) <= 0)
			continue;
		for (int k = 0; k < np; k++) {
			if (!pfd[k].revents)
				continue;
			if (idx[k] < 0)
				tb_bal_accept(&b, l.fd);
			else if (b.cl[idx[k]].fd >= 0)
				tb_bal_client_read(&b, idx[k]);
		}
	}
	for (int i = 0; i < TB_BAL_MAX_CLIENTS; i++)
		tb_close_fd(&b.cl[i].fd);
	if (!o->once)
		tb_listener_close(&l, b.listen_path);
	json_object_put(b.rc.outcome);
	free(b.vms);
	return TB_EXIT_OK;
}

/* ------------------------------------------------------------------------
 * Clients
 * ------------------------------------------------------------------------
 */

int tb_balance_status(const char *sock, bool json)
{
	struct tb_conn c;
	json_object *st, *vms, *last;
	char a[32], s[32], t[32];

	if (tb_conn_open(&c, sock))
		return TB_EXIT_ERROR;
	st = tb_conn_execute(&c, "query-balance", NULL, "query-balance");
	tb_conn_close(&c);
	if (!st)
		return TB_EXIT_ERROR;
	if (json) {
		puts(json_object_to_json_string_ext(st, JSON_C_TO_STRING_PLAIN));
		json_object_put(st);
		return TB_EXIT_OK;
	}
	tb_format_bytes(a, sizeof(a), (int64_t)tb_ju64(tb_jobj(st, "host"), "avail_bytes"));
	printf("host: %s available, reserve %llu MiB, still needed %llu MiB%s\n", a,
	       (unsigned long long)(tb_ju64(tb_jobj(st, "host"), "reserve_bytes") / MIB),
	       (unsigned long long)(tb_ju64(tb_jobj(st, "host"), "need_bytes") / MIB),
	       tb_jbool(st, "dry_run") ? " (dry run)" : "");
	printf("%-16s %12s %12s %12s %-8s %s\n", "VM", "size", "available", "target", "action",
	       "why / last outcome");
	vms = tb_jobj(st, "vms");
	for (size_t i = 0; vms && i < json_object_array_length(vms); i++) {
		json_object *v = json_object_array_get_idx(vms, i);
		uint64_t ram = tb_ju64(v, "ram_bytes");

		tb_format_bytes(s, sizeof(s), (int64_t)tb_ju64(v, "size_bytes"));
		tb_format_bytes(a, sizeof(a), (int64_t)tb_ju64(v, "avail_bytes"));
		tb_format_bytes(t, sizeof(t), (int64_t)(ram - tb_ju64(v, "target_bytes")));
		printf("%-16s %12s %12s %12s %-8s %s%s%s\n", tb_js(v, "vm"), s, a,
		       tb_jbool(v, "managed") ? t : "-", tb_js(v, "action"), tb_js(v, "why"),
		       *tb_js(v, "last_outcome") ? "; last: " : "", tb_js(v, "last_outcome"));
	}
	last = tb_jobj(st, "last_reclaim");
	if (last) {
		tb_format_bytes(a, sizeof(a), (int64_t)tb_ju64(last, "freed_bytes"));
		tb_format_bytes(t, sizeof(t), (int64_t)tb_ju64(last, "total_bytes"));
		printf("last reclaim: %s, %s of %s in %llu ms (%s)\n", tb_js(last, "state"), a, t,
		       (unsigned long long)tb_ju64(last, "elapsed_ms"), tb_js(last, "why"));
	}
	json_object_put(st);
	return TB_EXIT_OK;
}

static void tb_print_shares(json_object *o)
{
	json_object *vms = tb_jobj(o, "vms");
	char a[32], f[32];

	for (size_t i = 0; vms && i < json_object_array_length(vms); i++) {
		json_object *v = json_object_array_get_idx(vms, i);

		tb_format_bytes(a, sizeof(a), (int64_t)tb_ju64(v, "asked_bytes"));
		tb_format_bytes(f, sizeof(f), (int64_t)tb_ju64(v, "freed_bytes"));
		printf("  %-16s asked %10s, freed %10s: %s%s%s\n", tb_js(v, "vm"), a, f,
		       tb_js(v, "state"), strcmp(tb_js(v, "reason"), "none") ? ", " : "",
		       strcmp(tb_js(v, "reason"), "none") ? tb_js(v, "reason") : "");
	}
}

int tb_balance_reclaim(const char *sock, uint64_t total_bytes, uint64_t deadline_ms,
		       bool wait, bool json)
{
	struct tb_conn c;
	json_object *args = json_object_new_object(), *r, *ev = NULL;
	uint64_t until;
	char t[32], p[32];
	int rc = TB_EXIT_OK;

	if (tb_conn_open(&c, sock)) {
		json_object_put(args);
		return TB_EXIT_ERROR;
	}
	json_object_object_add(args, "total-bytes", json_object_new_uint64(total_bytes));
	json_object_object_add(args, "deadline-ms", json_object_new_uint64(deadline_ms));
	r = tb_conn_execute(&c, "reclaim", args, "reclaim");
	if (!r) {
		tb_conn_close(&c);
		return TB_EXIT_ERROR;
	}
	if (json) {
		puts(json_object_to_json_string_ext(r, JSON_C_TO_STRING_PLAIN));
	} else {
		tb_format_bytes(t, sizeof(t), (int64_t)total_bytes);
		tb_format_bytes(p, sizeof(p), (int64_t)tb_ju64(r, "planned_bytes"));
		printf("reclaim %llu: %s within %llu ms, %s planned%s\n",
		       (unsigned long long)tb_ju64(r, "reclaim"), t,
		       (unsigned long long)deadline_ms, p,
		       tb_jbool(r, "dry_run") ? " (dry run: nothing issued)" : "");
		tb_print_shares(r);
	}
	fflush(stdout);
	if (!wait || tb_jbool(r, "dry_run")) {
		json_object_put(r);
		tb_conn_close(&c);
		return TB_EXIT_OK;
	}
	json_object_put(r);
	/* the daemon ends a reclaim at its deadline: allow for its period */
	until = tb_now_ms() + deadline_ms + 30000;
	for (;;) {
		int n = tb_conn_read(&c, &ev, until);

		if (n <= 0) {
			fprintf(stderr, "tballoon: reclaim: %s\n", n == -2 ? "interrupted" :
				n == 0 ? "no outcome from the balance daemon" :
				"the balance daemon closed the connection");
			tb_conn_close(&c);
			return n == -2 ? TB_EXIT_INTERRUPTED : TB_EXIT_TIMEOUT;
		}
		if (!strcmp(tb_js(ev, "event"), "RECLAIM_DONE"))
			break;
		json_object_put(ev);
	}
	tb_conn_close(&c);
	r = tb_jobj(ev, "data");
	if (json) {
		puts(json_object_to_json_string_ext(r, JSON_C_TO_STRING_PLAIN));
	} else {
		tb_format_bytes(t, sizeof(t), (int64_t)tb_ju64(r, "total_bytes"));
		tb_format_bytes(p, sizeof(p), (int64_t)tb_ju64(r, "freed_bytes"));
		printf("reclaim %llu: %s: %s of %s freed in %llu ms (%s)\n",
		       (unsigned long long)tb_ju64(r, "reclaim"), tb_js(r, "state"), p, t,
		       (unsigned long long)tb_ju64(r, "elapsed_ms"), tb_js(r, "why"));
		tb_print_shares(r);
	}
	if (!strcmp(tb_js(r, "state"), "deadline"))
		rc = TB_EXIT_DEADLINE;
	else if (strcmp(tb_js(r, "state"), "done"))
		rc = TB_EXIT_PRESSURE;
	json_object_put(ev);
	return rc;
}
