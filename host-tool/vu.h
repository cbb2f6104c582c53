/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vu.h - vhost-user back-end protocol layer (QEMU docs/interop/vhost-user.rst)
 *
 * Owns message I/O and dispatch (one flat switch, one function per request,
 * a name table for logs), the memory table and the per-queue state (rings,
 * kick/call/err eventfds, started/enabled). The device model plugs in through
 * struct tb_vu_ops; this layer knows nothing about balloons.
 *
 * fd ownership: tb_vu_dispatch() consumes every fd attached to a message:
 * handlers take the ones they keep, the dispatcher closes the rest, on every
 * path.
 */
#ifndef TB_VU_H
#define TB_VU_H

#include <stdbool.h>
#include <stdint.h>

#include "mem.h"
#include "vring.h"

/* front-end requests */
enum tb_vu_request {
	TB_VU_NONE = 0,
	TB_VU_GET_FEATURES = 1,
	TB_VU_SET_FEATURES = 2,
	TB_VU_SET_OWNER = 3,
	TB_VU_RESET_OWNER = 4,
	TB_VU_SET_MEM_TABLE = 5,
	TB_VU_SET_LOG_BASE = 6,
	TB_VU_SET_LOG_FD = 7,
	TB_VU_SET_VRING_NUM = 8,
	TB_VU_SET_VRING_ADDR = 9,
	TB_VU_SET_VRING_BASE = 10,
	TB_VU_GET_VRING_BASE = 11,
	TB_VU_SET_VRING_KICK = 12,
	TB_VU_SET_VRING_CALL = 13,
	TB_VU_SET_VRING_ERR = 14,
	TB_VU_GET_PROTOCOL_FEATURES = 15,
	TB_VU_SET_PROTOCOL_FEATURES = 16,
	TB_VU_GET_QUEUE_NUM = 17,
	TB_VU_SET_VRING_ENABLE = 18,
	TB_VU_SEND_RARP = 19,
	TB_VU_NET_SET_MTU = 20,
	TB_VU_SET_BACKEND_REQ_FD = 21,
	TB_VU_IOTLB_MSG = 22,
	TB_VU_SET_VRING_ENDIAN = 23,
	TB_VU_GET_CONFIG = 24,
	TB_VU_SET_CONFIG = 25,
	TB_VU_CREATE_CRYPTO_SESSION = 26,
	TB_VU_CLOSE_CRYPTO_SESSION = 27,
	TB_VU_POSTCOPY_ADVISE = 28,
	TB_VU_POSTCOPY_LISTEN = 29,
	TB_VU_POSTCOPY_END = 30,
	TB_VU_GET_INFLIGHT_FD = 31,
	TB_VU_SET_INFLIGHT_FD = 32,
	TB_VU_GPU_SET_SOCKET = 33,
	TB_VU_RESET_DEVICE = 34,
	TB_VU_VRING_KICK = 35,
	TB_VU_GET_MAX_MEM_SLOTS = 36,
	TB_VU_ADD_MEM_REG = 37,
	TB_VU_REM_MEM_REG = 38,
	TB_VU_SET_STATUS = 39,
	TB_VU_GET_STATUS = 40,
	TB_VU_REQUEST_COUNT
};

/* back-end requests (sent on the backend channel) */
#define TB_VU_BACKEND_CONFIG_CHANGE_MSG 2

/* header flags */
#define TB_VU_VERSION 0x1
#define TB_VU_VERSION_MASK 0x3
#define TB_VU_FLAG_REPLY (1U << 2)
#define TB_VU_FLAG_NEED_REPLY (1U << 3)

/* virtio/vhost feature bits (bit numbers, use TB_BIT() for masks) */
#define TB_F_PROTOCOL_FEATURES 30	/* VHOST_USER_F_PROTOCOL_FEATURES */
#define TB_F_VERSION_1 32		/* VIRTIO_F_VERSION_1 */

/* protocol feature bits */
#define TB_VU_PF_MQ 0
#define TB_VU_PF_REPLY_ACK 3
#define TB_VU_PF_BACKEND_REQ 5
#define TB_VU_PF_CONFIG 9

/* SET_VRING_KICK/CALL/ERR payload: index in bits 0..7, bit 8 = no fd */
#define TB_VU_VRING_IDX_MASK 0xff
#define TB_VU_VRING_NOFD (1ULL << 8)

#define TB_VU_MAX_QUEUES 8
#define TB_VU_MAX_FDS 8
/* largest payload accepted; bigger messages end the session */
#define TB_VU_PAYLOAD_MAX 4096
/* largest config space access */
#define TB_VU_CONFIG_MAX 256
/*
 * A message must arrive whole within this long once its first byte did
 * (QEMU writes each message at once); a peer that dribbles bytes loses its
 * session instead of holding the daemon.
 */
