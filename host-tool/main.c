// SPDX-License-Identifier: GPL-2.0
/*
 * main.c - tballoon: subcommand table, option parsing, help.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <grp.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balance.h"
#include "client.h"
#include "dev.h"
#include "parse.h"
#include "sd.h"
#include "serve.h"
#include "util.h"
#include "virtio_tballoon.h"

struct tb_subcmd {
	const char *name;
	int (*fn)(int argc, char **argv, struct tb_client_opts *o);
	const char *args;
	const char *help;
};

static int tb_cmd_help(int argc, char **argv, struct tb_client_opts *o);
static int tb_cmd_serve(int argc, char **argv, struct tb_client_opts *o);
static int tb_cmd_set(int argc, char **argv, struct tb_client_opts *o);
static int tb_cmd_wait(int argc, char **argv, struct tb_client_opts *o);
static int tb_cmd_inflate(int argc, char **argv, struct tb_client_opts *o);
static int tb_cmd_deflate(int argc, char **argv, struct tb_client_opts *o);
static int tb_cmd_status(int argc, char **argv, struct tb_client_opts *o);
static int tb_cmd_abort(int argc, char **argv, struct tb_client_opts *o);
static int tb_cmd_watch(int argc, char **argv, struct tb_client_opts *o);
static int tb_cmd_stats(int argc, char **argv, struct tb_client_opts *o);
static int tb_cmd_balance(int argc, char **argv, struct tb_client_opts *o);
static int tb_cmd_reclaim(int argc, char **argv, struct tb_client_opts *o);

static const struct tb_subcmd tb_subcmds[] = {
	{ "serve", tb_cmd_serve,
	  "--socket-path PATH|--fd FD|--qmp PATH|--libvirt DOMAIN --control CTRL [...]",
	  "manage one VM's balloon: our vhost-user device, or QEMU's through QMP or libvirt" },
	{ "set", tb_cmd_set,
	  "--balloon SIZE|--guest-size SIZE --deadline DUR [--floor SIZE] [--paced] [--gentle] [--wait] [-j]",
	  "bring the balloon (or guest memory, as virsh setmem means it) to SIZE, either way" },
	{ "inflate", tb_cmd_inflate,
	  "--to SIZE --deadline DUR [--floor SIZE] [--paced] [--gentle] [--wait] [-j]",
	  "grow the balloon to SIZE within DUR" },
	{ "deflate", tb_cmd_deflate,
	  "--to SIZE --deadline DUR [--paced] [--gentle] [--wait] [-j]",
	  "shrink the balloon to SIZE within DUR" },
	{ "status", tb_cmd_status, "[-j]", "show the device and the last command" },
	{ "abort", tb_cmd_abort, "[-j]", "stop the running command" },
	{ "watch", tb_cmd_watch, "[--follow] [-j]",
	  "follow the running command until it ends (exit code of its outcome); "
	  "--follow: every event" },
	{ "stats", tb_cmd_stats, "[-j]",
	  "host accounting and guest statistics (statistics queue) with their age" },
	{ "wait", tb_cmd_wait, "--ready [--timeout DUR] [-j]",
	  "wait until a VM is connected and its balloon driver ready (exit 8 if not)" },
	{ "balance", tb_cmd_balance,
	  "[--dir DIR] [--config FILE] [--set KEY=VALUE] [--dry-run] [--once] [-j] | --status",
	  "the host's memory policy: manage every VM in DIR (NAME.ctl) with timed commands" },
	{ "reclaim", tb_cmd_reclaim, "--total SIZE --deadline DUR [--wait] [-j]",
	  "ask balance to free SIZE of host memory across the VMs within DUR" },
	{ "help", tb_cmd_help, "", "show this help" },
};

static const char *tb_prog = "tballoon";

static void tb_usage(FILE *f)
{
	fprintf(f, "Usage: %s [-c CTRL] COMMAND [OPTIONS]\n\n"
		"Timed virtio balloon: the vhost-user device backend and its control client.\n\n"
		"Commands:\n", tb_prog);
	for (size_t i = 0; i < TB_ARRAY_SIZE(tb_subcmds); i++) {
		fprintf(f, "  %-8s %s\n", tb_subcmds[i].name, tb_subcmds[i].help);
		if (*tb_subcmds[i].args)
			fprintf(f, "           %s %s\n", tb_subcmds[i].name, tb_subcmds[i].args);
	}
	fprintf(f, "\nGlobal options:\n"
		"  -c, --control CTRL  control socket (default: $TBALLOON_CONTROL, else %s)\n"
		"  -h, --help          show this help and exit\n"
		"  -V, --version       show the version and exit\n\n"
		"SIZE: bytes with an optional unit K, M, G, T (binary; 1.5G; hex 0x100000),\n"
		"      Np for N 4 KiB pages, or N%% of guest RAM (12.5%%).\n"
		"DUR:  a number with unit ms, s, m or h (1.5s), or parts from the largest\n"
		"      unit down (1m30s); a plain number alone is milliseconds.\n\n"
		"Exit codes: 0 done (or accepted, without --wait), 1 error, 2 usage,\n"
		"  3 deadline, 4 pressure, 5 aborted, 6 rejected,\n"
		"  7 no outcome from the guest within deadline + grace (guest-unresponsive),\n"
		"  8 not ready yet, worth retrying (no VM connected, driver not ready,\n"
		"  no statistics yet): `wait --ready` waits for it.\n\n"
		"Run '%s COMMAND --help' for the options of a command.\n",
		TB_DEFAULT_CONTROL, tb_prog);
}

static int tb_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int tb_usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", tb_prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '%s --help' for more information.\n", tb_prog);
	return TB_EXIT_USAGE;
}

/*
 * getopt said '?' (opterr is off: one message, ours): name the option. A
 * short one is optopt; a long one, or a missing argument, is the word just
 * read.
 */
