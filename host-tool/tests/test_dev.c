// SPDX-License-Identifier: GPL-2.0
/*
 * test_dev.c - the device model: SET_CONFIG filtering, command issue and
 * validation, driver reports, the standard-balloon path, queue processing.
 */
#include "tb_test.h"
#include "dev.h"

#define MiB (1ULL << 20)
#define RAM (64 * MiB)
#define RAM_PAGES (RAM / 4096)
#define OFF(f) offsetof(struct virtio_tballoon_config, f)

struct fx {
	struct tb_mem mem;
	struct tb_dev dev;
	unsigned int notifies;
	unsigned int events[TB_EVENT_COUNT];
	struct tb_cmd last;	/* command of the last event */
	unsigned int punches;
	uint64_t punched;
	int notify_rc;		/* what the backend channel answers */
};

static int f_notify(void *o)
{
	struct fx *f = o;

	f->notifies++;
	return f->notify_rc;
}

static void f_event(void *o, enum tb_event ev, const struct tb_cmd *c)
{
	struct fx *f = o;

	f->events[ev]++;
	f->last = *c;
}

static int f_punch(void *o, int fd, uint64_t off, uint64_t len)
{
	struct fx *f = o;

	(void)fd;
	(void)off;
	f->punches++;
	f->punched += len;
	return 0;
}

static const struct tb_dev_ops f_ops = { .notify_config = f_notify, .event = f_event };

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	tb_mem_init(&f->mem);
	if (tb_mem_add(&f->mem, 0, RAM, 0x7f0000000000ULL, 0, tb_test_memfd(RAM)))
		return -1;
	tb_dev_init(&f->dev, &f->mem, &f_ops, f);
	f->dev.punch = f_punch;
	f->dev.punch_opaque = f;
	tb_dev_session(&f->dev, true, 1000);
	tb_dev_set_features(&f->dev, TB_BIT(32) | TB_DEV_FEATURES);
	f->dev.driver_ok = true;
	f->dev.notify_ok = true;
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	tb_mem_clear(&f->mem);
	free(f);
	return 0;
}

/* a guest config write as QEMU forwards it: the whole 64 bytes */
static void guest_write(struct fx *f, size_t off, uint32_t v, uint64_t now)
{
	uint8_t buf[64];

	tb_dev_get_config(&f->dev, buf, 0, 64);
	tb_put_le32(buf + off, v);
	assert_int_equal(tb_dev_set_config(&f->dev, buf, 0, 64, now), 0);
}

/* a full driver report, in the documented order, report_seq last */
static void report(struct fx *f, uint32_t ack, uint32_t state, uint32_t reason,
		   uint32_t actual, uint32_t elapsed, uint32_t start, uint64_t now)
{
	guest_write(f, OFF(actual), actual, now);
	guest_write(f, OFF(elapsed_ms), elapsed, now);
	guest_write(f, OFF(start_pages), start, now);
	guest_write(f, OFF(reason), reason, now);
	guest_write(f, OFF(state), state, now);
	guest_write(f, OFF(ack_cmd_id), ack, now);
	guest_write(f, OFF(report_seq), TB_CFG(&f->dev, report_seq) + 1, now);
}

static uint32_t issue(struct fx *f, uint32_t op, uint32_t target, uint32_t deadline,
		      uint32_t floor, uint32_t flags, uint64_t now)
{
	char err[128] = "";

	return tb_dev_issue(&f->dev, op, target, deadline, floor, flags, now, err,
			    sizeof(err));
}

static void test_set_config_filter(void **state)
{
	struct fx *f = *state;
	uint8_t buf[64], cfg[64];

	assert_int_not_equal(issue(f, TBALLOON_OP_INFLATE, 100, 1000, 5, 0, 2000), 0);
	tb_dev_get_config(&f->dev, cfg, 0, 64);

	/* a hostile whole-config write: every byte 0xee */
	memset(buf, 0xee, sizeof(buf));
	assert_int_equal(tb_dev_set_config(&f->dev, buf, 0, 64, 2000), 0);
	/* device-written fields untouched */
	assert_memory_equal(f->dev.config + OFF(num_pages), cfg + OFF(num_pages), 4);
	assert_memory_equal(f->dev.config + 8, cfg + 8, 4);	/* free_page_hint_cmd_id */
	assert_memory_equal(f->dev.config + 16, cfg + 16, 40 - 16);
	/* driver-written fields taken */
	assert_int_equal(TB_CFG(&f->dev, actual), 0xeeeeeeee);
	assert_int_equal(TB_CFG(&f->dev, poison_val), 0xeeeeeeee);
	assert_int_equal(TB_CFG(&f->dev, report_seq), 0xeeeeeeee);
	assert_int_equal(TB_CFG(&f->dev, ack_cmd_id), 0xeeeeeeee);

	/* partial writes straddling field boundaries */
	memset(buf, 0x11, sizeof(buf));
	assert_int_equal(tb_dev_set_config(&f->dev, buf, 2, 4, 2000), 0);	/* num_pages hi + actual lo */
	assert_int_equal(TB_CFG(&f->dev, num_pages), 100);
	assert_int_equal(TB_CFG(&f->dev, actual), 0xeeee1111);
	assert_int_equal(tb_dev_set_config(&f->dev, buf, 38, 4, 2000), 0);	/* floor hi + ack lo */
	assert_int_equal(TB_CFG(&f->dev, floor_pages), 5);
	assert_int_equal(TB_CFG(&f->dev, ack_cmd_id), 0xeeee1111);
	assert_int_equal(tb_dev_set_config(&f->dev, buf, 16, 24, 2000), 0);	/* only device fields */
	assert_memory_equal(f->dev.config + 16, cfg + 16, 24);
	assert_int_equal(tb_dev_set_config(&f->dev, buf, 63, 1, 2000), 0);
	assert_int_equal(f->dev.config[63], 0x11);
	assert_int_equal(tb_dev_set_config(&f->dev, buf, 0, 0, 2000), 0);

	/* out of bounds */
	assert_int_equal(tb_dev_set_config(&f->dev, buf, 60, 8, 2000), -EINVAL);
	assert_int_equal(tb_dev_set_config(&f->dev, buf, 64, 1, 2000), -EINVAL);
	assert_int_equal(tb_dev_set_config(&f->dev, buf, UINT32_MAX, 2, 2000), -EINVAL);
}

static void test_issue_writes_config(void **state)
{
	struct fx *f = *state;
	uint32_t id;

	id = issue(f, TBALLOON_OP_INFLATE, 1000, 2000, 300, TBALLOON_FLAG_PACED, 5000);
	assert_int_equal(id, 1);
	assert_int_equal(TB_CFG(&f->dev, cmd_id), 1);
	assert_int_equal(TB_CFG(&f->dev, op), TBALLOON_OP_INFLATE);
	assert_int_equal(TB_CFG(&f->dev, flags), TBALLOON_FLAG_PACED);
	assert_int_equal(TB_CFG(&f->dev, deadline_ms), 2000);
	assert_int_equal(TB_CFG(&f->dev, target_pages), 1000);
	assert_int_equal(TB_CFG(&f->dev, floor_pages), 300);
	assert_int_equal(TB_CFG(&f->dev, num_pages), 1000);
	assert_int_equal(f->notifies, 1);
	assert_true(tb_cmd_running(&f->dev.cmd));
	assert_true(f->dev.cmd.timed);
	assert_int_equal(f->dev.cmd.issued_ms, 5000);
	/* little-endian on the wire */
	assert_int_equal(f->dev.config[OFF(target_pages)], 1000 & 0xff);
	assert_int_equal(f->dev.config[OFF(target_pages) + 1], 1000 >> 8);
}

