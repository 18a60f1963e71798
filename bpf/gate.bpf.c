// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * oneframe egress gate (contract: gate.h, docs/gate-protocol.md).
 *
 * gate_egress  (tc clsact egress on the stream interface): lets a packet from the stream IP leave
 *              only while this server may transmit it: lease, per-flow hand-over rule, role, fence.
 * gate_ingress (tc clsact ingress on the same interface): the hub floods the partner's frames to
 *              us; frames from the stream IP can only be the partner's. Records what the partner
 *              put on the wire (gate_seen, gate_partner) and drops them (they are a client's).
 *
 * Every header is read with bpf_skb_load_bytes, so non-linear socket buffers and truncated
 * frames are handled alike: a read past the end fails and the frame is classified as malformed.
 */
#include "vmlinux.h"

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "gate.h"

/* vmlinux.h carries types, not #defines. */
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_ARP 0x0806
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define ARPOP_REQUEST 1
#define ARPOP_REPLY 2
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define UDP_HLEN 8
#define TCP_FIN 0x01
#define TCP_RST 0x04
#define RTP_HLEN 12
#define READ_ONCE(x) (*(volatile typeof(x) *)&(x))
#define WRITE_ONCE(x, v) (*(volatile typeof(x) *)&(x) = (v))

/* The layouts docs/gate-protocol.md publishes (userspace checks the same). */
_Static_assert(sizeof(struct gate_ctl) == 48, "gate_ctl layout");
_Static_assert(sizeof(struct gate_partner) == 16, "gate_partner layout");
_Static_assert(sizeof(struct gate_flow_key) == 8, "gate_flow_key layout");
_Static_assert(sizeof(struct gate_flow_rule) == 8, "gate_flow_rule layout");
_Static_assert(sizeof(struct gate_seen) == 32, "gate_seen layout");
_Static_assert(sizeof(struct gate_tcp_hold) == 8, "gate_tcp_hold layout");
_Static_assert(sizeof(struct gate_fence_token) == 28, "gate_fence_token layout");
_Static_assert(sizeof(struct gate_tcp_frame) == 16 + GATE_TCP_FRAME_MAX, "gate_tcp_frame layout");
_Static_assert(GATE_COUNTER__COUNT <= GATE_COUNTER_SLOTS, "counter slots");

/* The stream IPv4 address, network byte order; set through skel->rodata before load. */
const volatile __u32 stream_ip = 0;
/* The TCP port whose frames gate_ingress copies to gate_tcp_frames (RTSP), network byte order;
 * 0: none. Set through skel->rodata before load. */
const volatile __u16 tcp_port = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gate_ctl);
} gate_ctl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gate_partner);
} gate_partner SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GATE_MAX_FLOWS);
	__type(key, struct gate_flow_key);
	__type(value, struct gate_flow_rule);
} gate_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, GATE_MAX_SEEN);
	__type(key, struct gate_flow_key);
	__type(value, struct gate_seen);
} gate_seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gate_fence_token);
} gate_fence_token SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GATE_MAX_TCP_HELD);
	__type(key, struct gate_flow_key);
	__type(value, struct gate_tcp_hold);
} gate_tcp_held SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, GATE_TCP_FRAMES_BYTES);
} gate_tcp_frames SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GATE_COUNTER_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} gate_counters SEC(".maps");

/* IPv4 header without bitfields, so the layout does not depend on the compiler's bit order. */
struct ip4 {
	__u8 vihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__be16 check;
	__be32 saddr;
	__be32 daddr;
};

struct arp_fixed {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 op;
};

enum klass {
	K_UNGATED = 0,	   /* not from the stream IP: pass */
	K_ARP_REQUEST = 1, /* pass: the standby must resolve clients */
	K_GATED = 2,	   /* from the stream IP, or unparseable (fail closed) */
};

