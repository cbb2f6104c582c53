// SPDX-License-Identifier: GPL-2.0-only
/*
 * KUnit suites for the timed virtio balloon policy (driver/tballoon_policy.c)
 *
 * Table-driven: each suite is an array of { desc, input, expect } cases run
 * by one parameterised test. Boundaries: 0, 1, the maximum, and values that
 * would overflow a naive computation.
 */

#include <kunit/test.h>
#include <linux/math64.h>
#include <linux/module.h>
#include <linux/string.h>

#include "tballoon_policy.h"

/* 1 GiB of 4 KiB pages */
#define RAM	262144U
#define MAXDL	TBALLOON_DEADLINE_MAX_MS

#define DESC(type)							\
static void type##_desc(const struct type *c, char *desc)		\
{									\
	strscpy(desc, c->desc, KUNIT_PARAM_DESC_SIZE);			\
}

/* ------------------------------------------------------------------------
 * tballoon_policy_validate
 * ------------------------------------------------------------------------
 */

struct validate_case {
	const char *desc;
	struct tballoon_cmd cmd;
	u32 actual;
	u32 state;
	u32 reason;
};

#define CMD(o, f, d, t, fl) { .cmd_id = 1, .op = (o), .flags = (f),	\
			      .deadline_ms = (d), .target_pages = (t),	\
			      .floor_pages = (fl) }
#define INF	TBALLOON_OP_INFLATE
#define DEF	TBALLOON_OP_DEFLATE
#define ABT	TBALLOON_OP_ABORT
#define S(x)	TBALLOON_STATE_##x
#define R(x)	TBALLOON_REASON_##x

static const struct validate_case validate_cases[] = {
	{ "op none", CMD(TBALLOON_OP_NONE, 0, 100, 10, 0), 0, S(REJECTED), R(BAD_OP) },
	{ "op count", CMD(TBALLOON_OP_COUNT, 0, 100, 10, 0), 0, S(REJECTED), R(BAD_OP) },
	{ "op max", CMD(U32_MAX, 0, 100, 10, 0), 0, S(REJECTED), R(BAD_OP) },
	{ "unknown flag", CMD(INF, 1U << 2, 100, 10, 0), 0, S(REJECTED), R(BAD_FLAGS) },
	{ "all flags", CMD(INF, U32_MAX, 100, 10, 0), 0, S(REJECTED), R(BAD_FLAGS) },
	{ "paced", CMD(INF, TBALLOON_FLAG_PACED, 100, 10, 0), 0, S(RUNNING), R(NONE) },
	{ "gentle", CMD(INF, TBALLOON_FLAG_GENTLE, 100, 10, 0), 0, S(RUNNING), R(NONE) },
	{ "paced gentle deflate", CMD(DEF, TBALLOON_FLAGS_ALL, 100, 0, 0), 5, S(RUNNING), R(NONE) },
	{ "abort", CMD(ABT, 0, 0, U32_MAX, U32_MAX), 5, S(DONE), R(NONE) },
	{ "abort bad flags", CMD(ABT, 1U << 31, 0, 0, 0), 5, S(REJECTED), R(BAD_FLAGS) },
	{ "target ram", CMD(INF, 0, 100, RAM, 0), 0, S(RUNNING), R(NONE) },
	{ "target ram+1", CMD(INF, 0, 100, RAM + 1, 0), 0, S(REJECTED), R(BAD_TARGET) },
	{ "target max", CMD(DEF, 0, 100, U32_MAX, 0), 0, S(REJECTED), R(BAD_TARGET) },
	{ "deadline 0", CMD(INF, 0, 0, 10, 0), 0, S(REJECTED), R(BAD_DEADLINE) },
	{ "deadline 1", CMD(INF, 0, 1, 10, 0), 0, S(RUNNING), R(NONE) },
	{ "deadline max", CMD(INF, 0, MAXDL, 10, 0), 0, S(RUNNING), R(NONE) },
	{ "deadline max+1", CMD(INF, 0, MAXDL + 1, 10, 0), 0, S(REJECTED), R(BAD_DEADLINE) },
	{ "deadline u32 max", CMD(INF, 0, U32_MAX, 10, 0), 0, S(REJECTED), R(BAD_DEADLINE) },
	{ "target before deadline", CMD(INF, 0, 0, RAM + 1, 0), 0, S(REJECTED), R(BAD_TARGET) },
	{ "floor ram", CMD(INF, 0, 100, 10, RAM), 0, S(RUNNING), R(NONE) },
	{ "floor ram+1", CMD(INF, 0, 100, 10, RAM + 1), 0, S(REJECTED), R(BAD_FLOOR) },
	{ "floor max", CMD(DEF, 0, 100, 0, U32_MAX), 5, S(REJECTED), R(BAD_FLOOR) },
	{ "inflate below actual", CMD(INF, 0, 100, 9, 0), 10, S(REJECTED), R(DIRECTION) },
	{ "deflate above actual", CMD(DEF, 0, 100, 11, 0), 10, S(REJECTED), R(DIRECTION) },
	{ "inflate to actual", CMD(INF, 0, 100, 10, 0), 10, S(DONE), R(NONE) },
	{ "deflate to actual", CMD(DEF, 0, 100, 10, 0), 10, S(DONE), R(NONE) },
	{ "inflate 0 to 1", CMD(INF, 0, 100, 1, 0), 0, S(RUNNING), R(NONE) },
	{ "deflate 1 to 0", CMD(DEF, 0, 100, 0, 0), 1, S(RUNNING), R(NONE) },
	{ "deflate zero", CMD(DEF, 0, 100, 0, 0), 0, S(DONE), R(NONE) },
};

