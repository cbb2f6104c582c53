/* SPDX-License-Identifier: GPL-2.0 */
/*
 * punch.h - the punch pool: worker threads that release guest memory ranges
 * (fallocate PUNCH_HOLE) off the event loop, and the order in which the
 * buffers whose ranges they released go back to the driver.
 *
 * A job is one driver buffer (an inflate PFN buffer or a free page report)
 * and the file ranges it asks to release. The event loop builds a job, adds
 * it to its queue's FIFO with tb_punch_submit() (after the state file
 * recorded the buffer), and collects finished jobs with tb_punch_take(),
 * which hands them over strictly in submission order per queue: a buffer
 * goes back only when it and every buffer before it on that queue are
 * released, so the used ring stays in ring order (a restarted daemon
 * resumes at the used index) and a report's pages return to the guest only
 * once the host has discarded them.
 *
 * Locking: pool->lock guards the work list, every job's progress fields
 * (@next, @left, @bytes, @errors), the busy files and the stop flag; workers
 * sleep on
 * pool->work_cond, tb_punch_drain() on pool->idle_cond. The per-queue FIFOs
 * and everything else belong to the event loop thread, the only caller of
 * every function here. Workers touch file descriptors only, never mapped
 * guest memory (no SIGBUS on them); the caller keeps the fds open until the
 * jobs using them are drained (before SET_MEM_TABLE, a ring stop or reset,
 * the end of a session). Workers learn of nothing else and need no signal.
 * Finished jobs are announced on @event_fd (an eventfd the loop polls).
 */
#ifndef TB_PUNCH_H
#define TB_PUNCH_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "mem.h"

#define TB_PUNCH_MAX_THREADS 16
#define TB_PUNCH_MAX_QUEUES 8

/* what a job's released bytes count as */
enum tb_punch_kind { TB_PUNCH_INFLATE, TB_PUNCH_REPORT };

struct tb_punch_range {
	int fd;
	uint64_t off;
	uint64_t len;
};

/**
 * struct tb_punch_job - one buffer and the ranges it releases
 * @queue, @head: where the buffer goes back (ring index, descriptor head)
 * @kind: what its bytes count as
 * @r, @nr: the ranges (@cap allocated)
 * @next: next range to hand to a worker (lock)
 * @left: ranges not released yet (lock); 0: the job is finished
 * @bytes, @errors: released bytes and failed punches (lock)
 */
struct tb_punch_job {
	unsigned int queue;
	uint16_t head;
	enum tb_punch_kind kind;
	struct tb_punch_range *r;
	unsigned int nr, cap;
	unsigned int next;
	unsigned int left;
	uint64_t bytes;
	uint64_t errors;
	struct tb_punch_job *fifo_next;	/* the queue's FIFO (event loop) */
	struct tb_punch_job *work_next;	/* the work list (lock) */
};

/**
 * struct tb_punch_pool - the threads and their work
 * @nthreads: worker threads running
 * @punch, @opaque: the release function (tb_mem_punch_fallocate; tests
 *	replace it), called by the workers without the lock
 * @event_fd: readable when jobs finished (nonblocking eventfd)
 * @inflight: submitted jobs not finished yet (lock)
 * @busy_fd, @nbusy: the files workers are punching now, one per worker at
 *	most (lock); a file is punched by one worker at a time (punch.c)
 */
struct tb_punch_pool {
	pthread_mutex_t lock;
	pthread_cond_t work_cond;
	pthread_cond_t idle_cond;
	pthread_t threads[TB_PUNCH_MAX_THREADS];
	unsigned int nthreads;
	bool stop;
	tb_punch_fn punch;
	void *opaque;
	int event_fd;
	struct tb_punch_job *work_head, *work_tail;
	unsigned int inflight;
	int busy_fd[TB_PUNCH_MAX_THREADS];
	unsigned int nbusy;
	struct {
		struct tb_punch_job *head, *tail;
	} fifo[TB_PUNCH_MAX_QUEUES];
	struct tb_punch_job *reaping;	/* taken, not handed over yet (event loop) */
};

/* the default number of threads for this host: one per CPU, 1..4 */
unsigned int tb_punch_default_threads(void);

/*
 * Start @nthreads (1..TB_PUNCH_MAX_THREADS) workers calling @punch. Returns
 * 0 or -errno (nothing left running). Call with the signals the loop takes
 * through signalfd blocked: the workers inherit the mask.
 */
int tb_punch_start(struct tb_punch_pool *p, unsigned int nthreads,
		   tb_punch_fn punch, void *opaque);

/* drain, stop and join the workers, free every job; idempotent */
void tb_punch_stop(struct tb_punch_pool *p);

/* a new empty job for buffer @head of @queue, NULL if out of memory */
struct tb_punch_job *tb_punch_job_new(unsigned int queue, uint16_t head,
				      enum tb_punch_kind kind);

/* a tb_punch_fn that appends a range to the job @opaque: 0 or -ENOMEM */
int tb_punch_job_add(void *opaque, int fd, uint64_t off, uint64_t len);

void tb_punch_job_free(struct tb_punch_job *job);

/* queue @job on its ring's FIFO and give its ranges to the workers */
void tb_punch_submit(struct tb_punch_pool *p, struct tb_punch_job *job);

/*
 * Take the finished jobs off the FIFOs, in order: each queue's up to its
 * first unfinished job, the queues one after the other. Returns them as a
 * list chained by @fifo_next, which the caller owns (NULL: none finished).
 * The caller counts them, records that durably, and only then gives the
 * buffers back (tb_serve_reap()).
 */
struct tb_punch_job *tb_punch_take(struct tb_punch_pool *p);

void tb_punch_job_free_list(struct tb_punch_job *list);

/*
 * tb_punch_take(), then @done for each job in order (it may push the
 * buffer), which is then freed. The rest of the list is @reaping while
 * @done runs (if @done does not return, a SIGBUS on the ring, the caller
 * frees the job at its head and goes on with the rest). Returns the bit
 * mask of queues that had jobs handed over.
 */
unsigned int tb_punch_reap(struct tb_punch_pool *p,
			   void (*done)(void *ctx, const struct tb_punch_job *job),
			   void *ctx);

/* wait until every submitted job is finished (they are reaped afterwards) */
void tb_punch_drain(struct tb_punch_pool *p);

/* drop the unfinished-or-not jobs of @queue after a drain (its ring is gone) */
void tb_punch_forget(struct tb_punch_pool *p, unsigned int queue);

/* jobs submitted and not yet reaped on @queue */
unsigned int tb_punch_pending(const struct tb_punch_pool *p, unsigned int queue);

#endif /* TB_PUNCH_H */
