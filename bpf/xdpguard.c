// xdpguard XDP program (loaded with BCC by services/dataplane/loader.py).
//
// Parse Ethernet (+ up to XG_VLAN_MAX VLAN tags), IPv4 (any IHL, fragments) or IPv6 (+ up to
// XG_IPV6_EXT_MAX extension headers, AH and fragment headers among them), then: allowlist >
// exact 5-tuple > source host or prefix > destination limit > default pass, sampling 1-in-N of the
// default-passed packets into the ring buffer. A frame meets every rule whose fields the parser
// read: one whose addresses were read but not its transport header ("partial") still meets the
// allowlist, the source prefixes and the port-less limits before it is passed and counted; a
// fragment that hides or overwrites its transport header (RFC 1858, RFC 7112) is dropped and
// counted unless its source is allowlisted; a frame without readable addresses is passed and
// counted. Map sizes come from -D flags; structs, constants and default sizes from xdpguard.h.
// The maps below are listed once for user space in services/dataplane/maps.py
// (tests/kernel/test_dp_structs.py checks both agree).
#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include "xdpguard.h"

BPF_ARRAY(config, struct xg_config, 1);
BPF_PERCPU_ARRAY(stats, struct xg_stats, 1);
BPF_LPM_TRIE(allow, struct xg_lpm_key, struct xg_allow, XG_ALLOW_MAX);
BPF_PERCPU_HASH(exact4, struct xg_flow4_key, struct xg_rule, XG_EXACT_MAX);
BPF_PERCPU_HASH(exact6, struct xg_flow6_fold, struct xg_rule6, XG_EXACT_MAX);
// IPv6 exact rules whose folded key exact6 holds for another rule (xdpguard.h), by the whole
// 5-tuple; entries allocated as written (BPF_F_NO_PREALLOC: a collision is rare, so the map
// does not take XG_EXACT_MAX per-CPU values up front)
#define BPF_PERCPU_HASH_NOPREALLOC(_name, _key_type, _leaf_type, _size) \
    BPF_F_TABLE("percpu_hash", _key_type, _leaf_type, _name, _size, BPF_F_NO_PREALLOC)
BPF_PERCPU_HASH_NOPREALLOC(exact6x, struct xg_flow6_key, struct xg_rule, XG_EXACT_MAX);
// source prefixes shorter than a host by (length, masked address), one lookup per length in use
// (config's plens4 / plens6), counters in the value: IPv4 ones by their 4 bytes, IPv6 ones by 16
BPF_PERCPU_HASH(src_prefix4, struct xg_lpm4_key, struct xg_rule, XG_PREFIX_MAX);
BPF_PERCPU_HASH(src_prefix, struct xg_lpm_key, struct xg_rule, XG_PREFIX_MAX);
// host rules (/32, /128) by address alone, counters in the value; src_prefix holds shorter ones
BPF_PERCPU_HASH(src_host4, struct xg_addr4, struct xg_rule, XG_PREFIX_MAX);
BPF_PERCPU_HASH(src_host6, struct xg_addr, struct xg_rule, XG_PREFIX_MAX);
// ... unless the host rule sits in its inline slot (xdpguard.h, XG_HOST_SLOTS): looked up first
BPF_PERCPU_ARRAY(src_host_slot, struct xg_host_slot, XG_HOST_SLOTS);
BPF_ARRAY(src_filter, struct xg_filter_slot, XG_FILTER_SLOTS);
BPF_ARRAY(src_pfx_filter, __u32, XG_FILTER_SLOTS);
BPF_HASH(dst_limit, struct xg_limit_key, struct xg_limit, XG_LIMIT_MAX);
BPF_HASH(limit_dst, struct xg_addr, struct xg_limit_dst, XG_LIMIT_MAX);
BPF_PERCPU_HASH(limit_stats, struct xg_limit_key, struct xg_counter, XG_LIMIT_MAX);
BPF_RINGBUF_OUTPUT(events, XG_RING_PAGES);

/* ---- parsing: one bounds-checked helper per header, each advancing a cursor -------------- */

// Where the next header starts; every parse_* helper checks its header fits before data_end,
// reads it and moves pos past it (the pattern of xdp-tools' headers/xdp/parsing_helpers.h).
struct hdr_cursor {
    void *pos;
};

struct vlan_hdr {
    __be16 h_vlan_TCI;
    __be16 h_vlan_encapsulated_proto;
};

// The first 8 bytes of any IPv6 extension header (hop-by-hop, routing, destination options,
// fragment, AH); frag_off is only meaningful in a fragment header.
struct ip6_ext_hdr {
    __u8 nexthdr;
    __u8 hdrlen; // length in 8-byte units not counting the first 8 (AH: 4-byte units minus 2;
                 // a fragment header has none: it is 8 bytes)
    __be16 frag_off; // fragment offset in bytes (a multiple of 8) | M flag
    __be32 ident;
};

#define IP_MF 0x2000           // IPv4 frag_off: more fragments
#define IP_FRAG_OFFSET 0x1fff  // IPv4 frag_off: the offset bits, in 8-byte units
#define IP6_MF 0x0001          // IPv6 fragment header: more fragments
#define IP6_FRAG_OFFSET 0xfff8 // IPv6 fragment header: the offset bits, already in bytes

