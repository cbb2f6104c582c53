/* SPDX-License-Identifier: GPL-2.0 */
/*
 * conn.h - one client connection to a QMP-style control socket (the
 * protocol of ctl.h: `tballoon serve`'s control socket and `tballoon
 * balance`'s): connect, read the greeting, negotiate capabilities, send a
 * request and read its response, skipping the events in between.
 *
 * Blocking, with every wait bounded by the connection's timeout. One
 * connection per caller, no locking; errors go to stderr unless quiet.
 */
#ifndef TB_CONN_H
#define TB_CONN_H

#include <json-c/json.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* a response that does not come within this is a dead peer (default) */
#define TB_CONN_TIMEOUT_MS 5000

struct tb_conn {
	int fd;
	char *buf;
	size_t len;
	size_t cap;
	/* the error class of the last refused request ("" if none) */
	char err_class[32];
	/* how long one response may take (0: TB_CONN_TIMEOUT_MS) */
	uint64_t timeout_ms;
};

/*
 * Set (by a signal handler) to end a wait early: tb_conn_read() then
 * returns -2 when its poll is interrupted.
 */
extern volatile sig_atomic_t tb_conn_interrupted;

/*
 * Connect to @path, read the greeting, send qmp_capabilities. 0, or -1
 * (message on stderr unless @quiet; the connection is closed). _t: each
 * response may take at most @timeout_ms (0: the default).
 */
int tb_conn_open_t(struct tb_conn *c, const char *path, bool quiet, uint64_t timeout_ms);
int tb_conn_open_q(struct tb_conn *c, const char *path, bool quiet);
int tb_conn_open(struct tb_conn *c, const char *path);
void tb_conn_close(struct tb_conn *c);

/* one request object as a line; 0 or -1 */
int tb_conn_send(struct tb_conn *c, json_object *req);

/*
 * Next JSON object from the server, waiting until @deadline_ms (monotonic;
 * 0 = forever). 1 with *out, 0 on timeout, -1 on error or EOF, -2 when
 * interrupted (tb_conn_interrupted).
 */
int tb_conn_read(struct tb_conn *c, json_object **out, uint64_t deadline_ms);

/*
 * Execute @name with @args (taken) and return the "return" value (caller
 * owns it), or NULL after printing the error (@what names the request; the
 * error's class is in err_class). Events before the response are skipped.
 */
json_object *tb_conn_execute(struct tb_conn *c, const char *name, json_object *args,
			     const char *what);

/* @key of a response object, or NULL; and a boolean @key (false if absent) */
json_object *tb_jobj(json_object *o, const char *key);
bool tb_jbool(json_object *o, const char *key);

#endif /* TB_CONN_H */
