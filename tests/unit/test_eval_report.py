"""Evaluation on a small subset of the real captures: replay, enforcement, report files."""
import csv
import json

import pytest

from services.offline.evaluation import EvalConfig, evaluate
from services.records.packet import Packet
from services.offline.replay import SimulatedDataPlane, replay
from services.records.rules import Action, Rule, Scope
from services.offline.training import load_manifest, train
from services.manager.cli import main

FILES = [("lucaderi+sgr/2022/Favilli/tests/hs-icmpScan.pcap", "attack", "icmp_sweep"),
         ("chrissanders+packets/synscan.pcapng", "attack", "port_scan_tcp"),
         ("ntop+nDPI/tests/cfgs/default/pcap/tumblr.pcap", "benign", "web"),
         ("ntop+nDPI/tests/cfgs/default/pcap/signal.pcap", "benign", "messaging"),
         ("chrissanders+packets/http_espn.pcapng", "benign", "web"),
         ("zeek+zeek/testing/btest/Traces/var-services-std-ports.pcap", "benign", "mixed")]


@pytest.fixture(scope="module")
def manifest(shared_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "manifest.csv"
    base = shared_dir / "data/pcaps"
    path.write_text("file,label,kind\n" + "".join(f"{base / f},{l},{k}\n" for f, l, k in FILES))
    return path


def p(ts_s, src="10.0.0.66", dst="10.0.0.1", sport=1, dport=2, proto=6, flags=2):
    return Packet(int(ts_s * 1e9), src, dst, sport, dport, proto, flags, 60)


def test_enforcer_precedence_reverse_direction_and_rate_limit():
    enf = SimulatedDataPlane()
    enf.install(Rule(Scope.SRC_PREFIX, Action.DROP, src="10.0.0.66/32"), active_ns=int(1e9))
    assert not enf.verdict(p(0.5))                       # not active yet
    assert enf.verdict(p(1.5))                           # source blocked
    assert enf.verdict(p(1.5, src="10.0.0.1", dst="10.0.0.66"))  # reply to a blocked peer
    enf.install(Rule(Scope.DST_LIMIT, Action.LIMIT, dst="10.9.9.9", proto=6, tcp_flags=2,
                     rate_pps=3), active_ns=0)
    got = [enf.verdict(p(2 + i / 100, src=f"1.1.1.{i}", dst="10.9.9.9")) for i in range(10)]
    assert got == [False] * 3 + [True] * 7
    assert not enf.verdict(p(2.5, src="1.1.1.1", dst="10.9.9.9", flags=0x10))  # ACK: not limited


def test_rules_take_effect_after_window_end_plus_reaction():
    class Always:
        threshold = 0.5
        def score_rows(self, rows):
            import numpy as np
            return np.ones(len(rows))
    pk = [p(t / 50, dport=100 + t) for t in range(200)]  # a 4-second scan, 50 probes/s
    res = replay(pk, Always(), window_s=1.0, reaction_s=1.0)
    first = next(i for i, d in enumerate(res.dropped) if d)
    assert pk[first].ts_ns >= 2e9 and res.first_rule_ns == 2e9 and res.dropped[first:].all()


def test_small_evaluation_writes_the_report(manifest, tmp_path):
    caps = load_manifest(manifest)
    tr = [c.split(0.5)[0] for c in caps]
    te = [c.split(0.5)[1] for c in caps]
    res = train([c for c in tr if c.label == "benign"], target_fpr=0.01, n_estimators=50)
    det = res.detector("t")
    rep = evaluate(te, det, EvalConfig(reaction_s=0.2, window_s=0.5))
    for key in ("attack_packet_drop_share", "benign_packet_drop_share", "benign_flow_drop_share",
                "roc_auc", "pr_auc", "time_to_first_block_s"):
        assert key in rep["overall"]
        for kind in ("icmp_sweep", "port_scan_tcp"):
            assert key in rep["by_kind"][kind]
    scan = rep["by_kind"]["port_scan_tcp"]
    # the scan is stopped as soon as timing allows: near the bound of window + reaction time
    assert scan["attack_drop_upper_bound"] > 0.3
    assert scan["attack_packet_drop_share"] >= 0.8 * scan["attack_drop_upper_bound"]
    assert scan["detection_recall"] > 0.9 and rep["overall"]["benign_packet_drop_share"] < 0.05  # tiny model
    assert rep["overall"]["roc_auc"] > 0.9


def test_evaluate_verb_writes_md_png_json(manifest, tmp_path, monkeypatch):
    model = tmp_path / "m.joblib"
    assert main(["train", "--manifest", str(manifest), "--train-frac", "0.5", "--trees", "30",
                 "--out", str(model)]) == 0
    out = tmp_path / "rep"
    assert main(["evaluate", "--manifest", str(manifest), "--out", str(out), "--split", "time",
                 "--model", str(model), "--no-merged"]) == 0
    doc = json.loads((out / "report.json").read_text())
    assert {"overall", "by_kind", "seed_method"} <= set(doc)
    assert set(doc["by_kind"]) == {"icmp_sweep", "port_scan_tcp"}
    assert (out / "report.png").stat().st_size > 10_000
    assert "seed method" in (out / "report.md").read_text()


def test_evaluate_by_file_folds_never_replays_a_file_its_model_saw(manifest, tmp_path):
    """Two folds by file, attacks sustained to 10 s: every capture replayed once, by the model
    of the fold it is not in; the report names the folds and the worst benign capture."""
    out = tmp_path / "rep"
    assert main(["evaluate", "--manifest", str(manifest), "--out", str(out), "--folds", "2",
                 "--sustain", "10", "--trees", "30", "--no-seed", "--no-merged"]) == 0
    doc = json.loads((out / "report.json").read_text())
    files = [f for fold in doc["folds"] for f in fold["files"]]
    assert sorted(files) == sorted(doc["by_file"]) and len(files) == len(FILES)
    for fold in doc["folds"]:
        assert fold["trained_on"] == sum(1 for f, l, _ in FILES if l == "benign") - sum(
            1 for f in fold["files"] if doc["by_file"][f]["kind"] == "benign")
    sweep = next(v for n, v in doc["by_file"].items() if "icmpScan" in n)
    assert sweep["rate_pps"] > 5 and sweep["counts"]["attack_packets"] > 4 * 512  # 2.2 s -> 10 s
    assert doc["overall"]["worst_benign_capture"]["name"] in doc["by_file"]
    assert "## Folds" in (out / "report.md").read_text()


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "m.csv"
    bad.write_text("file,label\nx.pcap,benign\n")
    assert main(["evaluate", "--manifest", str(bad), "--out", str(tmp_path / "o")]) == 1
    assert "'kind' column" in capsys.readouterr().err
    bad.write_text("file,label,kind\nx.pcap,maybe,web\n")
    assert main(["train", "--manifest", str(bad), "--out", str(tmp_path / "m.joblib")]) == 1
    assert "neither benign nor attack" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "m.joblib")]) == 1
    assert "nothing to train on" in capsys.readouterr().err


