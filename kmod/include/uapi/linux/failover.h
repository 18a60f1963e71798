/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * oneframe failover: the values of seed 004 [0066]-[0077], shared by the kernel module
 * failover.ko, libfo and the daemon. This header is a stable contract: values never change.
 *
 * The module creates the misc device /dev/failover (mode 0600). Reading the state
 * (FO_IOC_GET_STATUS) needs no privilege; every ioctl that changes something needs
 * CAP_NET_ADMIN (in the initial user namespace) and fails with EPERM without it, except
 * FO_IOC_UNREGISTER, which only the registering process may call.
 *
 * Errors: EINVAL for any malformed argument (reserved bits or fields not zero, values out of
 * range), EFAULT for a bad pointer, ENOTTY for an unknown command, EPROTO for a transition
 * that Fig. 5 does not allow (see failover_fsm.h), ESTALE when FO_TRANSITION_EXPECT is set
 * and the current state differs, ENOSPC when FO_MAX_REGISTRATIONS descriptors are
 * registered, EBUSY when another process already registered this descriptor.
 *
 * sysfs (read only, one value per file) under /sys/class/misc/failover/:
 *   type, state          names as in [0066]-[0067] without prefix: "master", "live", ...
 *   fsm_state            the Fig. 5 name: "Primary", "Secondary_No_Primary", ...
 *   generation           number of changes since load
 *   registered, critical descriptors registered, and those registered critical
 *   message_armed        1 while a prebuilt failover message waits to be sent
 *   messages_sent, message_errors, signals_dropped, critical_deaths   counters
 */
#ifndef _UAPI_LINUX_FAILOVER_H
#define _UAPI_LINUX_FAILOVER_H

#include <linux/types.h>
#include <linux/ioctl.h>

/* failover_type, [0066] */
enum fo_type {
	FOTYPE_UNDEF = 0,
	FOTYPE_MASTER = 1,
	FOTYPE_SLAVE = 2,
};

/* failover_state, [0067] */
enum fo_state {
	FOSTATE_UNDEF = 0,
	FOSTATE_LIVE = 1,
	FOSTATE_FAILED = 2,
	FOSTATE_SYNCING = 3,
	FOSTATE_SYNCED = 4,
	FOSTATE_NOPARTNER = 5,
	FOSTATE_NONE = 6,
};

#define FOTYPE_MAX	FOTYPE_SLAVE
#define FOSTATE_MAX	FOSTATE_NONE

#define FO_API_VERSION	1
#define FO_DEVICE_PATH	"/dev/failover"
#define FO_SYSFS_DIR	"/sys/class/misc/failover"

/*
 * SIGFAILOVER, [0093]: a real-time signal, so that every change is queued and none is merged
 * with the next. 40 in kernel numbering is SIGRTMIN + 6 with glibc (which keeps 32 and 33).
 * A process may register another real-time signal in FO_SIG_MIN..FO_SIG_MAX.
 */
#define FO_SIGFAILOVER	40
#ifndef SIGFAILOVER
#define SIGFAILOVER	FO_SIGFAILOVER
#endif
#define FO_SIG_MIN	34
#define FO_SIG_MAX	64

/*
 * Every notification carries si_code FO_SI_CODE and si_value.sival_ptr as below: the new
 * type and state, the cause, and the low 32 bits of the generation, so that a receiver can
 * tell a lost notification (RLIMIT_SIGPENDING) from a duplicate. 32-bit processes see only
 * the low 32 bits (no generation). si_pid is 0 when the kernel sent it.
 */
#define FO_SI_CODE	(-70)

enum fo_cause {
	FO_CAUSE_NONE = 0,
	FO_CAUSE_SET = 1,	/* a process changed the state with FO_IOC_SET_STATE */
	FO_CAUSE_CRITICAL = 2,	/* a critical process died or closed without unregistering */
};

#define FO_SIGVAL(type, state, cause, gen) \
	((((__u64)(__u32)(gen)) << 32) | ((__u64)((cause) & 0xff) << 16) | \
	 ((__u64)((state) & 0xff) << 8) | ((__u64)((type) & 0xff)))
