// SPDX-License-Identifier: GPL-2.0
/*
 * test_punch.c - the punch pool: in-order hand-over per queue, results,
 * drain and stop with work in flight, real punches on a memfd.
 */
#include "tb_test.h"

#include <poll.h>
#include <pthread.h>
#include <sys/stat.h>

#include "mem.h"
#include "punch.h"

#define MiB (1ULL << 20)
#define GATED_FD 1000

/* punches of GATED_FD wait for the gate; fd FAIL_FD fails */
#define FAIL_FD 1001
struct gate {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool open;
	unsigned int calls;
};

static int punch_gated(void *opaque, int fd, uint64_t off, uint64_t len)
{
	struct gate *g = opaque;

	(void)off;
	(void)len;
	pthread_mutex_lock(&g->lock);
	g->calls++;
	while (fd == GATED_FD && !g->open)
		pthread_cond_wait(&g->cond, &g->lock);
	pthread_mutex_unlock(&g->lock);
	return fd == FAIL_FD ? -EIO : 0;
}

static void gate_init(struct gate *g)
{
	pthread_mutex_init(&g->lock, NULL);
	pthread_cond_init(&g->cond, NULL);
	g->open = false;
	g->calls = 0;
}

static void gate_open(struct gate *g)
{
	pthread_mutex_lock(&g->lock);
	g->open = true;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
}

/* the hand-over log */
struct reaped {
	unsigned int n;
	unsigned int queue[16];
	uint16_t head[16];
	uint64_t bytes[16];
	uint64_t errors[16];
};

static void record(void *ctx, const struct tb_punch_job *job)
{
	struct reaped *r = ctx;

	assert_true(r->n < 16);
	r->queue[r->n] = job->queue;
	r->head[r->n] = job->head;
	r->bytes[r->n] = job->bytes;
	r->errors[r->n] = job->errors;
	r->n++;
}

static struct tb_punch_job *job(unsigned int queue, uint16_t head, int fd, unsigned int nr)
{
	struct tb_punch_job *j = tb_punch_job_new(queue, head, TB_PUNCH_INFLATE);

	assert_non_null(j);
	for (unsigned int i = 0; i < nr; i++)
		assert_int_equal(tb_punch_job_add(j, fd, i * MiB, MiB), 0);
	return j;
}

/* wait (bounded) until the pool says a job finished */
static void wait_event(struct tb_punch_pool *p)
{
	struct pollfd pfd = { .fd = p->event_fd, .events = POLLIN };

	assert_int_equal(poll(&pfd, 1, 5000), 1);
}

static void test_start_refuses(void **state)
{
	struct tb_punch_pool p;
	struct gate g;

	(void)state;
	gate_init(&g);
	assert_int_equal(tb_punch_start(&p, 0, punch_gated, &g), -EINVAL);
	assert_int_equal(tb_punch_start(&p, TB_PUNCH_MAX_THREADS + 1, punch_gated, &g), -EINVAL);
	assert_int_equal(tb_punch_start(&p, 1, NULL, &g), -EINVAL);
	tb_punch_stop(&p);	/* a pool that never started: nothing to do */
	assert_true(tb_punch_default_threads() >= 1 && tb_punch_default_threads() <= 4);
}

/*
 * A later buffer whose punch finished first waits for the earlier one on
 * the same queue; another queue is not held up; a buffer with nothing to
 * punch goes at once.
 */