def test_merged_replays_keep_benign_captures_apart_and_their_nets_spread():
    from services.offline.evaluation import _renumber

    a = [p(1, src="192.168.1.2", dst="8.8.8.8"), p(2, src="8.8.8.8", dst="192.168.1.2"),
         p(3, src="192.168.1.2", dst="8.8.8.4"), p(4, src="192.168.1.2", dst="1.1.1.1")]
    shared: dict = {}
    r0, r1 = _renumber(a, 0, shared), _renumber(a, 1, shared)
    assert r0[0].src == r0[1].dst and r0[0].dst == r0[1].src        # a capture stays consistent
    assert {r0[0].src, r0[0].dst}.isdisjoint({r1[0].src, r1[0].dst})  # two captures never share
    net = lambda addr: addr.rsplit(".", 1)[0]
    assert net(r0[0].dst) == net(r0[2].dst) != net(r0[3].dst)        # /24s kept apart, not packed


def test_merged_replays_keep_what_an_address_is():
    """A group stays a group (and one per capture), the unspecified address stays unspecified,
    the limited broadcast stays a broadcast: the evidence reads all three (watch.is_group,
    detect._blockable). Renumbered into unicast, a capture's mDNS queries were queries to a
    host that never answers and its DHCP clients blockable sources."""
    from services.detection.detect import _blockable
    from services.detection.watch import is_group
    from services.offline.evaluation import _renumber

    addrs = ["224.0.0.251", "239.255.255.250", "255.255.255.255", "192.168.1.255", "0.0.0.0",
             "ff02::fb", "ff02::1:ff00:1", "::", "192.168.1.2", "fe80::1", "2001:db8::7"]
    a = [p(i, src="192.168.1.2", dst=d) for i, d in enumerate(addrs)]
    shared: dict = {}
    r0, r1 = _renumber(a, 0, shared), _renumber(a, 1, shared)
    for before, moved, other in zip(a, r0, r1):
        d = before.dst
        assert is_group(moved.dst) == is_group(d), (d, moved.dst)
        assert _blockable(moved.dst) == _blockable(d) or d == "255.255.255.255", (d, moved.dst)
        if d in ("0.0.0.0", "::"):
            assert moved.dst == other.dst == d
        else:
            assert moved.dst != d and moved.dst != other.dst, (d, moved.dst, other.dst)
    assert len({q.dst for q in r0}) == len(addrs)  # distinct addresses stay distinct


