// xdpguard XDP program (loaded with BCC by services/common/loader.py).
//
// Parse Ethernet (+2 VLAN tags), IPv4 (any IHL, fragments) or IPv6 (+extension and fragment
// headers), then: allowlist > exact 5-tuple > source prefix > destination limit > default pass,
// sampling 1-in-N of the default-passed packets into the ring buffer. What cannot be parsed is
// passed and counted, never dropped. Sizes come from -D flags; structs from xdpguard.h.
#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include "xdpguard.h"

#ifndef XG_EXACT_MAX
#define XG_EXACT_MAX 262144
#endif
#ifndef XG_PREFIX_MAX
#define XG_PREFIX_MAX 65536
#endif
#ifndef XG_ALLOW_MAX
#define XG_ALLOW_MAX 16384
#endif
#ifndef XG_LIMIT_MAX
#define XG_LIMIT_MAX 4096
#endif
#ifndef XG_RING_PAGES
#define XG_RING_PAGES 256
#endif

BPF_ARRAY(config, struct xg_config, 1);
BPF_PERCPU_ARRAY(stats, struct xg_stats, 1);
BPF_LPM_TRIE(allow, struct xg_lpm_key, struct xg_allow, XG_ALLOW_MAX);
BPF_PERCPU_HASH(exact4, struct xg_flow4_key, struct xg_rule, XG_EXACT_MAX);
BPF_PERCPU_HASH(exact6, struct xg_flow6_key, struct xg_rule, XG_EXACT_MAX);
BPF_LPM_TRIE(src_prefix, struct xg_lpm_key, struct xg_prefix, XG_PREFIX_MAX);
BPF_PERCPU_HASH(src_stats, struct xg_lpm_key, struct xg_counter, XG_PREFIX_MAX);
BPF_HASH(dst_limit, struct xg_limit_key, struct xg_limit, XG_LIMIT_MAX);
BPF_HASH(limit_dst, struct xg_addr, struct xg_limit_dst, XG_LIMIT_MAX);
BPF_PERCPU_HASH(limit_stats, struct xg_limit_key, struct xg_counter, XG_LIMIT_MAX);
BPF_RINGBUF_OUTPUT(events, XG_RING_PAGES);

#define VLAN_HDR_LEN 4
#define IPV6_EXT_MAX 4

struct parsed {
    __u8 saddr[16];
    __u8 daddr[16];
    __u16 sport;
    __u16 dport;
    __u8 proto;
    __u8 tcp_flags;
    __u8 flags;
};

static __always_inline void map_v4(__u8 *dst, __be32 addr)
{
    __builtin_memset(dst, 0, 10);
    dst[10] = 0xff;
    dst[11] = 0xff;
    __builtin_memcpy(dst + 12, &addr, 4);
}

// Returns 0 when the ports (and TCP flags) were read, -1 when the L4 header is truncated.
static __always_inline int parse_l4(void *l4, void *data_end, struct parsed *p)
{
    if (p->proto == IPPROTO_TCP) {
        struct tcphdr *th = l4;
        if ((void *)(th + 1) > data_end)
            return -1;
        p->sport = bpf_ntohs(th->source);
        p->dport = bpf_ntohs(th->dest);
        p->tcp_flags = ((__u8 *)th)[13];
    } else if (p->proto == IPPROTO_UDP) {
        struct udphdr *uh = l4;
        if ((void *)(uh + 1) > data_end)
            return -1;
        p->sport = bpf_ntohs(uh->source);
        p->dport = bpf_ntohs(uh->dest);
    } else if (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6) {
        if (l4 + 4 > data_end) // type, code, checksum
            return -1;
    }
    return 0;
}

// 0: parsed; 1: not IP; -1: truncated or malformed.
static __always_inline int parse(struct xdp_md *ctx, struct parsed *p)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return -1;
    __u16 h_proto = eth->h_proto;
    void *cur = eth + 1;
