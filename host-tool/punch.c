// SPDX-License-Identifier: GPL-2.0
/*
 * punch.c - the punch pool (punch.h): workers, the work list, in-order
 * hand-over of finished buffers.
 *
 * Workers take single ranges, not whole jobs, so the ranges of one large
 * buffer spread over every thread. One memory file is punched by one
 * worker at a time: the kernel serialises punches of one shmem or hugetlbfs
 * file on its inode lock, and a second thread punching it would only spin
 * on that lock (make bench-punch of 2026-12-03: the daemon took 0.36 CPU
 * s/GiB with two threads on one memfd, 0.29 s with one; bench/README.md).
 * A worker therefore takes the first range, in submission order, whose
 * file no other worker is punching; several memory files (one per NUMA
 * node) punch in parallel, and a worker that finds only busy files sleeps
 * until one is released.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "punch.h"
#include "util.h"

unsigned int tb_punch_default_threads(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	/*
	 * make bench-punch on 2 CPUs (bench/README.md): 2 threads inflated
	 * 1 GiB in 0.72 s against 1.02 s with 1 and 1.23 s in the loop, and
	 * kept the loop's longest pause at 9.6 ms against 20-25 ms
	 */
	if (n < 1)
		return 1;
	return n > 4 ? 4 : (unsigned int)n;
}

static void tb_punch_finish_locked(struct tb_punch_pool *p, struct tb_punch_job *job)
{
	uint64_t one = 1;
	ssize_t rc;

	(void)job;
	p->inflight--;
	if (!p->inflight)
		pthread_cond_broadcast(&p->idle_cond);
	/* a full counter still wakes the loop: EAGAIN is fine */
	rc = write(p->event_fd, &one, sizeof(one));
	(void)rc;
}

/* is a worker punching @fd now? (lock) */
static bool tb_punch_fd_busy_locked(const struct tb_punch_pool *p, int fd)
{
	for (unsigned int i = 0; i < p->nbusy; i++)
		if (p->busy_fd[i] == fd)
			return true;
	return false;
}

/*
 * Take the first range, in submission order, of a file no worker is
 * punching, mark its file busy and return its job; a job whose ranges are
 * all handed out leaves the work list. NULL: no such range (lock).
 */
static struct tb_punch_job *tb_punch_pick_locked(struct tb_punch_pool *p,
						 struct tb_punch_range *r)
{
	struct tb_punch_job *job, *prev = NULL;

	for (job = p->work_head; job; prev = job, job = job->work_next) {
		if (tb_punch_fd_busy_locked(p, job->r[job->next].fd))
			continue;
		*r = job->r[job->next++];
		if (job->next == job->nr) {
			if (prev)
				prev->work_next = job->work_next;
			else
				p->work_head = job->work_next;
			if (p->work_tail == job)
				p->work_tail = prev;
		}
		/* at most one busy file per worker: nbusy < nthreads here */
		p->busy_fd[p->nbusy++] = r->fd;
		return job;
	}
	return NULL;
}

/*
 * @fd is free again: wake a worker that may be waiting for it, or, once
 * stopping and nothing is left to hand out, every worker still asleep
 * (they waited for a busy file and must now leave) (lock)
 */
static void tb_punch_release_fd_locked(struct tb_punch_pool *p, int fd)
{
	for (unsigned int i = 0; i < p->nbusy; i++) {
		if (p->busy_fd[i] == fd) {
			p->busy_fd[i] = p->busy_fd[--p->nbusy];
			break;
		}
	}
	if (p->work_head)
		pthread_cond_signal(&p->work_cond);
	else if (p->stop)
		pthread_cond_broadcast(&p->work_cond);
}

static void *tb_punch_worker(void *arg)
{
	struct tb_punch_pool *p = arg;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		struct tb_punch_job *job;
		struct tb_punch_range r;
		int rc;

		/* at stop the work left is finished first */
		while (!(job = tb_punch_pick_locked(p, &r)) && !(p->stop && !p->work_head))
			pthread_cond_wait(&p->work_cond, &p->lock);
		if (!job)
			break;	/* stop, and nothing left */
		pthread_mutex_unlock(&p->lock);
		rc = p->punch(p->opaque, r.fd, r.off, r.len);
		pthread_mutex_lock(&p->lock);
		tb_punch_release_fd_locked(p, r.fd);
		if (rc < 0) {
			job->errors++;
			tb_warn("punching %llu bytes at fd offset 0x%llx failed: %s",
				(unsigned long long)r.len, (unsigned long long)r.off,
				strerror(-rc));
		} else {
			job->bytes += r.len;
		}
		if (!--job->left)
			tb_punch_finish_locked(p, job);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

int tb_punch_start(struct tb_punch_pool *p, unsigned int nthreads,
		   tb_punch_fn punch, void *opaque)
{
	int rc;

	memset(p, 0, sizeof(*p));
	p->event_fd = -1;
	if (!nthreads || nthreads > TB_PUNCH_MAX_THREADS || !punch)
		return -EINVAL;
	p->punch = punch;
	p->opaque = opaque;
	p->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (p->event_fd < 0)
		return -errno;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->work_cond, NULL);
	pthread_cond_init(&p->idle_cond, NULL);
	for (unsigned int i = 0; i < nthreads; i++) {
		rc = pthread_create(&p->threads[i], NULL, tb_punch_worker, p);
		if (rc) {
			tb_punch_stop(p);
			return -rc;
		}
		p->nthreads++;
	}
	return 0;
}