struct frame {
	__u32 klass;
	__u8 from_stream_ip; /* source known to be the stream IP (the rest of K_GATED is malformed) */
	__u8 malformed;
	__u8 fragment;
	__u8 arp_reply;
	__u8 has_flow; /* UDP, unfragmented, header complete: key and payload_* are valid */
	__u8 tcp_close; /* TCP, unfragmented, FIN or RST set: key holds the client's TCP end */
	struct gate_flow_key key;
	__u32 payload_off; /* UDP payload offset in the frame */
	__u32 payload_len; /* UDP payload bytes present (all segments of a GSO skb) */
};

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&gate_counters, &idx);

	/* Per-CPU slot; tc runs with bottom halves disabled, so a plain increment is not torn. */
	if (v)
		*v += 1;
}

/* Fills f from the frame. Classification rules: docs/gate-protocol.md, "Classification". */
static __always_inline void classify(struct __sk_buff *skb, struct frame *f)
{
	__u8 eth[ETH_HLEN];
	__u32 off = ETH_HLEN;
	__u16 proto;

	__builtin_memset(f, 0, sizeof(*f));
	if (bpf_skb_load_bytes(skb, 0, eth, sizeof(eth)) < 0)
		goto malformed;
	proto = ((__u16)eth[12] << 8) | eth[13];
	/* Up to two VLAN tags in the frame (a tag held in skb metadata is not in the data). */
#pragma unroll
	for (int i = 0; i < 2; i++) {
		__u8 tag[4];

		if (proto != ETH_P_8021Q && proto != ETH_P_8021AD)
			break;
		if (bpf_skb_load_bytes(skb, off, tag, sizeof(tag)) < 0)
			goto malformed;
		proto = ((__u16)tag[2] << 8) | tag[3];
		off += 4;
	}
	/* A third tag would hide what the frame is: fail closed. */
	if (proto == ETH_P_8021Q || proto == ETH_P_8021AD)
		goto malformed;

	if (proto == ETH_P_ARP) {
		struct arp_fixed a;
		__be32 spa;

		if (bpf_skb_load_bytes(skb, off, &a, sizeof(a)) < 0)
			goto malformed;
		if (a.op == bpf_htons(ARPOP_REQUEST)) {
			f->klass = K_ARP_REQUEST;
			return;
		}
		if (a.ptype != bpf_htons(ETH_P_IP) || a.plen != 4) {
			f->klass = K_UNGATED;
			return;
		}
		/* Sender protocol address follows the sender hardware address. */
		if (bpf_skb_load_bytes(skb, off + sizeof(a) + a.hlen, &spa, sizeof(spa)) < 0)
			goto malformed;
		if (spa != stream_ip) {
			f->klass = K_UNGATED;
			return;
		}
		f->klass = K_GATED;
		f->from_stream_ip = 1;
		f->arp_reply = a.op == bpf_htons(ARPOP_REPLY);
		return;
	}

	if (proto != ETH_P_IP) {
		f->klass = K_UNGATED;
		return;
	}

	struct ip4 ip;
	struct udphdr udp;
	__u32 ihl, l4, skb_len, remain, ulen;

	if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0)
		goto malformed;
	if (ip.saddr != stream_ip) {
		f->klass = K_UNGATED;
		return;
	}
	f->klass = K_GATED;
	f->from_stream_ip = 1;
	ihl = ip.vihl & 0x0f;
	if ((ip.vihl >> 4) != 4 || ihl < 5) {
		f->malformed = 1;
		return;
	}
	if (ip.frag_off & bpf_htons(IP_MF | IP_OFFSET)) {
		f->fragment = 1;
		return;
	}
	l4 = off + ihl * 4;
	if (ip.protocol == IPPROTO_TCP) {
		__u8 th[14]; /* ports, seq, ack, data offset, flags */

		if (bpf_skb_load_bytes(skb, l4, th, sizeof(th)) < 0) {
			f->malformed = 1;
			return;
		}
		if (th[13] & (TCP_FIN | TCP_RST)) {
			f->tcp_close = 1;
			f->key.daddr = ip.daddr;
			__builtin_memcpy(&f->key.dport, &th[2], 2); /* network order, as on the wire */
		}
		return;
	}
	if (ip.protocol != IPPROTO_UDP)
		return;
	if (bpf_skb_load_bytes(skb, l4, &udp, sizeof(udp)) < 0) {
		f->malformed = 1;
		return;
	}
	skb_len = skb->len;
	if (skb_len < l4 + UDP_HLEN) {
		f->malformed = 1;
		return;
	}
	remain = skb_len - (l4 + UDP_HLEN);
	if (skb->gso_segs <= 1) {
		/* One datagram: trust the UDP length, but never beyond what the buffer holds. */
		ulen = bpf_ntohs(udp.len);
		if (ulen < UDP_HLEN) {
			f->malformed = 1;
			return;
		}
		if (ulen - UDP_HLEN < remain)
			remain = ulen - UDP_HLEN;
	}
	f->has_flow = 1;
	f->key.daddr = ip.daddr;
	f->key.dport = udp.dest;
	f->payload_off = l4 + UDP_HLEN;
	f->payload_len = remain;
	return;

