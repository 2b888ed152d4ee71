/* xdpguard: every struct and constant shared between the XDP program and user space.
 *
 * services/dataplane/structs.py mirrors this file with ctypes, once; tests/kernel/test_dp_structs.py
 * compiles this header and compares every struct size and offset and every XG_* constant's value,
 * so change both together. The maps themselves are declared in xdpguard.c and listed once for
 * user space in services/dataplane/maps.py (checked against the loaded program by the same test).
 *
 * Addresses are 16 bytes (IPv6 as is, IPv4 as v4-mapped ::ffff:a.b.c.d) so one map per rule
 * kind serves both families; the exceptions are split by family for speed: the maps keyed by a
 * whole address or 5-tuple (exact4/exact6, the host rules (/32, /128) in src_host4/src_host6
 * unless in their inline slot of src_host_slot, indexed by source hash)
 * and the shorter source prefixes (IPv4 ones in src_prefix4 keyed by a length and 4 bytes, IPv6
 * ones in src_prefix keyed by a length and 16: hashes looked up once per length in use, see
 * xg_config.plens4).
 * Ports, rates and times are host byte order. Times in maps are kernel monotonic ns
 * (CLOCK_MONOTONIC: bpf_ktime_get_ns; expiry is read with bpf_ktime_get_coarse_ns, the same base
 * at tick resolution, cached per CPU in xg_stats until jiffies moves); 0 means "never expires". Padding is explicit so C and ctypes agree.
 */
#ifndef XDPGUARD_H
#define XDPGUARD_H

#ifndef __KERNEL__
#include <stdint.h>
typedef uint8_t __u8;
typedef uint16_t __u16;
typedef uint32_t __u32;
typedef uint64_t __u64;
#endif

#define XG_MAGIC 0x58444742u /* "XDGB": bump when any struct, map or parse rule changes */

/* rule actions (xg_rule.action) */
#define XG_ACT_DROP 1
#define XG_ACT_PASS 2
#define XG_ACT_LIMIT 3

/* who made a rule (the origin field of every rule value) */
#define XG_ORIGIN_MANUAL 1
#define XG_ORIGIN_MODEL 2

#define XG_LIMIT_MASKS 4 /* distinct TCP-flag masks per limited destination */

/* parse limits: how deep the program looks before it calls a frame "not IP" or partial */
#define XG_VLAN_MAX 2     /* VLAN tags followed (802.1Q / 802.1ad); behind a third: not IP */
#define XG_IPV6_EXT_MAX 8 /* IPv6 extension headers followed (hop-by-hop, routing, fragment,
                           * destination options, AH): every chain RFC 8200 allows (each header
                           * once, destination options twice) fits; a longer one is "partial" */

/* default map sizes; the loader passes the sizes it loads with as -D flags */
#ifndef XG_EXACT_MAX
#define XG_EXACT_MAX 262144 /* entries of exact4, of exact6 and of exact6x */
#endif
#ifndef XG_PREFIX_MAX
#define XG_PREFIX_MAX 65536 /* src_prefix4, src_prefix, src_host4 and src_host6 */
#endif
#ifndef XG_ALLOW_MAX
#define XG_ALLOW_MAX 16384 /* allow */
#endif
#ifndef XG_LIMIT_MAX
#define XG_LIMIT_MAX 4096 /* dst_limit, limit_dst and limit_stats */
#endif
#ifndef XG_RING_PAGES
#define XG_RING_PAGES 256 /* ring buffer "events", in 4 KiB pages (power of two) */
#endif

/* source filter (map "src_filter"): XG_FILTER_SLOTS pairs of counters, slot i = how many exact
 * rules and how many host rules have a source whose slot is i; a packet skips the exact lookup
 * when its source's slot counts no exact rule, the host lookup when it counts no host rule. Slot of a source: its 32-bit words as loaded on this machine (IPv4, or a
 * v4-mapped IPv6 source: the one word of a.b.c.d; IPv6: the XOR of its four), times
 * XG_FILTER_MULT, top XG_FILTER_BITS bits. User space raises a slot before it writes a rule and
 * lowers it after it deletes one. */
