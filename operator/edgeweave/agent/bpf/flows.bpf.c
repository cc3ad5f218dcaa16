// SPDX-License-Identifier: GPL-2.0
// edgeweave flow datapath: tc (clsact, direct-action) on the LAN-facing interface.
//
// The program decides a new flow's class itself, with no user-space round trip:
//   packet 1: look up the history map (per source, destination prefix and port: the
//             share of elephants among finished flows, learned by the agent). A
//             confident entry decides the flow at once.
//   packet k: (k = cfg.decision_packets) look up the send hint the tcp_sendmsg_locked
//             program (hint.bpf.c) left for this 5-tuple, then evaluate the decision
//             tree the agent wrote into ewf_tree over the flow's packet features, the
//             history prior and the hint. The class picks a mark: mice get cfg.mice_mark,
//             elephants the next slot of the weighted round-robin ewf_slots.
// User space trains the tree, learns the history, and rewrites cfg/slots as uplink load
// and health change; it announces nothing per flow. With cfg.mode == 0 the program only
// records features and announces the flow on ewf_ready (the user-space fallback).
// Every path returns TC_ACT_OK: a failed map update only means the flow is not tracked,
// so it follows the default route.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "flows.h"

#define PURE_MAX 80   /* IP length of a TCP packet with no payload is 40..60 bytes */
#define TREE_DEPTH 10 /* the agent exports trees no deeper than this */
#define FULL_SEG 1300 /* IP length at or above which a segment counts as full-sized */

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
} ewf_flows SEC(".maps");

/* flows that reached decision_packets undecided (fallback mode); the agent pops them. */
struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 4096);
	__uint(key_size, 0);
	__type(value, struct flow_key);
} ewf_ready SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cfg);
} ewf_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, EWF_TREE_NODES);
	__type(key, __u32);
	__type(value, struct tree_node);
} ewf_tree SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, EWF_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} ewf_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct hist_key);
	__type(value, struct hist_val);
} ewf_hist SEC(".maps");

static __always_inline __u32 cap32(__u64 x)
{
	return x > 0xffffffffULL ? 0xffffffff : (__u32)x;
}

/* Evaluate the tree over the flow's feature vector; returns 1 elephant, 0 mouse. */
static __always_inline int tree_eval(const __u32 *x)
{
	__u32 i = 0;
#pragma unroll
	for (int d = 0; d < TREE_DEPTH + 1; d++) {
		struct tree_node *n = bpf_map_lookup_elem(&ewf_tree, &i);
		if (!n)
			return 0;
		if (n->feature == EWF_LEAF)
			return n->elephant;
		__u32 f = n->feature & (EWF_FEATURES - 1);
		i = x[f] <= n->threshold ? n->left : n->right;
	}
	return 0;
}

static __always_inline __u32 pick_mark(struct cfg *c, int off_mice)
{
	if (!off_mice || c->slot_count == 0)
		return c->mice_mark;
	__u32 n = __sync_fetch_and_add(&c->rr, 1);
	__u32 idx = n % (c->slot_count > EWF_SLOTS ? EWF_SLOTS : c->slot_count);
	__u32 *m = bpf_map_lookup_elem(&ewf_slots, &idx);
	return m && *m ? *m : c->mice_mark;
}

static __always_inline void decide(struct flow_val *v, struct cfg *c, __u8 cls, __u8 by)
{
	v->cls = cls;
	v->decided_by = by;
	v->decided_at = v->pkts > 255 ? 255 : v->pkts;
	v->mark = pick_mark(c, cls != EWF_MOUSE);
}

/* Not an elephant: medium (off the mice uplink) or mouse. With a hint the application's
 * own write size says it; without, k-2 full segments and no FIN by packet k mean more
 * than (k-2) MSS bytes (the packet features' one reliable signal). */
static __always_inline __u8 small_class(struct flow_val *v, struct cfg *c)
{
	if (!c->mice_bytes)
		return EWF_MOUSE;
	if (v->hint_seen)
		return (v->hint_write > c->mice_bytes || v->hint_backlog > c->mice_bytes) ? EWF_MEDIUM : EWF_MOUSE;
	if (!(v->flags_or & 0x05) && v->f_data_pkts + 2 >= c->decision_packets && v->f_min_data >= FULL_SEG)
		return EWF_MEDIUM;
	return EWF_MOUSE;
}

