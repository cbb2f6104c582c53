/* SPDX-License-Identifier: GPL-2.0 */
/*
 * tb_test.h - shared helpers for the cmocka unit tests.
 */
#ifndef TB_TEST_H
#define TB_TEST_H

#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <errno.h>
#include <fcntl.h>
#include <cmocka.h>

#include "util.h"

/* a memfd of @size bytes (sparse), sealed against resizing as QEMU's are */
static inline int tb_test_memfd(size_t size)
{
	int fd = memfd_create("tb-test", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
	return fd;
}

/* the fd is closed (the dispatcher must not leak descriptors) */
static inline int tb_test_fd_closed(int fd)
{
	return fcntl(fd, F_GETFD) < 0;
}

/* a case named "suite: function" so TAP lines say where they come from */
#define TB_TEST_FX(suite, fn, setup, teardown) \
	{ suite ": " #fn, fn, setup, teardown, NULL }
#define TB_TEST(suite, fn) TB_TEST_FX(suite, fn, NULL, NULL)

/* run a group quietly (warnings about hostile input are expected) */
#define tb_test_run(name, tests) \
	(tb_log_level = getenv("TB_TEST_VERBOSE") ? TB_LOG_DEBUG : -1, \
	 cmocka_run_group_tests_name(name, tests, NULL, NULL))

#endif /* TB_TEST_H */