static void test_in_order_per_queue(void **state)
{
	struct tb_punch_pool p;
	struct reaped r = { 0 };
	struct gate g;

	(void)state;
	gate_init(&g);
	/* two workers wait at the gate, the third does the rest */
	assert_int_equal(tb_punch_start(&p, 3, punch_gated, &g), 0);
	tb_punch_submit(&p, job(0, 10, GATED_FD, 2));	/* held at the gate */
	tb_punch_submit(&p, job(0, 11, 3, 1));
	tb_punch_submit(&p, job(1, 20, 3, 0));		/* nothing to punch */
	tb_punch_submit(&p, job(2, 30, 4, 3));
	assert_int_equal(tb_punch_pending(&p, 0), 2);

	/* queue 1 at once; queue 2 when its three ranges are punched */
	while (r.n < 2) {
		wait_event(&p);
		tb_punch_reap(&p, record, &r);
	}
	assert_int_equal(r.n, 2);
	assert_int_equal(r.queue[0], 1);
	assert_int_equal(r.head[0], 20);
	assert_int_equal(r.queue[1], 2);
	assert_int_equal(r.head[1], 30);
	assert_int_equal(r.bytes[1], 3 * MiB);
	/* head 11 may be punched by now, but 10 is not: queue 0 waits */
	assert_int_equal(tb_punch_pending(&p, 0), 2);

	gate_open(&g);
	tb_punch_drain(&p);
	assert_int_equal(tb_punch_reap(&p, record, &r), 1U << 0);
	assert_int_equal(r.n, 4);
	assert_int_equal(r.head[2], 10);
	assert_int_equal(r.bytes[2], 2 * MiB);
	assert_int_equal(r.head[3], 11);
	assert_int_equal(r.bytes[3], MiB);
	assert_int_equal(tb_punch_pending(&p, 0), 0);
	assert_int_equal(g.calls, 6);
	/* nothing left: a reap hands over nothing */
	assert_int_equal(tb_punch_reap(&p, record, &r), 0);
	tb_punch_stop(&p);
	tb_punch_stop(&p);	/* idempotent */
}

static void test_errors_counted(void **state)
{
	struct tb_punch_pool p;
	struct reaped r = { 0 };
	struct tb_punch_job *j;
	struct gate g;

	(void)state;
	gate_init(&g);
	assert_int_equal(tb_punch_start(&p, 3, punch_gated, &g), 0);
	j = job(0, 1, 5, 2);
	assert_int_equal(tb_punch_job_add(j, FAIL_FD, 0, MiB), 0);
	tb_punch_submit(&p, j);
	tb_punch_drain(&p);
	tb_punch_reap(&p, record, &r);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.bytes[0], 2 * MiB);
	assert_int_equal(r.errors[0], 1);
	tb_punch_stop(&p);
}

/* stop with work in flight: the workers finish it, every job is freed */
static void test_stop_with_work(void **state)
{
	struct tb_punch_pool p;
	struct gate g;

	(void)state;
	gate_init(&g);
	g.open = true;
	assert_int_equal(tb_punch_start(&p, 2, punch_gated, &g), 0);
	for (unsigned int i = 0; i < 50; i++)
		tb_punch_submit(&p, job(i % 3, (uint16_t)i, 7, 4));
	tb_punch_stop(&p);
	assert_int_equal(g.calls, 200);
	assert_int_equal(p.event_fd, -1);
}

/* a queue's jobs dropped (its ring went away) after their punches ended */
static void test_forget(void **state)
{
	struct tb_punch_pool p;
	struct reaped r = { 0 };
	struct gate g;

	(void)state;
	gate_init(&g);
	g.open = true;
	assert_int_equal(tb_punch_start(&p, 1, punch_gated, &g), 0);
	tb_punch_submit(&p, job(0, 1, 7, 4));
	tb_punch_submit(&p, job(1, 2, 7, 1));
	tb_punch_forget(&p, 0);
	assert_int_equal(g.calls, 5);
	assert_int_equal(tb_punch_pending(&p, 0), 0);
	tb_punch_reap(&p, record, &r);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.queue[0], 1);
	tb_punch_stop(&p);
}

/* how many punches of each fd run at once: the most seen */
struct overlap {
	pthread_mutex_t lock;
	unsigned int now[2], most[2], all_now, all_most;
};

static int punch_overlap(void *opaque, int fd, uint64_t off, uint64_t len)
{
	struct overlap *o = opaque;
	unsigned int i = fd == 20;

	(void)off;
	(void)len;
	pthread_mutex_lock(&o->lock);
	if (++o->now[i] > o->most[i])
		o->most[i] = o->now[i];
	if (++o->all_now > o->all_most)
		o->all_most = o->all_now;
	pthread_mutex_unlock(&o->lock);
	usleep(2000);	/* long enough for the other threads to try */
	pthread_mutex_lock(&o->lock);
	o->now[i]--;
	o->all_now--;
	pthread_mutex_unlock(&o->lock);
	return 0;
}

/*
 * The kernel serialises punches of one file on its inode lock, and a second
 * thread punching the same file only spins on that lock (bench/README.md:
 * 0.36 CPU s/GiB with two threads against 0.29 s with one). So one file is
 * punched by one thread at a time, and different files (NUMA nodes, several
 * RAM regions) in parallel.
 */