#define XG_FILTER_BITS 20
#define XG_FILTER_SLOTS (1 << XG_FILTER_BITS)
#define XG_FILTER_MULT 0x9E3779B1u /* Knuth's multiplicative hash (2^32 / golden ratio) */

/* source-prefix skip filter (map "src_pfx_filter"): XG_FILTER_SLOTS words, each four 8-bit
 * counts ("bands"; band b is bits 8b..8b+7 of the word as loaded on this machine): band 0 = how
 * many IPv4 prefix rules (src_prefix4) of XG_PFX4_FILTER_LEN-31 bits, band w (1-3) = how many
 * IPv6 ones (src_prefix) of 32w to 32w+31 bits (the lengths of plens6[w]) have their first
 * XG_PFX4_FILTER_LEN / XG_PFX6_FILTER_LEN bits in a word hashing to the slot: the IPv4 network
 * address masked to /16, or an IPv6 one's first 32 bits, times XG_FILTER_MULT, top
 * XG_FILTER_BITS bits (the word as loaded on this machine). An IPv4 source whose slot's band 0 is
 * 0 skips the per-length lookups; an IPv6 source skips the lengths of each word w whose band w
 * is 0 (all of them when bands 1-3 are 0). While a prefix shorter than the filter's length is
 * in use (the config's length bitmaps say so) the filter cannot tell: every source of that
 * family is looked up at every length in use. A band is raised before a rule is written and
 * lowered after one is deleted, and sticks at XG_PFX_BAND_SAT once it gets there (more rules
 * than a byte counts: never lowered again, so never below the true count). */
#define XG_PFX_BAND_SAT 255
#define XG_PFX4_FILTER_LEN 16
#define XG_PFX6_FILTER_LEN 32

struct xg_filter_slot {
    __u32 exact; /* exact4 + exact6 rules */
    __u32 host;  /* host rules: src_host_slot + src_host4 + src_host6 */
};

/* inline host-rule slots (map "src_host_slot", per-CPU array of XG_HOST_SLOTS): slot i holds at
 * most one host rule (/32, /128) whose source's src_filter slot, shifted right by
 * XG_FILTER_BITS - XG_HOST_SLOT_BITS, is i (the top XG_HOST_SLOT_BITS bits of the same hash). A
 * host rule lives in exactly one place: its slot when that was empty (or held the same address)
 * when the rule was written and the hashes did not hold it already, else src_host4 / src_host6.
 * The program looks the slot up first (an array lookup, inlined to a few instructions) and the
 * hash only when the slot holds another address. */
#define XG_HOST_SLOT_BITS 12
#define XG_HOST_SLOTS (1 << XG_HOST_SLOT_BITS)

/* exact 5-tuple rule keys: IPv4 (map "exact4") has its own short key because hashing 16
 * bytes instead of 40 is most of the cost of an exact-rule drop (docs/benchmarks.md) */
struct xg_flow4_key {
    __u8 saddr[4];
    __u8 daddr[4];
    __u16 sport;
    __u16 dport;
    __u8 proto;
    __u8 pad[3];
};

/* an IPv6 5-tuple whole: the key of "exact6x", the exact IPv6 rules whose folded key (below)
 * another rule of exact6 holds */
struct xg_flow6_key {
    __u8 saddr[16];
    __u8 daddr[16];
    __u16 sport;
    __u16 dport;
    __u8 proto;
    __u8 pad[3];
};

/* IPv6 (map "exact6"): each address folded to 64 bits, so the key is 24 bytes (a 40-byte key
 * cost 9-11 ns more per lookup, docs/benchmarks.md). An address's two halves, hi its first 8
 * bytes and lo its last 8, each as a u64 loaded on this machine: fold = lo ^ hi * XG_FOLD_MULT
 * (mod 2^64). The value (xg_rule6) keeps both hi halves, so the program verifies a hit (equal
 * folds and equal hi halves: equal lo halves too) and user space reads the addresses back. Two
 * rules whose folded keys are equal and whose addresses are not: the second goes to exact6x. */