DESC(validate_case)
KUNIT_ARRAY_PARAM(validate, validate_cases, validate_case_desc);

static void tballoon_validate_test(struct kunit *test)
{
	const struct validate_case *c = test->param_value;
	u32 reason = U32_MAX;

	KUNIT_EXPECT_EQ(test, tballoon_policy_validate(&c->cmd, c->actual, RAM,
						       &reason), c->state);
	KUNIT_EXPECT_EQ(test, reason, c->reason);
}

struct superseded_case {
	const char *desc;
	struct tballoon_cmd next;
	u32 reason;
};

static const struct superseded_case superseded_cases[] = {
	{ "abort", CMD(ABT, 0, 0, 0, 0), R(HOST_ABORT) },
	{ "abort bad flags", CMD(ABT, 1U << 2, 0, 0, 0), R(SUPERSEDED) },
	{ "inflate", CMD(INF, 0, 100, 10, 0), R(SUPERSEDED) },
	{ "invalid op", CMD(U32_MAX, 0, 100, 10, 0), R(SUPERSEDED) },
};

DESC(superseded_case)
KUNIT_ARRAY_PARAM(superseded, superseded_cases, superseded_case_desc);

static void tballoon_superseded_test(struct kunit *test)
{
	const struct superseded_case *c = test->param_value;

	KUNIT_EXPECT_EQ(test, tballoon_policy_superseded_reason(&c->next),
			c->reason);
}

static struct kunit_case tballoon_validate_test_cases[] = {
	KUNIT_CASE_PARAM(tballoon_validate_test, validate_gen_params),
	KUNIT_CASE_PARAM(tballoon_superseded_test, superseded_gen_params),
	{}
};

static struct kunit_suite tballoon_validate_suite = {
	.name = "tballoon_policy_validate",
	.test_cases = tballoon_validate_test_cases,
};

/* ------------------------------------------------------------------------
 * tballoon_policy_stop, tballoon_policy_floor_room
 * ------------------------------------------------------------------------
 */

struct floor_case {
	const char *desc;
	u32 floor;
	u64 avail;
	u32 room;
};

static const struct floor_case floor_cases[] = {
	{ "no floor, nothing available", 0, 0, U32_MAX },
	{ "no floor", 0, 1000, U32_MAX },
	{ "at floor", 100, 100, 0 },
	{ "below floor", 100, 99, 0 },
	{ "one above", 100, 101, 1 },
	{ "huge avail clamps", 1, U64_MAX, U32_MAX },
	{ "floor max", U32_MAX, U32_MAX, 0 },
};

DESC(floor_case)
KUNIT_ARRAY_PARAM(floor, floor_cases, floor_case_desc);

static void tballoon_floor_test(struct kunit *test)
{
	const struct floor_case *c = test->param_value;

	KUNIT_EXPECT_EQ(test, tballoon_policy_floor_room(c->floor, c->avail),
			c->room);
}

struct stop_case {
	const char *desc;
	struct tballoon_cmd cmd;
	struct tballoon_progress prog;
	u32 state;
	u32 reason;
};

