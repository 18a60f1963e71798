/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * oneframe egress gate: the contract between bpf/gate.bpf.c, userspace/gate/ and anything that
 * reads the pinned maps (bpftool, foctl). docs/gate-protocol.md describes every field and the
 * decision order; change both together and follow the versioning rules written there.
 *
 * Byte order: addresses and ports in map keys are in network byte order (as on the wire); every
 * other field is in host byte order. All structures have explicit padding so that the layout is
 * identical for clang -target bpf and for x86-64/arm64 userspace.
 */
#ifndef ONEFRAME_BPF_GATE_H
#define ONEFRAME_BPF_GATE_H

#ifndef __VMLINUX_H__
#include <linux/bpf.h> /* struct bpf_spin_lock */
#include <linux/types.h>
#endif

/* Incremented on any change to a map's type, key, value or meaning. A gate refuses pinned maps
 * written with another version (see "Versioning" in docs/gate-protocol.md). */
#define GATE_ABI_VERSION 3

/* Pin layout: <pin root>/<ifname>/<map name>. */
#define GATE_PIN_ROOT_DEFAULT "/sys/fs/bpf/oneframe"
#define GATE_MAP_CTL "gate_ctl"
#define GATE_MAP_PARTNER "gate_partner"
#define GATE_MAP_FLOWS "gate_flows"
#define GATE_MAP_SEEN "gate_seen"
#define GATE_MAP_COUNTERS "gate_counters"
#define GATE_MAP_TCP_HELD "gate_tcp_held"
#define GATE_MAP_TCP_FRAMES "gate_tcp_frames" /* ring buffer; not pinned (one per loaded gate) */
#define GATE_MAP_FENCE_TOKEN "gate_fence_token"

/* Map sizes. A full gate_flows refuses new rules (E2BIG); gate_seen evicts the least recently
 * seen flow. */
#define GATE_MAX_FLOWS 16384
#define GATE_MAX_SEEN 16384
#define GATE_MAX_TCP_HELD 16384 /* a full map refuses new holds (E2BIG) */
#define GATE_TCP_FRAMES_BYTES (1u << 20) /* gate_tcp_frames ring size */
#define GATE_TCP_FRAME_MAX 2048	   /* frames longer than this are not copied (counted) */
#define GATE_COUNTER_SLOTS 64 /* gate_counters max_entries; enum gate_counter grows into it */

/* A UDP GSO socket buffer carries at most this many datagrams (the kernel's UDP_MAX_SEGMENTS is
 * 64 or 128 depending on the version); a gate that sees more treats the buffer as malformed. */
#define GATE_MAX_GSO_SEGS 128

enum gate_role {
	GATE_ROLE_STANDBY = 0, /* gated packets are dropped */
	GATE_ROLE_ACTIVE = 1,  /* gated packets pass (lease and fence permitting) */
};

/* gate_ctl, key 0 (ARRAY, 1 entry). Written only by userspace, as a whole, with BPF_F_LOCK; the
 * BPF programs read it under the same lock, so a packet never sees half of an update (for
 * instance the new role with the old active_since_ns). */
struct gate_ctl {
	struct bpf_spin_lock lock; /* 4 bytes; zero in userspace copies */
	__u32 abi_version;	   /* GATE_ABI_VERSION of the writer */
	__u32 role;		   /* enum gate_role */
	__u32 fence;		   /* 1: fence on (only meaningful while ACTIVE) */
	__u64 lease_expiry_ns;	   /* CLOCK_MONOTONIC ns (bpf_ktime_get_ns); 0 = no lease */
	__u64 active_since_ns;	   /* CLOCK_MONOTONIC ns of the last STANDBY->ACTIVE or re-arm */
	__u64 fence_grace_ns;	   /* partner frames up to active_since + grace do not trip */
	__u64 generation;	   /* incremented by the writer on every update */
};

/* gate_partner, key 0 (ARRAY, 1 entry). Written only by gate_ingress. */
struct gate_partner {
	__u64 tx_ns;	  /* last partner takeover announcement (the only frame that arms the fence) */
	__u64 any_ns;	  /* last partner frame of any kind */
};

#define GATE_FENCE_TOKEN_BYTES 16

/* gate_fence_token, key 0 (ARRAY, 1 entry). Written only by userspace. The partner announces its
 * takeover with a UDP datagram from the stream IP to daddr:port whose payload starts with `token`, a
 * secret it shares with us (derived from the pair's key: docs/failover.md); only that arms the
 * fence. Any host on the LAN can forge the stream IP as a source, so no other frame may. */
struct gate_fence_token {
	__u32 valid;				/* 1: the fields below are set */
	__u32 daddr;				/* our admin IPv4 address, network byte order */
	__u16 port;				/* UDP destination port, network byte order */
	__u16 pad;
	__u8 token[GATE_FENCE_TOKEN_BYTES];
};

/* Key of gate_flows and gate_seen: a client's UDP destination. */
struct gate_flow_key {
	__u32 daddr; /* client IPv4 address, network byte order */
	__u16 dport; /* client UDP port, network byte order */
	__u16 pad;   /* must be 0 */
};

enum gate_rule {
	GATE_RULE_PASS_ALL = 0,	   /* pass every packet of the flow */
	GATE_RULE_DROP_ALL = 1,	   /* drop every packet of the flow */
	GATE_RULE_PASS_FROM = 2,   /* pass RTP seq at or after seq, drop earlier (RFC 1982) */
	GATE_RULE_PASS_BEFORE = 3, /* pass RTP seq before seq, drop the rest: PASS_FROM's complement */
	GATE_RULE__COUNT = 4,
};