static int tb_bad_option(const char *cmd, char **argv)
{
	const char *word = optind > 0 ? argv[optind - 1] : "?";
	const char *sep = cmd ? ": " : "";

	if (!cmd)
		cmd = "";
	if (optopt && !(word[0] == '-' && word[1] == '-'))
		return tb_usage_error("%s%s-%c: unknown option, or its argument is missing",
				      cmd, sep, optopt);
	return tb_usage_error("%s%s%s: unknown option, or its argument is missing", cmd, sep,
			      word);
}

static int tb_cmd_help(int argc, char **argv, struct tb_client_opts *o)
{
	(void)argc;
	(void)argv;
	(void)o;
	tb_usage(stdout);
	return TB_EXIT_OK;
}

/* ------------------------------------------------------------------------
 * serve
 * ------------------------------------------------------------------------
 */

static int tb_cmd_serve(int argc, char **argv, struct tb_client_opts *o)
{
	static const struct option opts[] = {
		{ "socket-path", required_argument, NULL, 's' },
		{ "fd", required_argument, NULL, 'F' },
		{ "print-capabilities", no_argument, NULL, 'P' },
		{ "control", required_argument, NULL, 'c' },
		{ "state-file", required_argument, NULL, 'S' },
		{ "grace", required_argument, NULL, 'g' },
		{ "stats-interval", required_argument, NULL, 'i' },
		{ "log-level", required_argument, NULL, 'L' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "socket-mode", required_argument, NULL, 'M' },
		{ "socket-group", required_argument, NULL, 'G' },
		{ "deflate-on-oom", no_argument, NULL, 'D' },
		{ "free-page-reporting", no_argument, NULL, 'R' },
		{ "punch-threads", required_argument, NULL, 'T' },
		{ "qmp", required_argument, NULL, 'Q' },
		{ "libvirt", required_argument, NULL, 'V' },
		{ "connect", required_argument, NULL, 'U' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static const char *const levels[] = { "error", "warning", "info", "debug" };
	struct tb_serve_opts so = {
		.vu_fd = -1, .grace_ms = TB_DEV_GRACE_MS,
		.stats_interval_ms = TB_DEV_STATS_INTERVAL_MS,
		.listen = { .mode = 0600 },
		.punch_threads = tb_punch_default_threads(),
	};
	const char *sock = NULL, *ctrl = o->control, *why;
	bool stats_set = false;
	struct stat st;
	uint64_t ms;
	int c, fd = -1;
	char *end;

	while ((c = getopt_long(argc, argv, "s:c:S:g:i:L:vqh", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			sock = optarg;
			break;
		case 'F':
			errno = 0;
			fd = (int)strtol(optarg, &end, 10);
			if (errno || *end || fd < 0 || fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode))
				return tb_usage_error("serve: --fd %s is not an open socket", optarg);
			break;
		case 'P':
			/*
			 * The shape of docs/interop/vhost-user.json's
			 * VHostUserBackendCapabilities; its VHostUserBackendType
			 * enum has no balloon (nor any virtio-id based generic
			 * device), so "type" is our own word, documented in the
			 * README.
			 */
			printf("{\"type\": \"balloon\", \"features\": [\"timed\", "
			       "\"stats-vq\", \"state-file\", \"deflate-on-oom\", "
			       "\"free-page-reporting\", \"page-poison\"]}\n");
			return TB_EXIT_OK;
		case 'c':
			ctrl = optarg;
			break;
		case 'S':
			so.state_path = optarg;
			break;
		case 'g':
		case 'i':
			if (tb_parse_duration_ms(optarg, &ms, &why))
				return tb_usage_error("serve: %s %s: %s", c == 'g' ? "--grace" :
						      "--stats-interval", optarg, why);
			if (ms > TBALLOON_DEADLINE_MAX_MS)
				return tb_usage_error("serve: %s %s: at most 1h", c == 'g' ?
						      "--grace" : "--stats-interval", optarg);
			if (c == 'g') {
				so.grace_ms = (uint32_t)ms;
			} else {
				so.stats_interval_ms = (uint32_t)ms;
				stats_set = true;
			}
			break;
		case 'L': {
			size_t i;

			for (i = 0; i < TB_ARRAY_SIZE(levels); i++)
				if (!strcmp(optarg, levels[i]))
					break;
			if (i == TB_ARRAY_SIZE(levels))
				return tb_usage_error("serve: --log-level %s: use error, "
						      "warning, info or debug", optarg);
			tb_log_level = (int)i;
			break;
		}
		case 'M': {
			unsigned long m;

			errno = 0;
			m = strtoul(optarg, &end, 8);
			if (errno || *end || !*optarg || m > 0777 || (m & 0600) != 0600 || (m & 0007))
				return tb_usage_error("serve: --socket-mode %s: an octal mode with "
						      "rw for the owner and nothing for others, "
						      "e.g. 0660", optarg);
			so.listen.mode = (mode_t)m;
			break;
		}
		case 'G': {
			struct group gr, *res = NULL;
			char buf[4096];

			if (getgrnam_r(optarg, &gr, buf, sizeof(buf), &res) == 0 && res) {
				so.listen.gid = res->gr_gid;
			} else {
				unsigned long g;

				errno = 0;
				g = strtoul(optarg, &end, 10);
				if (errno || *end || !*optarg || g > INT32_MAX)
					return tb_usage_error("serve: --socket-group %s: no such "
							      "group", optarg);
				so.listen.gid = (gid_t)g;
			}
			so.listen.gid_set = true;
			break;
		}
		case 'D':
			so.deflate_on_oom = true;
			break;
		case 'R':
			so.free_page_reporting = true;
			break;
		case 'T': {
			unsigned long t;

			errno = 0;
			t = strtoul(optarg, &end, 10);
			if (errno || *end || !*optarg || t > TB_PUNCH_MAX_THREADS)
				return tb_usage_error("serve: --punch-threads %s: a number of "
						      "threads from 0 to 16", optarg);
			so.punch_threads = (unsigned int)t;
			break;
		}
		case 'Q':
			so.qmp_path = optarg;
			break;
		case 'V':
			so.libvirt_domain = optarg;
			break;
		case 'U':
			so.libvirt_uri = optarg;
			break;
		case 'v':
			if (tb_log_level < TB_LOG_DEBUG)
				tb_log_level++;
			break;
		case 'q':
			tb_log_level = TB_LOG_ERR;
			break;
		case 'h':
			printf("Usage: %s serve --socket-path PATH|--fd FD|--qmp PATH|--libvirt DOMAIN\n"
			       "       --control CTRL [OPTIONS]\n\n"
			       "Manage one VM's balloon: serve the vhost-user balloon device for\n"
			       "QEMU's vhost-user-test-device-pci (virtio-id=5, num_vqs=3,\n"
			       "config_size=64), where the guest enforces timed commands, or drive\n"
			       "a stock virtio-balloon through QMP or libvirt, where the host does.\n\n"
			       "  -s, --socket-path PATH  vhost-user socket to listen on\n"
			       "      --fd FD             serve this connected vhost-user socket\n"
			       "                          instead, exit when its session ends\n"
			       "      --qmp PATH          drive the virtio-balloon of the QEMU whose\n"
			       "                          QMP socket this is (host-enforced)\n"
			       "      --libvirt DOMAIN    drive this libvirt domain's memballoon\n"
			       "                          through libvirt (host-enforced)\n"
			       "      --connect URI       libvirt connection (default: libvirt's)\n"
			       "      --print-capabilities  print the backend capabilities (JSON)\n"
			       "  -c, --control CTRL      control socket to listen on (mode 0600)\n"
			       "  -S, --state-file FILE   keep the device state in FILE (written\n"
			       "                          atomically on every change); a restarted\n"
			       "                          daemon picks the guest up from it\n"
			       "  -g, --grace DUR         a command without an outcome at deadline +\n"
			       "                          DUR ends guest-unresponsive (default 5s)\n"
			       "  -i, --stats-interval DUR  request guest statistics every DUR\n"
			       "                          (default 2s, 0: only on query-stats; with\n"
			       "                          --qmp/--libvirt the guest's polling period,\n"
			       "                          whole seconds, default 1s)\n"
			       "  -L, --log-level LEVEL   error, warning, info (default) or debug\n"
			       "  -v, --verbose           one level more (debug)\n"
			       "  -q, --quiet             errors only\n"
			       "      --socket-mode MODE  mode of both sockets (octal, default 0600;\n"
			       "                          0660 with --socket-group)\n"
			       "      --socket-group GROUP  group of both sockets; members may use\n"
			       "                          the control socket (e.g. libvirt-qemu)\n"
			       "      --deflate-on-oom    offer DEFLATE_ON_OOM: the guest gives\n"
			       "                          balloon pages back instead of OOM-killing\n"
			       "                          (as QEMU's virtio-balloon deflate-on-oom=on)\n"
			       "      --free-page-reporting  offer REPORTING: the guest reports free\n"
			       "                          memory, which is released on the host\n"
			       "                          (as free-page-reporting=on; the front-end\n"
			       "                          needs a fourth queue: num_vqs=4)\n"
			       "      --punch-threads N   threads that release ballooned memory off\n"
			       "                          the event loop (default: one per CPU,\n"
			       "                          1 to 4; 0: the loop does it itself)\n"
			       "  -h, --help              show this help and exit\n\n"
			       "Under systemd (tballoon-serve@.service): READY=1 once the sockets\n"
			       "accept, sockets passed in LISTEN_FDS are used (matched by path),\n"
			       "and with a state file the vhost-user session is kept in the fd\n"
			       "store, so a restarted daemon takes the same QEMU connection back.\n",
			       tb_prog);
			return TB_EXIT_OK;
		default:
			return tb_bad_option("serve", argv);
		}
	}
	if (optind < argc)
		return tb_usage_error("serve: unexpected argument '%s'", argv[optind]);
	if ((sock != NULL) + (fd >= 0) + (so.qmp_path != NULL) +
	    (so.libvirt_domain != NULL) != 1)
		return tb_usage_error("serve: exactly one of --socket-path, --fd, --qmp "
				      "and --libvirt is required%s", "");
	if (so.libvirt_uri && !so.libvirt_domain)
		return tb_usage_error("serve: --connect is for --libvirt%s", "");
	if (so.qmp_path || so.libvirt_domain) {
		const char *opt = so.state_path ? "--state-file" :
				  so.deflate_on_oom ? "--deflate-on-oom" :
				  so.free_page_reporting ? "--free-page-reporting" : NULL;

		if (opt)
			return tb_usage_error("serve: %s is for the vhost-user device; with "
					      "--qmp or --libvirt QEMU keeps the balloon and its "
					      "device properties", opt);
		if (!stats_set)
			so.stats_interval_ms = 1000;
		if (!so.stats_interval_ms)
			return tb_usage_error("serve: --stats-interval 0: a stock balloon's "
					      "statistics are the host's only view of the "
					      "guest; at least 1s%s", "");
	}
	if (!ctrl)
		return tb_usage_error("serve: --control is required%s", "");
	if (so.listen.gid_set && so.listen.mode == 0600)
		so.listen.mode = 0660;
	tb_log_syslog_prefix = tb_sd_stderr_is_journal();
	so.socket_path = sock;
	so.vu_fd = fd;
	so.control_path = ctrl;
	return tb_serve_run(&so);
}

/* ------------------------------------------------------------------------
 * client commands
 * ------------------------------------------------------------------------
 */

static int tb_parse_common(int c, struct tb_client_opts *o)
{
	switch (c) {
	case 'c':
		o->control = optarg;
		return 0;
	case 'j':
		o->json = true;
		return 0;
	default:
		return -1;
	}
}

/* the control socket: -c, else $TBALLOON_CONTROL, else the default; -1 if -c "" */
static int tb_finish_client(struct tb_client_opts *o)
{
	if (o->control && !*o->control)
		return -1;
	if (!o->control)
		o->control = getenv("TBALLOON_CONTROL");
	if (!o->control || !*o->control)
		o->control = TB_DEFAULT_CONTROL;
	return 0;
}

static int tb_cmd_move(int argc, char **argv, struct tb_client_opts *o, const char *op)
{
	static const struct option opts[] = {
		{ "to", required_argument, NULL, 't' },
		{ "balloon", required_argument, NULL, 'B' },
		{ "guest-size", required_argument, NULL, 'G' },
		{ "deadline", required_argument, NULL, 'd' },
		{ "floor", required_argument, NULL, 'f' },
		{ "paced", no_argument, NULL, 'p' },
		{ "gentle", no_argument, NULL, 'n' },
		{ "wait", no_argument, NULL, 'w' },
		{ "grace", required_argument, NULL, 'g' },
		{ "json", no_argument, NULL, 'j' },
		{ "control", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct tb_move_opts m = { .op = op, .grace_ms = 10000, .target_pct = -1,
				  .floor_pct = -1, .guest_pages = -1 };
	bool have_to = false, have_deadline = false, have_floor = false, have_grace = false;
	bool set = !strcmp(op, "set");
	const char *why;
	uint32_t centi;
	int c;

	while ((c = getopt_long(argc, argv, "t:d:f:pnwg:jc:h", opts, NULL)) != -1) {
		switch (c) {
		case 'B':
		case 'G':
			if (!set)
				return tb_usage_error("%s: --%s is for `set`; %s takes --to SIZE",
						      op, c == 'B' ? "balloon" : "guest-size", op);
			if (have_to)
				return tb_usage_error("set: one of --balloon and --guest-size%s", "");
			if (c == 'B' && !tb_parse_percent(optarg, &centi, &why)) {
				m.target_pct = (int)centi;
				have_to = true;
				break;
			}
			if (c == 'B' && why)
				return tb_usage_error("--balloon %s: %s", optarg, why);
			if (tb_parse_size_pages(optarg, &m.target_pages, &why))
				return tb_usage_error("--%s %s: %s", c == 'B' ? "balloon" :
						      "guest-size", optarg, why);
			if (c == 'G')
				m.guest_pages = (int64_t)m.target_pages;
			have_to = true;
			break;
		case 't':
			if (set)
				return tb_usage_error("set: --to is ambiguous here: use --balloon SIZE "
						      "(the balloon) or --guest-size SIZE (guest "
						      "memory)%s", "");
			if (!tb_parse_percent(optarg, &centi, &why)) {
				m.target_pct = (int)centi;
				have_to = true;
				break;
			}
			if (why)
				return tb_usage_error("--to %s: %s", optarg, why);
			if (tb_parse_size_pages(optarg, &m.target_pages, &why))
				return tb_usage_error("--to %s: %s", optarg, why);
			have_to = true;
			break;
		case 'd':
			if (tb_parse_duration_ms(optarg, &m.deadline_ms, &why))
				return tb_usage_error("--deadline %s: %s", optarg, why);
			have_deadline = true;
			break;
		case 'f':
			have_floor = true;
			if (!tb_parse_percent(optarg, &centi, &why)) {
				m.floor_pct = (int)centi;
				break;
			}
			if (why)
				return tb_usage_error("--floor %s: %s", optarg, why);
			if (tb_parse_size_pages(optarg, &m.floor_pages, &why))
				return tb_usage_error("--floor %s: %s", optarg, why);
			break;
		case 'g':
			have_grace = true;
			if (tb_parse_duration_ms(optarg, &m.grace_ms, &why))
				return tb_usage_error("--grace %s: %s", optarg, why);
			break;
		case 'p':
			m.paced = true;
			break;
		case 'n':
			m.gentle = true;
			break;
		case 'w':
			m.wait = true;
			break;
		case 'h':
			if (set) {
				printf("Usage: %s [-c CTRL] set --balloon SIZE|--guest-size SIZE "
				       "--deadline DUR [OPTIONS]\n\n"
				       "Bring the balloon to a size within DUR, inflating or deflating\n"
				       "as needed.\n\n"
				       "      --balloon SIZE   the balloon's size (as --to of inflate)\n"
				       "      --guest-size SIZE  the guest's memory afterwards, as virsh\n"
				       "                       setmem and QMP balloon mean it: the\n"
				       "                       balloon becomes guest RAM - SIZE\n", tb_prog);
				printf("  -d, --deadline DUR   time budget (1ms..1h)\n"
				       "  -f, --floor SIZE     when it inflates: keep at least SIZE\n"
				       "                       available in the guest\n"
				       "  -p, --paced          spread the work over the deadline\n"
			       "  -n, --gentle         inflate only on CPUs the guest leaves idle, at\n"
			       "                       the lowest priority (our driver; slower when\n"
			       "                       the guest is busy)\n"
				       "  -n, --gentle         inflate only on CPUs the guest leaves idle, at\n"
				       "                       the lowest priority (our driver; slower when\n"
				       "                       the guest is busy)\n"
				       "  -w, --wait           wait for the outcome, showing progress\n"
				       "  -g, --grace DUR      with --wait, give up (exit 7) at deadline +\n"
				       "                       DUR (default 10s)\n"
				       "  -j, --json           print the status object as JSON\n"
				       "  -c, --control CTRL   control socket\n"
				       "  -h, --help           show this help and exit\n");
				return TB_EXIT_OK;
			}
			printf("Usage: %s [-c CTRL] %s --to SIZE --deadline DUR [OPTIONS]\n\n"
			       "Bring the balloon to SIZE within DUR.\n\n"
			       "  -t, --to SIZE        target balloon size\n"
			       "  -d, --deadline DUR   time budget (1ms..1h), counted from the\n"
			       "                       guest's acceptance\n"
			       "  -f, --floor SIZE     keep at least SIZE available in the guest\n"
			       "  -p, --paced          spread the work over the deadline\n"
			       "  -n, --gentle         inflate only on CPUs the guest leaves idle, at\n"
			       "                       the lowest priority (our driver; slower when\n"
			       "                       the guest is busy)\n"
			       "  -w, --wait           wait for the outcome, showing progress\n"
			       "  -g, --grace DUR      with --wait, give up (exit 7) at deadline +\n"
			       "                       DUR (default 10s)\n"
			       "  -j, --json           print the status object as JSON\n"
			       "  -c, --control CTRL   control socket\n"
			       "  -h, --help           show this help and exit\n", tb_prog, op);
			return TB_EXIT_OK;
		default:
			if (tb_parse_common(c, o))
				return tb_bad_option(op, argv);
			break;
		}
	}
	if (optind < argc)
		return tb_usage_error("unexpected argument '%s'", argv[optind]);
	if (!have_to)
		return tb_usage_error(set ? "%s: --balloon SIZE or --guest-size SIZE is required" :
				      "%s: --to SIZE is required", op);
	if (have_floor && !strcmp(op, "deflate"))
		return tb_usage_error("deflate: --floor protects the guest while the balloon "
				      "grows; a deflate only gives memory back%s", "");
	if (have_grace && !m.wait)
		return tb_usage_error("%s: --grace is how long --wait waits past the deadline; "
				      "add --wait", op);
	if (!have_deadline)
		return tb_usage_error("%s: --deadline DUR is required", op);
	if (m.target_pages > UINT32_MAX || m.floor_pages > UINT32_MAX)
		return tb_usage_error("%s: size too large for the balloon", op);
	if (m.deadline_ms == 0 || m.deadline_ms > TBALLOON_DEADLINE_MAX_MS)
		return tb_usage_error("%s: --deadline must be between 1ms and 1h", op);
	if (tb_finish_client(o))
		return tb_usage_error("-c/--control: an empty path; give the control socket "
				      "or leave the option out (then $TBALLOON_CONTROL, else %s)",
				      TB_DEFAULT_CONTROL);
	return tb_client_move(o, &m);
}

static int tb_cmd_inflate(int argc, char **argv, struct tb_client_opts *o)
{
	return tb_cmd_move(argc, argv, o, "inflate");
}

static int tb_cmd_deflate(int argc, char **argv, struct tb_client_opts *o)
{
	return tb_cmd_move(argc, argv, o, "deflate");
}

static int tb_cmd_set(int argc, char **argv, struct tb_client_opts *o)
{
	return tb_cmd_move(argc, argv, o, "set");
}

static int tb_cmd_wait(int argc, char **argv, struct tb_client_opts *o)
{
	static const struct option opts[] = {
		{ "ready", no_argument, NULL, 'r' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "json", no_argument, NULL, 'j' },
		{ "control", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t timeout = 60000;
	bool ready = false;
	const char *why;
	int c;

	while ((c = getopt_long(argc, argv, "rT:jc:h", opts, NULL)) != -1) {
		switch (c) {
		case 'r':
			ready = true;
			break;
		case 'T':
			if (tb_parse_duration_ms(optarg, &timeout, &why))
				return tb_usage_error("--timeout %s: %s", optarg, why);
			break;
		case 'h':
			printf("Usage: %s [-c CTRL] wait --ready [--timeout DUR] [-j]\n\n"
			       "Wait until the daemon answers, a VM is connected and its balloon\n"
			       "driver is ready: exit 0; 8 if it is not by the timeout, 1 if the\n"
			       "daemon never answered.\n\n"
			       "  -r, --ready          what to wait for (the only condition)\n"
			       "  -T, --timeout DUR    give up after DUR (default 1m)\n"
			       "  -j, --json           print the status object as JSON when ready\n"
			       "  -c, --control CTRL   control socket\n"
			       "  -h, --help           show this help and exit\n", tb_prog);
			return TB_EXIT_OK;
		default:
			if (tb_parse_common(c, o))
				return tb_bad_option("wait", argv);
			break;
		}
	}
	if (optind < argc)
		return tb_usage_error("unexpected argument '%s'", argv[optind]);
	if (!ready)
		return tb_usage_error("wait: say what to wait for: --ready%s", "");
	if (tb_finish_client(o))
		return tb_usage_error("-c/--control: an empty path; give the control socket "
				      "or leave the option out (then $TBALLOON_CONTROL, else %s)",
				      TB_DEFAULT_CONTROL);
	return tb_client_wait_ready(o, timeout);
}

/* status and abort take only -j and -c */
static int tb_cmd_plain(int argc, char **argv, struct tb_client_opts *o,
			const char *name, int (*fn)(const struct tb_client_opts *))
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "control", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "jc:h", opts, NULL)) != -1) {
		if (c == 'h') {
			printf("Usage: %s [-c CTRL] %s [-j|--json]\n", tb_prog, name);
			return TB_EXIT_OK;
		}
		if (tb_parse_common(c, o))
			return tb_bad_option(name, argv);
	}
	if (optind < argc)
		return tb_usage_error("unexpected argument '%s'", argv[optind]);
	if (tb_finish_client(o))
		return tb_usage_error("-c/--control: an empty path; give the control socket "
				      "or leave the option out (then $TBALLOON_CONTROL, else %s)",
				      TB_DEFAULT_CONTROL);
	return fn(o);
}

static int tb_cmd_status(int argc, char **argv, struct tb_client_opts *o)
{
	return tb_cmd_plain(argc, argv, o, "status", tb_client_status);
}

static int tb_cmd_abort(int argc, char **argv, struct tb_client_opts *o)
{
	return tb_cmd_plain(argc, argv, o, "abort", tb_client_abort);
}

static int tb_cmd_watch(int argc, char **argv, struct tb_client_opts *o)
{
	static const struct option opts[] = {
		{ "follow", no_argument, NULL, 'f' },
		{ "json", no_argument, NULL, 'j' },
		{ "control", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool follow = false;
	int c;

	while ((c = getopt_long(argc, argv, "fjc:h", opts, NULL)) != -1) {
		if (c == 'h') {
			printf("Usage: %s [-c CTRL] watch [-f|--follow] [-j|--json]\n\n"
			       "Follow the running command until it ends (exit code of its\n"
			       "outcome), or with --follow print every event as it comes until\n"
			       "interrupted: one JSON object per line with -j (NDJSON).\n\n"
			       "  -f, --follow         every event, not one command\n"
			       "  -j, --json           JSON (with --follow: the events as sent)\n"
			       "  -c, --control CTRL   control socket\n"
			       "  -h, --help           show this help and exit\n", tb_prog);
			return TB_EXIT_OK;
		}
		if (c == 'f') {
			follow = true;
			continue;
		}
		if (tb_parse_common(c, o))
			return tb_bad_option("watch", argv);
	}
	if (optind < argc)
		return tb_usage_error("unexpected argument '%s'", argv[optind]);
	if (tb_finish_client(o))
		return tb_usage_error("-c/--control: an empty path; give the control socket "
				      "or leave the option out (then $TBALLOON_CONTROL, else %s)",
				      TB_DEFAULT_CONTROL);
	return follow ? tb_client_watch_follow(o) : tb_client_watch(o);
}

static int tb_cmd_stats(int argc, char **argv, struct tb_client_opts *o)
{
	return tb_cmd_plain(argc, argv, o, "stats", tb_client_stats);
}

/* ------------------------------------------------------------------------
 * balance and reclaim
 * ------------------------------------------------------------------------
 */

/* balance's control socket: --balance, else $TBALLOON_BALANCE, else DIR's */
static const char *tb_balance_sock(const char *opt, const char *dir, char *buf, size_t len)
{
	if (opt && *opt)
		return opt;
	opt = getenv("TBALLOON_BALANCE");
	if (opt && *opt)
		return opt;
	snprintf(buf, len, "%s/%s", dir ? dir : TB_BAL_DEFAULT_DIR, TB_BAL_SOCKET_NAME);
	return buf;
}

static int tb_cmd_balance(int argc, char **argv, struct tb_client_opts *o)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "listen", required_argument, NULL, 'l' },
		{ "config", required_argument, NULL, 'f' },
		{ "set", required_argument, NULL, 's' },
		{ "period", required_argument, NULL, 'p' },
		{ "textfile", required_argument, NULL, 't' },
		{ "dry-run", no_argument, NULL, 'n' },
		{ "once", no_argument, NULL, '1' },
		{ "status", no_argument, NULL, 'S' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct tb_bal_opts bo = { .dir = TB_BAL_DEFAULT_DIR };
	const char *config = NULL, *period = NULL, *sets[32];
	unsigned int nsets = 0;
	bool status = false;
	char why[512], sock[4096];
	int c;

	(void)o;
	tb_bal_conf_default(&bo.conf);
	while ((c = getopt_long(argc, argv, "d:l:f:s:p:t:n1Svjh", opts, NULL)) != -1) {
		switch (c) {
		case 'h':
			printf("Usage: %s balance [OPTIONS]\n"
			       "       %s balance --status [--listen SOCK] [-j]\n\n"
			       "Manage every VM whose `tballoon serve` control socket is DIR/NAME.ctl:\n"
			       "each period, read its status and guest statistics and the host's\n"
			       "MemAvailable and PSI, compute the size each guest should have\n"
			       "(Documentation/policy.rst) and issue timed commands. One log line per\n"
			       "decision on stdout (JSON with -j).\n\n"
			       "  -d, --dir DIR        the VMs' control sockets (default %s)\n"
			       "  -l, --listen SOCK    balance's own socket (default DIR/%s;\n"
			       "                       clients: $TBALLOON_BALANCE)\n"
			       "  -f, --config FILE    key = value lines (default %s, if present)\n"
			       "  -s, --set KEY=VALUE  one setting, after the file (repeatable)\n"
			       "  -p, --period DUR     one decision every DUR (default 1s)\n"
			       "  -t, --textfile PATH  Prometheus metrics, rewritten each period\n"
			       "  -n, --dry-run        log the decisions, issue nothing\n"
			       "      --once           one period, then exit\n"
			       "      --status         ask the running daemon: each VM's size, target,\n"
			       "                       last outcome and why\n"
			       "  -v, --verbose        more messages on stderr\n"
			       "  -j, --json           JSON\n"
			       "  -h, --help           show this help and exit\n\n"
			       "Keys: reserve, reserve-pct, floor, floor-pct, host-reserve, host-psi-pct,\n"
			       "  stale, swapin-rate, majflt-rate, min-change, step-pct, default-rate,\n"
			       "  deadline-factor, min-deadline, period, reclaim-hold, vm-timeout,\n"
			       "  host-budget (host memory for the VMs; 0: MemAvailable),\n"
			       "  policy (tballoon, or mom: oVirt MOM's rules, for comparison).\n",
			       tb_prog, tb_prog, TB_BAL_DEFAULT_DIR, TB_BAL_SOCKET_NAME,
			       TB_BAL_DEFAULT_CONFIG);
			return TB_EXIT_OK;
		case 'd':
			if (!*optarg)
				return tb_usage_error("balance: --dir: an empty path");
			bo.dir = optarg;
			break;
		case 'l':
			bo.listen = optarg;
			break;
		case 'f':
			config = optarg;
			break;
		case 's':
			if (nsets == TB_ARRAY_SIZE(sets))
				return tb_usage_error("balance: --set: at most %zu",
						      TB_ARRAY_SIZE(sets));
			sets[nsets++] = optarg;
			break;
		case 'p':
			period = optarg;
			break;
		case 't':
			bo.textfile = optarg;
			break;
		case 'n':
			bo.dry_run = true;
			break;
		case '1':
			bo.once = true;
			break;
		case 'S':
			status = true;
			break;
		case 'v':
			if (tb_log_level < TB_LOG_DEBUG)
				tb_log_level++;
			break;
		case 'j':
			bo.json = true;
			break;
		default:
			return tb_bad_option("balance", argv);
		}
	}
	if (optind < argc)
		return tb_usage_error("balance: unexpected argument '%s'", argv[optind]);
	if (status)
		return tb_balance_status(tb_balance_sock(bo.listen, bo.dir, sock, sizeof(sock)),
					 bo.json);
	if (tb_bal_conf_load(&bo.conf, config ? config : TB_BAL_DEFAULT_CONFIG, config != NULL,
			     why, sizeof(why)))
		return tb_usage_error("balance: %s", why);
	for (unsigned int i = 0; i < nsets; i++) {
		char key[64];
		const char *eq = strchr(sets[i], '=');

		if (!eq || eq == sets[i] || (size_t)(eq - sets[i]) >= sizeof(key))
			return tb_usage_error("balance: --set %s: not KEY=VALUE", sets[i]);
		memcpy(key, sets[i], (size_t)(eq - sets[i]));
		key[eq - sets[i]] = 0;
		if (tb_bal_conf_set(&bo.conf, key, eq + 1, why, sizeof(why)))
			return tb_usage_error("balance: --set: %s", why);
	}
	if (period && tb_bal_conf_set(&bo.conf, "period", period, why, sizeof(why)))
		return tb_usage_error("balance: --period: %s", why);
	if (tb_bal_conf_check(&bo.conf, why, sizeof(why)))
		return tb_usage_error("balance: configuration: %s", why);
	return tb_balance_run(&bo);
}

static int tb_cmd_reclaim(int argc, char **argv, struct tb_client_opts *o)
{
	static const struct option opts[] = {
		{ "total", required_argument, NULL, 't' },
		{ "deadline", required_argument, NULL, 'd' },
		{ "balance", required_argument, NULL, 'b' },
		{ "wait", no_argument, NULL, 'w' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t pages = 0, ms = 0;
	const char *sockopt = NULL, *why;
	bool wait = false, json = false, have_t = false, have_d = false;
	char sock[4096];
	int c;

	(void)o;
	while ((c = getopt_long(argc, argv, "t:d:b:wjh", opts, NULL)) != -1) {
		switch (c) {
		case 'h':
			printf("Usage: %s reclaim --total SIZE --deadline DUR [--wait] [-j]\n\n"
			       "Ask `tballoon balance` to free SIZE of host memory within DUR: it\n"
			       "splits the amount across the VMs by their slack and measured rates,\n"
			       "runs the inflates in parallel and re-plans as guests stop. With\n"
			       "--wait, print the outcome: exit 0 done, 3 short at the deadline,\n"
			       "4 short because the guests reached their floors or stopped.\n\n"
			       "  -t, --total SIZE     host memory to free\n"
			       "  -d, --deadline DUR   by when\n"
			       "  -b, --balance SOCK   balance's socket (default $TBALLOON_BALANCE,\n"
			       "                       else %s/%s)\n"
			       "  -w, --wait           wait for the outcome\n"
			       "  -j, --json           JSON\n"
			       "  -h, --help           show this help and exit\n",
			       tb_prog, TB_BAL_DEFAULT_DIR, TB_BAL_SOCKET_NAME);
			return TB_EXIT_OK;
		case 't':
			if (tb_parse_size_pages(optarg, &pages, &why))
				return tb_usage_error("reclaim: --total %s: %s", optarg, why);
			if (!pages)
				return tb_usage_error("reclaim: --total 0: nothing to reclaim");
			have_t = true;
			break;
		case 'd':
			if (tb_parse_duration_ms(optarg, &ms, &why))
				return tb_usage_error("reclaim: --deadline %s: %s", optarg, why);
			if (!ms)
				return tb_usage_error("reclaim: --deadline 0: no time to do it in");
			have_d = true;
			break;
		case 'b':
			sockopt = optarg;
			break;
		case 'w':
			wait = true;
			break;
		case 'j':
			json = true;
			break;
		default:
			return tb_bad_option("reclaim", argv);
		}
	}
	if (optind < argc)
		return tb_usage_error("reclaim: unexpected argument '%s'", argv[optind]);
	if (!have_t || !have_d)
		return tb_usage_error("reclaim: --total and --deadline are required");
	return tb_balance_reclaim(tb_balance_sock(sockopt, NULL, sock, sizeof(sock)),
				  pages * 4096, ms, wait, json);
}

/* ------------------------------------------------------------------------
 * main
 * ------------------------------------------------------------------------
 */

/* stdout write errors are errors: report them, exit 1 */
static int tb_flush_stdout(int rc)
{
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "%s: write error on stdout: %s\n", tb_prog, strerror(errno));
		return TB_EXIT_ERROR;
	}
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "control", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct tb_client_opts o = { 0 };
	const struct tb_subcmd *cmd = NULL;
	int c, rc;

	/* our messages, one per error, not getopt's as well */
	opterr = 0;
	/* "+": stop at the subcommand, its options are its own */
	while ((c = getopt_long(argc, argv, "+c:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			o.control = optarg;
			break;
		case 'h':
			tb_usage(stdout);
			return tb_flush_stdout(TB_EXIT_OK);
		case 'V':
			printf("tballoon %s (protocol v1)\n", TB_VERSION);
			return tb_flush_stdout(TB_EXIT_OK);
		default:
			return tb_bad_option(NULL, argv);
		}
	}
	if (optind >= argc)
		return tb_usage_error("missing command%s", "");
	for (size_t i = 0; i < TB_ARRAY_SIZE(tb_subcmds); i++)
		if (!strcmp(argv[optind], tb_subcmds[i].name))
			cmd = &tb_subcmds[i];
	if (!cmd)
		return tb_usage_error("unknown command '%s'", argv[optind]);

	argc -= optind;
	argv += optind;
	optind = 0;	/* full getopt reset for the subcommand's argv */
	rc = cmd->fn(argc, argv, &o);
	return tb_flush_stdout(rc);
}