// What parse() gives back: PARSE_OK, or how far it got.
#define PARSE_OK 0
#define PARSE_NOT_IP 1
#define PARSE_PARTIAL 2  // addresses read, transport header not: matched on source scope only
#define PARSE_BAD_FRAG 3 // a fragment hiding or overlapping its transport header: dropped
#define PARSE_FAIL -1    // no addresses read (truncated or malformed Ethernet/IP header)

// skip_ip6hdrext's failures
#define EXT_TRUNCATED -1 // an extension header cut by the end of the frame
#define EXT_TOO_LONG -2  // more extension headers than XG_IPV6_EXT_MAX

struct parsed {
    // IPv6 only: an IPv4 packet's addresses are saddr4/daddr4, and only the maps keyed by both
    // families get them v4-mapped (saddr16, daddr16). Both 8-aligned: host_slot_holds() and
    // fold6() read them as two u64s (stack loads must be aligned)
    __u8 saddr[16] __attribute__((aligned(8)));
    __u8 daddr[16] __attribute__((aligned(8)));
    __u16 sport;
    __u16 dport;
    __u8 proto;
    __u8 tcp_flags;
    __u8 flags; // XG_EV_*
    __u8 icmp_type; // ICMP/ICMPv6 type if its header was read, else XG_ICMP_NONE (the event's)
    __u8 src4;     // the source is IPv4, or an IPv6 address that is v4-mapped (::ffff:a.b.c.d)
    __be32 saddr4; // then its 4 bytes as in the header (the key of src_host4 and exact4)
    __be32 daddr4; // IPv4 only
};

// What the IPv6 fragment header of a chain said, if there was one.
struct frag6 {
    __u8 first; // offset 0 with M set: this frame must hold the whole header chain (RFC 7112)
    __u8 later; // offset above 0: no transport header follows
    __u16 off;  // the offset, in bytes
};

static __always_inline int proto_is_vlan(__u16 h_proto)
{
    return h_proto == bpf_htons(ETH_P_8021Q) || h_proto == bpf_htons(ETH_P_8021AD);
}

// Ethernet and up to XG_VLAN_MAX VLAN tags: the inner EtherType (network order), -1 if truncated.
// Behind more tags the EtherType is still a VLAN TPID, which the caller treats as "not IP".
static __always_inline int parse_ethhdr(struct hdr_cursor *nh, void *data_end)
{
    struct ethhdr *eth = nh->pos;
    if ((void *)(eth + 1) > data_end)
        return -1;
    nh->pos = eth + 1;
    __u16 h_proto = eth->h_proto;
#pragma unroll
    for (int i = 0; i < XG_VLAN_MAX; i++) {
        if (!proto_is_vlan(h_proto))
            break;
        struct vlan_hdr *vlh = nh->pos;
        if ((void *)(vlh + 1) > data_end)
            return -1;
        h_proto = vlh->h_vlan_encapsulated_proto;
        nh->pos = vlh + 1;
    }
    return h_proto;
}

// IPv4 header of any length (IHL 5-15): the protocol, -1 if truncated, not version 4 or IHL < 5.
static __always_inline int parse_iphdr(struct hdr_cursor *nh, void *data_end, struct iphdr **iphdr)
{
    struct iphdr *iph = nh->pos;
    if ((void *)(iph + 1) > data_end)
        return -1;
    __u32 hdrsize = iph->ihl * 4;
    if (iph->version != 4 || hdrsize < sizeof(*iph))
        return -1;
    if (nh->pos + hdrsize > data_end)
        return -1;
    nh->pos += hdrsize;
    *iphdr = iph;
    return iph->protocol;
}

// IPv6 fixed header: the first next-header value, -1 if truncated.
static __always_inline int parse_ip6hdr(struct hdr_cursor *nh, void *data_end,
                                        struct ipv6hdr **ip6hdr)
{
    struct ipv6hdr *ip6h = nh->pos;
    if ((void *)(ip6h + 1) > data_end)
        return -1;
    nh->pos = ip6h + 1;
    *ip6hdr = ip6h;
    return ip6h->nexthdr;
}

// The extension headers Linux's own IPv6 input walks past before the transport header: every
// other next-header value is the upper-layer protocol (ESP: encrypted, matched by number).
static __always_inline int ip6_is_ext(__u8 nexthdr)
{
    return nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
           nexthdr == IPPROTO_DSTOPTS || nexthdr == IPPROTO_FRAGMENT || nexthdr == IPPROTO_AH;
}

