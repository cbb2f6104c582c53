// SPDX-License-Identifier: GPL-2.0
/*
 * memwatch - sample MemAvailable against the balloon's growth, for the
 * floor-lag test.
 *
 *   memwatch INTERVAL_US
 *
 * Every INTERVAL_US microseconds reads MemAvailable (/proc/meminfo) and the
 * balloon's vmstat events (balloon_inflate - balloon_deflate: pages the
 * balloon holds) and MemTotal (which falls as the balloon grows unless
 * DEFLATE_ON_OOM was negotiated). Until SIGTERM or SIGINT, then prints
 * one line
 *
 *   memwatch: samples N min_avail_kb A grow_min_avail_kb G grow_samples S
 *
 * and exits 0: A is the lowest MemAvailable seen; G is, over the samples in
 * which the balloon had grown since the sample before (either signal), the
 * lowest of the higher MemAvailable of that sample and the one before: the
 * growth happened between the two reads, so with a guest program only
 * taking memory the balloon decided to grow with at most that much
 * available (a sample's own reading alone also charges the balloon with
 * what the program took after the decision: up to several MiB at 4 GiB/s
 * when TCG stretches an interval); S how many samples saw it grow. G is -1
 * if the balloon never grew.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

/* The value of the line starting with @key in @path, or -1. */
static long read_key(const char *path, const char *key)
{
	char line[256];
	size_t n = strlen(key);
	long v = -1;
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, key, n)) {
			v = strtol(line + n, NULL, 10);
			break;
		}
	}
	fclose(f);
	return v;
}

int main(int argc, char **argv)
{
	long interval, avail, total, infl, defl, held, prev_held = -1, prev_total = -1;
	long prev_avail = -1;
	long samples = 0, grow_samples = 0, min_avail = -1, grow_min = -1;
	struct sigaction sa;
	struct timespec ts;

	if (argc != 2) {
		fprintf(stderr, "usage: memwatch INTERVAL_US\n");
		return 2;
	}
	interval = strtol(argv[1], NULL, 0);
	if (interval <= 0)
		interval = 1000;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	ts.tv_sec = interval / 1000000;
	ts.tv_nsec = (interval % 1000000) * 1000;

	printf("memwatch: started\n");
	fflush(stdout);
	while (!stop) {
		avail = read_key("/proc/meminfo", "MemAvailable:");
		total = read_key("/proc/meminfo", "MemTotal:");
		infl = read_key("/proc/vmstat", "balloon_inflate ");
		defl = read_key("/proc/vmstat", "balloon_deflate ");
		if (avail < 0 || total < 0 || infl < 0 || defl < 0) {
			printf("memwatch: cannot read MemAvailable or balloon vmstat\n");
			return 1;
		}
		held = infl - defl;
		samples++;
		if (min_avail < 0 || avail < min_avail)
			min_avail = avail;
		if (prev_held >= 0 && (held > prev_held || total < prev_total)) {
			long seen = avail > prev_avail ? avail : prev_avail;

			grow_samples++;
			if (grow_min < 0 || seen < grow_min)
				grow_min = seen;
		}
		prev_avail = avail;
		prev_held = held;
		prev_total = total;
		nanosleep(&ts, NULL);
	}
	printf("memwatch: samples %ld min_avail_kb %ld grow_min_avail_kb %ld grow_samples %ld\n",
	       samples, min_avail, grow_min, grow_samples);
	return 0;
}