SEC("tc")
int ewf_classify(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct flow_key key = {};
	__u8 tflags = 0;

	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return TC_ACT_OK;
	key.saddr = ip->saddr;
	key.daddr = ip->daddr;
	key.proto = ip->protocol;
	/* Ports only in the first fragment; later fragments share the 3-tuple entry. */
	if (!(ip->frag_off & bpf_htons(0x1fff))) {
		void *l4 = (void *)ip + (ip->ihl & 0xf) * 4;
		if (ip->protocol == IPPROTO_TCP) {
			struct tcphdr *th = l4;
			if ((void *)(th + 1) > end)
				return TC_ACT_OK;
			key.sport = th->source;
			key.dport = th->dest;
			tflags = ((__u8 *)th)[13];
		} else if (ip->protocol == IPPROTO_UDP) {
			struct udphdr *uh = l4;
			if ((void *)(uh + 1) > end)
				return TC_ACT_OK;
			key.sport = uh->source;
			key.dport = uh->dest;
		}
	}

	__u32 zero = 0;
	struct cfg *c = bpf_map_lookup_elem(&ewf_cfg, &zero);
	if (!c)
		return TC_ACT_OK;
	__u16 len = bpf_ntohs(ip->tot_len);
	struct flow_val *v = bpf_map_lookup_elem(&ewf_flows, &key);
	__u64 insert = BPF_NOEXIST;
	if (v && (tflags & 0x12) == 0x02) {
		/* a SYN on a known 5-tuple is a new connection reusing the ports: start over,
		 * or it would inherit the old flow's class, counters and FIN */
		v = 0;
		insert = BPF_ANY;
	}
	if (v) {
		__u32 i = v->pkts;
		v->pkts = i + 1;
		v->bytes += len;
		v->flags_or |= tflags;
		if (v->cls == EWF_UNDECIDED && i < c->decision_packets) {
			/* Plain (non-atomic) updates: a flow's packets arrive on one CPU at a
			 * time on this hook; the clock is read only while features are
			 * collected (it costs about as much as the rest of the program). */
			__u64 now = bpf_ktime_get_ns();
			__u32 gap = cap32((now - v->last_ns) >> 10); /* 1.024 us units */
			v->last_ns = now;
			v->f_bytes += len;
			if (len > v->f_max_size)
				v->f_max_size = len;
			if (len > PURE_MAX) {
				if (v->f_data_pkts > 0)
					v->f_burst += gap;
				if (v->f_data_pkts == 0 || len < v->f_min_data)
					v->f_min_data = len;
				v->f_data_pkts++;
			}
			if (tflags & 0x08)
				v->f_psh++;
			if (i + 1 == c->decision_packets) {
				if (c->mode == EWF_MODE_DATAPATH) {
					struct hint_val *h = bpf_map_lookup_elem(&ewf_hints, &key);
					if (h) {
						v->hint_write = cap32(h->write_max);
						v->hint_backlog = cap32(h->backlog_max);
						v->hint_seen = 1;
					}
					__u32 x[EWF_FEATURES] = {};
					x[F_BYTES] = v->f_bytes;
					x[F_MAX_SIZE] = v->f_max_size;
					x[F_DATA_PKTS] = v->f_data_pkts;
					x[F_MIN_DATA] = v->f_min_data;
					x[F_PSH] = v->f_psh;
					x[F_END] = (v->flags_or & 0x05) ? 1 : 0;
					x[F_BURST] = v->f_burst;
					x[F_HIST_P] = v->hist_p;
					x[F_HIST_N] = v->hist_n;
					x[F_HINT_WRITE] = v->hint_write;
					x[F_HINT_BACKLOG] = v->hint_backlog;
					x[F_HINT_SEEN] = v->hint_seen;
					int ele = tree_eval(x);
					/* an explicit send of more than the threshold is an elephant,
					 * whatever the tree learned from flows without such a hint */
					if (v->hint_seen && (v->hint_write > c->threshold ||
							     v->hint_backlog > c->threshold))
						ele = 1;
					decide(v, c, ele ? EWF_ELEPHANT : small_class(v, c),
					       v->hint_seen ? EWF_BY_TREE_HINT : EWF_BY_TREE);
				} else {
					bpf_map_push_elem(&ewf_ready, &key, 0);
				}
			}
		}
	} else {
		struct flow_val nv = {};
		__u64 now = bpf_ktime_get_ns();
		nv.first_ns = now;
		nv.last_ns = now;
		nv.bytes = len;
		nv.pkts = 1;
		nv.flags_or = tflags;
		nv.f_bytes = len;
		nv.f_max_size = len;
		if (len > PURE_MAX) {
			nv.f_data_pkts = 1;
			nv.f_min_data = len;
		}
		if (tflags & 0x08)
			nv.f_psh = 1;
		nv.hist_p = EWF_HIST_UNKNOWN;
		if (c->mode == EWF_MODE_DATAPATH) {
			struct hist_key hk = {};
			hk.saddr = key.saddr;
			hk.dprefix = key.daddr & c->dst_mask;
			hk.dport = key.dport;
			hk.proto = key.proto;
			struct hist_val *h = bpf_map_lookup_elem(&ewf_hist, &hk);
			if (h) {
				nv.hist_p = h->p_permille;
				nv.hist_n = h->n;
				/* a confident history decides at the first packet */
				if (h->n >= c->hist_min_n && h->p_permille >= c->hist_hi) {
					decide(&nv, c, EWF_ELEPHANT, EWF_BY_HISTORY);
				} else if (h->n >= c->hist_min_n && h->p_permille <= c->hist_lo) {
					if (c->mice_bytes && h->p_medium >= c->medium_hi)
						decide(&nv, c, EWF_MEDIUM, EWF_BY_HISTORY);
					else if (!c->mice_bytes || h->p_medium <= c->hist_lo)
						decide(&nv, c, EWF_MOUSE, EWF_BY_HISTORY);
					/* else: mixed small and medium, wait for packet k */
				}
			}
		}
		/* LRU: a full table evicts the coldest entry; never fails the packet. */
		bpf_map_update_elem(&ewf_flows, &key, &nv, insert);
		if (nv.mark)
			skb->mark = nv.mark;
		return TC_ACT_OK;
	}

	/* The assignment lives in the flow entry itself so the steady-state path is one
	 * hash lookup (plus the cfg array); an entry evicted from the full LRU loses its
	 * mark, so that flow falls back to the default route. */
	if (v->mark)
		skb->mark = v->mark;
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