#pragma unroll
    for (int i = 0; i < 2; i++) {
        if (h_proto != bpf_htons(ETH_P_8021Q) && h_proto != bpf_htons(ETH_P_8021AD))
            break;
        if (cur + VLAN_HDR_LEN > data_end)
            return -1;
        h_proto = *(__u16 *)(cur + 2);
        cur += VLAN_HDR_LEN;
    }
    if (h_proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = cur;
        if ((void *)(ip + 1) > data_end)
            return -1;
        __u32 hlen = ip->ihl * 4;
        if (ip->version != 4 || hlen < sizeof(*ip))
            return -1;
        if (cur + hlen > data_end)
            return -1;
        map_v4(p->saddr, ip->saddr);
        map_v4(p->daddr, ip->daddr);
        p->proto = ip->protocol;
        if (ip->frag_off & bpf_htons(0x1fff)) { // not the first fragment: no L4 header
            p->flags |= XG_EV_FRAGMENT;
            return 0;
        }
        return parse_l4(cur + hlen, data_end, p);
    }
    if (h_proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = cur;
        if ((void *)(ip6 + 1) > data_end)
            return -1;
        __builtin_memcpy(p->saddr, &ip6->saddr, 16);
        __builtin_memcpy(p->daddr, &ip6->daddr, 16);
        p->flags |= XG_EV_IPV6;
        __u8 nh = ip6->nexthdr;
        cur = ip6 + 1;
#pragma unroll
        for (int i = 0; i < IPV6_EXT_MAX; i++) {
            if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS) {
                __u8 *ext = cur;
                if (cur + 8 > data_end)
                    return -1;
                nh = ext[0];
                cur += (ext[1] + 1) * 8;
            } else if (nh == IPPROTO_FRAGMENT) {
                __u8 *fh = cur;
                if (cur + 8 > data_end)
                    return -1;
                nh = fh[0];
                cur += 8;
                if (((fh[2] << 8) | fh[3]) & 0xfff8) { // offset != 0: not the first fragment
                    p->proto = nh;
                    p->flags |= XG_EV_FRAGMENT;
                    return 0;
                }
            } else {
                break;
            }
        }
        if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS ||
            nh == IPPROTO_FRAGMENT)
            return -1; // more extension headers than we follow
        p->proto = nh;
        return parse_l4(cur, data_end, p);
    }
    return 1;
}

static __always_inline void count(struct xg_counter *c, __u64 bytes, int dropped)
{
    c->packets++;
    c->bytes += bytes;
    if (dropped)
        c->dropped++;
}

static __always_inline int expired(__u64 expires_ns, __u64 *now)
{
    if (!expires_ns)
        return 0;
    if (!*now)
        *now = bpf_ktime_get_ns();
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
                                                   __u64 *now)
{
    struct xg_addr dk;
    __builtin_memcpy(dk.b, p->daddr, 16);
    struct xg_limit_dst *ld = limit_dst.lookup(&dk);
    if (!ld)
        return 0;
    __builtin_memcpy(k->daddr, p->daddr, 16);
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
        if (l && !expired(l->expires_ns, now))
            return l;
        k->dport = 0;
        l = dst_limit.lookup(k);
        if (l && !expired(l->expires_ns, now))
            return l;
        if (m == 0) {
            k->proto = 0;
            l = dst_limit.lookup(k);
            if (l && !expired(l->expires_ns, now))
                return l;
        }
    }
    return 0;
}

static __always_inline void sample(struct xdp_md *ctx, struct parsed *p, struct xg_stats *st,
                                   __u64 len)
{
    int zero = 0;
    struct xg_config *cfg = config.lookup(&zero);
    __u32 n = cfg ? cfg->sample_rate : 1;
    // st->unmatched is this CPU's running count, so 1-in-N is deterministic per CPU
    if (n == 0 || (n > 1 && st->unmatched % n != 0))
        return;
    struct xg_event *e = events.ringbuf_reserve(sizeof(struct xg_event));
    if (!e) {
        st->events_lost++;
        return;
    }
    e->ts_ns = bpf_ktime_get_ns();
    __builtin_memcpy(e->saddr, p->saddr, 16);
    __builtin_memcpy(e->daddr, p->daddr, 16);
    e->sport = p->sport;
    e->dport = p->dport;
    e->len = len;
    e->ifindex = ctx->ingress_ifindex;
    e->proto = p->proto;
    e->tcp_flags = p->tcp_flags;
    e->flags = p->flags;
    e->pad = 0;
    events.ringbuf_submit(e, 0);
    st->events++;
}