malformed:
	f->klass = K_GATED;
	f->malformed = 1;
}

/* RTP sequence number of the datagram whose payload starts at off with len bytes present, or -1
 * if it is not RTP (version 2, at least a fixed header). */
static __always_inline int rtp_seq(struct __sk_buff *skb, __u32 off, __u32 len)
{
	__u8 h[4];

	if (len < RTP_HLEN)
		return -1;
	if (bpf_skb_load_bytes(skb, off, h, sizeof(h)) < 0)
		return -1;
	if ((h[0] >> 6) != 2)
		return -1;
	return ((int)h[2] << 8) | h[3];
}

/* RFC 1982 serial order on 16 bits: seq is at or after s. PASS_FROM passes exactly these,
 * PASS_BEFORE exactly the others, so two gates with one hand-over seq never both pass one. */
static __always_inline int seq_at_or_after(__u16 seq, __u16 s)
{
	return (__u16)(seq - s) < 0x8000;
}

static __always_inline int rule_passes(__u32 rule, __u16 s, __u16 seq)
{
	int after = seq_at_or_after(seq, s);

	return rule == GATE_RULE_PASS_FROM ? after : !after;
}

enum seq_verdict {
	V_PASS,
	V_DROP,
	V_NOT_RTP,
	V_GSO_SPLIT,
	V_GSO_BAD,
};

/* Applies a PASS_FROM / PASS_BEFORE rule to every datagram in the skb. A UDP GSO skb reaches tc
 * egress before segmentation: its datagrams sit at payload_off + i * gso_size, each with its own
 * RTP header, so each is read rather than guessed. */
static __always_inline enum seq_verdict seq_rule(struct __sk_buff *skb, const struct frame *f,
						 __u32 rule, __u16 s)
{
	__u32 segs = skb->gso_segs;
	__u32 size, last_len, npass = 0;
	int seq;

	if (segs <= 1) {
		seq = rtp_seq(skb, f->payload_off, f->payload_len);
		if (seq < 0)
			return V_NOT_RTP;
		return rule_passes(rule, s, seq) ? V_PASS : V_DROP;
	}

	count(GATE_INFO_GSO);
	size = skb->gso_size;
	if (segs > GATE_MAX_GSO_SEGS || size < RTP_HLEN || size > 0xffff)
		return V_GSO_BAD;
	if (f->payload_len <= (segs - 1) * size || f->payload_len > segs * size)
		return V_GSO_BAD;
	last_len = f->payload_len - (segs - 1) * size;
	if (last_len < RTP_HLEN)
		return V_GSO_BAD;
	if (rtp_seq(skb, f->payload_off, size) < 0)
		return V_NOT_RTP;
	for (__u32 i = 0; i < GATE_MAX_GSO_SEGS; i++) {
		if (i >= segs)
			break;
		seq = rtp_seq(skb, f->payload_off + i * size, RTP_HLEN);
		if (seq < 0)
			return V_GSO_BAD;
		npass += rule_passes(rule, s, seq);
	}
	if (npass == segs)
		return V_PASS;
	if (npass == 0)
		return V_DROP;
	return V_GSO_SPLIT;
}