static void test_issue_validation(void **state)
{
	struct fx *f = *state;
	char err[128];

	assert_int_equal(issue(f, TBALLOON_OP_INFLATE, 10, 0, 0, 0, 1), 0);
	assert_int_equal(issue(f, TBALLOON_OP_INFLATE, 10, TBALLOON_DEADLINE_MAX_MS + 1, 0, 0, 1), 0);
	assert_int_equal(issue(f, TBALLOON_OP_INFLATE, RAM_PAGES + 1, 1000, 0, 0, 1), 0);
	assert_int_equal(issue(f, TBALLOON_OP_INFLATE, 10, 1000, RAM_PAGES + 1, 0, 1), 0);
	assert_int_equal(issue(f, TBALLOON_OP_INFLATE, 10, 1000, 0, 0x80, 1), 0);
	assert_int_equal(issue(f, TBALLOON_OP_NONE, 10, 1000, 0, 0, 1), 0);
	assert_int_equal(issue(f, 77, 10, 1000, 0, 0, 1), 0);
	assert_int_equal(issue(f, TBALLOON_OP_ABORT, 0, 0, 0, 0, 1), 0);	/* nothing runs */
	/* direction, checked while idle against actual */
	guest_write(f, OFF(actual), 500, 1);
	assert_int_equal(issue(f, TBALLOON_OP_INFLATE, 499, 1000, 0, 0, 1), 0);
	assert_int_equal(issue(f, TBALLOON_OP_DEFLATE, 501, 1000, 0, 0, 1), 0);
	assert_int_equal(f->notifies, 0);
	assert_int_equal(f->dev.cmd.cmd_id, 0);
	assert_int_equal(TB_CFG(&f->dev, cmd_id), 0);
	/* the whole guest and a deadline of exactly the maximum are fine */
	assert_int_not_equal(issue(f, TBALLOON_OP_INFLATE, RAM_PAGES, TBALLOON_DEADLINE_MAX_MS,
				   RAM_PAGES, 0, 1), 0);

	f->dev.notify_ok = false;
	assert_int_equal(tb_dev_issue(&f->dev, TBALLOON_OP_DEFLATE, 0, 10, 0, 0, 1, err,
				      sizeof(err)), 0);
	assert_non_null(strstr(err, "backend channel"));
	f->dev.driver_ok = false;
	assert_int_equal(tb_dev_issue(&f->dev, TBALLOON_OP_DEFLATE, 0, 10, 0, 0, 1, err,
				      sizeof(err)), 0);
	assert_non_null(strstr(err, "not ready"));
	tb_dev_session(&f->dev, false, 2);
	assert_int_equal(tb_dev_issue(&f->dev, TBALLOON_OP_DEFLATE, 0, 10, 0, 0, 1, err,
				      sizeof(err)), 0);
	assert_non_null(strstr(err, "connected"));
}

static void test_reports(void **state)
{
	struct fx *f = *state;
	uint32_t id = issue(f, TBALLOON_OP_INFLATE, 1000, 2000, 0, 0, 1000);

	/* acceptance */
	report(f, id, TBALLOON_STATE_RUNNING, 0, 0, 0, 0, 1010);
	assert_int_equal(f->events[TB_EVENT_PROGRESS], 1);
	assert_int_equal(f->dev.cmd.reports, 1);
	/* field writes without a report_seq change are not reports */
	guest_write(f, OFF(actual), 400, 1020);
	guest_write(f, OFF(state), TBALLOON_STATE_DONE, 1020);
	assert_int_equal(f->events[TB_EVENT_PROGRESS], 1);
	assert_int_equal(f->events[TB_EVENT_DONE], 0);
	report(f, id, TBALLOON_STATE_RUNNING, 0, 500, 50, 0, 1060);
	assert_int_equal(f->events[TB_EVENT_PROGRESS], 2);
	assert_int_equal(f->last.elapsed_ms, 50);
	/* a report about another command is ignored */
	report(f, id + 5, TBALLOON_STATE_DONE, 0, 500, 50, 0, 1070);
	assert_int_equal(f->events[TB_EVENT_DONE], 0);
	/* invalid values are counted and ignored */
	report(f, id, TBALLOON_STATE_COUNT, 0, 500, 50, 0, 1070);
	report(f, id, TBALLOON_STATE_DONE, 999, 500, 50, 0, 1070);
	assert_int_equal(f->dev.stats.bad_reports, 2);
	assert_true(tb_cmd_running(&f->dev.cmd));
	/* final */
	report(f, id, TBALLOON_STATE_DONE, TBALLOON_REASON_NONE, 1000, 120, 0, 1130);
	assert_int_equal(f->events[TB_EVENT_DONE], 1);
	assert_false(tb_cmd_running(&f->dev.cmd));
	assert_int_equal(f->last.state, TBALLOON_STATE_DONE);
	assert_int_equal(f->last.elapsed_ms, 120);
	assert_int_equal(f->last.ended_ms, 1130);
	assert_int_equal(f->last.reports, 3);
	/* late reports change nothing */
	report(f, id, TBALLOON_STATE_ABORTED, TBALLOON_REASON_HOST_ABORT, 1000, 130, 0, 1140);
	assert_int_equal(f->events[TB_EVENT_DONE], 1);
	assert_int_equal(f->dev.cmd.state, TBALLOON_STATE_DONE);
}

static void test_rejected_report(void **state)
{
	struct fx *f = *state;
	uint32_t id = issue(f, TBALLOON_OP_INFLATE, 1000, 2000, 0, 0, 1000);

	report(f, id, TBALLOON_STATE_REJECTED, TBALLOON_REASON_BAD_TARGET, 0, 0, 0, 1010);
	assert_int_equal(f->events[TB_EVENT_DONE], 1);
	assert_int_equal(f->last.state, TBALLOON_STATE_REJECTED);
	assert_int_equal(f->last.reason, TBALLOON_REASON_BAD_TARGET);
	assert_string_equal(tb_reason_name(f->last.reason), "bad-target");
	assert_string_equal(tb_state_name(f->last.state), "rejected");
}

static void test_supersede_and_abort(void **state)
{
	struct fx *f = *state;
	uint32_t a, b, c;

	a = issue(f, TBALLOON_OP_INFLATE, 1000, 2000, 0, 0, 1000);
	b = issue(f, TBALLOON_OP_INFLATE, 2000, 2000, 0, 0, 1100);
	assert_int_equal(b, a + 1);
	assert_int_equal(f->events[TB_EVENT_DONE], 1);
	assert_int_equal(f->last.cmd_id, a);
	assert_int_equal(f->last.state, TBALLOON_STATE_ABORTED);
	assert_int_equal(f->last.reason, TBALLOON_REASON_SUPERSEDED);
	assert_int_equal(TB_CFG(&f->dev, cmd_id), b);

	c = issue(f, TBALLOON_OP_ABORT, 0, 0, 0, 0, 1200);
	assert_int_equal(c, b + 1);
	assert_int_equal(f->events[TB_EVENT_DONE], 2);
	assert_int_equal(f->last.cmd_id, b);
	assert_int_equal(f->last.reason, TBALLOON_REASON_HOST_ABORT);
	assert_int_equal(TB_CFG(&f->dev, op), TBALLOON_OP_ABORT);
	/* abort leaves num_pages alone */
	assert_int_equal(TB_CFG(&f->dev, num_pages), 2000);
	/* the driver's report on the abort command ends it */
	report(f, c, TBALLOON_STATE_ABORTED, TBALLOON_REASON_HOST_ABORT, 10, 5, 0, 1210);
	assert_int_equal(f->events[TB_EVENT_DONE], 3);
	assert_int_equal(f->last.op, TBALLOON_OP_ABORT);
}