int xdpguard(struct xdp_md *ctx)
{
    int zero = 0;
    struct xg_stats *st = stats.lookup(&zero);
    if (!st)
        return XDP_PASS;
    st->seen++;
    __u64 len = ctx->data_end - ctx->data;
    struct parsed p = {};
    int rc = parse(ctx, &p);
    if (rc != 0) {
        if (rc < 0)
            st->parse_fail++;
        else
            st->non_ip++;
        st->passed++;
        return XDP_PASS;
    }
    if (p.flags & XG_EV_FRAGMENT)
        st->fragments++;
#ifdef XG_PARSE_ONLY
    st->passed++;
    return XDP_PASS;
#endif
    __u64 now = 0;

    struct xg_lpm_key sk = {.prefixlen = 128};
    __builtin_memcpy(sk.addr, p.saddr, 16);
    if (allow.lookup(&sk)) {
        st->allowed++;
        st->passed++;
        return XDP_PASS;
    }

    struct xg_rule *r;
    if (p.flags & XG_EV_IPV6) {
        struct xg_flow6_key fk = {};
        __builtin_memcpy(fk.saddr, p.saddr, 16);
        __builtin_memcpy(fk.daddr, p.daddr, 16);
        fk.sport = p.sport;
        fk.dport = p.dport;
        fk.proto = p.proto;
        r = exact6.lookup(&fk);
    } else {
        struct xg_flow4_key fk = {};
        __builtin_memcpy(fk.saddr, p.saddr + 12, 4);
        __builtin_memcpy(fk.daddr, p.daddr + 12, 4);
        fk.sport = p.sport;
        fk.dport = p.dport;
        fk.proto = p.proto;
        r = exact4.lookup(&fk);
    }
    if (r && !expired(r->expires_ns, &now)) {
        r->packets++;
        r->bytes += len;
        if (r->action == XG_ACT_DROP) {
            st->drop_exact++;
            return XDP_DROP;
        }
        st->rule_pass++;
        st->passed++;
        return XDP_PASS;
    }

    struct xg_prefix *pr = src_prefix.lookup(&sk);
    if (pr && !expired(pr->expires_ns, &now)) {
        // src_stats is keyed by the rule's prefix: mask the address to its length
        struct xg_lpm_key rk = {};
        __builtin_memcpy(rk.addr, p.saddr, 16);
        struct xg_counter *c = 0;
        __u32 plen = pr->prefixlen;
        if (plen <= 128) {
            rk.prefixlen = plen;
#pragma unroll
            for (int i = 0; i < 16; i++) {
                int bits = (int)plen - i * 8;
                if (bits <= 0)
                    rk.addr[i] = 0;
                else if (bits < 8)
                    rk.addr[i] &= (__u8)(0xff << (8 - bits));
            }
            c = src_stats.lookup(&rk);
        }
        int drop = pr->action == XG_ACT_DROP;
        if (c)
            count(c, len, drop);
        if (drop) {
            st->drop_prefix++;
            return XDP_DROP;
        }
        st->rule_pass++;
        st->passed++;
        return XDP_PASS;
    }

    struct xg_limit_key lk = {};
    struct xg_limit *l = find_limit(&p, &lk, &now);
    if (l) {
        if (!now)
            now = bpf_ktime_get_ns();
        struct xg_counter *c = limit_stats.lookup(&lk);
        int ok = limit_allows(l, now);
        if (c)
            count(c, len, !ok);
        if (!ok) {
            st->drop_limit++;
            return XDP_DROP;
        }
        st->rule_pass++;
        st->passed++;
        return XDP_PASS;
    }

    sample(ctx, &p, st, len);
    st->unmatched++;
    st->passed++;
    return XDP_PASS;
}
