// SPDX-License-Identifier: GPL-2.0
/*
 * test_balance.c - the balance daemon's pure parts: its configuration (keys,
 * values, files with their line numbers), the host's inputs (meminfo, PSI)
 * and what one VM's status and statistics make of it (readiness, the rates
 * of swap-ins, faults and stalls between two samples, counters that go
 * back after a guest reboot).
 */
#include "tb_test.h"

#include <stdio.h>

#include "balance.h"

#define MiB (1ULL << 20)

static void test_conf_keys(void **state)
{
	struct tb_bal_conf c;
	char why[256];
	static const struct {
		const char *key, *value;
		bool ok;
	} cases[] = {
		{ "reserve", "256M", true },
		{ "reserve-pct", "15", true },
		{ "reserve-pct", "15%", true },
		{ "reserve-pct", "101", false },
		{ "reserve-pct", "-1", false },
		{ "reserve-pct", "x", false },
		{ "floor", "1G", true },
		{ "floor", "3000", false },	/* not a multiple of 4 KiB */
		{ "host-reserve", "2G", true },
		{ "stale", "10s", true },
		{ "stale", "ten", false },
		{ "swapin-rate", "128", true },
		{ "swapin-rate", "-3", false },
		{ "swapin-rate", "inf", false },
		{ "deadline-factor", "2.5", true },
		{ "period", "500ms", true },
		{ "reclaim-hold", "0", true },
		{ "vm-timeout", "2s", true },
		{ "host-budget", "3G", true },
		{ "policy", "mom", true },
		{ "policy", "tballoon", true },
		{ "policy", "random", false },
		{ "no-such-key", "1", false },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc;

		tb_bal_conf_default(&c);
		why[0] = 0;
		rc = tb_bal_conf_set(&c, cases[i].key, cases[i].value, why, sizeof(why));
		if ((rc == 0) != cases[i].ok)
			fail_msg("%s = %s: rc %d (%s)", cases[i].key, cases[i].value, rc, why);
		if (!cases[i].ok)
			assert_non_null(strstr(why, cases[i].key));
	}
	tb_bal_conf_default(&c);
	assert_int_equal(tb_bal_conf_set(&c, "floor", "1G", why, sizeof(why)), 0);
	assert_int_equal(c.pol.floor_bytes, 1024 * MiB);
	assert_int_equal(tb_bal_conf_set(&c, "period", "1.5s", why, sizeof(why)), 0);
	assert_int_equal(c.period_ms, 1500);
	assert_int_equal(tb_bal_conf_check(&c, why, sizeof(why)), 0);
	assert_int_equal(tb_bal_conf_set(&c, "period", "10ms", why, sizeof(why)), 0);
	assert_int_equal(tb_bal_conf_check(&c, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "period"));
	tb_bal_conf_default(&c);
	assert_int_equal(tb_bal_conf_set(&c, "step-pct", "0", why, sizeof(why)), 0);
	assert_int_equal(tb_bal_conf_check(&c, why, sizeof(why)), -1);
}

static void test_conf_file(void **state)
{
	char path[] = "/tmp/tb-balance-conf-XXXXXX", why[256];
	struct tb_bal_conf c;
	FILE *f;
	int fd;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	fputs("# the host keeps 2 GiB\nhost-reserve = 2G\n\n  floor-pct=30 # each guest\n"
	      "period = 2s\n", f);
	fclose(f);
	tb_bal_conf_default(&c);
	assert_int_equal(tb_bal_conf_load(&c, path, true, why, sizeof(why)), 0);
	assert_int_equal(c.pol.host_reserve_bytes, 2048 * MiB);
	assert_int_equal(c.pol.floor_pct, 30);
	assert_int_equal(c.period_ms, 2000);

	/* a bad line is named by its number, and nothing after it is taken */
	f = fopen(path, "w");
	fputs("floor-pct = 30\nthis line has no equals sign\nperiod = 5s\n", f);
	fclose(f);
	tb_bal_conf_default(&c);
	assert_int_equal(tb_bal_conf_load(&c, path, true, why, sizeof(why)), -1);
	assert_non_null(strstr(why, ":2:"));
	assert_int_equal(c.period_ms, 1000);
	f = fopen(path, "w");
	fputs("floor-pct = 300\n", f);
	fclose(f);
	assert_int_equal(tb_bal_conf_load(&c, path, true, why, sizeof(why)), -1);
	assert_non_null(strstr(why, ":1: floor-pct"));
	unlink(path);

	/* the default file may be missing; a named one may not */
	tb_bal_conf_default(&c);
	assert_int_equal(tb_bal_conf_load(&c, path, false, why, sizeof(why)), 0);
	assert_int_equal(tb_bal_conf_load(&c, path, true, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "No such file"));
}