/* a driver that cannot be told never sees the command, and nothing ends */
static void test_notify_failure_not_issued(void **state)
{
	struct fx *f = *state;
	uint8_t before[VIRTIO_TBALLOON_CONFIG_SIZE];
	char err[128] = "";
	uint32_t a;

	a = issue(f, TBALLOON_OP_INFLATE, 1000, 2000, 0, 0, 1000);
	assert_int_not_equal(a, 0);
	memcpy(before, f->dev.config, sizeof(before));
	f->notify_rc = -EAGAIN;
	assert_int_equal(tb_dev_issue(&f->dev, TBALLOON_OP_INFLATE, 2000, 2000, 0, 0, 1100,
				      err, sizeof(err)), 0);
	assert_non_null(strstr(err, "not issued"));
	assert_memory_equal(f->dev.config, before, sizeof(before));
	assert_int_equal(f->dev.cmd.cmd_id, a);
	assert_int_equal(f->dev.cmd.state, TBALLOON_STATE_RUNNING);
	assert_int_equal(f->events[TB_EVENT_DONE], 0);
	/* the channel drains: the next command gets the next id */
	f->notify_rc = 0;
	assert_int_equal(issue(f, TBALLOON_OP_INFLATE, 2000, 2000, 0, 0, 1200), a + 1);
	assert_int_equal(f->last.reason, TBALLOON_REASON_SUPERSEDED);
}

static void test_disconnect_ends_command(void **state)
{
	struct fx *f = *state;
	uint32_t id = issue(f, TBALLOON_OP_INFLATE, 1000, 2000, 0, 0, 1000);

	guest_write(f, OFF(actual), 10, 1001);
	tb_dev_session(&f->dev, false, 1500);
	assert_int_equal(f->events[TB_EVENT_DONE], 1);
	assert_int_equal(f->last.state, TBALLOON_STATE_ABORTED);
	assert_int_equal(f->last.reason, TBALLOON_REASON_REMOVED);
	/* a device reset: the whole config is cleared, cmd_id 0 = no command */
	for (int i = 0; i < 64; i++)
		assert_int_equal(f->dev.config[i], 0);
	assert_int_equal(TB_CFG(&f->dev, num_pages), 0);
	assert_int_equal(TB_CFG(&f->dev, actual), 0);
	assert_false(f->dev.connected);
	/* the next session continues the id sequence */
	tb_dev_session(&f->dev, true, 1600);
	tb_dev_set_features(&f->dev, TB_BIT(32) | TB_DEV_FEATURES);
	f->dev.driver_ok = true;
	f->dev.notify_ok = true;
	assert_int_equal(issue(f, TBALLOON_OP_INFLATE, 5, 100, 0, 0, 1700), id + 1);
}

/* upstream driver: no TIMED, the command is num_pages */
static void test_standard_balloon(void **state)
{
	struct fx *f = *state;
	uint32_t id;

	tb_dev_set_features(&f->dev, TB_BIT(32) | TB_BIT(TB_BALLOON_F_MUST_TELL_HOST));
	assert_false(tb_dev_timed(&f->dev));
	/* a floor needs statistics, and this driver sends none */
	assert_int_equal(issue(f, TBALLOON_OP_INFLATE, 100, 1000, 5, 0, 1), 0);

	id = issue(f, TBALLOON_OP_INFLATE, 100, 1000, 0, 0, 1000);
	assert_int_not_equal(id, 0);
	assert_int_equal(TB_CFG(&f->dev, num_pages), 100);
	assert_int_equal(TB_CFG(&f->dev, cmd_id), 0);	/* timed block untouched */
	assert_int_equal(f->notifies, 1);
	guest_write(f, OFF(actual), 40, 1100);
	assert_int_equal(f->events[TB_EVENT_PROGRESS], 1);
	guest_write(f, OFF(actual), 100, 1200);
	assert_int_equal(f->events[TB_EVENT_DONE], 1);
	assert_int_equal(f->last.state, TBALLOON_STATE_DONE);
	assert_int_equal(f->last.elapsed_ms, 200);

	/* host-side deadline: stops the balloon where it is */
	id = issue(f, TBALLOON_OP_DEFLATE, 0, 500, 0, 0, 2000);
	guest_write(f, OFF(actual), 60, 2100);
	assert_int_equal(tb_dev_tick(&f->dev, 2100), 400);
	assert_int_equal(tb_dev_tick(&f->dev, 2500), -1);
	assert_int_equal(f->events[TB_EVENT_DONE], 2);
	assert_int_equal(f->last.state, TBALLOON_STATE_DEADLINE);
	assert_int_equal(TB_CFG(&f->dev, num_pages), 60);

	/* already at the target: done at once */
	id = issue(f, TBALLOON_OP_INFLATE, 60, 500, 0, 0, 3000);
	assert_int_not_equal(id, 0);
	assert_int_equal(f->events[TB_EVENT_DONE], 3);
	assert_int_equal(f->last.cmd_id, id);

	/* abort: num_pages = actual */
	id = issue(f, TBALLOON_OP_INFLATE, 200, 5000, 0, 0, 4000);
	guest_write(f, OFF(actual), 70, 4100);
	assert_int_not_equal(issue(f, TBALLOON_OP_ABORT, 0, 0, 0, 0, 4200), 0);
	assert_int_equal(TB_CFG(&f->dev, num_pages), 70);
	assert_false(tb_cmd_running(&f->dev.cmd));
}

/* a standard driver with statistics (Linux's virtio_balloon, a peer) */
static void std_with_stats(struct fx *f, uint64_t avail_pages, uint64_t now)
{
	uint64_t val[TB_GSTAT_COUNT] = { 0 };
	uint32_t have = (1U << TB_GSTAT_AVAIL) | (1U << TB_GSTAT_SWAP_IN) |
			(1U << TB_GSTAT_MAJFLT);

	tb_dev_set_features(&f->dev, TB_BIT(32) | TB_BIT(TB_BALLOON_F_STATS_VQ));
	val[TB_GSTAT_AVAIL] = avail_pages * 4096;
	tb_dev_peer_stats(&f->dev, have, val, TB_CFG(&f->dev, actual), now);
}

static void stats_at(struct fx *f, uint64_t avail_pages, uint64_t swap_in,
		     uint64_t majflt, uint32_t at, uint64_t now)
{
	uint64_t val[TB_GSTAT_COUNT] = { 0 };
	uint32_t have = (1U << TB_GSTAT_AVAIL) | (1U << TB_GSTAT_SWAP_IN) |
			(1U << TB_GSTAT_MAJFLT) | (1U << TB_GSTAT_ALLOC_STALL);

	val[TB_GSTAT_AVAIL] = avail_pages * 4096;
	val[TB_GSTAT_SWAP_IN] = swap_in;
	val[TB_GSTAT_MAJFLT] = majflt;
	val[TB_GSTAT_ALLOC_STALL] = UINT64_MAX;	/* a 6.1 guest: absent */
	tb_dev_peer_stats(&f->dev, have, val, at, now);
}