#define PROG(done, ms, avail, g) { .done_pages = (done), .elapsed_ms = (ms), \
				   .avail_pages = (avail), .granule = (g) }
#define STALLS(n) { .done_pages = 5, .elapsed_ms = 1, .reclaim_stalls = (n), \
		    .granule = 1 }
#define RS	TBALLOON_RECLAIM_STALLS
#define NODL	TBALLOON_NO_DEADLINE

static const struct stop_case stop_cases[] = {
	{ "inflate running", CMD(INF, 0, 100, 10, 0), PROG(5, 50, 0, 1), S(RUNNING), R(NONE) },
	{ "inflate reached", CMD(INF, 0, 100, 10, 0), PROG(10, 50, 0, 1), S(DONE), R(NONE) },
	{ "inflate beyond", CMD(INF, 0, 100, 10, 0), PROG(11, 50, 0, 1), S(DONE), R(NONE) },
	{ "deflate running", CMD(DEF, 0, 100, 10, 0), PROG(11, 50, 0, 1), S(RUNNING), R(NONE) },
	{ "deflate reached", CMD(DEF, 0, 100, 10, 0), PROG(10, 50, 0, 1), S(DONE), R(NONE) },
	{ "deflate to 0", CMD(DEF, 0, 100, 0, 0), PROG(0, 50, 0, 1), S(DONE), R(NONE) },
	{ "deadline-1", CMD(INF, 0, 100, 10, 0), PROG(5, 99, 0, 1), S(RUNNING), R(NONE) },
	{ "deadline", CMD(INF, 0, 100, 10, 0), PROG(5, 100, 0, 1), S(DEADLINE), R(NONE) },
	{ "deadline long past", CMD(INF, 0, 1, 10, 0), PROG(5, U32_MAX, 0, 1),
	  S(DEADLINE), R(NONE) },
	{ "done beats deadline", CMD(INF, 0, 100, 10, 0), PROG(10, 200, 0, 1),
	  S(DONE), R(NONE) },
	{ "no deadline", CMD(INF, 0, NODL, 10, 0), PROG(5, U32_MAX - 1, 0, 1),
	  S(RUNNING), R(NONE) },
	{ "floor reached", CMD(INF, 0, 100, 10, 50), PROG(5, 1, 50, 1), S(PRESSURE), R(FLOOR) },
	{ "floor one above", CMD(INF, 0, 100, 10, 50), PROG(5, 1, 51, 1), S(RUNNING), R(NONE) },
	{ "floor below granule", CMD(INF, 0, 100, 32, 50), PROG(16, 1, 65, 16),
	  S(PRESSURE), R(FLOOR) },
	{ "floor one granule", CMD(INF, 0, 100, 32, 50), PROG(16, 1, 66, 16), S(RUNNING), R(NONE) },
	{ "deadline beats floor", CMD(INF, 0, 100, 10, 50), PROG(5, 100, 0, 1),
	  S(DEADLINE), R(NONE) },
	{ "deflate ignores floor", CMD(DEF, 0, 100, 0, 50), PROG(5, 1, 0, 1), S(RUNNING), R(NONE) },
	{ "granule 0 as 1", CMD(INF, 0, 100, 10, 50), PROG(5, 1, 51, 0), S(RUNNING), R(NONE) },
	{ "no reclaim", CMD(INF, 0, 100, 10, 0), STALLS(0), S(RUNNING), R(NONE) },
	{ "reclaim at limit", CMD(INF, 0, 100, 10, 0), STALLS(RS), S(RUNNING), R(NONE) },
	{ "reclaim surge", CMD(INF, 0, 100, 10, 0), STALLS(RS + 1), S(PRESSURE), R(RECLAIM) },
	{ "reclaim max", CMD(INF, 0, 100, 10, 0), STALLS(U64_MAX), S(PRESSURE), R(RECLAIM) },
	{ "floor beats reclaim", CMD(INF, 0, 100, 10, 50), STALLS(U64_MAX), S(PRESSURE), R(FLOOR) },
	{ "deflate ignores reclaim", CMD(DEF, 0, 100, 0, 0), STALLS(U64_MAX), S(RUNNING), R(NONE) },
};

DESC(stop_case)
KUNIT_ARRAY_PARAM(stop, stop_cases, stop_case_desc);