/* gate_flows value (HASH). Written only by userspace. */
struct gate_flow_rule {
	__u32 rule; /* enum gate_rule */
	__u16 seq;  /* RTP sequence number of the hand-over, host byte order; 0 for *_ALL */
	__u16 pad;  /* must be 0 */
};

/* gate_tcp_held (HASH, key struct gate_flow_key with the client's TCP port). Written only by
 * userspace. A TCP connection of the stream IP held here is the daemon's to close: its FIN and RST
 * segments never leave, whoever sends them (a dying daemon's kernel closing its sockets, a kernel
 * answering a segment of a connection it no longer has), so the partner can take the connection
 * over. The daemon releases a connection before it closes it on purpose. */
struct gate_tcp_hold {
	__u64 since_ns; /* CLOCK_MONOTONIC when held (for the operator) */
};

/* One record of gate_tcp_frames: a TCP frame of the service (tcp_port of the stream IP, either
 * direction) that gate_ingress saw, as it was on the wire from its Ethernet header on. */
struct gate_tcp_frame {
	__u64 ns;  /* CLOCK_MONOTONIC when seen */
	__u32 len; /* bytes of frame[] that hold the frame */
	__u32 pad;
	__u8 frame[GATE_TCP_FRAME_MAX];
};

#define GATE_SEEN_RTP 1u /* last_seq and high_seq are valid */

/* gate_seen value (LRU_HASH): what the partner put on the wire for one flow, as the hub
 * delivered it to our stream interface. Written only by gate_ingress. */
struct gate_seen {
	__u16 last_seq;	 /* RTP seq of the most recent partner datagram */
	__u16 high_seq;	 /* highest RTP seq in RFC 1982 order since the entry was created */
	__u32 flags;	 /* GATE_SEEN_* */
	__u64 packets;	 /* datagrams of this flow seen from the partner */
	__u64 first_ns;	 /* CLOCK_MONOTONIC ns of the first, and */
	__u64 last_ns;	 /* of the most recent datagram */
};

/* gate_counters (PERCPU_ARRAY, GATE_COUNTER_SLOTS entries of __u64, index = enum gate_counter).
 * Every packet the egress program sees increments exactly one GATE_EG_* outcome; every frame the
 * ingress program sees increments exactly one GATE_IN_* outcome. GATE_INFO_* count properties of
 * packets already counted by an outcome. New counters are appended; indices never change. */
enum gate_counter {
	GATE_EG_PASS_UNGATED = 0,   /* not from the stream IP (admin IP, IPv6, other ethertypes) */
	GATE_EG_PASS_ARP_REQUEST = 1,
	GATE_EG_PASS_ACTIVE = 2,    /* gated, passed by role ACTIVE */
	GATE_EG_PASS_FLOW = 3,	    /* gated, passed by a flow rule */
	GATE_EG_DROP_STANDBY = 4,   /* gated, dropped by role STANDBY */
	GATE_EG_DROP_FLOW = 5,	    /* gated, dropped by a flow rule */
	GATE_EG_DROP_LEASE = 6,	    /* gated, lease expired */
	GATE_EG_DROP_FENCE = 7,	    /* gated, the partner transmitted since we became active */
	GATE_EG_DROP_GSO_SPLIT = 8, /* multi-datagram skb of a ruled flow straddling the hand-over */
	GATE_EG_DROP_GSO_BAD = 9,   /* multi-datagram skb of a ruled flow with impossible geometry */
	GATE_EG_DROP_NO_CTL = 10,   /* gate_ctl unreadable (never expected): fail closed */
	GATE_IN_PARTNER = 11,	    /* partner frame (from the stream IP): recorded and dropped */
	GATE_IN_PASS = 12,	    /* any other received frame */
	GATE_INFO_ARP_REPLY_DROP = 13, /* ARP replies from the stream IP dropped (any reason) */
	GATE_INFO_MALFORMED = 14,      /* gated because it could not be parsed; decided by role */
	GATE_INFO_FRAGMENT = 15,       /* gated IPv4 fragment; decided by role */
	GATE_INFO_NOT_RTP = 16,	       /* packet of a sequence-ruled flow that is not RTP; role */
	GATE_INFO_GSO = 17,	       /* gated multi-datagram skbs of sequence-ruled flows */
	GATE_INFO_PARTNER_RULED = 18,  /* partner frames of ruled flows (do not arm the fence) */
	GATE_INFO_SEEN_FULL = 19,      /* partner datagrams gate_seen could not record */
	GATE_EG_DROP_TCP_HELD = 20,    /* FIN or RST of a connection in gate_tcp_held */
	GATE_INFO_TCP_FRAME = 21,      /* service TCP frames copied to gate_tcp_frames */
	GATE_INFO_TCP_FRAME_LOST = 22, /* ... not copied: the ring was full or the frame too long */
	GATE_INFO_FENCE_ANNOUNCE = 23, /* partner takeover announcements with our token (armed it) */
	GATE_INFO_FENCE_FORGED = 24,   /* partner frames to the token port without it (ignored) */
	GATE_COUNTER__COUNT = 25,
};

#endif /* ONEFRAME_BPF_GATE_H */