// Walk up to XG_IPV6_EXT_MAX extension headers starting at `nexthdr`: the upper-layer protocol,
// EXT_TRUNCATED or EXT_TOO_LONG. A fragment header is noted in *fh; one with a non-zero offset
// ends the walk (no transport header follows) and the protocol it names is returned. Every rule
// about extension chains and IPv6 fragments lives here and in parse_ipv6.
static __always_inline int skip_ip6hdrext(struct hdr_cursor *nh, void *data_end, __u8 nexthdr,
                                          struct frag6 *fh)
{
#pragma unroll
    for (int i = 0; i < XG_IPV6_EXT_MAX; i++) {
        if (!ip6_is_ext(nexthdr))
            return nexthdr;
        struct ip6_ext_hdr *hdr = nh->pos;
        if ((void *)(hdr + 1) > data_end)
            return EXT_TRUNCATED;
        __u32 len = (hdr->hdrlen + 1) * 8;
        if (nexthdr == IPPROTO_FRAGMENT) {
            __u16 off = bpf_ntohs(hdr->frag_off);
            len = 8;
            if (off & IP6_FRAG_OFFSET) {
                nh->pos = hdr + 1;
                fh->later = 1;
                fh->off = off & IP6_FRAG_OFFSET;
                return hdr->nexthdr;
            }
            if (off & IP6_MF)
                fh->first = 1;
        } else if (nexthdr == IPPROTO_AH) {
            len = (hdr->hdrlen + 2) * 4;
        }
        nh->pos += len;
        nexthdr = hdr->nexthdr;
    }
    return ip6_is_ext(nexthdr) ? EXT_TOO_LONG : nexthdr;
}

// The fixed 20-byte TCP header (options are not needed, so data offset is not checked): 0 or -1.
static __always_inline int parse_tcphdr(struct hdr_cursor *nh, void *data_end,
                                        struct tcphdr **tcphdr)
{
    struct tcphdr *th = nh->pos;
    if ((void *)(th + 1) > data_end)
        return -1;
    nh->pos = th + 1;
    *tcphdr = th;
    return 0;
}

static __always_inline int parse_udphdr(struct hdr_cursor *nh, void *data_end,
                                        struct udphdr **udphdr)
{
    struct udphdr *uh = nh->pos;
    if ((void *)(uh + 1) > data_end)
        return -1;
    nh->pos = uh + 1;
    *udphdr = uh;
    return 0;
}

// ICMP and ICMPv6 alike: type, code and checksum must be present (4 bytes); the type, or -1.
static __always_inline int parse_icmphdr(struct hdr_cursor *nh, void *data_end)
{
    __u8 *h = nh->pos;
    if ((void *)(h + 4) > data_end)
        return -1;
    nh->pos = h + 4;
    return h[0];
}

// Bytes of `proto`'s header the parser reads (TCP 20, UDP 8, ICMP/ICMPv6 4, others none): a
// first fragment must hold them and a later fragment must not start inside them.
static __always_inline __u32 l4_hdr_len(__u8 proto)
{
    if (proto == IPPROTO_TCP)
        return 20;
    if (proto == IPPROTO_UDP)
        return 8;
    if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6)
        return 4;
    return 0;
}

// Ports and TCP flags (ICMP: the type) of p->proto's header at the cursor: PARSE_OK, or
// PARSE_FAIL if truncated.
// Any other protocol has no ports: matched by number with ports 0.
static __always_inline int parse_l4(struct hdr_cursor *nh, void *data_end, struct parsed *p)
{
    if (p->proto == IPPROTO_TCP) {
        struct tcphdr *th;
        if (parse_tcphdr(nh, data_end, &th) < 0)
            return PARSE_FAIL;
        p->sport = bpf_ntohs(th->source);
        p->dport = bpf_ntohs(th->dest);
        p->tcp_flags = ((__u8 *)th)[13]; // the flag byte: CWR ECE URG ACK PSH RST SYN FIN
    } else if (p->proto == IPPROTO_UDP) {
        struct udphdr *uh;
        if (parse_udphdr(nh, data_end, &uh) < 0)
            return PARSE_FAIL;
        p->sport = bpf_ntohs(uh->source);
        p->dport = bpf_ntohs(uh->dest);
    } else if (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6) {
        int type = parse_icmphdr(nh, data_end);
        if (type < 0)
            return PARSE_FAIL;
        p->icmp_type = type;
    }
    return PARSE_OK;
}

static __always_inline void map_v4(__u8 *dst, __be32 addr)
{
    __builtin_memset(dst, 0, 10);
    dst[10] = 0xff;
    dst[11] = 0xff;
    __builtin_memcpy(dst + 12, &addr, 4);
}

// p's source / destination in the 16-byte form of the maps keyed by both families (allow,
// src_stats, limit_dst, dst_limit) and of the event: IPv6 as read, IPv4 v4-mapped. Written only
// where one of those needs it, so an IPv4 packet matched on its 4-byte keys never builds it.
static __always_inline void saddr16(struct parsed *p, __u8 *dst)
{
    if (p->flags & XG_EV_IPV6)
        __builtin_memcpy(dst, p->saddr, 16);
    else
        map_v4(dst, p->saddr4);
}

static __always_inline void daddr16(struct parsed *p, __u8 *dst)
{
    if (p->flags & XG_EV_IPV6)
        __builtin_memcpy(dst, p->daddr, 16);
    else
        map_v4(dst, p->daddr4);
}

