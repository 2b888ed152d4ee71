"""`xdpguard analyze` / `xdpguard flows` on the original tool's capture (docs/origins.md): its
formats, no shell."""
import json
import re

from services.manager.cli import main

LINE = re.compile(r"^\[(\d+)/29\] (\S+):(\d+) → (\S+):(\d+) \((tcp|udp|icmp)\) \| Pkts: \d+, "
                  r"Bytes: \d+, Dur: \d+\.\d{4}s \| Score: -?\d+\.\d{4} \| (NORMAL → PASS|ANOMALY → DROP)$")


def test_analyze_prints_the_seeds_lines_and_writes_its_shape(shared_dir, tmp_path, capsys):
    log = shared_dir / "data/seed-capture/firewall_log.json"
    out = tmp_path / "cmds.json"
    assert main(["analyze", "--file", str(log), "--dry-run", "--out-file", str(out)]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("[")]
    assert len(lines) == 29 and all(LINE.match(l) for l in lines), lines[:3]
    assert lines[0].startswith("[1/29] 142.250.193.74:443 → 10.0.2.15:33404 (tcp) | Pkts: 1, "
                               "Bytes: 60, Dur: 0.0010s")
    cmds = json.loads(out.read_text())
    ref = json.loads((shared_dir / "data/seed-capture/ml_firewall_commands.json").read_text())
    assert len(cmds) == 29
    for mine, seed in zip(cmds, ref):
        assert {"cmd", "fields", "features", "ml_score", "ml_label", "action"} <= set(mine)
        assert mine["fields"] == seed["fields"] and mine["features"] == seed["features"]
        assert mine["cmd"][0] != "sudo" and mine["cmd"][1] == "add"
        assert mine["action"] == ("drop" if mine["ml_label"] else "pass")
        assert mine["cmd"][-2:] == ["--action", mine["action"]]
        assert "result" not in mine


def test_analyze_keeps_sudo_unless_told(shared_dir, tmp_path, capsys):
    out = tmp_path / "c.json"
    main(["analyze", "-f", str(shared_dir / "data/seed-capture/firewall_log.json"), "-o", str(out)])
    assert json.loads(out.read_text())[0]["cmd"][:3] == ["sudo", "xdpguard", "add"]


def test_missing_log_is_a_one_line_error(tmp_path, capsys):
    assert main(["analyze", "--file", str(tmp_path / "nope.json"), "--dry-run"]) == 1
    assert "log file not found" in capsys.readouterr().err


def test_flows_matches_check_unique(shared_dir, capsys):
    assert main(["flows", "--file", str(shared_dir / "data/seed-capture/firewall_log.json")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Total packets in log: 681"
    assert out[1] == "Unique flows (5-tuple): 29"
    assert out[4] == "1. 34.54.84.110:443 → 10.0.2.15:58438 (TCP): 91 packets"
    assert out[5] == "2. 64.233.170.81:443 → 10.0.2.15:34276 (TCP): 55 packets"


def test_a_log_line_has_the_original_keys_in_order_and_reads_back():
    """The line `xdpguard monitor` writes (kernel time in place of the packet's) and
    write_log writes: the original tool's keys in its order, read back to the same packet."""
    from services.offline.seedlog import entry_from_packet, parse_lines
    from services.records.packet import Packet

    pkt = Packet(ts_ns=7, src="10.0.0.1", dst="10.0.0.2", sport=1234, dport=80, proto=6,
                 tcp_flags=0x12, length=60)
    entry = entry_from_packet(pkt, timestamp=99)
    assert list(entry) == ["src_ip", "dst_ip", "src_port", "dst_port", "proto", "tcp_flags", "len",
                           "timestamp"]
    back = parse_lines([json.dumps(entry)]).packets
    assert back == [Packet(99, "10.0.0.1", "10.0.0.2", 1234, 80, 6, 0x12, 60)]
    assert entry_from_packet(pkt)["timestamp"] == 7


def test_a_line_with_an_infinite_or_huge_number_is_skipped_not_a_traceback():
    """JSON allows `1e400` and `Infinity` (float inf): int() of them raises OverflowError, which
    must count as a bad line like any other (issue 14: no traceback on any input)."""
    from services.offline.seedlog import parse_lines

    good = '{"src_ip": "10.0.0.1", "dst_ip": "10.0.0.2", "src_port": 1, "dst_port": 2, "proto": 6}'
    lines = [good, good.replace('"src_port": 1', '"src_port": 1e400'),
             good.replace('"proto": 6', '"proto": 6, "timestamp": Infinity'),
             good.replace('"proto": 6', '"proto": 6, "len": -Infinity')]
    log = parse_lines(lines)
    assert len(log.packets) == 1
    assert [n for n, _ in log.skipped] == [2, 3, 4]