#define TB_VU_MSG_TIMEOUT_MS 1000U

struct tb_vu_hdr {
	uint32_t request;
	uint32_t flags;
	uint32_t size;
};

struct tb_vu_vring_state {
	uint32_t index;
	uint32_t num;
};

struct tb_vu_vring_addr {
	uint32_t index;
	uint32_t flags;
	uint64_t desc;
	uint64_t used;
	uint64_t avail;
	uint64_t log;
};

struct tb_vu_mem_region {
	uint64_t gpa;
	uint64_t size;
	uint64_t uva;
	uint64_t mmap_offset;
};

struct tb_vu_mem_table {
	uint32_t nregions;
	uint32_t padding;
	struct tb_vu_mem_region r[TB_MEM_MAX_REGIONS];
};

struct tb_vu_config {
	uint32_t offset;
	uint32_t size;
	uint32_t flags;
	uint8_t region[TB_VU_CONFIG_MAX];
};
#define TB_VU_CONFIG_HDR_SIZE 12

/**
 * struct tb_vu_msg - one message with its ancillary fds
 * @hdr: header as on the wire (native endian)
 * @p: payload, @hdr.size bytes valid
 * @fds: received descriptors, -1 once taken or closed
 * @nfds: number of entries of @fds
 */
struct tb_vu_msg {
	struct tb_vu_hdr hdr;
	union {
		uint64_t u64;
		struct tb_vu_vring_state state;
		struct tb_vu_vring_addr addr;
		struct tb_vu_mem_table mem;
		struct tb_vu_config config;
		uint8_t raw[TB_VU_PAYLOAD_MAX];
	} p;
	int fds[TB_VU_MAX_FDS];
	unsigned int nfds;
};

/**
 * struct tb_vu_queue - per-virtqueue back-end state
 * @vr: the ring walker state (num == 0 until usable)
 * @num: size from SET_VRING_NUM
 * @base: last_avail from SET_VRING_BASE
 * @addr: ring addresses from SET_VRING_ADDR (front-end user addresses)
 * @addr_set: @addr is valid
 * @kick_fd, @call_fd, @err_fd: eventfds, -1 if none
 * @started: a kick fd arrived (stopped again by GET_VRING_BASE)
 * @enabled: SET_VRING_ENABLE state
 * @moved: the ring position was ever non-zero in this session
 * @stopped_at: the position GET_VRING_BASE last reported (if @stopped_valid)
 * @reset_seen: this queue already reported the current new-ring reset
 */
struct tb_vu_queue {
	struct tb_vring vr;
	uint32_t num;
	uint16_t base;
	struct tb_vu_vring_addr addr;
	bool addr_set;
	int kick_fd;
	int call_fd;
	int err_fd;
	bool started;
	bool enabled;
	bool moved;
	uint16_t stopped_at;
	bool stopped_valid;
	bool reset_seen;
};

/**
 * struct tb_vu_rx - the message being received, taken as it arrives
 * @msg: header, payload and fds so far
 * @got: bytes of header and payload received
 * @started_ms: when its first byte arrived (0: none in progress)
 * @peeked: @msg is a copy of a whole message still in the socket (no fds):
 *	it is taken out only once it has been answered, so that a daemon
 *	killed before the reply leaves the request for its successor
 */
struct tb_vu_rx {
	struct tb_vu_msg msg;
	size_t got;
	uint64_t started_ms;
	bool peeked;
};

struct tb_vu;

/**
 * struct tb_vu_ops - what the device model supplies
 * @features: device features offered (VERSION_1, PROTOCOL_FEATURES added here)
 * @protocol_features: protocol features offered
 * @nqueues: number of virtqueues (<= TB_VU_MAX_QUEUES)
 * @config_size: bytes of config space
 * @get_config: copy config bytes [off, off+size) (already bounds-checked)
 * @set_config: driver wrote config bytes [off, off+size) (bounds-checked);
 *	returns 0 or -errno
 * @set_features: the front-end acked these features
 * @queue_notify: queue @idx may have new buffers (kick, start, enable)
 * @session: the front-end's session started (true) or ended (false); on
 *	false all memory and queues are already gone
 * @queue_stop: queue @idx is about to stop (GET_VRING_BASE, reset); its ring
 *	is still mapped
 * @quiesce: the front-end is about to change memory or rings, or the session
 *	ends: finish and return every buffer still being worked on (optional)
 * @before_reply: a request was handled, its reply (if any) not sent yet:
 *	the moment to make the session's new state durable (optional)
 * @device_reset: the front-end reset the device on a live session: an
 *	explicit RESET_DEVICE/RESET_OWNER, or the inflate queue restarted as a
 *	new ring (position 0 after it had moved, or new ring addresses): a
 *	guest reboot or a driver reload
 */