static __always_inline __u64 partner_tx_ns(void)
{
	__u32 k = 0;
	struct gate_partner *p = bpf_map_lookup_elem(&gate_partner, &k);

	return p ? READ_ONCE(p->tx_ns) : 0;
}

/* The decision for a gated packet, in the documented order. Returns the outcome counter. */
static __always_inline __u32 decide(struct __sk_buff *skb, const struct frame *f)
{
	__u32 k = 0, role, fence;
	__u64 lease, since, grace, now;
	struct gate_ctl *c = bpf_map_lookup_elem(&gate_ctl, &k);

	if (!c)
		return GATE_EG_DROP_NO_CTL;
	bpf_spin_lock(&c->lock);
	role = c->role;
	fence = c->fence;
	lease = c->lease_expiry_ns;
	since = c->active_since_ns;
	grace = c->fence_grace_ns;
	bpf_spin_unlock(&c->lock);

	/* 0. A held TCP connection is closed by its daemon only (gate_tcp_held). */
	if (f->tcp_close && bpf_map_lookup_elem(&gate_tcp_held, &f->key))
		return GATE_EG_DROP_TCP_HELD;

	/* 1. Lease: a daemon that stopped renewing stops transmitting, whatever else says. */
	now = bpf_ktime_get_ns();
	if (lease && now >= lease)
		return GATE_EG_DROP_LEASE;

	/* 2. Per-flow rule: overrides the role for that flow. */
	if (f->has_flow) {
		struct gate_flow_rule *r = bpf_map_lookup_elem(&gate_flows, &f->key);

		if (r) {
			__u32 rule = READ_ONCE(r->rule);
			__u16 s = READ_ONCE(r->seq);

			switch (rule) {
			case GATE_RULE_PASS_ALL:
				return GATE_EG_PASS_FLOW;
			case GATE_RULE_PASS_FROM:
			case GATE_RULE_PASS_BEFORE:
				switch (seq_rule(skb, f, rule, s)) {
				case V_PASS:
					return GATE_EG_PASS_FLOW;
				case V_DROP:
					return GATE_EG_DROP_FLOW;
				case V_GSO_SPLIT:
					return GATE_EG_DROP_GSO_SPLIT;
				case V_GSO_BAD:
					return GATE_EG_DROP_GSO_BAD;
				default:
					count(GATE_INFO_NOT_RTP);
					break; /* not RTP: follows the role */
				}
				break;
			default: /* DROP_ALL, and any value this program does not know: fail closed */
				return GATE_EG_DROP_FLOW;
			}
		}
	}

	/* 3. Role. */
	if (role != GATE_ROLE_ACTIVE)
		return GATE_EG_DROP_STANDBY;

	/* 4. Fence: the partner transmitted role-owned traffic after we became active, so it took
	 * over while we were hung; we must be silent. */
	if (fence && partner_tx_ns() > since + grace)
		return GATE_EG_DROP_FENCE;
	return GATE_EG_PASS_ACTIVE;
}

SEC("tc")
int gate_egress(struct __sk_buff *skb)
{
	struct frame f;
	__u32 outcome;

	classify(skb, &f);
	if (f.klass == K_UNGATED) {
		count(GATE_EG_PASS_UNGATED);
		return TC_ACT_OK;
	}
	if (f.klass == K_ARP_REQUEST) {
		count(GATE_EG_PASS_ARP_REQUEST);
		return TC_ACT_OK;
	}
	if (f.malformed)
		count(GATE_INFO_MALFORMED);
	if (f.fragment)
		count(GATE_INFO_FRAGMENT);
	outcome = decide(skb, &f);
	count(outcome);
	if (outcome == GATE_EG_PASS_ACTIVE || outcome == GATE_EG_PASS_FLOW)
		return TC_ACT_OK;
	if (f.arp_reply)
		count(GATE_INFO_ARP_REPLY_DROP);
	return TC_ACT_SHOT;
}

