// SPDX-License-Identifier: GPL-2.0
/*
 * conn.c - one client connection to a control socket (conn.h): connect,
 * greeting, capabilities, a request and its response, events in between.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "conn.h"
#include "util.h"

volatile sig_atomic_t tb_conn_interrupted;

static uint64_t tb_conn_timeout(const struct tb_conn *c)
{
	return c->timeout_ms ? c->timeout_ms : TB_CONN_TIMEOUT_MS;
}

void tb_conn_close(struct tb_conn *c)
{
	tb_close_fd(&c->fd);
	free(c->buf);
	c->buf = NULL;
}

/*
 * Next JSON object from the server, waiting until @deadline_ms (monotonic;
 * 0 = forever). Returns 1 with *out, 0 on timeout, -1 on error or EOF.
 */
int tb_conn_read(struct tb_conn *c, json_object **out, uint64_t deadline_ms)
{
	for (;;) {
		char *nl = c->len ? memchr(c->buf, '\n', c->len) : NULL;

		if (nl) {
			size_t ll = (size_t)(nl - c->buf);
			json_tokener *tok = json_tokener_new();
			json_object *o = json_tokener_parse_ex(tok, c->buf, (int)ll);
			bool ok = o && json_tokener_get_error(tok) == json_tokener_success;

			json_tokener_free(tok);
			memmove(c->buf, nl + 1, c->len - ll - 1);
			c->len -= ll + 1;
			if (!ok || !json_object_is_type(o, json_type_object)) {
				json_object_put(o);
				fprintf(stderr, "tballoon: malformed message from the server\n");
				return -1;
			}
			*out = o;
			return 1;
		}

		int timeout = -1;
		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
		ssize_t n;

		if (deadline_ms) {
			uint64_t now = tb_now_ms();

			if (now >= deadline_ms)
				return 0;
			timeout = (int)(deadline_ms - now > 1000000 ? 1000000 : deadline_ms - now);
		}
		n = poll(&pfd, 1, timeout);
		if (n < 0 && errno == EINTR && tb_conn_interrupted)
			return -2;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			continue;	/* re-check the deadline */
		if (c->cap - c->len < 4096) {
			size_t cap = c->cap ? c->cap * 2 : 16384;
			char *p;

			if (cap > (64U << 20))
				return -1;
			p = realloc(c->buf, cap);
			if (!p)
				return -1;
			c->buf = p;
			c->cap = cap;
		}
		n = read(c->fd, c->buf + c->len, c->cap - c->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "tballoon: the server closed the connection\n");
			return -1;
		}
		c->len += (size_t)n;
	}
}

/*
 * Connect, read the greeting and negotiate capabilities (QMP's
 * qmp_capabilities); errors on stderr unless @quiet.
 */
int tb_conn_open_t(struct tb_conn *c, const char *path, bool quiet, uint64_t timeout_ms)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	json_object *g = NULL;

	c->fd = -1;
	c->buf = NULL;
	c->len = c->cap = 0;
	c->err_class[0] = 0;
	c->timeout_ms = timeout_ms;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "tballoon: %s: path too long\n", path);
		return -1;
	}
	strcpy(sa.sun_path, path);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (!quiet)
			fprintf(stderr, "tballoon: cannot connect to %s: %s\n", path,
				strerror(errno));
		tb_conn_close(c);
		return -1;
	}
	if (tb_conn_read(c, &g, tb_now_ms() + tb_conn_timeout(c)) <= 0 ||
	    !json_object_object_get_ex(g, "QMP", NULL)) {
		json_object *e;

		if (g && json_object_object_get_ex(g, "error", &e))
			fprintf(stderr, "tballoon: %s: %s\n", path,
				json_object_get_string(json_object_object_get(e, "desc")));
		else
			fprintf(stderr, "tballoon: %s: no greeting from the server\n", path);
		json_object_put(g);
		tb_conn_close(c);
		return -1;
	}
	json_object_put(g);
	g = tb_conn_execute(c, "qmp_capabilities", NULL, "qmp_capabilities");
	if (!g) {
		tb_conn_close(c);
		return -1;
	}
	json_object_put(g);
	return 0;
}

int tb_conn_open_q(struct tb_conn *c, const char *path, bool quiet)
{
	return tb_conn_open_t(c, path, quiet, 0);
}

int tb_conn_open(struct tb_conn *c, const char *path)
{
	return tb_conn_open_q(c, path, false);
}

int tb_conn_send(struct tb_conn *c, json_object *req)
{
	size_t len;
	const char *s = json_object_to_json_string_length(req, JSON_C_TO_STRING_PLAIN, &len);
	char *line = malloc(len + 1);
	size_t off = 0;

	if (!line)
		return -1;
	memcpy(line, s, len);
	line[len] = '\n';
	while (off < len + 1) {
		ssize_t n = send(c->fd, line + off, len + 1 - off, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "tballoon: send: %s\n", strerror(errno));
			free(line);
			return -1;
		}
		off += (size_t)n;
	}
	free(line);
	return 0;
}

/*
 * Execute @name with @args (taken) and return the "return" value (caller
 * owns it), or NULL after printing the error. Events before the response are
 * skipped: the server sends events raised by a request after its response.
 */
json_object *tb_conn_execute(struct tb_conn *c, const char *name,
				    json_object *args, const char *what)
{
	json_object *req = json_object_new_object();
	json_object *resp = NULL, *v, *ret = NULL;

	json_object_object_add(req, "execute", json_object_new_string(name));
	if (args)
		json_object_object_add(req, "arguments", args);
	if (tb_conn_send(c, req) < 0) {
		json_object_put(req);
		return NULL;
	}
	json_object_put(req);
	for (;;) {
		if (tb_conn_read(c, &resp, tb_now_ms() + tb_conn_timeout(c)) <= 0) {
			fprintf(stderr, "tballoon: %s: no response from the server\n", what);
			return NULL;
		}
		if (json_object_object_get_ex(resp, "return", &v)) {
			ret = json_object_get(v);
			break;
		}
		if (json_object_object_get_ex(resp, "error", &v)) {
			const char *cls = json_object_get_string(json_object_object_get(v,
											 "class"));

			snprintf(c->err_class, sizeof(c->err_class), "%s", cls ? cls : "");
			fprintf(stderr, "tballoon: %s: %s%s\n", what,
				json_object_get_string(json_object_object_get(v, "desc")),
				!strcmp(c->err_class, "DeviceNotActive") ?
				" (not ready yet: worth retrying, or `tballoon wait --ready`)" : "");
			break;
		}
		json_object_put(resp);	/* an event */
		resp = NULL;
	}
	json_object_put(resp);
	return ret;
}

json_object *tb_jobj(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) ? v : NULL;
}

bool tb_jbool(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) && json_object_get_boolean(v);
}