struct tb_vu_ops {
	uint64_t features;
	uint64_t protocol_features;
	unsigned int nqueues;
	uint32_t config_size;
	void (*get_config)(void *opaque, uint8_t *buf, uint32_t off, uint32_t size);
	int (*set_config)(void *opaque, const uint8_t *buf, uint32_t off,
			  uint32_t size, uint32_t flags);
	void (*set_features)(void *opaque, uint64_t features);
	void (*queue_notify)(void *opaque, unsigned int idx);
	void (*session)(void *opaque, bool up);
	void (*queue_stop)(void *opaque, unsigned int idx);
	void (*device_reset)(void *opaque);
	void (*quiesce)(void *opaque);
	void (*before_reply)(void *opaque);
};

/**
 * struct tb_vu - one front-end session
 * @ops, @opaque: the device model
 * @sock_fd: the vhost-user connection, -1 if none
 * @backend_fd: back-end request channel from SET_BACKEND_REQ_FD, -1 if none
 * @extra_features: device features offered besides @ops->features (a
 *	daemon option, e.g. DEFLATE_ON_OOM)
 * @features: acked by SET_FEATURES (valid if @features_set)
 * @protocol_features: acked by SET_PROTOCOL_FEATURES
 * @mem: guest memory
 * @q: queues, [0, ops->nqueues) valid
 * @unknown_requests: requests we did not understand (logged)
 * @rx: the partly received message
 */
struct tb_vu {
	const struct tb_vu_ops *ops;
	void *opaque;
	int sock_fd;
	int backend_fd;
	uint64_t extra_features;
	uint64_t features;
	bool features_set;
	uint64_t protocol_features;
	bool owner;
	struct tb_mem mem;
	struct tb_vu_queue q[TB_VU_MAX_QUEUES];
	uint64_t unknown_requests;
	struct tb_vu_rx rx;
};

void tb_vu_init(struct tb_vu *vu, const struct tb_vu_ops *ops, void *opaque);

/* the features GET_FEATURES reports */
uint64_t tb_vu_offered_features(const struct tb_vu *vu);

/*
 * Handle one request. Fills @reply and sets *send_reply when the request
 * has a reply (explicit, or REPLY_ACK). Consumes all of @msg's fds.
 * Returns 0, or -errno if the request failed (the session may go on).
 */
int tb_vu_dispatch(struct tb_vu *vu, struct tb_vu_msg *msg,
		   struct tb_vu_msg *reply, bool *send_reply);

/* Read one message (blocking; the socket should have SO_RCVTIMEO). 0/-errno */
int tb_vu_recv(int fd, struct tb_vu_msg *msg);
/* Write one message without fds. 0/-errno */
int tb_vu_send(int fd, const struct tb_vu_msg *msg);

/*
 * @vu->sock_fd is readable: take what arrived without waiting; once a
 * message is whole, dispatch it and reply. Returns 0, or -errno when the
 * session must end (including a message not whole TB_VU_MSG_TIMEOUT_MS
 * after its first byte).
 */
int tb_vu_serve_one(struct tb_vu *vu);

/* ms until the partly received message times out (0: now), -1 if none */
int64_t tb_vu_rx_due(const struct tb_vu *vu, uint64_t now_ms);

/* start a session on a connected socket */
void tb_vu_attach(struct tb_vu *vu, int fd);
/*
 * Take up a session a previous process left (session.c): @vu already holds
 * the memory table, queues and backend channel; @fd is the connection.
 * Announces the session and the features to the device model, maps every
 * ring and resumes a started one at its used index, then lets the device
 * look at every ready queue.
 */
void tb_vu_attach_resumed(struct tb_vu *vu, int fd, bool features_set,
			  uint64_t features);
/* end the session: close every fd, unmap memory, forget rings */
void tb_vu_detach(struct tb_vu *vu);

/* queue is started, enabled and its ring is mapped */
bool tb_vu_queue_ready(const struct tb_vu *vu, unsigned int idx);

/* signal the queue's call eventfd (if any) */
void tb_vu_queue_call(struct tb_vu *vu, unsigned int idx);
/* signal the queue's err eventfd (if any) */
void tb_vu_queue_error(struct tb_vu *vu, unsigned int idx);

/*
 * Send VHOST_USER_BACKEND_CONFIG_CHANGE_MSG (no NEED_REPLY). Returns 0, or
 * -errno (no channel, CONFIG not negotiated, send failed).
 */
int tb_vu_notify_config(struct tb_vu *vu);

/* a config change notification can be sent */
bool tb_vu_can_notify(const struct tb_vu *vu);

/* drain whatever the front-end sent on the backend channel; -errno on EOF */
int tb_vu_backend_readable(struct tb_vu *vu);

const char *tb_vu_request_name(uint32_t request);

#endif /* TB_VU_H */