static void test_host_inputs(void **state)
{
	uint64_t avail = 0;
	double psi = -1;

	(void)state;
	static const char mi[] = "MemTotal:       24000000 kB\nMemFree: 1 kB\n"
				 "MemAvailable:   20000000 kB\nBuffers: 3 kB\n";

	assert_int_equal(tb_bal_parse_meminfo(mi, "MemAvailable", &avail), 0);
	assert_int_equal(avail, 20000000ULL * 1024);
	assert_int_equal(tb_bal_parse_meminfo(mi, "MemTotal", &avail), 0);
	assert_int_equal(avail, 24000000ULL * 1024);
	assert_int_equal(tb_bal_parse_meminfo(mi, "Mem", &avail), -1);
	assert_int_equal(tb_bal_parse_meminfo("MemTotal: 1 kB\n", "MemAvailable", &avail), -1);
	assert_int_equal(tb_bal_parse_meminfo("XMemAvailable: 5 kB\n", "MemAvailable", &avail),
			 -1);
	assert_int_equal(tb_bal_parse_psi("some avg10=12.50 avg60=3.00 avg300=1.00 total=5\n"
					  "full avg10=1.00 avg60=0.00 avg300=0.00 total=1\n",
					  &psi), 0);
	assert_true(psi > 12.49 && psi < 12.51);
	assert_int_equal(tb_bal_parse_psi("full avg10=1.00\n", &psi), -1);
	assert_int_equal(tb_bal_parse_psi("some avg10=-4 avg60=0\n", &psi), -1);
	assert_int_equal(tb_bal_parse_psi("", &psi), -1);
}

static json_object *status_json(bool connected, bool driver_ok, uint64_t ram, uint64_t actual,
				const char *state)
{
	char buf[512];

	snprintf(buf, sizeof(buf),
		 "{\"connected\":%s,\"driver_ok\":%s,\"guest_ram_bytes\":%llu,"
		 "\"actual_bytes\":%llu,\"command\":{\"state\":\"%s\",\"cmd_id\":3}}",
		 connected ? "true" : "false", driver_ok ? "true" : "false",
		 (unsigned long long)ram, (unsigned long long)actual, state);
	return json_tokener_parse(buf);
}

static json_object *stats_json(uint64_t updates, int64_t age, uint64_t avail, uint64_t swapin,
			       uint64_t majflt, uint64_t stalls)
{
	char buf[512];

	snprintf(buf, sizeof(buf),
		 "{\"stats_vq\":true,\"updates\":%llu,\"age_ms\":%lld,\"guest\":"
		 "{\"available-memory\":%llu,\"swap-in\":%llu,\"major-faults\":%llu,"
		 "\"alloc-stalls\":%llu}}",
		 (unsigned long long)updates, (long long)age, (unsigned long long)avail,
		 (unsigned long long)swapin, (unsigned long long)majflt,
		 (unsigned long long)stalls);
	return json_tokener_parse(buf);
}