static void test_one_thread_per_file(void **state)
{
	struct tb_punch_pool p;
	struct reaped r = { 0 };
	struct overlap o = { .lock = PTHREAD_MUTEX_INITIALIZER };

	(void)state;
	assert_int_equal(tb_punch_start(&p, 4, punch_overlap, &o), 0);
	for (unsigned int i = 0; i < 8; i++)
		tb_punch_submit(&p, job(i % 2, (uint16_t)i, i < 4 ? 10 : 20, 4));
	tb_punch_drain(&p);
	tb_punch_reap(&p, record, &r);
	assert_int_equal(r.n, 8);
	for (unsigned int i = 0; i < 8; i++)
		assert_int_equal(r.bytes[i], 4 * MiB);
	assert_int_equal(o.most[0], 1);
	assert_int_equal(o.most[1], 1);
	/* the two files overlapped: the work of fd 20 did not wait behind fd 10's */
	assert_int_equal(o.all_most, 2);
	tb_punch_stop(&p);
}

struct stopper {
	struct tb_punch_pool *p;
	volatile bool done;
};

static void *stop_thread(void *arg)
{
	struct stopper *s = arg;

	tb_punch_stop(s->p);
	s->done = true;
	return NULL;
}

/*
 * Stop while two workers wait for the file a third is punching: when the
 * last range is done nobody is left to hand work to, and the waiting
 * workers must still wake up and leave (they slept for good, and
 * tb_punch_stop() with them).
 */
static void test_stop_with_workers_waiting_for_a_file(void **state)
{
	struct tb_punch_pool p;
	struct stopper s = { .p = &p };
	pthread_t t;
	struct gate g;

	(void)state;
	gate_init(&g);
	assert_int_equal(tb_punch_start(&p, 3, punch_gated, &g), 0);
	tb_punch_submit(&p, job(0, 1, GATED_FD, 2));
	for (int i = 0; i < 500 && !g.calls; i++)
		usleep(1000);
	assert_int_equal(g.calls, 1);
	usleep(50000);	/* the other two find the file busy and sleep */
	assert_int_equal(pthread_create(&t, NULL, stop_thread, &s), 0);
	usleep(50000);
	gate_open(&g);
	for (int i = 0; i < 5000 && !s.done; i++)
		usleep(1000);
	assert_true(s.done);
	pthread_join(t, NULL);
	assert_int_equal(g.calls, 2);
}

/* real fallocate from several threads: the memfd's pages are gone */
static void test_real_punch(void **state)
{
	struct tb_punch_pool p;
	struct reaped r = { 0 };
	struct stat st;
	size_t size = 16 * MiB;
	int fd = tb_test_memfd(size);
	uint8_t *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	(void)state;
	assert_true(m != MAP_FAILED);
	memset(m, 1, size);
	assert_int_equal(tb_punch_start(&p, 4, tb_mem_punch_fallocate, NULL), 0);
	for (unsigned int i = 0; i < 4; i++) {
		struct tb_punch_job *j = tb_punch_job_new(0, (uint16_t)i, TB_PUNCH_REPORT);

		assert_non_null(j);
		for (unsigned int k = 0; k < 3; k++)
			assert_int_equal(tb_punch_job_add(j, fd, (i * 4 + k) * MiB, MiB), 0);
		tb_punch_submit(&p, j);
	}
	tb_punch_drain(&p);
	tb_punch_reap(&p, record, &r);
	assert_int_equal(r.n, 4);
	for (unsigned int i = 0; i < 4; i++) {
		assert_int_equal(r.head[i], i);
		assert_int_equal(r.bytes[i], 3 * MiB);
	}
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal((uint64_t)st.st_blocks * 512, 4 * MiB);
	assert_int_equal(m[0], 0);
	assert_int_equal(m[3 * MiB], 1);
	tb_punch_stop(&p);
	munmap(m, size);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		TB_TEST("punch", test_start_refuses),
		TB_TEST("punch", test_in_order_per_queue),
		TB_TEST("punch", test_errors_counted),
		TB_TEST("punch", test_stop_with_work),
		TB_TEST("punch", test_forget),
		TB_TEST("punch", test_one_thread_per_file),
		TB_TEST("punch", test_stop_with_workers_waiting_for_a_file),
		TB_TEST("punch", test_real_punch),
	};

	return tb_test_run("punch", tests);
}
