"""The capture's columnar hot path speaks the codec's language: records it encodes decode with
codec.decode_packet_columns to the same events, and its partitions are partition.source_partition's."""
import numpy as np

from services.capture import columns
from services.capture.fastring import RECORD_DTYPE
from services.wire import codec
from services.records.packet import Packet
from services.wire.partition import source_partition


def packets():
    out = []
    for i in range(300):
        src = f"10.0.{i % 7}.{i % 13 + 1}" if i % 5 else f"fd00::{i % 9 + 1}"
        dst = "10.9.9.9" if i % 5 else "fd00::99"
        out.append(Packet(1_700_000_000_000_000_000 + i, src, dst, 1000 + i, 443, 6, 0x12, 60 + i,
                          3, 1))
    return out


def test_encoded_chunks_decode_to_the_same_events_on_the_codec_partition():
    sent = packets()
    rows = columns.from_packets(sent, first_seq=100, sample_rate=8)
    got = []
    for part, chunk in columns.split_by_partition(rows, 8):
        decoded = codec.decode_packets(columns.encode(chunk, "node-x"))
        assert all(source_partition(p, 8) == part for p in decoded)
        assert [p.seq for p in decoded] == sorted(p.seq for p in decoded)
        got.extend(decoded)
    got.sort(key=lambda p: p.seq)
    assert [p.seq for p in got] == list(range(100, 400))
    for want, p in zip(sent, got):
        assert (p.ts_ns, p.src, p.dst, p.sport, p.dport, p.proto, p.tcp_flags, p.length,
                p.ifindex) == (want.ts_ns, want.src, want.dst, want.sport, want.dport, want.proto,
                               want.tcp_flags, want.length, want.ifindex)
        assert (p.node, p.sample_rate) == ("node-x", 8)


def test_ring_records_get_epoch_time_sequence_and_rate():
    rec = np.zeros(3, RECORD_DTYPE)
    rec["ts_ns"] = [10, 20, 30]
    rec["saddr"][:, 10:] = [0xFF, 0xFF, 192, 0, 2, 1]
    rec["daddr"][:, 10:] = [0xFF, 0xFF, 192, 0, 2, 9]
    rec["sport"], rec["dport"], rec["proto"], rec["len"] = 5, 53, 17, 80
    c = columns.from_records(rec, offset_ns=1_000, first_seq=7, sample_rate=4)
    p = codec.decode_packets(columns.encode(c, "n"))
    assert [(x.ts_ns, x.seq, x.src, x.dst, x.dport, x.sample_rate) for x in p] == [
        (1010, 7, "192.0.2.1", "192.0.2.9", 53, 4), (1020, 8, "192.0.2.1", "192.0.2.9", 53, 4),
        (1030, 9, "192.0.2.1", "192.0.2.9", 53, 4)]