static void tballoon_stop_test(struct kunit *test)
{
	const struct stop_case *c = test->param_value;
	u32 reason = U32_MAX;

	KUNIT_EXPECT_EQ(test, tballoon_policy_stop(&c->cmd, &c->prog, &reason),
			c->state);
	KUNIT_EXPECT_EQ(test, reason, c->reason);
}

struct reserve_case {
	const char *desc;
	u64 ram;
	u32 reserve;
};

static const struct reserve_case reserve_cases[] = {
	{ "no ram", 0, TBALLOON_RESERVE_MIN_PAGES },
	{ "1 GiB", RAM, TBALLOON_RESERVE_MIN_PAGES },
	{ "share equals minimum", 64ULL * TBALLOON_RESERVE_MIN_PAGES, TBALLOON_RESERVE_MIN_PAGES },
	{ "share above minimum", 64ULL * TBALLOON_RESERVE_MIN_PAGES + 64,
	  TBALLOON_RESERVE_MIN_PAGES + 1 },
	{ "64 GiB", 64ULL * RAM, RAM },
	{ "huge clamps", U64_MAX, U32_MAX },
};

DESC(reserve_case)
KUNIT_ARRAY_PARAM(reserve, reserve_cases, reserve_case_desc);

static void tballoon_reserve_test(struct kunit *test)
{
	const struct reserve_case *c = test->param_value;

	KUNIT_EXPECT_EQ(test, tballoon_policy_reserve(c->ram), c->reserve);
}

static struct kunit_case tballoon_stop_test_cases[] = {
	KUNIT_CASE_PARAM(tballoon_stop_test, stop_gen_params),
	KUNIT_CASE_PARAM(tballoon_floor_test, floor_gen_params),
	KUNIT_CASE_PARAM(tballoon_reserve_test, reserve_gen_params),
	{}
};

static struct kunit_suite tballoon_stop_suite = {
	.name = "tballoon_policy_stop",
	.test_cases = tballoon_stop_test_cases,
};

/* ------------------------------------------------------------------------
 * tballoon_policy_batch
 * ------------------------------------------------------------------------
 */

struct batch_case {
	const char *desc;
	struct tballoon_batch_in in;
	u32 pages;
};

#define BATCH(rem, ms, rate, prev, room, g) { .remaining_pages = (rem),	\
	.remaining_ms = (ms), .rate_pps = (rate), .prev_pages = (prev),	\
	.room_pages = (room), .granule = (g) }

static const struct batch_case batch_cases[] = {
	{ "nothing left", BATCH(0, 100, 0, 0, U32_MAX, 1), 0 },
	{ "first", BATCH(1U << 20, 100, 0, 0, U32_MAX, 1), TBALLOON_BATCH_FIRST },
	{ "doubles", BATCH(1U << 20, 100, 0, 512, U32_MAX, 1), 1024 },
	{ "up to max", BATCH(1U << 20, 100, 0, 2048, U32_MAX, 1), TBALLOON_BATCH_MAX },
	{ "stays at max", BATCH(1U << 20, 100, 0, 4096, U32_MAX, 1), TBALLOON_BATCH_MAX },
	{ "prev overflow", BATCH(1U << 20, 100, 0, U32_MAX, U32_MAX, 1), TBALLOON_BATCH_MAX },
	{ "one page left", BATCH(1, 100, 0, 0, U32_MAX, 1), 1 },
	{ "remaining caps", BATCH(100, 100, 0, 0, U32_MAX, 1), 100 },
	{ "room caps", BATCH(1U << 20, 100, 0, 0, 300, 1), 300 },
	{ "no room", BATCH(1U << 20, 100, 0, 0, 0, 1), 0 },
	{ "time budget", BATCH(1U << 20, 20, 100000, 512, U32_MAX, 1), 500 },
	{ "budget floor", BATCH(1U << 20, 1, 1000, 512, U32_MAX, 1), TBALLOON_BATCH_MIN },
	{ "deadline passed", BATCH(1U << 20, 0, 1000, 512, U32_MAX, 1), TBALLOON_BATCH_MIN },
	{ "budget no overflow", BATCH(1U << 20, U32_MAX - 1, U32_MAX, 4096, U32_MAX, 1),
	  TBALLOON_BATCH_MAX },
	{ "no deadline ignores rate", BATCH(1U << 20, TBALLOON_NO_DEADLINE, 1, 4096, U32_MAX, 1),
	  TBALLOON_BATCH_MAX },
	{ "granule rounds down", BATCH(100, 100, 0, 0, U32_MAX, 16), 96 },
	{ "below granule", BATCH(10, 100, 0, 0, U32_MAX, 16), 0 },
	{ "granule 0 as 1", BATCH(7, 100, 0, 0, U32_MAX, 0), 7 },
};

