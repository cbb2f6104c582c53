/* SPDX-License-Identifier: GPL-2.0 */
/*
 * peer.h - a VM whose stock virtio-balloon the daemon drives from outside.
 *
 * `tballoon serve --qmp` and `--libvirt` have no device model of their own:
 * QEMU's virtio-balloon-pci is the device and the guest runs Linux's
 * virtio_balloon (or ours in standard mode). A peer is what the daemon
 * needs from such a VM, and nothing else:
 *
 *   - set the balloon size (QMP `balloon`, virDomainSetMemoryFlags);
 *   - stop it where it is (read the size afresh, set it);
 *   - report the size as it changes (BALLOON_CHANGE events, and queries
 *     where the events are rate-limited), the guest's statistics and the
 *     VM's RAM and host footprint.
 *
 * It reports into the device model (tb_dev_peer_link/_actual/_stats), which
 * holds the command logic (deadline, floor, pressure, outcome, events) once
 * for every host-enforced kind. Peers are driven from the daemon's single
 * poll() loop; nothing here blocks longer than the bound each peer states.
 */
#ifndef TB_PEER_H
#define TB_PEER_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dev.h"

/* fds a peer may ask the loop to watch */
#define TB_PEER_FDS 2

struct tb_peer;

/**
 * struct tb_peer_ops - one kind of peer
 * @start: the first connection and setup, within @timeout_ms: 0, or -errno
 *	with @err set (not a QEMU, no such domain, no balloon, ...)
 * @pollfds: fill @pfd with the fds to watch now (fd, events); returns how
 *	many (at most TB_PEER_FDS)
 * @ready: the loop polled them; @pfd[i].revents are set
 * @tick: timers; returns ms until the next call is due, or -1
 * @set_balloon: ask for a balloon of @pages (guest memory = RAM - @pages);
 *	0, or -errno (the command is then not issued)
 * @stop: stop the balloon where it is now
 * @footprint: guest RAM and the host memory backing it, in bytes
 *	(@resident_bytes may be NULL: the RAM alone is asked for often)
 * @destroy: close everything and free the peer
 */
struct tb_peer_ops {
	int (*start)(struct tb_peer *p, uint32_t timeout_ms, char *err, size_t errlen);
	unsigned int (*pollfds)(struct tb_peer *p, struct pollfd *pfd);
	void (*ready)(struct tb_peer *p, const struct pollfd *pfd, unsigned int n,
		      uint64_t now_ms);
	int64_t (*tick)(struct tb_peer *p, uint64_t now_ms);
	int (*set_balloon)(struct tb_peer *p, uint32_t pages);
	int (*stop)(struct tb_peer *p);
	void (*footprint)(struct tb_peer *p, uint64_t *ram_bytes, uint64_t *resident_bytes);
	void (*destroy)(struct tb_peer *p);
};

/**
 * struct tb_peer - the part every peer shares
 * @ops: its kind
 * @dev: the device model it reports into
 * @what: the VM, for messages ("QMP /run/vm1.qmp", "libvirt domain vm1")
 */
struct tb_peer {
	const struct tb_peer_ops *ops;
	struct tb_dev *dev;
	char what[160];
};

/*
 * The VM behind QEMU's QMP socket @path. Its start connects, checks that it
 * is a QEMU with a virtio-balloon device and sets the guest's statistics
 * polling period (@stats_interval_ms rounded up to whole seconds, at least
 * 1 s); afterwards a lost connection is retried every second and the
 * device shows the VM as disconnected meanwhile. NULL: out of memory, or
 * @path too long (*@err says).
 */
struct tb_peer *tb_qmp_peer_new(struct tb_dev *dev, const char *path,
				uint32_t stats_interval_ms, char *err, size_t errlen);

/*
 * Fuzzing and tests: attach @fd (if the peer has no connection) as a fresh
 * connection, process @len bytes as received from QEMU at @now_ms, run its
 * timers, and drop what it would have sent. Returns its state (0: down).
 * The peer may close @fd (a dropped connection).
 */
int tb_qmp_test_feed(struct tb_peer *p, int fd, const char *buf, size_t len, uint64_t now_ms);

/*
 * The libvirt domain @domain on @uri (NULL: libvirt's default), through
 * libvirt's C API; started as the QMP peer is. NULL with *@err set when it
 * cannot be made (libvirt not built in, its event loop did not start).
 */
struct tb_peer *tb_virt_peer_new(struct tb_dev *dev, const char *uri,
				 const char *domain, uint32_t stats_interval_ms,
				 char *err, size_t errlen);

#endif /* TB_PEER_H */