/* Records one partner datagram of flow f in gate_seen. */
static __always_inline void record_seen(struct __sk_buff *skb, const struct frame *f, __u64 now)
{
	__u32 segs = skb->gso_segs, size = skb->gso_size;
	__u32 off = f->payload_off, len = f->payload_len;
	struct gate_seen *s;
	int seq;

	/* A GRO-merged buffer: count every datagram, take the sequence number of the last one. */
	if (segs > 1 && segs <= GATE_MAX_GSO_SEGS && size >= RTP_HLEN && size <= 0xffff &&
	    len > (segs - 1) * size && len <= segs * size) {
		off += (segs - 1) * size;
		len -= (segs - 1) * size;
	} else {
		segs = 1;
	}
	seq = rtp_seq(skb, off, len);

	s = bpf_map_lookup_elem(&gate_seen, &f->key);
	if (!s) {
		struct gate_seen init = {
			.packets = segs,
			.first_ns = now,
			.last_ns = now,
		};

		if (seq >= 0) {
			init.last_seq = seq;
			init.high_seq = seq;
			init.flags = GATE_SEEN_RTP;
		}
		if (bpf_map_update_elem(&gate_seen, &f->key, &init, BPF_NOEXIST) == 0)
			return;
		/* Another CPU created it meanwhile; update that one. */
		s = bpf_map_lookup_elem(&gate_seen, &f->key);
		if (!s) {
			count(GATE_INFO_SEEN_FULL);
			return;
		}
	}
	__sync_fetch_and_add(&s->packets, segs);
	WRITE_ONCE(s->last_ns, now);
	if (seq >= 0) {
		WRITE_ONCE(s->last_seq, seq);
		if (!(s->flags & GATE_SEEN_RTP) || !seq_at_or_after(s->high_seq, seq))
			WRITE_ONCE(s->high_seq, seq);
		if (!(s->flags & GATE_SEEN_RTP))
			WRITE_ONCE(s->flags, s->flags | GATE_SEEN_RTP);
	}
}

/* A TCP frame of the service (tcp_port of the stream IP, to it or from it, unfragmented). */
static __always_inline int service_tcp(struct __sk_buff *skb)
{
	__u8 eth[ETH_HLEN];
	__u32 off = ETH_HLEN;
	struct ip4 ip;
	__be16 ports[2];
	__u16 proto;

	if (!tcp_port || bpf_skb_load_bytes(skb, 0, eth, sizeof(eth)) < 0)
		return 0;
	proto = ((__u16)eth[12] << 8) | eth[13];
#pragma unroll
	for (int i = 0; i < 2; i++) {
		__u8 tag[4];

		if (proto != ETH_P_8021Q && proto != ETH_P_8021AD)
			break;
		if (bpf_skb_load_bytes(skb, off, tag, sizeof(tag)) < 0)
			return 0;
		proto = ((__u16)tag[2] << 8) | tag[3];
		off += 4;
	}
	if (proto != ETH_P_IP || bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0)
		return 0;
	if (ip.protocol != IPPROTO_TCP || (ip.frag_off & bpf_htons(IP_MF | IP_OFFSET)) || (ip.vihl & 0x0f) < 5)
		return 0;
	if (bpf_skb_load_bytes(skb, off + (ip.vihl & 0x0f) * 4, ports, sizeof(ports)) < 0)
		return 0;
	return (ip.saddr == stream_ip && ports[0] == tcp_port) || (ip.daddr == stream_ip && ports[1] == tcp_port);
}