static void test_sample(void **state)
{
	struct tb_bal_sample prev = { 0 };
	struct tb_pol_vm vm = { 0 };
	json_object *st, *gs;
	char why[128];

	(void)state;
	/* not manageable: each reason said */
	st = status_json(false, false, 1024 * MiB, 0, "idle");
	gs = stats_json(0, -1, 0, 0, 0, 0);
	assert_int_equal(tb_bal_sample_vm(&vm, &prev, st, gs, 1000, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "no guest"));
	json_object_put(st);
	st = status_json(true, false, 1024 * MiB, 0, "idle");
	assert_int_equal(tb_bal_sample_vm(&vm, &prev, st, gs, 1000, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "driver"));
	json_object_put(st);
	st = status_json(true, true, 0, 0, "idle");
	assert_int_equal(tb_bal_sample_vm(&vm, &prev, st, gs, 1000, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "RAM"));
	json_object_put(st);

	/* ready, no statistics yet: managed but without stats (the policy holds it) */
	st = status_json(true, true, 1024 * MiB, 100 * MiB, "running");
	assert_int_equal(tb_bal_sample_vm(&vm, &prev, st, gs, 1000, why, sizeof(why)), 0);
	assert_false(vm.have_stats);
	assert_true(vm.busy);
	assert_int_equal(vm.balloon_bytes, 100 * MiB);
	json_object_put(gs);
	json_object_put(st);

	/* first statistics: no rate yet */
	st = status_json(true, true, 1024 * MiB, 100 * MiB, "done");
	gs = stats_json(1, 500, 300 * MiB, 4096 * 100, 10, 0);
	assert_int_equal(tb_bal_sample_vm(&vm, &prev, st, gs, 10000, why, sizeof(why)), 0);
	assert_true(vm.have_stats);
	assert_false(vm.busy);
	assert_int_equal(vm.stats_age_ms, 500);
	assert_int_equal(vm.avail_bytes, 300 * MiB);
	assert_true(vm.swapin_pps == 0 && vm.majflt_ps == 0 && vm.stalls == 0);
	json_object_put(gs);

	/* 2 s later: 1000 pages swapped in (sent as bytes), 400 faults, 3 stalls */
	gs = stats_json(2, 0, 250 * MiB, 4096 * 1100, 410, 3);
	assert_int_equal(tb_bal_sample_vm(&vm, &prev, st, gs, 11500, why, sizeof(why)), 0);
	assert_true(vm.swapin_pps > 499.9 && vm.swapin_pps < 500.1);
	assert_true(vm.majflt_ps > 199.9 && vm.majflt_ps < 200.1);
	assert_int_equal(vm.stalls, 3);
	json_object_put(gs);

	/* the same statistics again: the rates measured stay */
	gs = stats_json(2, 1000, 250 * MiB, 4096 * 1100, 410, 3);
	assert_int_equal(tb_bal_sample_vm(&vm, &prev, st, gs, 12500, why, sizeof(why)), 0);
	assert_true(vm.swapin_pps > 499.9 && vm.swapin_pps < 500.1);
	json_object_put(gs);

	/* the guest rebooted: counters went back, no negative or huge rate */
	gs = stats_json(1, 0, 900 * MiB, 0, 0, 0);
	assert_int_equal(tb_bal_sample_vm(&vm, &prev, st, gs, 14500, why, sizeof(why)), 0);
	assert_true(vm.swapin_pps == 0 && vm.majflt_ps == 0 && vm.stalls == 0);
	json_object_put(gs);
	json_object_put(st);

	/* a balloon bigger than RAM (a confused peer) is clamped */
	st = status_json(true, true, 1024 * MiB, 4096 * MiB, "idle");
	gs = stats_json(3, 0, 900 * MiB, 0, 0, 0);
	assert_int_equal(tb_bal_sample_vm(&vm, &prev, st, gs, 15000, why, sizeof(why)), 0);
	assert_int_equal(vm.balloon_bytes, 1024 * MiB);
	json_object_put(gs);
	json_object_put(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		TB_TEST("balance", test_conf_keys),
		TB_TEST("balance", test_conf_file),
		TB_TEST("balance", test_host_inputs),
		TB_TEST("balance", test_sample),
	};

	return tb_test_run("balance", tests);
}
