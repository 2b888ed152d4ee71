"""Which partition a keyed record goes to: Kafka's default partitioner, in one place.

Kafka's Java client and aiokafka's default partitioner send a keyed record to
`(murmur2(key) & 0x7FFFFFFF) % partitions`. xdpguard picks partitions itself (micro-batches go
to one partition, and the scorer's stage 2 routes flows by destination), and every such choice
must agree with what the client would pick for the same key, so all of them call
`key_partition`:

    key_partition(key, n)          the partition of raw key bytes
    address_partition(text, n)     of an IPv4/IPv6 address, keyed by its packed 4/16 bytes
    source_partition(packet, n)    of a packet event: keyed by its SOURCE address (the capture's
                                   `packets` records), so every event of a flow and every
                                   per-source aggregate stays on one partition
    partition_key(packet)          that key (the packed source address)

The capture's columnar path (services/capture/columns.py) holds 16-byte IPv4-mapped addresses
and strips the mapping prefix before calling key_partition, so it gets the same partitions.
"""
from __future__ import annotations

from aiokafka.partitioner import murmur2

from services.records.packet import Packet

from .addresses import packed_address

_CACHE_MAX = 1 << 16
_PARTITION: dict[tuple[bytes, int], int] = {}


def key_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partition (0..partitions-1) of a record keyed `key` (cached: real
    traffic repeats keys). Raises ZeroDivisionError if partitions is 0."""
    part = _PARTITION.get((key, partitions))
    if part is None:
        part = (murmur2(key) & 0x7FFFFFFF) % partitions
        if len(_PARTITION) >= _CACHE_MAX:
            _PARTITION.clear()
        _PARTITION[(key, partitions)] = part
    return part


def address_partition(address: str, partitions: int) -> int:
    """The partition of a record keyed by `address` (textual IPv4/IPv6) packed to 4/16 bytes;
    ValueError if it is not an address."""
    return key_partition(packed_address(address), partitions)


def partition_key(packet: Packet) -> bytes:
    """The Kafka key of a packet event: its packed source address (4 or 16 bytes)."""
    return packed_address(packet.src)


def source_partition(packet: Packet, partitions: int) -> int:
    """The `packets` partition of a packet event: the same whether a producer picks it
    explicitly (micro-batches) or lets the client hash partition_key(packet)."""
    return key_partition(packed_address(packet.src), partitions)
