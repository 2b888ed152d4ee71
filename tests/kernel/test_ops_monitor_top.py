"""`xdpguard monitor` and `xdpguard top` next to the rest of a node (issue 14, items 8-10):
monitor puts the kernel's sampling rate back when it ends and refuses to start while another
process reads the ring buffer (a BPF ring buffer has one reader position: a second reader takes
events from the first); top follows the program when it is loaded again."""
import os
import subprocess
import sys

from services.capture.fastring import FastRing
from services.dataplane import loader
from services.dataplane.datapath import Datapath
from services.dataplane.ringowners import ring_readers
from services.manager.top_cmd import Maps, take
from services.records.rules import Action, Origin, Rule, Scope
from tests.support.services import ROOT

SIZES = loader.Sizes(exact=64, prefix=64, allow=64, limit=16, ring_pages=16)


def monitor(pin_dir, *args):
    env = {**os.environ, "XDPGUARD_PIN_DIR": pin_dir}
    return subprocess.run([sys.executable, "-m", "services.manager", "monitor", *args], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_monitor_puts_the_sampling_rate_it_found_back(pin_dir, tmp_path):
    loader.load([], pin_dir=pin_dir, sizes=SIZES)
    try:
        with Datapath.open(pin_dir) as dp:
            dp.set_sample_rate(2)
        res = monitor(pin_dir, "--sample", "4", "--duration", "0.5", "--file",
                      str(tmp_path / "log.json"))
        assert res.returncode == 0, res.stderr
        with Datapath.open(pin_dir) as dp:
            assert dp.sample_rate() == 2
        assert "sampling back to 1-in-2" in res.stderr
    finally:
        loader.unload_all(pin_dir)


def test_monitor_refuses_while_another_process_reads_the_ring(pin_dir, tmp_path):
    loader.load([], pin_dir=pin_dir, sizes=SIZES)
    ring = FastRing(pin_dir)  # this process: a reader, as a running capture is
    try:
        assert [h.pid for h in ring_readers(pin_dir)] == []  # itself is not another reader
        res = monitor(pin_dir, "--duration", "0.5", "--file", str(tmp_path / "log.json"))
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert res.returncode == 1 and len(lines) == 1, res.stderr
        assert f"is read by pid {os.getpid()}" in lines[0] and "topics tail packets" in lines[0]
        assert not (tmp_path / "log.json").exists()
    finally:
        ring.close()
        try:
            res = monitor(pin_dir, "--duration", "0.3", "--file", str(tmp_path / "log.json"))
            assert res.returncode == 0, res.stderr  # the reader gone, monitor runs
        finally:
            loader.unload_all(pin_dir)


def test_top_follows_the_program_loaded_again(pin_dir):
    loader.load([], pin_dir=pin_dir, sizes=SIZES)
    maps = Maps(pin_dir)
    try:
        assert not maps.reopened()
        loader.unload_all(pin_dir)
        assert not maps.reopened() and "unloaded" in maps.note
        loader.load([], pin_dir=pin_dir, sizes=SIZES)
        rule = Rule(Scope.SRC_PREFIX, Action.DROP, src="198.51.100.0/24", origin=Origin.MANUAL)
        with Datapath.open(pin_dir) as dp:
            dp.add_rule(rule)
        assert maps.reopened() and "loaded again" in maps.note
        assert [s.rule.key() for s in take(maps.dp).rules] == [rule.key()]
    finally:
        maps.close()
        loader.unload_all(pin_dir)
