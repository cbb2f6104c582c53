// SPDX-License-Identifier: GPL-2.0
/*
 * test_parse.c - SIZE and DUR parsing, byte formatting.
 */
#include <stdbool.h>

#include "tb_test.h"
#include "parse.h"

struct size_case {
	const char *in;
	int rc;
	uint64_t pages;
};

static const struct size_case size_cases[] = {
	{ "512M", 0, 131072 },
	{ "1G", 0, 262144 },
	{ "1g", 0, 262144 },
	{ "1GiB", 0, 262144 },
	{ "1GB", 0, 262144 },
	{ "4096K", 0, 1024 },
	{ "4096", 0, 1 },
	{ "8192B", 0, 2 },
	{ "0", 0, 0 },
	{ "10p", 0, 10 },
	{ "0p", 0, 0 },
	{ "2T", 0, 536870912 },
	{ "1000", -1, 0 },		/* not a multiple of 4 KiB */
	{ "1K", -1, 0 },
	{ "1.5G", 0, 393216 },
	{ "0.5M", 0, 128 },
	{ "1.25M", 0, 320 },
	{ "1.001M", -1, 0 },		/* 1049624.576 bytes */
	{ "1.5K", -1, 0 },		/* 1536 bytes: not a multiple of 4 KiB */
	{ "1.5p", -1, 0 },		/* pages are whole */
	{ "1.5", -1, 0 },
	{ "1.", -1, 0 },
	{ ".5G", -1, 0 },
	{ "0x1000", 0, 1 },
	{ "0X2000", 0, 2 },
	{ "0x10M", 0, 4096 },
	{ "0x", -1, 0 },
	{ "0x1.8G", -1, 0 },
	{ "1.0000000001G", -1, 0 },	/* more than 9 decimals */
	{ "", -1, 0 },
	{ "-1G", -1, 0 },
	{ " 1G", -1, 0 },
	{ "1G ", -1, 0 },
	{ "1X", -1, 0 },
	{ "1P", -1, 0 },		/* p is pages, lower case only */
	{ "G", -1, 0 },
	{ "99999999999999999999", -1, 0 },
	{ "16777216T", -1, 0 },	/* overflows 64 bits */
};

static void test_size_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < TB_ARRAY_SIZE(size_cases); i++) {
		const char *why = NULL;
		uint64_t pages = 12345;
		int rc = tb_parse_size_pages(size_cases[i].in, &pages, &why);

		if (rc != size_cases[i].rc)
			fail_msg("size '%s': rc %d, want %d", size_cases[i].in, rc,
				 size_cases[i].rc);
		if (rc == 0)
			assert_int_equal(pages, size_cases[i].pages);
		else
			assert_non_null(why);
	}
}

struct dur_case {
	const char *in;
	int rc;
	uint64_t ms;
};

static const struct dur_case dur_cases[] = {
	{ "20ms", 0, 20 },
	{ "2s", 0, 2000 },
	{ "1m", 0, 60000 },
	{ "1h", 0, 3600000 },
	{ "500", 0, 500 },
	{ "0", 0, 0 },
	{ "", -1, 0 },
	{ "s", -1, 0 },
	{ "5x", -1, 0 },
	{ "1.5s", 0, 1500 },
	{ "0.25s", 0, 250 },
	{ "1m30s", 0, 90000 },
	{ "1h2m3s4ms", 0, 3723004 },
	{ "1H", 0, 3600000 },
	{ "30S", 0, 30000 },
	{ "250MS", 0, 250 },
	{ "1.5ms", -1, 0 },		/* not whole milliseconds */
	{ "1m30", -1, 0 },		/* a part without its unit */
	{ "30s1m", -1, 0 },		/* smallest unit first */
	{ "1s1s", -1, 0 },		/* a unit twice */
	{ "1.5", -1, 0 },
	{ "-2s", -1, 0 },
	{ "2 s", -1, 0 },
	{ "18446744073709551615h", -1, 0 },
};

static void test_duration_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < TB_ARRAY_SIZE(dur_cases); i++) {
		const char *why = NULL;
		uint64_t ms = 12345;
		int rc = tb_parse_duration_ms(dur_cases[i].in, &ms, &why);

		if (rc != dur_cases[i].rc)
			fail_msg("duration '%s': rc %d, want %d", dur_cases[i].in, rc,
				 dur_cases[i].rc);
		if (rc == 0)
			assert_int_equal(ms, dur_cases[i].ms);
	}
}

static void test_null_input(void **state)
{
	const char *why;
	uint64_t v;

	(void)state;
	assert_int_equal(tb_parse_size_pages(NULL, &v, &why), -1);
	assert_int_equal(tb_parse_duration_ms(NULL, &v, &why), -1);
}

static void test_format_bytes(void **state)
{
	char b[32];

	(void)state;
	tb_format_bytes(b, sizeof(b), 12);
	assert_string_equal(b, "12 B");
	tb_format_bytes(b, sizeof(b), 512LL << 20);
	assert_string_equal(b, "512.0 MiB");
	tb_format_bytes(b, sizeof(b), 3LL << 29);
	assert_string_equal(b, "1.5 GiB");
	tb_format_bytes(b, sizeof(b), -(4LL << 10));
	assert_string_equal(b, "-4.0 KiB");
}

static void test_percent(void **state)
{
	static const struct { const char *in; int rc; int pct; bool why; } t[] = {
		{ "25%", 0, 2500, false }, { "0%", 0, 0, false }, { "100%", 0, 10000, false },
		{ "101%", -1, 0, true }, { "%", -1, 0, true }, { "-5%", -1, 0, true },
		{ "2.5%", 0, 250, false }, { "12.25%", 0, 1225, false },
		{ "12.125%", -1, 0, true }, { "100.5%", -1, 0, true },
		{ "25", -1, 0, false }, { "1G", -1, 0, false },
		{ "", -1, 0, false },
	};

	(void)state;
	for (size_t i = 0; i < TB_ARRAY_SIZE(t); i++) {
		const char *why = "unset";
		uint32_t pct = 7;

		assert_int_equal(tb_parse_percent(t[i].in, &pct, &why), t[i].rc);
		if (!t[i].rc)
			assert_int_equal(pct, (uint32_t)t[i].pct);
		else
			assert_true(t[i].why == (why != NULL));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		TB_TEST("parse", test_size_table),
		TB_TEST("parse", test_duration_table),
		TB_TEST("parse", test_null_input),
		TB_TEST("parse", test_format_bytes),
		TB_TEST("parse", test_percent),
	};

	return tb_test_run("parse", tests);
}