/* host floor: estimated from the last statistics and the pages moved since */
static void test_host_floor(void **state)
{
	struct fx *f = *state;

	std_with_stats(f, 10000, 900);
	/* no statistics with available memory yet: a floor is refused */
	f->dev.gstats.have = 0;
	assert_int_equal(issue(f, TBALLOON_OP_INFLATE, 9000, 10000, 2000, 0, 950), 0);
	std_with_stats(f, 10000, 990);
	assert_int_not_equal(issue(f, TBALLOON_OP_INFLATE, 9000, 10000, 2000, 0, 1000), 0);
	assert_int_equal(TB_CFG(&f->dev, num_pages), 9000);
	/* 4000 pages in 1 s: 10000 - 4000 = 6000 left, lead 400: go on */
	guest_write(f, OFF(actual), 4000, 2000);
	assert_true(tb_cmd_running(&f->dev.cmd));
	/* a sample taken after the balloon was at 4000 says 5000 available */
	stats_at(f, 5000, 0, 0, 4000, 2100);
	assert_true(tb_cmd_running(&f->dev.cmd));
	/* 7000 pages in 2.5 s: 5000 - 3000 = 2000 <= floor + lead: stop here */
	guest_write(f, OFF(actual), 7000, 3500);
	assert_false(tb_cmd_running(&f->dev.cmd));
	assert_int_equal(f->last.state, TBALLOON_STATE_PRESSURE);
	assert_int_equal(f->last.reason, TBALLOON_REASON_FLOOR);
	assert_int_equal(TB_CFG(&f->dev, num_pages), 7000);
	/* the floor does not stop a deflate */
	assert_int_not_equal(issue(f, TBALLOON_OP_DEFLATE, 0, 10000, 9000, 0, 4000), 0);
	guest_write(f, OFF(actual), 3000, 4100);
	assert_true(tb_cmd_running(&f->dev.cmd));
}

/* host pressure: swap-in, or a burst of major faults, since the command began */
static void test_host_pressure(void **state)
{
	struct fx *f = *state;

	std_with_stats(f, 10000, 900);
	stats_at(f, 10000, 7, 100, 0, 950);
	assert_int_not_equal(issue(f, TBALLOON_OP_INFLATE, 9000, 10000, 0, 0, 1000), 0);
	guest_write(f, OFF(actual), 1000, 1200);
	/* the same counters, an absent 6.12 counter: no pressure */
	stats_at(f, 9000, 7, 100 + TB_HOST_MAJFLT_PRESSURE, 1000, 1300);
	assert_true(tb_cmd_running(&f->dev.cmd));
	stats_at(f, 8500, 8, 100, 1000, 1400);
	assert_false(tb_cmd_running(&f->dev.cmd));
	assert_int_equal(f->last.state, TBALLOON_STATE_PRESSURE);
	assert_int_equal(f->last.reason, TBALLOON_REASON_RECLAIM);
	assert_int_equal(TB_CFG(&f->dev, num_pages), 1000);
	/* major faults beyond the bound */
	assert_int_not_equal(issue(f, TBALLOON_OP_INFLATE, 9000, 10000, 0, 0, 2000), 0);
	guest_write(f, OFF(actual), 1500, 2100);
	stats_at(f, 8000, 8, 101 + TB_HOST_MAJFLT_PRESSURE, 1500, 2200);
	assert_int_equal(f->last.state, TBALLOON_STATE_PRESSURE);
}

/* a balloon that never moves: guest-unresponsive after the grace */
static void test_host_unresponsive(void **state)
{
	struct fx *f = *state;

	tb_dev_set_features(&f->dev, TB_BIT(32));
	f->dev.grace_ms = 500;
	assert_int_not_equal(issue(f, TBALLOON_OP_INFLATE, 100, 5000, 0, 0, 1000), 0);
	assert_int_equal(tb_dev_tick(&f->dev, 1100), 400);
	assert_int_equal(tb_dev_tick(&f->dev, 1500), -1);
	assert_int_equal(f->last.state, TB_STATE_UNRESPONSIVE);
	assert_int_equal(f->dev.stats.unresponsive, 1);
	assert_int_equal(TB_CFG(&f->dev, num_pages), 0);	/* stopped where it is */
	/* one that moved is only late: the deadline decides */
	assert_int_not_equal(issue(f, TBALLOON_OP_INFLATE, 100, 5000, 0, 0, 2000), 0);
	guest_write(f, OFF(actual), 10, 2100);
	assert_int_equal(tb_dev_tick(&f->dev, 2600), 4400);
	assert_int_equal(tb_dev_tick(&f->dev, 7000), -1);
	assert_int_equal(f->last.state, TBALLOON_STATE_DEADLINE);
	/* a deadline shorter than the grace ends at the deadline */
	assert_int_not_equal(issue(f, TBALLOON_OP_INFLATE, 100, 300, 0, 0, 8000), 0);
	assert_int_equal(tb_dev_tick(&f->dev, 8300), -1);
	assert_int_equal(f->last.state, TBALLOON_STATE_DEADLINE);
}

/* host pacing: the target moves in steps over 80% of the deadline */
static void test_host_paced(void **state)
{
	struct fx *f = *state;

	tb_dev_set_features(&f->dev, TB_BIT(32));
	assert_int_not_equal(issue(f, TBALLOON_OP_INFLATE, 800, 1000, 0,
				   TBALLOON_FLAG_PACED, 1000), 0);
	/* first step: 100 ms of 800 ms */
	assert_int_equal(TB_CFG(&f->dev, num_pages), 100);
	assert_int_equal(f->notifies, 1);
	guest_write(f, OFF(actual), 100, 1050);
	assert_true(tb_cmd_running(&f->dev.cmd));	/* a step is not the target */
	/* each tick sets the target of 100 ms later, and is due at the next 100 */
	assert_int_equal(tb_dev_tick(&f->dev, 1050), 50);
	assert_int_equal(TB_CFG(&f->dev, num_pages), 150);
	tb_dev_tick(&f->dev, 1100);
	assert_int_equal(TB_CFG(&f->dev, num_pages), 200);
	assert_int_equal(f->notifies, 3);
	tb_dev_tick(&f->dev, 1120);
	assert_int_equal(f->notifies, 4);	/* 220: moved, told */
	tb_dev_tick(&f->dev, 1650);
	assert_int_equal(TB_CFG(&f->dev, num_pages), 750);
	tb_dev_tick(&f->dev, 1700);
	assert_int_equal(TB_CFG(&f->dev, num_pages), 800);
	guest_write(f, OFF(actual), 800, 1750);
	assert_int_equal(f->last.state, TBALLOON_STATE_DONE);
	/* a paced deflate steps down */
	assert_int_not_equal(issue(f, TBALLOON_OP_DEFLATE, 0, 1000, 0,
				   TBALLOON_FLAG_PACED, 2000), 0);
	assert_int_equal(TB_CFG(&f->dev, num_pages), 700);
}

/* a peer reports the balloon and its link */
static void test_peer_link(void **state)
{
	struct fx *f = *state;

	tb_dev_peer_link(&f->dev, false, 1000);
	assert_false(f->dev.connected);
	tb_dev_peer_link(&f->dev, true, 1100);
	assert_true(f->dev.connected && f->dev.driver_ok && f->dev.notify_ok);
	assert_false(tb_dev_timed(&f->dev));
	tb_dev_peer_actual(&f->dev, 300, 1200);
	assert_int_equal(TB_CFG(&f->dev, actual), 300);
	/* beyond guest RAM is clamped */
	tb_dev_peer_actual(&f->dev, RAM_PAGES + 5, 1300);
	assert_int_equal(TB_CFG(&f->dev, actual), RAM_PAGES);
	assert_int_not_equal(issue(f, TBALLOON_OP_DEFLATE, 0, 10000, 0, 0, 1400), 0);
	/* the VM goes away: the command ends removed */
	tb_dev_peer_link(&f->dev, false, 1500);
	assert_int_equal(f->last.state, TBALLOON_STATE_ABORTED);
	assert_int_equal(f->last.reason, TBALLOON_REASON_REMOVED);
	assert_false(f->dev.connected);
}

