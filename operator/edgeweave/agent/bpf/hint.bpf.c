// SPDX-License-Identifier: GPL-2.0
// edgeweave send hint: on tcp_sendmsg_locked (tp_btf), record per IPv4 5-tuple the largest
// remaining write the application handed to TCP and the largest unacknowledged send
// backlog. flows.bpf.c reads the entry at the flow's decision packet: an application that
// writes a 30 MB object in one call says so before its first segment leaves.
// Fires only for sockets on this host (pods on the node); LAN hosts behind the edge
// have no hint and are decided by history and packet features.
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "flows.h"

SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(ewf_hint, const struct sock *sk, const struct msghdr *msg, const struct sk_buff *skb,
	     int size_goal)
{
	if (sk->__sk_common.skc_family != 2 /* AF_INET */)
		return 0;
	struct flow_key k = {};
	k.saddr = sk->__sk_common.skc_rcv_saddr;
	k.daddr = sk->__sk_common.skc_daddr;
	k.sport = bpf_htons(sk->__sk_common.skc_num);
	k.dport = sk->__sk_common.skc_dport;
	k.proto = 6;
	__u64 left = msg->msg_iter.count;
	__u64 backlog = 0;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);
	if (tp)
		backlog = tp->write_seq - tp->snd_una;
	struct hint_val *v = bpf_map_lookup_elem(&ewf_hints, &k);
	if (!v) {
		struct hint_val n = { .write_max = left, .backlog_max = backlog, .calls = 1 };
		bpf_map_update_elem(&ewf_hints, &k, &n, BPF_ANY);
		return 0;
	}
	if (left > v->write_max)
		v->write_max = left;
	if (backlog > v->backlog_max)
		v->backlog_max = backlog;
	v->calls++;
	return 0;
}

char _license[] SEC("license") = "GPL";