// The IPv4 fragment rules: a later fragment (offset above 0) has no transport header and is
// matched with ports 0, unless it starts inside the transport header (PARSE_BAD_FRAG, RFC 1858's
// overlapping fragment); a first fragment (M set) too short for it is PARSE_BAD_FRAG (the tiny
// fragment); any other frame whose transport header is cut is PARSE_PARTIAL.
static __always_inline int parse_ipv4(struct hdr_cursor *nh, void *data_end, struct parsed *p)
{
    struct iphdr *iph;
    int proto = parse_iphdr(nh, data_end, &iph);
    if (proto < 0)
        return PARSE_FAIL;
    p->src4 = 1;
    p->saddr4 = iph->saddr;
    p->daddr4 = iph->daddr;
    p->proto = proto;
    __u16 frag = bpf_ntohs(iph->frag_off);
    if (frag & IP_FRAG_OFFSET) {
        p->flags |= XG_EV_FRAGMENT;
        if ((__u32)(frag & IP_FRAG_OFFSET) * 8 < l4_hdr_len(proto))
            return PARSE_BAD_FRAG;
        return PARSE_OK;
    }
    if (parse_l4(nh, data_end, p) == PARSE_OK)
        return PARSE_OK;
    return (frag & IP_MF) ? PARSE_BAD_FRAG : PARSE_PARTIAL;
}

// The IPv6 rules, as parse_ipv4's, with RFC 7112's for first fragments: one whose extension
// chain or transport header is cut is PARSE_BAD_FRAG. A chain longer than followed, or cut in a
// frame that is no first fragment, is PARSE_PARTIAL with protocol 0 (unknown).
static __always_inline int parse_ipv6(struct hdr_cursor *nh, void *data_end, struct parsed *p)
{
    struct ipv6hdr *ip6h;
    int nexthdr = parse_ip6hdr(nh, data_end, &ip6h);
    if (nexthdr < 0)
        return PARSE_FAIL;
    __builtin_memcpy(p->saddr, &ip6h->saddr, 16);
    __builtin_memcpy(p->daddr, &ip6h->daddr, 16);
    p->flags |= XG_EV_IPV6;
    // a v4-mapped source meets the IPv4 host and prefix rules of its a.b.c.d, as it always met
    // them in the 16-byte src_prefix trie (docs/dataplane.md, "Maps")
    __u32 *s32 = (__u32 *)p->saddr;
    if (s32[0] == 0 && s32[1] == 0 && s32[2] == bpf_htonl(0xffff)) {
        p->src4 = 1;
        p->saddr4 = s32[3];
    }
    struct frag6 fh = {};
    int proto = skip_ip6hdrext(nh, data_end, nexthdr, &fh);
    if (proto < 0)
        return (proto == EXT_TRUNCATED && fh.first) ? PARSE_BAD_FRAG : PARSE_PARTIAL;
    p->proto = proto;
    if (fh.later) {
        p->flags |= XG_EV_FRAGMENT;
        if (fh.off < l4_hdr_len(proto))
            return PARSE_BAD_FRAG;
        return PARSE_OK;
    }
    if (parse_l4(nh, data_end, p) == PARSE_OK)
        return PARSE_OK;
    return fh.first ? PARSE_BAD_FRAG : PARSE_PARTIAL;
}

// The frame's 5-tuple, TCP flags, ICMP type and XG_EV_* flags into *p: PARSE_OK, PARSE_PARTIAL
// (addresses only), PARSE_BAD_FRAG (addresses only), PARSE_NOT_IP or PARSE_FAIL. Every field but
// the 16-byte addresses starts at 0 here (icmp_type at XG_ICMP_NONE); those are written by
// parse_ipv6 only (an IPv4 packet's are saddr4/daddr4), so *p needs no zeroing (32 bytes of
// stores on every IPv4 packet).
static __always_inline int parse(struct xdp_md *ctx, struct parsed *p)
{
    p->sport = 0;
    p->dport = 0;
    p->proto = 0;
    p->tcp_flags = 0;
    p->flags = 0;
    p->icmp_type = XG_ICMP_NONE;
    p->src4 = 0;
    p->saddr4 = 0;
    p->daddr4 = 0;
    void *data_end = (void *)(long)ctx->data_end;
    struct hdr_cursor nh = {.pos = (void *)(long)ctx->data};
    int h_proto = parse_ethhdr(&nh, data_end);
    if (h_proto < 0)
        return PARSE_FAIL;
    if (h_proto == bpf_htons(ETH_P_IP))
        return parse_ipv4(&nh, data_end, p);
    if (h_proto == bpf_htons(ETH_P_IPV6))
        return parse_ipv6(&nh, data_end, p);
    return PARSE_NOT_IP;
}

/* ---- matching ------------------------------------------------------------------------------ */

// Keeps the map lookup that returned v at a call instruction of its own. LLVM's tail merging
// otherwise joins the identical tails of exact4's and exact6's lookups into one call taking
// either map, and the verifier inlines a lookup only at a call site that sees a single map: the
// joined call went through bpf_map_lookup_elem's indirect call instead (docs/benchmarks.md). The
// asm emits nothing; its text differs per site (tag), so the two tails are no longer identical.
#define OWN_CALL_SITE(v, tag) asm volatile("/* " tag " */" : "+r"(v))

// One packet on a limit rule's counter (none when its counter entry is missing).
static __always_inline void count(struct xg_counter *c, __u64 bytes, int dropped)
{
    if (!c)
        return;
    c->packets++;
    c->bytes += bytes;
    if (dropped)
        c->dropped++;
}