/* ---- queue processing: build a ring in guest memory ---- */

#define QSZ 16
#define RING_GPA 0x100000
#define BUF_GPA 0x200000

struct ring {
	struct tb_vring vr;
	struct tb_vring_desc *desc;
	uint16_t *avail;
	uint8_t *buf;
};

static void ring_init(struct fx *f, struct ring *r)
{
	uint8_t *h = tb_mem_gpa_to_host(&f->mem, RING_GPA, 0x3000);

	memset(h, 0, 0x3000);
	memset(r, 0, sizeof(*r));
	r->desc = (struct tb_vring_desc *)h;
	r->avail = (uint16_t *)(h + 0x1000);
	r->buf = tb_mem_gpa_to_host(&f->mem, BUF_GPA, 0x10000);
	assert_int_equal(tb_vring_setup(&r->vr, QSZ, h, h + 0x1000, h + 0x2000, 0), 0);
}

static void ring_add(struct ring *r, unsigned int head, uint64_t gpa, uint32_t len,
		     uint16_t flags, uint16_t next)
{
	r->desc[head].addr = htole64(gpa);
	r->desc[head].len = htole32(len);
	r->desc[head].flags = htole16(flags);
	r->desc[head].next = htole16(next);
}

static void ring_publish(struct ring *r, uint16_t head)
{
	uint16_t idx = le16toh(r->avail[1]);

	r->avail[2 + idx % QSZ] = htole16(head);
	r->avail[1] = htole16(idx + 1);
}

static void put_pfns(uint8_t *p, const uint32_t *pfns, size_t n)
{
	for (size_t i = 0; i < n; i++)
		tb_put_le32(p + 4 * i, pfns[i]);
}

static void test_process_inflate(void **state)
{
	static const uint32_t pfns[] = { 1000, 1001, 1002, 1003, 5000, 0x7fffffff };
	struct fx *f = *state;
	struct ring r;
	bool notify;

	ring_init(f, &r);
	put_pfns(r.buf, pfns, TB_ARRAY_SIZE(pfns));
	ring_add(&r, 0, BUF_GPA, sizeof(pfns), 0, 0);
	ring_publish(&r, 0);
	assert_int_equal(tb_dev_process_queue(&f->dev, 0, &r.vr, &notify), 0);
	assert_true(notify);
	assert_int_equal(f->punches, 2);		/* 1000..1003 and 5000 */
	assert_int_equal(f->punched, 5 * 4096);
	assert_int_equal(f->dev.stats.inflated_pages, 5);
	assert_int_equal(f->dev.stats.refused_pfns, 1);
	assert_int_equal(f->dev.stats.released_bytes, 5 * 4096);
	assert_int_equal(r.vr.used_idx, 1);
	tb_vring_reset(&r.vr);
}

/* the punch pool's hand-over, as serve does it: count, then the buffer goes back */
struct pooled {
	struct fx *f;
	struct tb_vring *vr;
};

static void pooled_done(void *ctx, const struct tb_punch_job *job)
{
	struct pooled *p = ctx;

	tb_dev_punched(&p->f->dev, job);
	tb_vring_push(p->vr, job->head, 0);
}

/*
 * With the punch pool: buffers are counted when read (the state file
 * records them) but go back, in ring order, only once their memory is
 * released; released and reported bytes count when punched; a refused
 * buffer between two good ones waits its turn.
 */
static void test_process_pooled(void **state)
{
	static const uint32_t pfns[] = { 1000, 1001, 1002, 1003, 5000 };
	struct fx *f = *state;
	struct tb_punch_pool pool;
	struct pooled pc = { .f = f };
	struct ring r;
	bool notify;

	assert_int_equal(tb_punch_start(&pool, 1, f_punch, f), 0);
	f->dev.pool = &pool;
	ring_init(f, &r);
	pc.vr = &r.vr;
	put_pfns(r.buf, pfns, TB_ARRAY_SIZE(pfns));
	ring_add(&r, 0, BUF_GPA, sizeof(pfns), 0, 0);
	ring_add(&r, 1, BUF_GPA, 6, 0, 0);			/* refused */
	ring_add(&r, 2, BUF_GPA, 8, 0, 0);			/* 1000, 1001 again */
	for (uint16_t i = 0; i < 3; i++)
		ring_publish(&r, i);
	assert_int_equal(tb_dev_process_queue(&f->dev, 0, &r.vr, &notify), 0);
	assert_false(notify);
	assert_int_equal(f->dev.stats.inflated_pages, 7);
	assert_int_equal(f->dev.stats.bad_buffers, 1);
	assert_int_equal(tb_punch_pending(&pool, 0), 3);
	tb_punch_drain(&pool);
	assert_int_equal(r.vr.used_idx, 0);
	assert_int_equal(tb_punch_reap(&pool, pooled_done, &pc), 1U << 0);
	assert_int_equal(r.vr.used_idx, 3);
	/* used ring entries (id, len) after flags and idx: heads in ring order */
	for (unsigned int i = 0; i < 3; i++)
		assert_int_equal(tb_get_le32((const uint8_t *)r.vr.used + 4 + 8 * i), i);
	assert_int_equal(f->punches, 3);
	assert_int_equal(f->dev.stats.released_bytes, 7 * 4096);

	/* a free page report: reported_bytes, never balloon pages */
	tb_dev_set_features(&f->dev, TB_BIT(32) | TB_DEV_FEATURES |
			    TB_BIT(TB_BALLOON_F_REPORTING));
	tb_vring_reset(&r.vr);
	ring_init(f, &r);
	ring_add(&r, 0, 0x200000, 0x200000, TB_VRING_DESC_F_WRITE, 0);
	ring_publish(&r, 0);
	assert_int_equal(tb_dev_process_queue(&f->dev, 3, &r.vr, &notify), 0);
	assert_int_equal(f->dev.stats.reported_bytes, 0);
	tb_punch_drain(&pool);
	assert_int_equal(tb_punch_reap(&pool, pooled_done, &pc), 1U << 3);
	assert_int_equal(f->dev.stats.reported_bytes, 0x200000);
	assert_int_equal(f->dev.stats.released_bytes, 7 * 4096);
	assert_int_equal(r.vr.used_idx, 1);
	f->dev.pool = NULL;
	tb_punch_stop(&pool);
	tb_vring_reset(&r.vr);
}

static void test_process_split_pfn(void **state)
{
	static const uint32_t pfns[] = { 7, 8, 9 };
	struct fx *f = *state;
	struct ring r;
	bool notify;

	/* 12 bytes in descriptors of 5, 2 and 5 bytes: PFNs straddle them */
	ring_init(f, &r);
	put_pfns(r.buf, pfns, 3);
	ring_add(&r, 4, BUF_GPA, 5, TB_VRING_DESC_F_NEXT, 9);
	ring_add(&r, 9, BUF_GPA + 5, 2, TB_VRING_DESC_F_NEXT, 2);
	ring_add(&r, 2, BUF_GPA + 7, 5, 0, 0);
	ring_publish(&r, 4);
	assert_int_equal(tb_dev_process_queue(&f->dev, 0, &r.vr, &notify), 0);
	assert_int_equal(f->dev.stats.inflated_pages, 3);
	assert_int_equal(f->punches, 1);
	assert_int_equal(f->punched, 3 * 4096);
	tb_vring_reset(&r.vr);
}