DESC(batch_case)
KUNIT_ARRAY_PARAM(batch, batch_cases, batch_case_desc);

static void tballoon_batch_test(struct kunit *test)
{
	const struct batch_case *c = test->param_value;

	KUNIT_EXPECT_EQ(test, tballoon_policy_batch(&c->in), c->pages);
}

struct block_case {
	const char *desc;
	u32 left;
	u32 room;
	u32 block;
	bool use;
};

#define BLK	512U
#define BROOM	(TBALLOON_BLOCK_ROOM_BLOCKS * BLK)

static const struct block_case block_cases[] = {
	{ "no blocks", 4096, U32_MAX, 0, false },
	{ "no blocks, nothing left", 0, U32_MAX, 0, false },
	{ "whole block left", BLK, U32_MAX, BLK, true },
	{ "less than a block left", BLK - 1, U32_MAX, BLK, false },
	{ "nothing left", 0, U32_MAX, BLK, false },
	{ "full batch", TBALLOON_BATCH_MAX, U32_MAX, BLK, true },
	{ "room at the limit", BLK, BROOM, BLK, true },
	{ "room one short", BLK, BROOM - 1, BLK, false },
	{ "no room", BLK, 0, BLK, false },
	{ "block of one page", 1, 4, 1, true },
	{ "block of u32 max", U32_MAX, U32_MAX, U32_MAX, false },
};

DESC(block_case)
KUNIT_ARRAY_PARAM(block, block_cases, block_case_desc);

static void tballoon_block_test(struct kunit *test)
{
	const struct block_case *c = test->param_value;

	KUNIT_EXPECT_EQ(test, tballoon_policy_use_block(c->left, c->room, c->block),
			c->use);
}

struct blocks_case {
	const char *desc;
	u32 left;
	u32 room;
	u32 block;
	u32 blocks;
};

static const struct blocks_case blocks_cases[] = {
	{ "no blocks", 4096, U32_MAX, 0, 0 },
	{ "nothing left", 0, U32_MAX, BLK, 0 },
	{ "less than a block", BLK - 1, U32_MAX, BLK, 0 },
	{ "one block", BLK, U32_MAX, BLK, 1 },
	{ "full batch", TBALLOON_BATCH_MAX, U32_MAX, BLK, TBALLOON_BATCH_MAX / BLK },
	{ "partial block at the end", 3 * BLK + 7, U32_MAX, BLK, 3 },
	{ "room at the limit", 8 * BLK, BROOM, BLK, 1 },
	{ "room one short", 8 * BLK, BROOM - 1, BLK, 0 },
	{ "room for two", 8 * BLK, BROOM + BLK, BLK, 2 },
	{ "room one short of two", 8 * BLK, BROOM + BLK - 1, BLK, 1 },
	{ "no room", 8 * BLK, 0, BLK, 0 },
	{ "block of one page", U32_MAX, U32_MAX, 1, U32_MAX - 3 },
	{ "block of u32 max", U32_MAX, U32_MAX, U32_MAX, 0 },
	{ "room near u32 max", U32_MAX, U32_MAX - 1, BLK, (U32_MAX - 1 - BROOM) / BLK + 1 },
};

DESC(blocks_case)
KUNIT_ARRAY_PARAM(blocks, blocks_cases, blocks_case_desc);

/* The count, and the same count by asking use_block() block by block. */
static void tballoon_blocks_test(struct kunit *test)
{
	const struct blocks_case *c = test->param_value;
	u32 left = c->left, room = c->room, k = 0;

	KUNIT_EXPECT_EQ(test, tballoon_policy_blocks(c->left, c->room, c->block),
			c->blocks);
	if (c->blocks > TBALLOON_BATCH_MAX)
		return;
	while (tballoon_policy_use_block(left, room, c->block)) {
		left -= c->block;
		room -= min(room, c->block);
		k++;
	}
	KUNIT_EXPECT_EQ(test, k, c->blocks);
}

