/* SPDX-License-Identifier: GPL-2.0 */
/* Layouts shared by flows.bpf.c, hint.bpf.c and agent/flowtable.py (keep them in step). */
#ifndef EWF_FLOWS_H
#define EWF_FLOWS_H

#define EWF_TREE_NODES 256
#define EWF_SLOTS 32
#define EWF_FEATURES 16 /* power of two: the index is masked for the verifier */
#define EWF_LEAF 0xffffffff
#define EWF_HIST_UNKNOWN 500 /* no entry reads as an even prior; hist_n == 0 tells it apart */

enum { EWF_MODE_USER = 0, EWF_MODE_DATAPATH = 1 };
enum { EWF_UNDECIDED = 0, EWF_MOUSE = 1, EWF_ELEPHANT = 2, EWF_MEDIUM = 3 };
enum { EWF_BY_NONE = 0, EWF_BY_HISTORY = 1, EWF_BY_TREE = 2, EWF_BY_TREE_HINT = 3, EWF_BY_USER = 4 };

/* feature vector the tree reads (flows/features.py DATAPATH_FEATURES, same order) */
enum {
	F_BYTES = 0,    /* IP bytes of the first k packets */
	F_MAX_SIZE,     /* largest packet among them */
	F_DATA_PKTS,    /* packets carrying payload */
	F_MIN_DATA,     /* smallest payload packet (0: none) */
	F_PSH,          /* packets with PSH */
	F_END,          /* FIN or RST seen */
	F_BURST,        /* 1.024 us units between the first and the last payload packet */
	F_HIST_P,       /* history: elephants per 1000 finished flows (UNKNOWN: no entry) */
	F_HIST_N,       /* history: effective number of finished flows behind it */
	F_HINT_WRITE,   /* hint: largest remaining write size seen by tcp_sendmsg_locked */
	F_HINT_BACKLOG, /* hint: largest unacknowledged send backlog */
	F_HINT_SEEN,    /* 1 when the hint program saw this 5-tuple */
};

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
	__u64 last_ns;    /* time of the last packet whose features were collected */
	__u64 bytes;
	__u32 pkts;
	__u32 mark;       /* uplink fwmark, 0 = unassigned (default route) */
	__u32 f_bytes;
	__u32 f_max_size;
	__u32 f_data_pkts;
	__u32 f_min_data;
	__u32 f_psh;
	__u32 f_burst;
	__u32 hist_p;
	__u32 hist_n;
	__u32 hint_write;
	__u32 hint_backlog;
	__u8 flags_or;    /* OR of all TCP flags seen: FIN/RST tell the agent a flow ended */
	__u8 cls;
	__u8 decided_by;
	__u8 decided_at;  /* packet number at which the class was written */
	__u8 hint_seen;
	__u8 pad[3];
};

struct cfg {
	__u32 mode;
	__u32 decision_packets;
	__u32 threshold;  /* elephantThresholdBytes (capped at 4 GiB) */
	__u32 mice_mark;
	__u32 slot_count; /* elephant marks in ewf_slots, weighted round robin */
	__u32 rr;
	__u32 dst_mask;   /* network-order mask applied to daddr for the history key */
	__u32 hist_min_n;
	__u32 hist_hi;    /* permille at or above which history alone says elephant */
	__u32 hist_lo;    /* permille at or below which history alone says mouse */
	__u32 mice_bytes; /* 0: two classes; else flows above it that are not elephants are
			   * "medium" and leave the mice uplink (they take the elephant slots) */
	__u32 medium_hi;  /* permille of flows > mice_bytes at which history says medium */
};

struct tree_node {
	__u32 feature;    /* EWF_LEAF for a leaf */
	__u32 threshold;  /* go left when x[feature] <= threshold */
	__u16 left;
	__u16 right;
	__u32 elephant;   /* leaf: 1 elephant, 0 mouse */
};

struct hist_key {
	__u32 saddr;
	__u32 dprefix;
	__u16 dport;
	__u8 proto;
	__u8 pad;
};

struct hist_val {
	__u32 p_permille; /* finished flows above the elephant threshold, per 1000 */
	__u32 n;
	__u32 p_medium;   /* finished flows above mice_bytes, per 1000 */
};

struct hint_val {
	__u64 write_max;
	__u64 backlog_max;
	__u64 calls;
};


/* written by hint.bpf.c on tcp_sendmsg_locked; flows.bpf.c reads it (one pinned map) */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct hint_val);
} ewf_hints SEC(".maps");

#endif