static void test_process_bad_buffers(void **state)
{
	struct fx *f = *state;
	struct ring r;
	bool notify;

	ring_init(f, &r);
	put_pfns(r.buf, (const uint32_t[]){ 1, 2 }, 2);
	ring_add(&r, 0, BUF_GPA, 6, 0, 0);				/* not a multiple of 4 */
	ring_add(&r, 1, BUF_GPA, 8, TB_VRING_DESC_F_WRITE, 0);		/* device-writable */
	ring_add(&r, 2, BUF_GPA, 8, TB_VRING_DESC_F_NEXT, 2);		/* loop */
	ring_add(&r, 3, RAM - 4, 8, 0, 0);				/* past guest RAM */
	ring_add(&r, 4, BUF_GPA, 0, 0, 0);				/* empty: fine, nothing */
	for (uint16_t i = 0; i < 5; i++)
		ring_publish(&r, i);
	assert_int_equal(tb_dev_process_queue(&f->dev, 0, &r.vr, &notify), 0);
	assert_int_equal(f->dev.stats.bad_buffers, 4);
	assert_int_equal(f->punches, 0);
	/* every head still goes back to the driver */
	assert_int_equal(r.vr.used_idx, 5);

	/* a broken ring is reported */
	ring_publish(&r, QSZ + 3);
	assert_int_equal(tb_dev_process_queue(&f->dev, 0, &r.vr, &notify), -EIO);
	assert_int_equal(f->dev.stats.broken_rings, 1);
	tb_vring_reset(&r.vr);
}

static void test_process_deflate_and_stats(void **state)
{
	struct fx *f = *state;
	struct ring r;
	bool notify;

	ring_init(f, &r);
	put_pfns(r.buf, (const uint32_t[]){ 1, 2, 3 }, 3);
	ring_add(&r, 0, BUF_GPA, 12, 0, 0);
	ring_publish(&r, 0);
	assert_int_equal(tb_dev_process_queue(&f->dev, 1, &r.vr, &notify), 0);
	assert_int_equal(f->dev.stats.deflated_pages, 3);
	assert_int_equal(f->punches, 0);
	/* no stats queue offered: its buffers are returned and counted */
	ring_publish(&r, 0);
	assert_int_equal(tb_dev_process_queue(&f->dev, 2, &r.vr, &notify), 0);
	assert_int_equal(f->dev.stats.bad_buffers, 1);
	tb_vring_reset(&r.vr);
}

/* one PFN buffer of @n PFNs from @first on queue @q, processed now */
static void one_buffer(struct fx *f, struct ring *r, unsigned int q, uint16_t head,
		       uint32_t first, unsigned int n)
{
	bool notify;

	for (unsigned int i = 0; i < n; i++)
		tb_put_le32(r->buf + 0x100 * head + 4 * i, first + i);
	ring_add(r, head, BUF_GPA + 0x100 * head, 4 * n, 0, 0);
	ring_publish(r, head);
	assert_int_equal(tb_dev_process_queue(&f->dev, q, &r->vr, &notify), 0);
}

/*
 * Compaction moving a balloon page (a one-page inflate, then a one-page
 * deflate) is not the guest taking memory back: driver-oom-timed counted
 * 1481 such moves as pages taken back on OOM, vmstat did not.
 */
static void test_migration_not_taken_back(void **state)
{
	struct fx *f = *state;
	struct ring r;

	ring_init(f, &r);
	one_buffer(f, &r, 0, 0, 1000, 8);	/* a balloon of 8 pages */
	one_buffer(f, &r, 0, 1, 2000, 1);	/* migration: the new page */
	one_buffer(f, &r, 1, 2, 1000, 1);	/* ... and the old one */
	assert_int_equal(f->dev.stats.migrated_pages, 1);
	assert_int_equal(f->dev.stats.guest_deflated_pages, 0);
	assert_int_equal(f->dev.device_pages, 8);
	one_buffer(f, &r, 1, 3, 1001, 1);	/* one page, no inflate before it */
	one_buffer(f, &r, 1, 4, 1002, 3);	/* a deflate on OOM */
	assert_int_equal(f->dev.stats.migrated_pages, 1);
	assert_int_equal(f->dev.stats.guest_deflated_pages, 4);
	one_buffer(f, &r, 0, 5, 3000, 2);
	one_buffer(f, &r, 1, 6, 3000, 1);	/* after a two-page inflate */
	assert_int_equal(f->dev.stats.migrated_pages, 1);
	assert_int_equal(f->dev.stats.guest_deflated_pages, 5);
	assert_int_equal(f->dev.device_pages, 5);
	tb_vring_reset(&r.vr);
}

static void test_queue_roles(void **state)
{
	struct fx *f = *state;

	/* stats offered and negotiated (fx_setup): reporting would be 3 */
	assert_int_equal(tb_dev_queue_role(&f->dev, 0), VIRTIO_TBALLOON_VQ_INFLATE);
	assert_int_equal(tb_dev_queue_role(&f->dev, 1), VIRTIO_TBALLOON_VQ_DEFLATE);
	assert_int_equal(tb_dev_queue_role(&f->dev, 2), VIRTIO_TBALLOON_VQ_STATS);
	assert_int_equal(tb_dev_queue_role(&f->dev, 3), VIRTIO_TBALLOON_VQ_MAX);
	tb_dev_set_features(&f->dev, TB_BIT(32) | TB_DEV_FEATURES |
			    TB_BIT(TB_BALLOON_F_REPORTING));
	assert_int_equal(tb_dev_queue_role(&f->dev, 3), VIRTIO_TBALLOON_VQ_REPORTING);
	/* a queue of a feature not negotiated takes no index (Linux, QEMU) */
	tb_dev_set_features(&f->dev, TB_BIT(32) | TB_BIT(TB_BALLOON_F_REPORTING));
	assert_int_equal(tb_dev_queue_role(&f->dev, 2), VIRTIO_TBALLOON_VQ_REPORTING);
	assert_int_equal(tb_dev_queue_role(&f->dev, 3), VIRTIO_TBALLOON_VQ_MAX);
	tb_dev_set_features(&f->dev, TB_BIT(32) | TB_BIT(TB_BALLOON_F_FREE_PAGE_HINT) |
			    TB_BIT(TB_BALLOON_F_REPORTING) | TB_BIT(TB_BALLOON_F_STATS_VQ));
	assert_int_equal(tb_dev_queue_role(&f->dev, 3), VIRTIO_TBALLOON_VQ_FREE_PAGE);
	assert_int_equal(tb_dev_queue_role(&f->dev, 4), VIRTIO_TBALLOON_VQ_REPORTING);
}

