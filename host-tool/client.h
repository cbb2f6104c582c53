/* SPDX-License-Identifier: GPL-2.0 */
/*
 * client.h - the control-socket client subcommands and the exit codes.
 */
#ifndef TB_CLIENT_H
#define TB_CLIENT_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

/* process exit codes (documented in --help and the man page) */
enum tb_exit {
	TB_EXIT_OK = 0,		/* done, or command accepted without --wait */
	TB_EXIT_ERROR = 1,	/* error (connection, refused by the host) */
	TB_EXIT_USAGE = 2,	/* bad command line */
	TB_EXIT_DEADLINE = 3,	/* deadline passed before the target */
	TB_EXIT_PRESSURE = 4,	/* the guest stopped to protect itself */
	TB_EXIT_ABORTED = 5,	/* aborted (host abort, superseded, removed) */
	TB_EXIT_REJECTED = 6,	/* the guest rejected the command */
	TB_EXIT_TIMEOUT = 7,	/* no outcome within deadline + grace */
	TB_EXIT_NOT_READY = 8,	/* not ready yet, worth retrying: no front-end,
				 * driver not ready, guest RAM or statistics
				 * not known yet (wait --ready waits for it) */
	TB_EXIT_INTERRUPTED = 130,	/* --wait or watch interrupted (SIGINT,
					 * SIGTERM): the command goes on */
};

/* a --wait that heard nothing from the guest this long says it is waiting */
#define TB_QUIET_MS 2000

/* control socket when neither -c nor TBALLOON_CONTROL is given */
#define TB_DEFAULT_CONTROL "/run/tballoon.sock"

/* options shared by every client subcommand */
struct tb_client_opts {
	const char *control;
	bool json;
};

/* a balloon move request as parsed from the command line */
struct tb_move_opts {
	const char *op;		/* "inflate", "deflate", or "set": either, by
				 * where the balloon is */
	int64_t guest_pages;	/* set --guest-size: guest memory after it, in
				 * pages (the target is RAM - this), else -1 */
	uint64_t target_pages;
	uint64_t deadline_ms;
	uint64_t floor_pages;
	bool paced;
	bool gentle;
	bool wait;
	uint64_t grace_ms;
	int target_pct;		/* 0..10000: --to N% of guest RAM in hundredths
				 * of a percent (12.5% is 1250), else -1 */
	int floor_pct;		/* same for --floor */
};

int tb_client_status(const struct tb_client_opts *o);
int tb_client_abort(const struct tb_client_opts *o);
int tb_client_move(const struct tb_client_opts *o, const struct tb_move_opts *m);
int tb_client_watch(const struct tb_client_opts *o);
/* every event as it comes (NDJSON with -j) until SIGINT/SIGTERM */
int tb_client_watch_follow(const struct tb_client_opts *o);
int tb_client_stats(const struct tb_client_opts *o);
/* wait until the device is connected and its driver ready, or @timeout_ms */
int tb_client_wait_ready(const struct tb_client_opts *o, uint64_t timeout_ms);

/* exit code for a terminal state name ("done", "deadline", ...) */
int tb_exit_for_state(const char *state);

/* one print path: the status object as JSON (one line) or as text */
void tb_print_status(json_object *status, bool json);

#endif /* TB_CLIENT_H */