// CLOCK_MONOTONIC_COARSE (bpf_ktime_get_coarse_ns: the same base as bpf_ktime_get_ns() and user
// space's time.monotonic_ns(), updated once per tick), cached in this CPU's stats entry and read
// again only when jiffies has moved. bpf_jiffies64() is inlined by the verifier into one load,
// where each clock helper is a call (7-8 ns here, retpolines: docs/benchmarks.md). The cached
// value is always an earlier reading of the clock, so it is never ahead of time: a rule is never
// expired early, only late by the time since jiffies last moved on this CPU (a tick, whatever HZ
// is) on top of the coarse clock's own lag. No HZ is assumed: any change of jiffies refreshes,
// wrap included; a fresh entry (0, 0) refreshes on the first packet (jiffies_64 starts at
// INITIAL_JIFFIES, never 0). Per CPU, so no other CPU writes the pair; should a run of the
// program be preempted by another on the same CPU (BPF_PROG_TEST_RUN under a preemptible
// kernel), a torn pair still holds an earlier reading of the clock, late until jiffies moves.
static __always_inline __u64 coarse_ns(struct xg_stats *st)
{
    __u64 j = bpf_jiffies64();
    if (j != st->clk_jiffies) {
        st->clk_ns = bpf_ktime_get_coarse_ns();
        st->clk_jiffies = j;
    }
    return st->clk_ns;
}

// Whether a rule's expiry (CLOCK_MONOTONIC ns, 0 = never) has passed, reading coarse_ns() at
// most once per packet into *now: a rule lapses a few ms late at most, and every pipeline rule
// has an expiry. GCRA limits and event time stamps keep the precise clock.
static __always_inline int expired(struct xg_stats *st, __u64 expires_ns, __u64 *now)
{
    if (!expires_ns)
        return 0;
    if (!*now)
        *now = coarse_ns(st);
    return *now >= expires_ns;
}

// GCRA token bucket; approximate under contention across CPUs (no lock on the hot path).
static __always_inline int limit_allows(struct xg_limit *l, __u64 now)
{
    __u64 tat = l->tat;
    if (tat < now) {
        l->tat = now + l->interval_ns;
        return 1;
    }
    if (tat - now > l->burst_ns - l->interval_ns) // burst_ns / interval_ns packets at once
        return 0;
    __sync_fetch_and_add(&l->tat, l->interval_ns);
    return 1;
}

static __always_inline struct xg_limit *find_limit(struct parsed *p, struct xg_limit_key *k,
                                                   struct xg_stats *st,
                                                   __u64 *now) // coarse, for expired() only
{
    struct xg_addr dk;
    daddr16(p, dk.b);
    struct xg_limit_dst *ld = limit_dst.lookup(&dk);
    if (!ld)
        return 0;
    __builtin_memcpy(k->daddr, dk.b, 16);
    struct xg_limit *l;
#pragma unroll
    for (int i = 0; i < XG_LIMIT_MASKS; i++) {
        if (i >= ld->nmasks)
            break;
        __u8 m = ld->masks[i];
        if ((p->tcp_flags & m) != m)
            continue;
        k->tcp_flags = m;
        k->proto = p->proto;
        k->dport = p->dport;
        l = dst_limit.lookup(k);
        if (l && !expired(st, l->expires_ns, now))
            return l;
        k->dport = 0;
        l = dst_limit.lookup(k);
        if (l && !expired(st, l->expires_ns, now))
            return l;
        if (m == 0) {
            k->proto = 0;
            l = dst_limit.lookup(k);
            if (l && !expired(st, l->expires_ns, now))
                return l;
        }
    }
    return 0;
}

static __always_inline void sample(struct xdp_md *ctx, struct parsed *p, struct xg_stats *st,
                                   struct xg_config *cfg, __u64 len)
{
    __u32 n = cfg->sample_rate;
    // st->unmatched is this CPU's running count, so 1-in-N is deterministic per CPU
    if (n == 0 || (n > 1 && st->unmatched % n != 0))
        return;
    struct xg_event *e = events.ringbuf_reserve(sizeof(struct xg_event));
    if (!e) {
        st->events_lost++;
        return;
    }
    e->ts_ns = bpf_ktime_get_ns();
    saddr16(p, e->saddr);
    daddr16(p, e->daddr);
    e->sport = p->sport;
    e->dport = p->dport;
    e->len = len;
    e->ifindex = ctx->ingress_ifindex;
    e->proto = p->proto;
    e->tcp_flags = p->tcp_flags;
    e->flags = p->flags;
    e->icmp_type = p->icmp_type;
    events.ringbuf_submit(e, 0);
    st->events++;
}

// An IPv6 address's fold (xdpguard.h, xg_flow6_fold): lo ^ hi * XG_FOLD_MULT, the halves as
// loaded on this machine (a is 8-aligned).
static __always_inline __u64 fold6(const __u8 *a)
{
    const __u64 *w = (const __u64 *)a;
    return w[1] ^ w[0] * XG_FOLD_MULT;
}