#define FO_SIGVAL_TYPE(v)	((unsigned int)((__u64)(v) & 0xff))
#define FO_SIGVAL_STATE(v)	((unsigned int)(((__u64)(v) >> 8) & 0xff))
#define FO_SIGVAL_CAUSE(v)	((unsigned int)(((__u64)(v) >> 16) & 0xff))
#define FO_SIGVAL_GEN(v)	((__u32)((__u64)(v) >> 32))

/* At most this many descriptors registered at once (notify, critical or both). */
#define FO_MAX_REGISTRATIONS	64
/* The prebuilt failover message: at most this many payload bytes. */
#define FO_MESSAGE_MAX		512

#define FO_STATUS_MESSAGE_ARMED	(1U << 0)

struct fo_status {
	__u32 version;		/* FO_API_VERSION */
	__u8 type;		/* enum fo_type */
	__u8 state;		/* enum fo_state */
	__u8 last_cause;	/* enum fo_cause of the last change */
	__u8 flags;		/* FO_STATUS_* */
	__u64 generation;	/* changes since load */
	__u32 registered;
	__u32 critical;
	__u64 messages_sent;
	__u64 message_errors;
	__u64 signals_dropped;
	__u64 critical_deaths;
	__u64 reserved[2];	/* zero */
};

#define FO_TRANSITION_EXPECT	(1U << 0)	/* fail with ESTALE unless in expect_* */

struct fo_transition {
	__u32 flags;		/* FO_TRANSITION_* */
	__u8 expect_type;	/* with FO_TRANSITION_EXPECT, else zero */
	__u8 expect_state;
	__u8 type;		/* the new type */
	__u8 state;		/* the new state */
	__u32 reserved;		/* zero */
};

#define FO_REG_NOTIFY	(1U << 0)	/* send signo to this process on every change */
#define FO_REG_CRITICAL	(1U << 1)	/* death or close without unregister fails the server */
#define FO_REG_ALL	(FO_REG_NOTIFY | FO_REG_CRITICAL)

/*
 * A registration belongs to the descriptor and to the thread group that made it. It replaces
 * any earlier registration of the same descriptor. Any close of the descriptor by that thread
 * group (close(), exit, exec with O_CLOEXEC) ends it; if it was critical and not unregistered
 * first, that is a critical death.
 */
struct fo_registration {
	__u32 flags;		/* FO_REG_*, not zero */
	__u32 signo;		/* with FO_REG_NOTIFY: 0 (SIGFAILOVER) or FO_SIG_MIN..FO_SIG_MAX */
	__u64 reserved;		/* zero */
};

/*
 * The prebuilt failover message (set by the daemon, authenticated by it; the module sends the
 * bytes as they are): one UDP datagram to the partner's private address, sent by the kernel
 * from a socket in the network namespace of the process that set it, when a critical process
 * dies. It is sent at most once: a sent message is disarmed until the next FO_IOC_SET_MESSAGE.
 * len 0 disarms. Addresses and ports are in network byte order.
 */
struct fo_message {
	__u32 flags;		/* zero */
	__be32 daddr;		/* partner, not 0, multicast or broadcast */
	__be32 saddr;		/* 0: chosen by routing */
	__be16 dport;		/* not 0 */
	__be16 sport;		/* 0: any */
	__u16 len;		/* 0..FO_MESSAGE_MAX */
	__u16 reserved;		/* zero */
	__u8 payload[FO_MESSAGE_MAX];
};

#define FO_IOC_MAGIC		0xF0
#define FO_IOC_GET_STATUS	_IOR(FO_IOC_MAGIC, 0, struct fo_status)
#define FO_IOC_SET_STATE	_IOW(FO_IOC_MAGIC, 1, struct fo_transition)
#define FO_IOC_REGISTER		_IOW(FO_IOC_MAGIC, 2, struct fo_registration)
#define FO_IOC_UNREGISTER	_IO(FO_IOC_MAGIC, 3)
#define FO_IOC_SET_MESSAGE	_IOW(FO_IOC_MAGIC, 4, struct fo_message)

#endif /* _UAPI_LINUX_FAILOVER_H */