static struct kunit_case tballoon_batch_test_cases[] = {
	KUNIT_CASE_PARAM(tballoon_batch_test, batch_gen_params),
	KUNIT_CASE_PARAM(tballoon_block_test, block_gen_params),
	KUNIT_CASE_PARAM(tballoon_blocks_test, blocks_gen_params),
	{}
};

static struct kunit_suite tballoon_batch_suite = {
	.name = "tballoon_policy_batch",
	.test_cases = tballoon_batch_test_cases,
};

/* ------------------------------------------------------------------------
 * tballoon_policy_paced_due, tballoon_policy_paced_time
 * ------------------------------------------------------------------------
 */

struct paced_case {
	const char *desc;
	u32 distance;
	u32 arg;	/* elapsed_ms for _due, pages for _time */
	u32 deadline_ms;
	u32 expect;
};

/* deadline 800 ms: the schedule ends at 700 ms; 4 s: at 3.9 s */
static const struct paced_case paced_due_cases[] = {
	{ "start", 1000, 0, 800, 0 },
	{ "half way", 1000, 350, 800, 500 },
	{ "horizon", 1000, 700, 800, 1000 },
	{ "deadline", 1000, 800, 800, 1000 },
	{ "long past", 1000, U32_MAX, 800, 1000 },
	{ "rounds down", 3, 233, 800, 0 },
	{ "deadline 1", 10, 1, 1, 10 },
	{ "deadline 0", 10, 0, 0, 0 },
	{ "no overflow", U32_MAX, MAXDL - 101, MAXDL, U32_MAX - 1194 },
	{ "nothing to do", 0, 100, 800, 0 },
	{ "4 s half way", 65536, 1950, 4000, 32768 },
	{ "4 s horizon", 65536, 3900, 4000, 65536 },
	{ "4 s before horizon", 65536, 3899, 4000, 65519 },
};

static const struct paced_case paced_time_cases[] = {
	{ "nothing", 1000, 0, 800, 0 },
	{ "half", 1000, 500, 800, 350 },
	{ "all", 1000, 1000, 800, 700 },
	{ "more than all", 1000, U32_MAX, 800, 700 },
	{ "rounds up", 3, 1, 800, 234 },
	{ "zero distance", 0, 5, 800, 0 },
	{ "no overflow", U32_MAX, U32_MAX - 1, MAXDL, MAXDL - 100 },
	{ "4 s all", 65536, 65536, 4000, 3900 },
	{ "4 s quarter", 65536, 16384, 4000, 975 },
};

/* tballoon_policy_pace_horizon: arg unused, distance unused */
static const struct paced_case pace_horizon_cases[] = {
	{ "deadline 0", 0, 0, 0, 1 },
	{ "deadline 1", 0, 0, 1, 1 },
	{ "deadline 7", 0, 0, 7, 7 },
	{ "deadline 8", 0, 0, 8, 7 },
	{ "799 ms: 1/8", 0, 0, 799, 700 },
	{ "800 ms: both", 0, 0, 800, 700 },
	{ "801 ms: 100 ms", 0, 0, 801, 701 },
	{ "4 s", 0, 0, 4000, 3900 },
	{ "max", 0, 0, MAXDL, MAXDL - 100 },
	{ "u32 max", 0, 0, U32_MAX, U32_MAX - 100 },
};

DESC(paced_case)
KUNIT_ARRAY_PARAM(paced_due, paced_due_cases, paced_case_desc);
KUNIT_ARRAY_PARAM(paced_time, paced_time_cases, paced_case_desc);
KUNIT_ARRAY_PARAM(pace_horizon, pace_horizon_cases, paced_case_desc);

static void tballoon_pace_horizon_test(struct kunit *test)
{
	const struct paced_case *c = test->param_value;

	KUNIT_EXPECT_EQ(test, tballoon_policy_pace_horizon(c->deadline_ms),
			c->expect);
}

static void tballoon_paced_due_test(struct kunit *test)
{
	const struct paced_case *c = test->param_value;

	KUNIT_EXPECT_EQ(test, tballoon_policy_paced_due(c->distance, c->arg,
							c->deadline_ms), c->expect);
}

static void tballoon_paced_time_test(struct kunit *test)
{
	const struct paced_case *c = test->param_value;

	KUNIT_EXPECT_EQ(test, tballoon_policy_paced_time(c->distance, c->arg,
							 c->deadline_ms), c->expect);
}