// The exact rule for p's 5-tuple, from exact4 (16-byte key) or, v6 (the frame is IPv6), exact6
// (24-byte folded key, the hit verified against the hi halves in its value) and then exact6x
// (the whole 5-tuple; only while it holds a rule); 0 if none, or if the family's maps hold no
// rule (their counts in config are 0: no lookup).
static __always_inline struct xg_rule *find_exact(struct parsed *p, struct xg_config *cfg, int v6)
{
    if (v6) {
        if (cfg->n_exact6) {
            struct xg_flow6_fold fk = {};
            fk.sfold = fold6(p->saddr);
            fk.dfold = fold6(p->daddr);
            fk.sport = p->sport;
            fk.dport = p->dport;
            fk.proto = p->proto;
            struct xg_rule6 *r = exact6.lookup(&fk);
            OWN_CALL_SITE(r, "exact6");
            if (r && r->shi == *(__u64 *)p->saddr && r->dhi == *(__u64 *)p->daddr)
                return &r->rule;
        }
        if (!cfg->n_exact6x)
            return 0;
        struct xg_flow6_key xk = {};
        __builtin_memcpy(xk.saddr, p->saddr, 16);
        __builtin_memcpy(xk.daddr, p->daddr, 16);
        xk.sport = p->sport;
        xk.dport = p->dport;
        xk.proto = p->proto;
        struct xg_rule *x = exact6x.lookup(&xk);
        OWN_CALL_SITE(x, "exact6x");
        return x;
    }
    if (!cfg->n_exact4)
        return 0;
    struct xg_flow4_key fk = {};
    __builtin_memcpy(fk.saddr, &p->saddr4, 4);
    __builtin_memcpy(fk.daddr, &p->daddr4, 4);
    fk.sport = p->sport;
    fk.dport = p->dport;
    fk.proto = p->proto;
    struct xg_rule *r = exact4.lookup(&fk);
    OWN_CALL_SITE(r, "exact4");
    return r;
}

// The host rule (/32, /128) for p's source, from src_host4 (4-byte key, src4) or src_host6; 0 if
// none, or if the family's map holds no rule.
static __always_inline struct xg_rule *find_host(struct parsed *p, struct xg_config *cfg, int src4)
{
    if (!src4) {
        if (!cfg->n_host6)
            return 0;
        struct xg_addr hk;
        __builtin_memcpy(hk.b, p->saddr, 16);
        struct xg_rule *r = src_host6.lookup(&hk);
        OWN_CALL_SITE(r, "src_host6");
        return r;
    }
    if (!cfg->n_host4)
        return 0;
    struct xg_addr4 hk;
    __builtin_memcpy(hk.b, &p->saddr4, 4);
    struct xg_rule *r = src_host4.lookup(&hk);
    OWN_CALL_SITE(r, "src_host4");
    return r;
}

// p's source's src_filter slot: how many exact and host rules may have that source (src4: the
// source is IPv4 or v4-mapped, p->saddr4). Its index goes to *slot (the host slot is its top
// XG_HOST_SLOT_BITS bits).
static __always_inline struct xg_filter_slot *src_listed(struct parsed *p, int src4, __u32 *slot)
{
    __u32 h = p->saddr4;
    if (!src4) {
        __u32 *w = (__u32 *)p->saddr;
        h = w[0] ^ w[1] ^ w[2] ^ w[3];
    }
    *slot = (h * XG_FILTER_MULT) >> (32 - XG_FILTER_BITS);
    return src_filter.lookup(slot);
}

// Whether inline host slot s holds p's source: family 4 and the 4 bytes of p->saddr4 (src4), or
// family 6 and the 16 bytes of p->saddr.
static __always_inline int host_slot_holds(struct xg_host_slot *s, struct parsed *p, int src4)
{
    if (src4)
        return s->family == 4 && *(__u32 *)s->addr == p->saddr4;
    __u64 *a = (__u64 *)s->addr;
    __u64 *b = (__u64 *)p->saddr;
    return s->family == 6 && a[0] == b[0] && a[1] == b[1];
}

// The host rule (/32, /128) for p's source in its inline slot (index hslot; not looked up while
// config's n_host_slot is 0), else in the hashes (find_host); 0 if none. User space writes a
// slot without a lock, as it updates a per-CPU hash value in place: a packet meeting this CPU's
// copy mid-write may see a mix of the old and the new slot (one packet per CPU per write at
// most; services/dataplane/hostslots.py).
static __always_inline struct xg_rule *find_host_inline(struct parsed *p, struct xg_config *cfg,
                                                        int src4, __u32 hslot)
{
    if (cfg->n_host_slot) { // no slot holds a rule: no lookup, as for an empty hash
        struct xg_host_slot *s = src_host_slot.lookup(&hslot);
        OWN_CALL_SITE(s, "src_host_slot");
        if (s && host_slot_holds(s, p, src4))
            return &s->rule;
    }
    return find_host(p, cfg, src4);
}