/* Copies a service TCP frame, whole, to gate_tcp_frames: the daemon's view of the connections a
 * takeover carries over (docs/tcp-takeover.md). */
static __always_inline void copy_tcp_frame(struct __sk_buff *skb, __u64 now)
{
	struct gate_tcp_frame *r;
	__u32 len = skb->len;

	if (len == 0 || len > GATE_TCP_FRAME_MAX) {
		count(GATE_INFO_TCP_FRAME_LOST);
		return;
	}
	r = bpf_ringbuf_reserve(&gate_tcp_frames, sizeof(*r), 0);
	if (!r) {
		count(GATE_INFO_TCP_FRAME_LOST);
		return;
	}
	r->ns = now;
	r->len = len;
	r->pad = 0;
	if (bpf_skb_load_bytes(skb, 0, r->frame, len) < 0) {
		bpf_ringbuf_discard(r, 0);
		count(GATE_INFO_TCP_FRAME_LOST);
		return;
	}
	bpf_ringbuf_submit(r, 0);
	count(GATE_INFO_TCP_FRAME);
}

enum { NOT_TO_TOKEN_PORT, ANNOUNCEMENT, FORGED };

/* A partner datagram to the token's address and port announces its takeover if its payload
 * starts with the token; without it, it is forged (any LAN host can spoof the stream IP). */
static __always_inline int announcement(struct __sk_buff *skb, const struct frame *f)
{
	__u32 k = 0;
	struct gate_fence_token *t = bpf_map_lookup_elem(&gate_fence_token, &k);
	__u8 got[GATE_FENCE_TOKEN_BYTES];
	__u8 diff = 0;

	if (!t || !READ_ONCE(t->valid) || f->key.daddr != READ_ONCE(t->daddr) ||
	    f->key.dport != READ_ONCE(t->port))
		return NOT_TO_TOKEN_PORT;
	if (f->payload_len < GATE_FENCE_TOKEN_BYTES ||
	    bpf_skb_load_bytes(skb, f->payload_off, got, sizeof(got)) < 0)
		return FORGED;
#pragma unroll
	for (int i = 0; i < GATE_FENCE_TOKEN_BYTES; i++)
		diff |= got[i] ^ t->token[i];
	return diff ? FORGED : ANNOUNCEMENT;
}

SEC("tc")
int gate_ingress(struct __sk_buff *skb)
{
	struct frame f;
	struct gate_partner *p;
	__u32 k = 0;
	__u64 now;
	int arms_fence;

	if (service_tcp(skb))
		copy_tcp_frame(skb, bpf_ktime_get_ns());
	classify(skb, &f);
	/* What our egress would gate, with a known stream-IP source, was sent by the partner: a hub
	 * never returns our own frames. Malformed frames prove nothing and go to the stack. */
	if (f.klass != K_GATED || !f.from_stream_ip) {
		count(GATE_IN_PASS);
		return TC_ACT_OK;
	}
	now = bpf_ktime_get_ns();
	arms_fence = 0;
	if (f.has_flow) {
		int a = announcement(skb, &f);

		/* Only the announcement arms the fence; it and its forgeries are not viewers' flows. */
		if (a == ANNOUNCEMENT) {
			arms_fence = 1;
			count(GATE_INFO_FENCE_ANNOUNCE);
		} else if (a == FORGED) {
			count(GATE_INFO_FENCE_FORGED);
		} else {
			record_seen(skb, &f, now);
			/* A ruled flow is being handed over by agreement: both sides transmit parts
			 * of it. */
			if (bpf_map_lookup_elem(&gate_flows, &f.key))
				count(GATE_INFO_PARTNER_RULED);
		}
	}
	p = bpf_map_lookup_elem(&gate_partner, &k);
	if (p) {
		WRITE_ONCE(p->any_ns, now);
		if (arms_fence)
			WRITE_ONCE(p->tx_ns, now);
	}
	count(GATE_IN_PARTNER);
	return TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