#define XG_FOLD_MULT 0x9E3779B97F4A7C15ull /* 2^64 / golden ratio, odd */
struct xg_flow6_fold {
    __u64 sfold;
    __u64 dfold;
    __u16 sport;
    __u16 dport;
    __u8 proto;
    __u8 pad[3];
};

/* key of "src_host4": an IPv4 host rule's address, network order as in the header */
struct xg_addr4 {
    __u8 b[4];
};

/* exact, host and source-prefix rule value (maps exact4, exact6, src_host4, src_host6,
 * src_prefix4, src_prefix); the maps are per-CPU, so packets/bytes are per-CPU counters (a
 * source rule drops all it counts or none: its dropped count is packets when its action is
 * drop) */
struct xg_rule {
    __u64 expires_ns; /* monotonic, 0 = never */
    __u64 created_ns; /* Unix epoch, informational */
    __u64 packets;
    __u64 bytes;
    __u8 action;
    __u8 origin;
    __u8 pad[6];
};

/* value of "exact6": the rule, then the hi halves (first 8 bytes as a u64 loaded on this machine)
 * of its source and destination, which the folded key does not give back */
struct xg_rule6 {
    struct xg_rule rule;
    __u64 shi;
    __u64 dhi;
};

/* value of "src_host_slot": family 0 = empty, 4 = IPv4 (the address as in the header in
 * addr[0..3], the rest 0), 6 = IPv6 (16 bytes); the rule with its per-CPU counters as in the
 * hashes */
struct xg_host_slot {
    __u8 addr[16];
    struct xg_rule rule;
    __u8 family;
    __u8 pad[7];
};

/* LPM key of "allow" (prefixlen counts bits of the 16-byte address), and key of "src_prefix":
 * an IPv6 prefix shorter than /128, prefixlen 0-127 and the address masked to it */
struct xg_lpm_key {
    __u32 prefixlen;
    __u8 addr[16];
};

/* key of "src_prefix4": an IPv4 prefix shorter than /32, prefixlen 0-31 and the network address
 * (masked to it) as in the header */
struct xg_lpm4_key {
    __u32 prefixlen;
    __u8 addr[4];
};

/* allowlist value (map "allow") */
struct xg_allow {
    __u64 created_ns;
    __u8 origin;
    __u8 pad[7];
};

/* destination rate-limit key (map "dst_limit"); 0 = any for proto, dport and tcp_flags */
struct xg_limit_key {
    __u8 daddr[16];
    __u16 dport;
    __u8 proto;
    __u8 tcp_flags; /* matches packets whose flags include all of these bits */
};

/* token bucket as GCRA: tat is the theoretical arrival time of the next packet */
struct xg_limit {
    __u64 expires_ns;
    __u64 created_ns;
    __u64 interval_ns; /* 1e9 / rate */
    __u64 burst_ns;    /* how far tat may run ahead of now (burst = burst_ns / interval_ns) */
    __u64 tat;
    __u32 rate_pps;
    __u8 origin;
    __u8 pad[3];
};

/* key of "limit_dst" and "src_host6" */
struct xg_addr {
    __u8 b[16];
};

/* which keys to try for a limited destination (map "limit_dst", maintained by user space) */
struct xg_limit_dst {
    __u8 masks[XG_LIMIT_MASKS]; /* TCP-flag masks in use, most specific first */
    __u8 nmasks;
    __u8 pad[3];
};

/* per-CPU counters of one limit rule ("limit_stats") */
struct xg_counter {
    __u64 packets;
    __u64 bytes;
    __u64 dropped;
};