// Which src_pfx_filter bands of p's source's slot (source masked to XG_PFX4_FILTER_LEN /
// XG_PFX6_FILTER_LEN bits) may hold a prefix rule of its family: band 0 for an IPv4 source (src4),
// bands 1-3 (the lengths of plens6[1..3]) for an IPv6 one; 0 if none. When a prefix shorter than
// the filter's length is in use the filter cannot tell: every band of the family (IPv6: ~0, so
// find_prefix6 also walks plens6[0]).
static __always_inline __u32 pfx_bands(struct parsed *p, struct xg_config *cfg, int src4)
{
    __u32 w;
    if (src4) {
        if (cfg->plens4 & ((1u << XG_PFX4_FILTER_LEN) - 1))
            return 0xff;
        w = p->saddr4 & bpf_htonl(~0u << (32 - XG_PFX4_FILTER_LEN));
    } else {
        if (cfg->plens6[0]) // lengths 0-31 (XG_PFX6_FILTER_LEN is 32)
            return ~0u;
        w = *(__u32 *)p->saddr;
    }
    __u32 slot = (w * XG_FILTER_MULT) >> (32 - XG_FILTER_BITS);
    __u32 *n = src_pfx_filter.lookup(&slot);
    if (!n)
        return 0;
    return *n & (src4 ? 0xffu : 0xffffff00u);
}

// The highest bit set in m (m != 0), without a branch: a branch per step would give the
// verifier a state per outcome in every pass of find_prefix6's loop (more than it explores), and
// LLVM's ctlz crashes BCC's backend. Smear the top bit down, count the bits (SWAR popcount).
// In 64-bit arithmetic: m < 2^32, so no step needs the masking a 32-bit shift or multiply
// costs in 64-bit BPF registers (one `and` at the end instead of one per shift).
static __always_inline __u32 top_bit(__u64 m)
{
    m |= m >> 1;
    m |= m >> 2;
    m |= m >> 4;
    m |= m >> 8;
    m |= m >> 16;
    m = m - ((m >> 1) & 0x55555555);
    m = (m & 0x33333333) + ((m >> 2) & 0x33333333);
    m = (m + (m >> 4)) & 0x0f0f0f0f;
    return (((m * 0x01010101) >> 24) & 0xff) - 1;
}

// The longest IPv4 prefix rule shorter than a host for source s (as in the header): one
// src_prefix4 lookup per length whose bit is set in `lens`, longest first. Unrolled over the 32
// lengths, each with its own call site and constant mask (a bounded loop over the set bits cost
// ~9 ns more on a /24 hit in bench/prefix_lookup_bench.py).
static __always_inline struct xg_rule *find_prefix4(__be32 s, __u32 lens)
{
    struct xg_lpm4_key k;
#pragma unroll
    for (int n = 31; n >= 0; n--) {
        if (!(lens & (1u << n)))
            continue;
        k.prefixlen = n;
        __be32 a = n ? s & bpf_htonl(~0u << (32 - n)) : 0;
        __builtin_memcpy(k.addr, &a, 4);
        struct xg_rule *r = src_prefix4.lookup(&k);
        if (r)
            return r;
    }
    return 0;
}

// The longest IPv6 prefix rule shorter than a host for source p->saddr: one src_prefix lookup
// per length set in plens6 whose word's band is set in `bands` (pfx_bands), longest first. The
// four words are unrolled (each copy masks the key with constants but for its one partial
// word); within a word, a bounded loop over its set bits (32 unrolled lookups per word would
// make the program several times larger, and one loop over all four words gave the verifier
// more states than it explores).
static __always_inline struct xg_rule *find_prefix6(struct parsed *p, struct xg_config *cfg,
                                                    __u32 bands)
{
    struct xg_lpm_key k;
    __u32 *s = (__u32 *)p->saddr;
    __u32 *kw = (__u32 *)k.addr;
#pragma unroll
    for (int w = 3; w >= 0; w--) {
        if (!(bands & (0xffu << (8 * w)))) // no prefix of these lengths in the source's slot
            continue;
        __u32 m = cfg->plens6[w];
#pragma clang loop unroll(disable)
        for (int i = 0; i < 32 && m; i++) {
            __u32 n = top_bit(m);
            m &= ~(1u << n);
            // the top n bits of word w (earlier words whole), no branch for n == 0 either
            __be32 mask = bpf_htonl((__u32)(0xffffffff00000000ULL >> n));
#pragma unroll
            for (int j = 0; j < 4; j++)
                kw[j] = j < w ? s[j] : j == w ? s[j] & mask : 0;
            k.prefixlen = w * 32 + n;
            struct xg_rule *r = src_prefix.lookup(&k);
            OWN_CALL_SITE(r, "src_prefix");
            if (r)
                return r;
        }
    }
    return 0;
}

/* ---- verdicts: every return of xdpguard() goes through one of these two ------------------- */

// Pass, counted in `why` and in passed.
static __always_inline int pass(struct xg_stats *st, __u64 *why)
{
    (*why)++;
    st->passed++;
    return XDP_PASS;
}

// A matched rule's verdict: drop (counted in `drop_stat`) or pass (counted in rule_pass).
static __always_inline int rule_verdict(struct xg_stats *st, int drop, __u64 *drop_stat)
{
    if (drop) {
        (*drop_stat)++;
        return XDP_DROP;
    }
    return pass(st, &st->rule_pass);
}