/* The schedule and its inverse agree: at paced_time(p), p pages are due. */
static void tballoon_paced_inverse_test(struct kunit *test)
{
	static const u32 distances[] = { 1, 3, 1000, 230400, U32_MAX };
	static const u32 deadlines[] = { 1, 20, 800, MAXDL };
	unsigned int i, j, k;

	for (i = 0; i < ARRAY_SIZE(distances); i++) {
		for (j = 0; j < ARRAY_SIZE(deadlines); j++) {
			for (k = 1; k <= 64; k++) {
				u32 d = distances[i], dl = deadlines[j];
				u32 p = (u32)div_u64((u64)d * k, 64) ?: 1;
				u32 t = tballoon_policy_paced_time(d, p, dl);

				KUNIT_EXPECT_GE(test,
						tballoon_policy_paced_due(d, t, dl), p);
				if (t)
					KUNIT_EXPECT_LT(test,
							tballoon_policy_paced_due(d, t - 1, dl), p);
			}
		}
	}
}

static struct kunit_case tballoon_paced_test_cases[] = {
	KUNIT_CASE_PARAM(tballoon_paced_due_test, paced_due_gen_params),
	KUNIT_CASE_PARAM(tballoon_paced_time_test, paced_time_gen_params),
	KUNIT_CASE_PARAM(tballoon_pace_horizon_test, pace_horizon_gen_params),
	KUNIT_CASE(tballoon_paced_inverse_test),
	{}
};

static struct kunit_suite tballoon_paced_suite = {
	.name = "tballoon_policy_paced",
	.test_cases = tballoon_paced_test_cases,
};

/* ------------------------------------------------------------------------
 * The engine's decisions: tballoon_policy_paced_batch, tballoon_policy_report,
 * tballoon_policy_interrupt
 * ------------------------------------------------------------------------
 */

struct paced_batch_case {
	const char *desc;
	struct tballoon_pace_in in;
	u32 n;
	u32 expect;
	u32 expect_wait;	/* 0: not set */
};

#define PACE(d, a, e, dl, r, g) { .distance = (d), .ahead = (a), .elapsed_ms = (e), \
				 .deadline_ms = (dl), .remaining_pages = (r), .granule = (g) }

/* deadline 800 ms: the schedule ends at 700 ms */
static const struct paced_batch_case paced_batch_cases[] = {
	{ "on schedule: what is due", PACE(1000, 0, 350, 800, 1000, 1), 4096, 500, 0 },
	{ "batch smaller than due", PACE(1000, 0, 350, 800, 1000, 1), 256, 256, 0 },
	{ "ahead: waits for a chunk", PACE(1000, 500, 350, 800, 500, 1), 4096, 0, 180 },
	{ "granule rounds down", PACE(1000, 0, 350, 800, 1000, 16), 4096, 496, 0 },
	{ "last pages at the horizon", PACE(1000, 900, 700, 800, 100, 1), 4096, 100, 0 },
	{ "last pages not due yet", PACE(1000, 900, 600, 800, 100, 1), 4096, 0, 100 },
	{ "start: nothing due", PACE(1000, 0, 0, 800, 1000, 1), 4096, 0, 180 },
	{ "past the deadline: all", PACE(1000, 0, U32_MAX, 800, 1000, 1), 4096, 1000, 0 },
	{ "no overflow", PACE(U32_MAX, 0, MAXDL, MAXDL, U32_MAX, 1), 4096, 4096, 0 },
};

DESC(paced_batch_case)
KUNIT_ARRAY_PARAM(paced_batch, paced_batch_cases, paced_batch_case_desc);

static void tballoon_paced_batch_test(struct kunit *test)
{
	const struct paced_batch_case *c = test->param_value;
	u32 wait = 0;

	KUNIT_EXPECT_EQ(test, tballoon_policy_paced_batch(&c->in, c->n, &wait), c->expect);
	KUNIT_EXPECT_EQ(test, wait, c->expect_wait);
}

struct report_case {
	const char *desc;
	bool timed;
	u32 pages, last;
	s64 since_ms;
	enum tballoon_report expect;
};