/* global per-CPU counters (map "stats", one entry) */
struct xg_stats {
    __u64 seen;
    __u64 passed;       /* every XDP_PASS, whatever the reason */
    __u64 allowed;      /* matched the allowlist */
    __u64 rule_pass;    /* matched a pass rule (exact or prefix) or a limit within rate */
    __u64 drop_exact;
    __u64 drop_prefix;
    __u64 drop_limit;
    __u64 unmatched;    /* default pass */
    __u64 events;       /* samples written to the ring buffer */
    __u64 events_lost;  /* samples lost because the ring buffer was full */
    __u64 parse_fail;   /* passed unmatched: no addresses read, or "partial" and no rule hit */
    __u64 non_ip;       /* neither IPv4 nor IPv6 (passed) */
    __u64 fragments;    /* non-first fragments (matched with ports 0) */
    __u64 partial;      /* addresses read, transport header not (truncated, or an IPv6
                         * extension chain longer than XG_IPV6_EXT_MAX): matched on the
                         * allowlist, source prefixes and port-less limits only */
    __u64 drop_frag;    /* dropped: a first fragment too short for its transport header (or,
                         * IPv6, its header chain), or a later one overlapping it (RFC 1858,
                         * RFC 7112); allowlisted sources excepted */
    /* not counters: this CPU's expiry clock, the jiffies value (bpf_jiffies64, inlined) at
     * which clk_ns was read from bpf_ktime_get_coarse_ns; the program reads the coarse clock
     * again only when jiffies has moved (user space never writes them) */
    __u64 clk_jiffies;
    __u64 clk_ns;
};

/* run-time configuration (map "config", one entry) */
struct xg_config {
    __u32 magic;       /* XG_MAGIC of the build that loaded the program */
    __u32 sample_rate; /* 1-in-N unmatched packets to the ring; 0 = off */
    __u32 exact_max;   /* map sizes the program was loaded with (layout check) */
    __u32 prefix_max;
    __u32 allow_max;
    __u32 limit_max;
    __u32 ring_bytes;
    __u32 pad;
    /* rules in each map, kept by user space (Datapath) under the pin-directory lock: raised
     * before an entry is written, lowered after one is deleted, so never below the true count;
     * the program skips the lookup of a map whose count is 0 */
    __u32 n_allow;
    __u32 n_exact4;
    __u32 n_exact6;
    __u32 n_host4;   /* src_host4 */
    __u32 n_host6;   /* src_host6 */
    __u32 n_prefix4; /* src_prefix4 (IPv4 prefixes; the program tests plens4 instead) */
    __u32 n_prefix6; /* src_prefix (IPv6 prefixes; the program tests plens6 instead) */
    __u32 n_limit;   /* dst_limit */
    __u32 n_host_slot; /* src_host_slot slots holding a rule (the program skips the slot lookup
                        * when 0); host_slot_used below is the directory of those slots */
    /* source-prefix lengths in use, kept with the counts: bit n of plens4 is set while
     * src_prefix4 holds a prefix of length n (0-31), bit n % 32 of plens6[n / 32] while
     * src_prefix holds one of length n (0-127); n_len4 / n_len6 count the rules of each length
     * (user space's bookkeeping: the program reads only the bitmaps). The program looks a source
     * up once per set bit, longest first. */
    __u32 plens4;
    __u32 plens6[4];
    __u32 n_exact6x; /* exact6x: IPv6 exact rules whose folded key exact6 holds for another */
    __u32 pad2;
    __u32 n_len4[32];
    __u32 n_len6[128];
    /* the src_host_slot directory, kept with n_host_slot: bit i % 32 of host_slot_used[i / 32]
     * is set while slot i may hold a rule (set before the slot is written, cleared after it is
     * emptied), so user space reads only those slots (never a scan of every slot's per-CPU
     * copies); the program does not read it */
    __u32 host_slot_used[XG_HOST_SLOTS / 32];
};

/* xg_event.flags */
#define XG_EV_FRAGMENT 0x01 /* a non-first fragment: ports and TCP flags are 0 */
#define XG_EV_IPV6 0x02
/* xg_event.icmp_type when no ICMP header was read (another protocol, a later fragment): 255 is
   a reserved type in ICMP and ICMPv6 */
#define XG_ICMP_NONE 255

/* ring-buffer event of one sampled unmatched packet */
struct xg_event {
    __u64 ts_ns; /* monotonic */
    __u8 saddr[16];
    __u8 daddr[16];
    __u16 sport;
    __u16 dport;
    __u32 len; /* whole frame incl. Ethernet header */
    __u32 ifindex;
    __u8 proto;
    __u8 tcp_flags;
    __u8 flags; /* XG_EV_* */
    __u8 icmp_type; /* ICMP/ICMPv6 type when proto is 1 or 58 and the header was read, else
                       XG_ICMP_NONE */
};

#endif