def test_one_attack_capture_is_refused_by_file_and_replays_the_shipped_model_by_time(
        shared_dir, tmp_path, capsys):
    """No benign capture to train folds on: one line naming --split time; by time, the shipped
    model replays the capture's second half and the baseline is skipped in one line."""
    one = tmp_path / "one.csv"
    base = shared_dir / "data/pcaps"
    with open(base / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    row = next(r for r in rows if r["file"] == "chrissanders+packets/synscan.pcapng")
    with open(one, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        w.writeheader()
        w.writerow({**row, "file": str(base / row["file"])})
    assert main(["evaluate", "--manifest", str(one), "--out", str(tmp_path / "f")]) == 1
    err = capsys.readouterr().err
    assert "0 benign given" in err and "--split time" in err and "Traceback" not in err
    assert main(["evaluate", "--manifest", str(one), "--split", "time",
                 "--out", str(tmp_path / "t")]) == 0
    err = capsys.readouterr().err
    assert "the shipped model is replayed" in err and "no benign capture to train it on" in err
    report = json.loads((tmp_path / "t/report.json").read_text())
    assert report["overall"]["counts"]["attack_packets"] > 0


@pytest.mark.parametrize("content", [b"\xff\xfe\x00binary", b"file,label,kind\n\x00\x01,benign,x\n"])
def test_a_manifest_that_is_not_text_csv_is_one_line(tmp_path, capsys, content):
    """A binary file given as --manifest (not UTF-8, or NUL bytes): one line naming it, exit 1."""
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content)
    assert main(["evaluate", "--manifest", str(bad), "--out", str(tmp_path / "ev")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0], err


@pytest.mark.parametrize("extra,says", [
    (["--out", "/proc/no-such/ev"], "cannot write"),
    (["--out", "OUT", "--split", "time", "--train-frac", "2"], "--train-frac"),
    (["--out", "OUT", "--train-frac", "0.5"], "--split time"),
])
def test_evaluate_refuses_a_bad_out_or_train_frac_before_reading_any_capture(
        shared_dir, tmp_path, capsys, monkeypatch, extra, says):
    """An unwritable --out was reported only after the whole evaluation (minutes on the
    corpus, then lost); --train-frac 2 likewise, and with --split file it was ignored without a
    word. Both are refused before a capture is read."""
    from services.offline import training

    def no_reading(*a, **k):
        raise AssertionError("a capture was read before the arguments were checked")
    monkeypatch.setattr(training, "load_manifest", no_reading)
    manifest = str(shared_dir / "data/pcaps/manifest.csv")
    argv = ["evaluate", "--manifest", manifest,
            *[str(tmp_path / "ev") if a == "OUT" else a for a in extra]]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err


@pytest.mark.parametrize("out", ["/proc/no-such/m.joblib", "DIR"])
def test_train_refuses_an_out_it_cannot_write_before_reading_any_capture(
        shared_dir, tmp_path, capsys, monkeypatch, out):
    """`train --out` in a missing folder, or naming a folder, failed only after the fit."""
    from services.manager import train_cmd

    def no_reading(*a, **k):
        raise AssertionError("captures were read before --out was checked")
    monkeypatch.setattr(train_cmd, "collect", no_reading)
    out = str(tmp_path) if out == "DIR" else out
    argv = ["train", "--seed-log", str(shared_dir / "data/seed-capture/firewall_log.json"),
            "--out", out]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot write {out}" in err[0], err


def test_train_needs_an_out_so_the_shipped_model_is_never_overwritten(capsys):
    """`xdpguard train` in a checkout once wrote models/xdpguard-if.joblib by default."""
    from services.detection.model import DEFAULT_MODEL

    before = DEFAULT_MODEL.stat().st_mtime_ns
    with pytest.raises(SystemExit) as exc:
        main(["train", "--pcap", "x.pcap"])
    assert exc.value.code == 2 and "--out" in capsys.readouterr().err
    assert DEFAULT_MODEL.stat().st_mtime_ns == before
