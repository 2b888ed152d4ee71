"""`xdpguard learn` refuses a site model that fails validation, with the figures: more of the
held-back site traffic dropped than the false-positive budget, or an attack kind the shipped
model catches and the site model misses (services.offline.sitemodel.judge); and bad input is
one line and exit 1 before any work."""
from pathlib import Path

import pytest

from services.manager import cli
from services.offline.sitemodel import Counted, LearnConfig, judge, split_site
from services.offline.training import LabelledCapture
from services.records.packet import Packet

pytestmark = pytest.mark.unit

CFG = LearnConfig(fp_budget=0.0001, catch_share=0.5)
SHIPPED = {"syn_flood": Counted(950, 1000), "port_scan_tcp": Counted(90, 100),
           "dos_smb": Counted(0, 62)}


def test_a_model_within_budget_that_catches_every_kind_passes():
    v = judge(Counted(1, 20_000), SHIPPED, dict(SHIPPED), CFG)
    assert v.ok and v.failures == []


def test_a_model_over_the_fp_budget_is_refused_with_its_figures():
    v = judge(Counted(3, 20_000), SHIPPED, dict(SHIPPED), CFG)
    assert not v.ok
    assert v.failures == ["held-back site traffic: 3 of 20,000 packets dropped (0.0150%), "
                          "budget 0.0100%"]


def test_exactly_the_budget_passes_and_no_held_back_packet_is_refused():
    assert judge(Counted(2, 20_000), SHIPPED, dict(SHIPPED), CFG).ok
    v = judge(Counted(0, 0), SHIPPED, dict(SHIPPED), CFG)
    assert len(v.failures) == 1 and "no packet to validate on" in v.failures[0]


def test_a_model_missing_a_kind_the_shipped_model_catches_is_refused():
    site = {**SHIPPED, "port_scan_tcp": Counted(40, 100)}
    v = judge(Counted(0, 20_000), SHIPPED, site, CFG)
    assert v.failures == ["attack kind port_scan_tcp: site model drops 40 of 100 attack packets "
                          "(40.0000%), the shipped model 90.0000%; a caught kind needs 50.0000%"]


def test_a_kind_the_shipped_model_misses_too_is_no_failure_and_both_failures_are_listed():
    site = {**SHIPPED, "syn_flood": Counted(0, 1000), "dos_smb": Counted(0, 62)}
    v = judge(Counted(5, 20_000), SHIPPED, site, CFG)
    assert len(v.failures) == 2
    assert v.failures[0].startswith("held-back site traffic: 5 of 20,000")
    assert v.failures[1].startswith("attack kind syn_flood: site model drops 0 of 1,000")
    assert v.to_dict()["failures"] == v.failures


def test_site_traffic_is_split_by_time_and_named_apart_from_the_baseline():
    pk = [Packet(i * 10**9, "10.0.0.1", "10.0.0.2", 1000, 80, 6, 2, 60) for i in range(10)]
    fit, held = split_site([LabelledCapture("office.pcap", "benign", "unlabelled", pk)], 0.3)
    assert [c.name for c in fit + held] == ["site:office.pcap"] * 2
    assert fit[0].packets == pk[:7] and held[0].packets == pk[7:]


@pytest.mark.parametrize("argv, message", [
    (["--pcap", "x.pcap", "--fp-budget", "1.5"], "--fp-budget must be in (0, 1)"),
    (["--pcap", "x.pcap", "--holdout", "0"], "--holdout must be in (0, 1)"),
    ([], "nothing to learn from"),
    (["--pcap", "/nonexistent/site.pcap"], "no such file: /nonexistent/site.pcap"),
    (["--kafka-from", "2026-11-30T00:00:00Z", "--kafka-to", "2026-11-01T00:00:00Z"],
     "--kafka-to 2026-11-01T00:00:00Z is not after --kafka-from 2026-11-30T00:00:00Z"),
    (["--kafka-from", "2999-01-01T00:00:00Z"], "--kafka-to (now) is not after --kafka-from"),
    (["--pcap", "x.pcap", "--kafka-to", "2026-11-01T00:00:00Z"], "--kafka-to needs --kafka-from"),
])
def test_bad_input_is_one_line_and_exit_1(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDPGUARD_KAFKA_BOOTSTRAP", "127.0.0.1:1")  # never asked
    out = tmp_path / "site.joblib"
    assert cli.main(["learn", *argv, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not out.exists()


def test_the_site_model_never_overwrites_the_baseline_model(capsys):
    from services.detection.model import DEFAULT_MODEL

    before = Path(DEFAULT_MODEL).read_bytes()
    assert cli.main(["learn", "--pcap", "x.pcap", "--out", str(DEFAULT_MODEL)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is the baseline model" in err
    assert Path(DEFAULT_MODEL).read_bytes() == before