static void test_report_queue(void **state)
{
	struct fx *f = *state;
	struct ring r;
	bool notify;

	tb_dev_set_features(&f->dev, TB_BIT(32) | TB_DEV_FEATURES |
			    TB_BIT(TB_BALLOON_F_REPORTING));
	ring_init(f, &r);
	/* one report of two device-writable ranges: both discarded */
	ring_add(&r, 0, 0x200000, 0x200000, TB_VRING_DESC_F_WRITE | TB_VRING_DESC_F_NEXT, 1);
	ring_add(&r, 1, 0x600000, 0x400000, TB_VRING_DESC_F_WRITE, 0);
	ring_publish(&r, 0);
	assert_int_equal(tb_dev_process_queue(&f->dev, 3, &r.vr, &notify), 0);
	assert_int_equal(f->punches, 2);
	assert_int_equal(f->punched, 0x600000);
	assert_int_equal(f->dev.stats.reports, 1);
	assert_int_equal(f->dev.stats.reported_bytes, 0x600000);
	/* never balloon pages */
	assert_int_equal(TB_CFG(&f->dev, actual), 0);
	assert_int_equal(f->dev.device_pages, 0);
	assert_int_equal(f->dev.stats.inflated_pages, 0);

	/* refused whole: read-only, unaligned, past RAM, empty */
	ring_add(&r, 2, 0x200000, 0x200000, 0, 0);
	ring_add(&r, 3, 0x200800, 0x1000, TB_VRING_DESC_F_WRITE, 0);
	ring_add(&r, 4, 0x200000, 0x1000, TB_VRING_DESC_F_WRITE | TB_VRING_DESC_F_NEXT, 5);
	ring_add(&r, 5, RAM - 0x1000, 0x2000, TB_VRING_DESC_F_WRITE, 0);
	ring_add(&r, 6, 0x200000, 0, TB_VRING_DESC_F_WRITE, 0);
	for (uint16_t i = 2; i <= 6; i++)
		if (i != 5)
			ring_publish(&r, i);
	assert_int_equal(tb_dev_process_queue(&f->dev, 3, &r.vr, &notify), 0);
	assert_int_equal(f->punches, 2);
	assert_int_equal(f->dev.stats.bad_buffers, 4);
	assert_int_equal(f->dev.stats.reports, 1);
	assert_int_equal(r.vr.used_idx, 5);
	tb_vring_reset(&r.vr);
}

static void test_report_poison(void **state)
{
	struct fx *f = *state;
	struct ring r;
	bool notify;

	/*
	 * The driver writes poison_val before DRIVER_OK, and a vhost-user
	 * front-end sends the features only at DRIVER_OK: the value counts
	 * all the same (a guest with page_poison=1 saw zeroed free pages).
	 */
	tb_dev_session(&f->dev, true, 1000);
	guest_write(f, OFF(poison_val), 0xaaaaaaaa, 1001);
	tb_dev_set_features(&f->dev, TB_BIT(32) | TB_DEV_FEATURES |
			    TB_BIT(TB_BALLOON_F_REPORTING));
	assert_int_equal(TB_CFG(&f->dev, poison_val), 0xaaaaaaaa);
	ring_init(f, &r);
	ring_add(&r, 0, 0x200000, 0x200000, TB_VRING_DESC_F_WRITE, 0);
	ring_publish(&r, 0);
	assert_int_equal(tb_dev_process_queue(&f->dev, 3, &r.vr, &notify), 0);
	/* a hole would read as zero, not as the poison: kept */
	assert_int_equal(f->punches, 0);
	assert_int_equal(f->dev.stats.reported_kept_bytes, 0x200000);
	assert_int_equal(f->dev.stats.reported_bytes, 0);
	/* a reset clears it: the next driver says again */
	tb_dev_reset(&f->dev, 1002);
	assert_int_equal(TB_CFG(&f->dev, poison_val), 0);
	tb_vring_reset(&r.vr);
}

static void test_watchdog(void **state)
{
	struct fx *f = *state;
	uint32_t id;

	f->dev.grace_ms = 1000;
	id = issue(f, TBALLOON_OP_INFLATE, 100, 500, 0, 0, 2000);
	report(f, id, TBALLOON_STATE_RUNNING, 0, 10, 0, 0, 2010);
	/* due at issue + deadline + grace */
	assert_int_equal(tb_dev_tick(&f->dev, 2100), 1400);
	assert_int_equal(tb_dev_tick(&f->dev, 3500), -1);
	assert_int_equal(f->dev.cmd.state, TB_STATE_UNRESPONSIVE);
	assert_string_equal(tb_state_name(f->dev.cmd.state), "guest-unresponsive");
	assert_false(tb_cmd_running(&f->dev.cmd));
	assert_int_equal(f->dev.stats.unresponsive, 1);
	assert_int_equal(f->events[TB_EVENT_DONE], 1);
	/* a late report is still authoritative */
	report(f, id, TBALLOON_STATE_DEADLINE, 0, 50, 500, 0, 3600);
	assert_int_equal(f->dev.cmd.state, TBALLOON_STATE_DEADLINE);
	assert_int_equal(f->events[TB_EVENT_DONE], 2);
}

static void test_broken_and_reset(void **state)
{
	struct fx *f = *state;
	struct ring r;
	bool notify;
	uint32_t id;

	id = issue(f, TBALLOON_OP_INFLATE, 100, 5000, 0, 0, 2000);
	report(f, id, TBALLOON_STATE_RUNNING, 0, 10, 0, 0, 2010);
	ring_init(f, &r);
	ring_publish(&r, QSZ + 1);		/* head out of range */
	assert_int_equal(tb_dev_process_queue(&f->dev, 0, &r.vr, &notify), -EIO);
	assert_true(f->dev.broken);
	assert_non_null(strstr(f->dev.broken_why, "queue 0"));
	assert_int_equal(f->dev.cmd.state, TBALLOON_STATE_ABORTED);
	assert_int_equal(f->dev.cmd.reason, TBALLOON_REASON_DEVICE_ERROR);
	/* nothing is processed or issued while broken */
	assert_int_equal(issue(f, TBALLOON_OP_INFLATE, 100, 5000, 0, 0, 2100), 0);
	assert_int_equal(tb_dev_process_queue(&f->dev, 1, &r.vr, &notify), 0);
	tb_vring_reset(&r.vr);
	/* a device reset clears it with the driver block */
	tb_dev_reset(&f->dev, 2200);
	assert_false(f->dev.broken);
	assert_int_equal(TB_CFG(&f->dev, actual), 0);
	assert_int_equal(TB_CFG(&f->dev, cmd_id), 0);
	assert_int_equal(f->dev.device_pages, 0);
	assert_int_equal(f->dev.stats.resets, 1);
	assert_int_not_equal(issue(f, TBALLOON_OP_INFLATE, 100, 5000, 0, 0, 2300), 0);
	assert_true(TB_CFG(&f->dev, cmd_id) > id);
}

static void test_reset_ends_command(void **state)
{
	struct fx *f = *state;
	uint32_t id = issue(f, TBALLOON_OP_INFLATE, 100, 5000, 0, 0, 2000);

	report(f, id, TBALLOON_STATE_RUNNING, 0, 10, 0, 0, 2010);
	tb_dev_reset(&f->dev, 2100);
	assert_int_equal(f->dev.cmd.state, TBALLOON_STATE_ABORTED);
	assert_int_equal(f->dev.cmd.reason, TBALLOON_REASON_REMOVED);
}

static void test_device_pages(void **state)
{
	struct fx *f = *state;
	struct ring r;
	bool notify;

	ring_init(f, &r);
	put_pfns(r.buf, (const uint32_t[]){ 1, 2, 3, 4, 0xffffff }, 5);
	ring_add(&r, 0, BUF_GPA, 20, 0, 0);
	ring_add(&r, 1, BUF_GPA, 8, 0, 0);
	ring_publish(&r, 0);
	assert_int_equal(tb_dev_process_queue(&f->dev, 0, &r.vr, &notify), 0);
	assert_int_equal(f->dev.device_pages, 4);	/* the refused one not */
	ring_publish(&r, 1);
	assert_int_equal(tb_dev_process_queue(&f->dev, 1, &r.vr, &notify), 0);
	assert_int_equal(f->dev.device_pages, 2);
	/* more deflated than inflated (hostile): clamped at 0 */
	ring_publish(&r, 0);
	assert_int_equal(tb_dev_process_queue(&f->dev, 1, &r.vr, &notify), 0);
	assert_int_equal(f->dev.device_pages, 0);
	tb_vring_reset(&r.vr);
}