void tb_punch_stop(struct tb_punch_pool *p)
{
	if (p->event_fd < 0)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_broadcast(&p->work_cond);
	pthread_mutex_unlock(&p->lock);
	/* the workers finish what was submitted, then leave */
	for (unsigned int i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	p->nthreads = 0;
	for (unsigned int q = 0; q < TB_PUNCH_MAX_QUEUES; q++)
		tb_punch_forget(p, q);
	tb_punch_job_free_list(p->reaping);
	p->reaping = NULL;
	pthread_cond_destroy(&p->idle_cond);
	pthread_cond_destroy(&p->work_cond);
	pthread_mutex_destroy(&p->lock);
	tb_close_fd(&p->event_fd);
}

struct tb_punch_job *tb_punch_job_new(unsigned int queue, uint16_t head,
				      enum tb_punch_kind kind)
{
	struct tb_punch_job *job = calloc(1, sizeof(*job));

	if (job) {
		job->queue = queue;
		job->head = head;
		job->kind = kind;
	}
	return job;
}

int tb_punch_job_add(void *opaque, int fd, uint64_t off, uint64_t len)
{
	struct tb_punch_job *job = opaque;

	if (job->nr == job->cap) {
		unsigned int cap = job->cap ? job->cap * 2 : 8;
		struct tb_punch_range *r = reallocarray(job->r, cap, sizeof(*r));

		if (!r)
			return -ENOMEM;
		job->r = r;
		job->cap = cap;
	}
	job->r[job->nr++] = (struct tb_punch_range){ .fd = fd, .off = off, .len = len };
	return 0;
}

void tb_punch_job_free(struct tb_punch_job *job)
{
	if (job)
		free(job->r);
	free(job);
}

void tb_punch_submit(struct tb_punch_pool *p, struct tb_punch_job *job)
{
	unsigned int q = job->queue;

	job->fifo_next = NULL;
	if (p->fifo[q].tail)
		p->fifo[q].tail->fifo_next = job;
	else
		p->fifo[q].head = job;
	p->fifo[q].tail = job;

	pthread_mutex_lock(&p->lock);
	job->next = 0;
	job->left = job->nr;
	if (job->nr) {
		p->inflight++;
		job->work_next = NULL;
		if (p->work_tail)
			p->work_tail->work_next = job;
		else
			p->work_head = job;
		p->work_tail = job;
		if (job->nr > 1)
			pthread_cond_broadcast(&p->work_cond);
		else
			pthread_cond_signal(&p->work_cond);
	}
	pthread_mutex_unlock(&p->lock);
}

struct tb_punch_job *tb_punch_take(struct tb_punch_pool *p)
{
	struct tb_punch_job *list = NULL, **tail = &list;
	uint64_t cnt;

	/* clear the wake-up first: a job finishing from here on wakes again */
	if (read(p->event_fd, &cnt, sizeof(cnt)) < 0 && errno != EAGAIN)
		tb_dbg("punch: eventfd read: %s", strerror(errno));
	pthread_mutex_lock(&p->lock);
	for (unsigned int q = 0; q < TB_PUNCH_MAX_QUEUES; q++) {
		struct tb_punch_job *job;

		while ((job = p->fifo[q].head) && !job->left) {
			p->fifo[q].head = job->fifo_next;
			if (!p->fifo[q].head)
				p->fifo[q].tail = NULL;
			job->fifo_next = NULL;
			*tail = job;
			tail = &job->fifo_next;
		}
	}
	pthread_mutex_unlock(&p->lock);
	return list;
}

void tb_punch_job_free_list(struct tb_punch_job *list)
{
	while (list) {
		struct tb_punch_job *next = list->fifo_next;

		tb_punch_job_free(list);
		list = next;
	}
}

unsigned int tb_punch_reap(struct tb_punch_pool *p,
			   void (*done)(void *ctx, const struct tb_punch_job *job),
			   void *ctx)
{
	struct tb_punch_job *job;
	unsigned int mask = 0;

	p->reaping = tb_punch_take(p);
	while ((job = p->reaping)) {
		done(ctx, job);
		mask |= 1U << job->queue;
		p->reaping = job->fifo_next;
		tb_punch_job_free(job);
	}
	return mask;
}

void tb_punch_drain(struct tb_punch_pool *p)
{
	pthread_mutex_lock(&p->lock);
	while (p->inflight)
		pthread_cond_wait(&p->idle_cond, &p->lock);
	pthread_mutex_unlock(&p->lock);
}

void tb_punch_forget(struct tb_punch_pool *p, unsigned int queue)
{
	struct tb_punch_job *job, *next;

	tb_punch_drain(p);
	for (job = p->fifo[queue].head; job; job = next) {
		next = job->fifo_next;
		tb_punch_job_free(job);
	}
	p->fifo[queue].head = p->fifo[queue].tail = NULL;
}

unsigned int tb_punch_pending(const struct tb_punch_pool *p, unsigned int queue)
{
	unsigned int n = 0;

	for (const struct tb_punch_job *job = p->fifo[queue].head; job; job = job->fifo_next)
		n++;
	return n;
}
