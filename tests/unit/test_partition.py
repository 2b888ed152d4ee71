"""services.wire.partition agrees with the Kafka client's own partitioner for every path that
picks a partition: a packet event's source, an address (the scorer's stage 2) and the capture's
16-byte IPv4-mapped rows."""
from __future__ import annotations

import ipaddress

import numpy as np
from aiokafka.partitioner import DefaultPartitioner

from services.capture import columns
from services.records.packet import Packet
from services.wire.partition import address_partition, key_partition, partition_key, source_partition

ADDRESSES = [f"10.{i % 7}.{i % 11}.{i % 13 + 1}" for i in range(60)] + \
    [f"2001:db8::{i:x}" for i in range(1, 40)]


def test_every_path_gives_the_clients_partition():
    client = DefaultPartitioner()
    for n in (1, 3, 4, 8, 12):
        parts = list(range(n))
        for a in ADDRESSES:
            want = client(ipaddress.ip_address(a).packed, parts, parts)
            p = Packet(1, a, "192.0.2.1", 1, 2, 6, 0, 60)
            assert key_partition(ipaddress.ip_address(a).packed, n) == want
            assert address_partition(a, n) == want
            assert source_partition(p, n) == want and partition_key(p) == ipaddress.ip_address(a).packed
            rows = columns.from_packets([p], 0, None)
            assert columns.split_by_partition(rows, n)[0][0] == want  # the capture's 16-byte path


def test_sources_spread_over_partitions():
    assert {address_partition(a, 8) for a in ADDRESSES} == set(range(8))
    assert len(np.unique([address_partition(a, 4) for a in ADDRESSES])) == 4
