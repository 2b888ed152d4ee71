// The original tool's data plane, rebuilt for bench/xdp_bench.py to measure xdpguard against
// (docs/origins.md, issue 16): Ethernet, IPv4 only, ONE hash map keyed by a 16-byte 5-tuple
// whose value is the rule's action and hit counter; a match bumps the counter with
// __sync_fetch_and_add and returns the action (drop or pass); a miss sends the packet's fields
// (the original log line: addresses, ports, protocol, TCP flags, frame length, boot-time ns) to
// user space through a perf event array and passes the packet. Loaded with BCC, like
// bpf/xdpguard.c. Not part of the product.
#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>

struct ref_key {
    u32 src;
    u32 dst;
    u16 sport;
    u16 dport;
    u8 proto;
    u8 pad[3];
};  // 16 bytes

struct ref_rule {
    u32 action;  // XDP_DROP or XDP_PASS
    u32 pad;
    u64 hits;
};

struct ref_event {
    u32 src;
    u32 dst;
    u16 sport;
    u16 dport;
    u8 proto;
    u8 tcp_flags;
    u16 pad;
    u32 len;
    u32 pad2;
    u64 timestamp;
};

BPF_HASH(rules, struct ref_key, struct ref_rule, 262144);
BPF_PERF_OUTPUT(events);

int prog(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end || eth->h_proto != htons(ETH_P_IP))
        return XDP_PASS;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end || ip->ihl < 5)
        return XDP_PASS;
    void *l4 = (void *)ip + ip->ihl * 4;
    struct ref_key key = {};
    key.src = ip->saddr;
    key.dst = ip->daddr;
    key.proto = ip->protocol;
    u8 flags = 0;
    if (ip->protocol == IPPROTO_TCP) {
        struct tcphdr *tcp = l4;
        if ((void *)(tcp + 1) > end)
            return XDP_PASS;
        key.sport = ntohs(tcp->source);
        key.dport = ntohs(tcp->dest);
        flags = ((u8 *)tcp)[13];
    } else if (ip->protocol == IPPROTO_UDP) {
        struct udphdr *udp = l4;
        if ((void *)(udp + 1) > end)
            return XDP_PASS;
        key.sport = ntohs(udp->source);
        key.dport = ntohs(udp->dest);
    }
    struct ref_rule *rule = rules.lookup(&key);
    if (rule) {
        __sync_fetch_and_add(&rule->hits, 1);
        return rule->action;
    }
    struct ref_event ev = {};
    ev.src = key.src;
    ev.dst = key.dst;
    ev.sport = key.sport;
    ev.dport = key.dport;
    ev.proto = key.proto;
    ev.tcp_flags = flags;
    ev.len = end - data;
    ev.timestamp = bpf_ktime_get_ns();
    events.perf_submit(ctx, &ev, sizeof(ev));
    return XDP_PASS;
}