static void test_counted_once_across_restart(void **state)
{
	struct fx *f = *state;
	struct ring r;
	bool notify;
	unsigned int punches;

	ring_init(f, &r);
	put_pfns(r.buf, (const uint32_t[]){ 1, 2, 3, 4 }, 4);
	ring_add(&r, 0, BUF_GPA, 16, 0, 0);
	ring_publish(&r, 0);
	assert_int_equal(tb_dev_process_queue(&f->dev, 0, &r.vr, &notify), 0);
	assert_int_equal(f->dev.device_pages, 4);
	assert_true(f->dev.counted_valid[0]);
	assert_int_equal(f->dev.counted_pos[0], 1);
	/*
	 * The daemon died after committing the count but before the used
	 * ring showed the buffer: the front-end resumes the ring at 0.
	 */
	punches = f->punches;
	r.vr.last_avail = 0;
	assert_int_equal(tb_dev_process_queue(&f->dev, 0, &r.vr, &notify), 0);
	assert_int_equal(f->dev.device_pages, 4);		/* not twice */
	assert_int_equal(f->dev.stats.inflated_pages, 4);
	assert_true(f->punches > punches);			/* released again */
	/* the next buffer counts as usual */
	ring_publish(&r, 0);
	assert_int_equal(tb_dev_process_queue(&f->dev, 0, &r.vr, &notify), 0);
	assert_int_equal(f->dev.device_pages, 8);
	assert_int_equal(f->dev.counted_pos[0], 2);
	/* a reset forgets the positions */
	tb_dev_reset(&f->dev, 3000);
	assert_false(f->dev.counted_valid[0]);
	tb_vring_reset(&r.vr);
}

static void put_stat(uint8_t *p, uint16_t tag, uint64_t v)
{
	uint16_t t = htole16(tag);
	uint64_t x = htole64(v);

	memcpy(p, &t, 2);
	memcpy(p + 2, &x, 8);
}

static void test_stats_queue(void **state)
{
	struct fx *f = *state;
	struct ring r;
	bool notify;

	ring_init(f, &r);
	put_stat(r.buf, TB_GSTAT_MEMFREE, 123456);
	put_stat(r.buf + 10, TB_GSTAT_AVAIL, 654321);
	put_stat(r.buf + 20, 999, 1);			/* unknown tag: ignored */
	/* 30 bytes split 13 + 17: an entry straddles the descriptors */
	ring_add(&r, 3, BUF_GPA, 13, TB_VRING_DESC_F_NEXT, 4);
	ring_add(&r, 4, BUF_GPA + 13, 17, 0, 0);
	ring_publish(&r, 3);
	assert_int_equal(tb_dev_process_queue(&f->dev, 2, &r.vr, &notify), 0);
	/* held, not returned */
	assert_int_equal(r.vr.used_idx, 0);
	assert_true(f->dev.gstats.held);
	assert_int_equal(f->dev.gstats.head, 3);
	assert_int_equal(f->dev.gstats.val[TB_GSTAT_MEMFREE], 123456);
	assert_int_equal(f->dev.gstats.val[TB_GSTAT_AVAIL], 654321);
	assert_int_equal(f->dev.gstats.have,
			 (1U << TB_GSTAT_MEMFREE) | (1U << TB_GSTAT_AVAIL));
	assert_int_equal(f->dev.gstats.unknown_tags, 1);
	assert_int_equal(f->dev.gstats.updates, 1);

	/* due after the interval, or at once when wanted */
	f->dev.gstats.updated_ms = 1000;
	assert_int_equal(tb_dev_stats_due(&f->dev, 1500), 1500);
	f->dev.stats_wanted = true;
	assert_int_equal(tb_dev_stats_due(&f->dev, 1500), 0);
	assert_true(tb_dev_stats_request(&f->dev, &r.vr, 1500, &notify));
	assert_int_equal(r.vr.used_idx, 1);
	assert_false(f->dev.gstats.held);
	assert_false(tb_dev_stats_request(&f->dev, &r.vr, 1600, &notify));
	assert_int_equal(tb_dev_stats_due(&f->dev, 1600), -1);

	/* not a statistics buffer: returned and counted */
	ring_add(&r, 5, BUF_GPA, 7, 0, 0);
	ring_publish(&r, 5);
	assert_int_equal(tb_dev_process_queue(&f->dev, 2, &r.vr, &notify), 0);
	assert_int_equal(f->dev.stats.bad_buffers, 1);
	assert_int_equal(r.vr.used_idx, 2);

	/* a queue stop un-pops a held buffer: taken again after the restart */
	ring_publish(&r, 3);
	assert_int_equal(tb_dev_process_queue(&f->dev, 2, &r.vr, &notify), 0);
	assert_true(f->dev.gstats.held);
	assert_int_equal(r.vr.last_avail, 3);
	tb_dev_queue_stopped(&f->dev, 2, &r.vr);
	assert_false(f->dev.gstats.held);
	assert_int_equal(r.vr.last_avail, 2);
	assert_int_equal(tb_dev_process_queue(&f->dev, 2, &r.vr, &notify), 0);
	assert_true(f->dev.gstats.held);
	assert_int_equal(f->dev.gstats.head, 3);
	/* other queues and a queue without a held buffer are left alone */
	tb_dev_queue_stopped(&f->dev, 0, &r.vr);
	assert_int_equal(r.vr.last_avail, 3);
	tb_vring_reset(&r.vr);
}

static void test_recovered_command(void **state)
{
	struct fx *f = *state;
	uint32_t id = issue(f, TBALLOON_OP_INFLATE, 4, 5000, 0, 0, 2000);

	/* as restored from a state file: the final report was lost */
	f->dev.cmd.recovered = true;
	f->dev.device_pages = 3;
	assert_true(tb_dev_tick(&f->dev, 2100) > 0);
	assert_true(tb_cmd_running(&f->dev.cmd));
	f->dev.device_pages = 4;
	assert_int_equal(tb_dev_tick(&f->dev, 2200), -1);
	assert_int_equal(f->dev.cmd.state, TBALLOON_STATE_DONE);
	assert_int_equal(TB_CFG(&f->dev, actual), 4);
	assert_int_equal(f->last.cmd_id, id);
}

#define T(fn) TB_TEST_FX("dev", fn, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_set_config_filter),
		T(test_issue_writes_config),
		T(test_issue_validation),
		T(test_reports),
		T(test_rejected_report),
		T(test_supersede_and_abort),
		T(test_notify_failure_not_issued),
		T(test_disconnect_ends_command),
		T(test_standard_balloon),
		T(test_host_floor),
		T(test_host_pressure),
		T(test_host_unresponsive),
		T(test_host_paced),
		T(test_peer_link),
		T(test_process_inflate),
		T(test_process_split_pfn),
		T(test_process_bad_buffers),
		T(test_process_deflate_and_stats),
		T(test_migration_not_taken_back),
		T(test_queue_roles),
		T(test_report_queue),
		T(test_process_pooled),
		T(test_report_poison),
		T(test_watchdog),
		T(test_broken_and_reset),
		T(test_reset_ends_command),
		T(test_device_pages),
		T(test_counted_once_across_restart),
		T(test_stats_queue),
		T(test_recovered_command),
	};

	return tb_test_run("dev", tests);
}