// The verdict of a parsed frame (rc: PARSE_OK, PARSE_PARTIAL or PARSE_BAD_FRAG): allowlist >
// exact > source host or prefix > limits > default pass. Inlined twice by xdpguard(), once per
// family (v6 a constant): each copy keeps only its family's lookups and key building, and LLVM no
// longer merges the two families' tails into code that spills the parsed fields to the stack
// (host and exact drops 0.90-0.96x of the shared body's time, docs/benchmarks.md). One body, so
// the precedence cannot differ between the families; it runs long for that reason.
static __always_inline int decide(struct xdp_md *ctx, struct xg_stats *st, struct xg_config *cfg,
                                  struct parsed *p, int rc, __u64 len, const int v6)
{
    int src4 = v6 ? p->src4 : 1;
    __u64 now = 0; // coarse_ns(), read at most once, when an expiry needs it

    // A map whose rule count in config is 0 is not looked up (user space raises the count
    // before it writes an entry, so a rule is never skipped).
    if (cfg->n_allow) {
        struct xg_lpm_key sk = {.prefixlen = 128};
        saddr16(p, sk.addr);
        if (allow.lookup(&sk))
            return pass(st, &st->allowed);
    }
    if (rc == PARSE_BAD_FRAG) {
        st->drop_frag++;
        return XDP_DROP;
    }

    // no exact (host) rule has this source, the usual case for an unmatched packet: no lookup
    __u32 fslot;
    struct xg_filter_slot *f = src_listed(p, src4, &fslot);
    if (f && f->exact && rc == PARSE_OK) { // exact rules need the ports
        struct xg_rule *r = find_exact(p, cfg, v6);
        if (r && !expired(st, r->expires_ns, &now)) {
            r->packets++;
            r->bytes += len;
            return rule_verdict(st, r->action == XG_ACT_DROP, &st->drop_exact);
        }
    }

    // Host rules (/32, /128: the longest prefix there is) sit in an inline slot (a per-CPU array
    // indexed by the top bits of the src_filter hash) or, when another address took the slot,
    // in a per-CPU hash by address, with their counters in the value; only a source with none
    // looks up the shorter prefixes, one hash per length in use, longest first. An expired host
    // rule, like an expired longest prefix, skips to the limits.
    struct xg_rule *h =
        (f && f->host) ? find_host_inline(p, cfg, src4,
                                          fslot >> (XG_FILTER_BITS - XG_HOST_SLOT_BITS)) : 0;
    if (h) {
        if (!expired(st, h->expires_ns, &now)) {
            h->packets++;
            h->bytes += len;
            return rule_verdict(st, h->action == XG_ACT_DROP, &st->drop_prefix);
        }
    } else if (src4 ? cfg->plens4 : cfg->plens6[0] | cfg->plens6[1] | cfg->plens6[2] |
                                        cfg->plens6[3]) {
        __u32 bands = pfx_bands(p, cfg, src4);
        struct xg_rule *pr = !bands ? 0 : src4 ? find_prefix4(p->saddr4, cfg->plens4)
                                               : find_prefix6(p, cfg, bands);
        if (pr && !expired(st, pr->expires_ns, &now)) {
            pr->packets++;
            pr->bytes += len;
            return rule_verdict(st, pr->action == XG_ACT_DROP, &st->drop_prefix);
        }
    }

    // A partial frame has ports and flags 0 (and protocol 0 if unknown), so only the limits
    // that name no port and no TCP-flag mask (and no protocol, or the one read) can match.
    struct xg_limit_key lk = {};
    struct xg_limit *l = cfg->n_limit ? find_limit(p, &lk, st, &now) : 0;
    if (l) {
        struct xg_counter *c = limit_stats.lookup(&lk);
        int drop = !limit_allows(l, bpf_ktime_get_ns()); // a bucket needs the precise clock
        count(c, len, drop);
        return rule_verdict(st, drop, &st->drop_limit);
    }

    if (rc == PARSE_PARTIAL) // no 5-tuple to sample
        return pass(st, &st->parse_fail);
    sample(ctx, p, st, cfg, len); // before unmatched++: sample() counts 1-in-N on unmatched
    return pass(st, &st->unmatched);
}

int xdpguard(struct xdp_md *ctx)
{
    int zero = 0;
    struct xg_stats *st = stats.lookup(&zero);
    struct xg_config *cfg = config.lookup(&zero);
    if (!st || !cfg) // never: both are one-entry arrays
        return XDP_PASS;
    st->seen++;
    __u64 len = ctx->data_end - ctx->data;
    struct parsed p; // not zeroed: parse() writes every field a path reads
    int rc = parse(ctx, &p);
    if (rc == PARSE_FAIL)
        return pass(st, &st->parse_fail);
    if (rc == PARSE_NOT_IP)
        return pass(st, &st->non_ip);
    if (p.flags & XG_EV_FRAGMENT)
        st->fragments++;
    if (rc == PARSE_PARTIAL)
        st->partial++;
#ifdef XG_PARSE_ONLY
    st->passed++;
    return XDP_PASS;
#endif
    if (p.flags & XG_EV_IPV6) // one copy of decide() per family (v6 a constant)
        return decide(ctx, st, cfg, &p, rc, len, 1);
    return decide(ctx, st, cfg, &p, rc, len, 0);
}
