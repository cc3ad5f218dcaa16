// SPDX-License-Identifier: GPL-2.0
// edgeweave flow datapath: tc (clsact, direct-action) on the LAN-facing interface.
//
// Per packet: parse the IPv4 5-tuple, record the first EWF_K packets' sizes, gaps and TCP
// flags in an LRU flow table, announce the flow to the agent once decision_packets were
// seen, and set skb->mark when the agent has assigned the flow to an uplink.
// The program never drops: every path returns TC_ACT_OK, and a failed map update only
// means the flow is not tracked / not assigned, so it follows the default route.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define EWF_K 8 /* feature slots; the agent decides at decision_packets <= EWF_K */

struct flow_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct flow_val {
	__u64 first_ns;
	__u64 last_ns;   /* time of packet min(pkts, EWF_K); the agent tracks idleness by counters */
	__u64 bytes;
	__u32 pkts;
	__u32 mark;      /* uplink fwmark, 0 = unassigned (default route); written by the agent */
	__u16 sizes[EWF_K];   /* IP total length of packet i */
	__u32 gaps_us[EWF_K]; /* 1.024 us units since packet i-1 (0 for the first) */
	__u8 flags[EWF_K];    /* TCP flags of packet i */
	__u8 flags_or;        /* OR of all TCP flags seen: FIN/RST tell the agent a flow ended */
	__u8 pad[7];
};

struct cfg {
	__u32 decision_packets; /* announce the flow on the queue when pkts reaches this */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
} ewf_flows SEC(".maps");

/* flows that just reached decision_packets; the agent pops them so it need not scan. */
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

	__u16 len = bpf_ntohs(ip->tot_len);
	struct flow_val *v = bpf_map_lookup_elem(&ewf_flows, &key);
	if (!v) {
		struct flow_val nv = {};
		__u64 now = bpf_ktime_get_ns();
		nv.first_ns = now;
		nv.last_ns = now;
		nv.bytes = len;
		nv.pkts = 1;
		nv.flags_or = tflags;
		nv.sizes[0] = len;
		nv.flags[0] = tflags;
		/* LRU: a full table evicts the coldest entry; never fails the packet. */
		bpf_map_update_elem(&ewf_flows, &key, &nv, BPF_NOEXIST);
	} else {
		/* Plain (non-atomic) updates: a flow's packets arrive on one CPU at a time
		 * on this hook, and a rare lost increment costs less than atomics per packet. */
		__u32 i = v->pkts;
		/* The clock is read only while features are collected: on this kernel it
		 * costs about as much as the rest of the program. */
		if (i < EWF_K) {
			__u64 now = bpf_ktime_get_ns();
			__u64 gap = (now - v->last_ns) >> 10; /* ~microseconds, no division */
			v->sizes[i] = len;
			v->gaps_us[i] = gap > 0xffffffff ? 0xffffffff : (__u32)gap;
			v->flags[i] = tflags;
			__u32 zero = 0;
			struct cfg *c = bpf_map_lookup_elem(&ewf_cfg, &zero);
			if (c && i + 1 == c->decision_packets)
				bpf_map_push_elem(&ewf_ready, &key, 0);
			v->last_ns = now;
		}
		v->pkts = i + 1;
		v->bytes += len;
		v->flags_or |= tflags;
	}

	/* The assignment lives in the flow entry itself so the steady-state path is one
	 * hash lookup. The agent rewrites the entry to set it; an entry evicted from the
	 * full LRU loses its mark, so that flow falls back to the default route. */
	if (v && v->mark)
		skb->mark = v->mark;
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
