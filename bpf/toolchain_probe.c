// Smallest useful XDP program: drops IPv4 ICMP and UDP and counts what it drops.
// Only used to prove the toolchain (BCC compiles, the kernel attaches, packets really drop).
#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>

BPF_PERCPU_ARRAY(dropped, u64, 1);

int xdp_probe(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end || eth->h_proto != htons(ETH_P_IP))
        return XDP_PASS;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end)
        return XDP_PASS;
    if (ip->protocol != IPPROTO_ICMP && ip->protocol != IPPROTO_UDP)
        return XDP_PASS;
    int zero = 0;
    u64 *n = dropped.lookup(&zero);
    if (n)
        *n += 1;
    return XDP_DROP;
}