static const struct report_case report_cases[] = {
	{ "timed, unchanged", true, 100, 100, 1000, TBALLOON_REPORT_NONE },
	{ "standard, unchanged", false, 100, 100, 1000, TBALLOON_REPORT_NONE },
	{ "standard, changed: at once", false, 101, 100, 0, TBALLOON_REPORT_ACTUAL },
	{ "timed, changed, too soon", true, 101, 100, 49, TBALLOON_REPORT_NONE },
	{ "timed, changed, 50 ms", true, 101, 100, 50, TBALLOON_REPORT_RUNNING },
	{ "timed, shrank", true, 0, 100, 1000, TBALLOON_REPORT_RUNNING },
	{ "timed, clock behind", true, 101, 100, -5, TBALLOON_REPORT_NONE },
};

DESC(report_case)
KUNIT_ARRAY_PARAM(report, report_cases, report_case_desc);

static void tballoon_report_test(struct kunit *test)
{
	const struct report_case *c = test->param_value;

	KUNIT_EXPECT_EQ(test, tballoon_policy_report(c->timed, c->pages, c->last,
						     c->since_ms), c->expect);
}

static const struct tballoon_cmd next_inflate = { .cmd_id = 2, .op = TBALLOON_OP_INFLATE };
static const struct tballoon_cmd next_abort = { .cmd_id = 2, .op = TBALLOON_OP_ABORT };

struct interrupt_case {
	const char *desc;
	struct tballoon_interrupt_in in;
	u32 state;
	u32 reason;
};

#define INTR(rm, br, tm, ch, nx) { .removing = (rm), .broken = (br), .timed = (tm), \
				  .changed = (ch), .next = (nx) }

static const struct interrupt_case interrupt_cases[] = {
	{ "nothing", INTR(false, false, true, false, NULL),
	  TBALLOON_STATE_RUNNING, TBALLOON_REASON_NONE },
	{ "removal first", INTR(true, true, true, true, &next_abort),
	  TBALLOON_STATE_ABORTED, TBALLOON_REASON_REMOVED },
	{ "broken before a newer command", INTR(false, true, true, false, &next_abort),
	  TBALLOON_STATE_ABORTED, TBALLOON_REASON_DEVICE_ERROR },
	{ "standard: a change supersedes", INTR(false, false, false, true, NULL),
	  TBALLOON_STATE_ABORTED, TBALLOON_REASON_SUPERSEDED },
	{ "timed: a change alone goes on", INTR(false, false, true, true, NULL),
	  TBALLOON_STATE_RUNNING, TBALLOON_REASON_NONE },
	{ "timed: newer command", INTR(false, false, true, false, &next_inflate),
	  TBALLOON_STATE_ABORTED, TBALLOON_REASON_SUPERSEDED },
	{ "timed: host abort", INTR(false, false, true, false, &next_abort),
	  TBALLOON_STATE_ABORTED, TBALLOON_REASON_HOST_ABORT },
	{ "standard ignores next", INTR(false, false, false, false, &next_abort),
	  TBALLOON_STATE_RUNNING, TBALLOON_REASON_NONE },
};

DESC(interrupt_case)
KUNIT_ARRAY_PARAM(interrupt, interrupt_cases, interrupt_case_desc);

static void tballoon_interrupt_test(struct kunit *test)
{
	const struct interrupt_case *c = test->param_value;
	u32 reason = TBALLOON_REASON_NONE;

	KUNIT_EXPECT_EQ(test, tballoon_policy_interrupt(&c->in, &reason), c->state);
	KUNIT_EXPECT_EQ(test, reason, c->reason);
}

static struct kunit_case tballoon_engine_test_cases[] = {
	KUNIT_CASE_PARAM(tballoon_paced_batch_test, paced_batch_gen_params),
	KUNIT_CASE_PARAM(tballoon_report_test, report_gen_params),
	KUNIT_CASE_PARAM(tballoon_interrupt_test, interrupt_gen_params),
	{}
};

static struct kunit_suite tballoon_engine_suite = {
	.name = "tballoon_policy_engine",
	.test_cases = tballoon_engine_test_cases,
};

kunit_test_suites(&tballoon_validate_suite, &tballoon_stop_suite,
		  &tballoon_batch_suite, &tballoon_paced_suite,
		  &tballoon_engine_suite);

MODULE_IMPORT_NS(EXPORTED_FOR_KUNIT_TESTING);
MODULE_DESCRIPTION("KUnit tests for the timed virtio balloon policy");
MODULE_LICENSE("GPL");
