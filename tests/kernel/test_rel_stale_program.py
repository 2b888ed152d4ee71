"""A program pinned by an older build (issue 13, case 7): `xdpguard load -i IFACE` used to reuse it
with exit 0 ("program already loaded") and only the next `status`/`add` refused it. Every verb
and service that opens the pins runs one compatibility check (services.dataplane.maps
.open_checked): the config magic and every pinned map. `load` refuses a stale program with the
fix in one line and attaches nothing; it never replaces it (its maps hold the rules in force).
Stale pins are made from a fresh load by writing the previous layout's magic into `config`, or by
pinning another map where one of this build's should be."""
import ctypes
import json
import os
import subprocess
import sys

import pytest

from services.capture.fastring import FastRing
from services.common.errors import MapMismatch
from services.dataplane import bpfsys, loader
from services.dataplane.datapath import Datapath
from services.dataplane.ringbuf import RingReader
from services.dataplane.structs import XG_MAGIC, Config
from tests.support.services import ROOT

PREVIOUS_MAGIC = 0x58444732  # "XDG2", the layout before issue 13's counters and parse rules
SIZES = loader.Sizes(exact=64, prefix=64, allow=64, limit=16, ring_pages=16)


def make_stale(pin_dir: str, how: str) -> None:
    if how == "magic":
        fd = bpfsys.obj_get(f"{pin_dir}/config")
        try:
            cfg = Config()
            bpfsys.lookup(fd, ctypes.c_uint32(0), cfg)
            assert cfg.magic == XG_MAGIC
            cfg.magic = PREVIOUS_MAGIC
            bpfsys.update(fd, ctypes.c_uint32(0), cfg)
        finally:
            os.close(fd)
    else:  # exact4's pin replaced by a map of another shape (exact6: 40-byte keys)
        os.unlink(f"{pin_dir}/exact4")
        fd = bpfsys.obj_get(f"{pin_dir}/exact6")
        try:
            bpfsys.obj_pin(fd, f"{pin_dir}/exact4")
        finally:
            os.close(fd)


def cli(pair, pin_dir, *args):
    env = dict(os.environ, XDPGUARD_PIN_DIR=pin_dir, XDPGUARD_KAFKA_BOOTSTRAP="127.0.0.1:9")
    return pair.run(pair.b, sys.executable, "-m", "services.manager", *args, check=False,
                    env=env, cwd=ROOT)


def one_line_with_the_fix(r: subprocess.CompletedProcess, verb: str) -> None:
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1, (verb, r.returncode, r.stdout, r.stderr)
    assert len(lines) == 1 and "Traceback" not in r.stderr, (verb, r.stderr)
    assert "another xdpguard build" in lines[0] and "xdpguard unload --all" in lines[0], lines[0]


@pytest.mark.parametrize("how", ["magic", "map"])
def test_rel_load_refuses_a_stale_program_with_the_fix_and_attaches_nothing(netns_pair, pin_dir, how):
    pair = netns_pair
    loader.load([], pin_dir=pin_dir, sizes=SIZES)
    try:
        make_stale(pin_dir, how)
        r = cli(pair, pin_dir, "load", "-i", pair.veth_b)
        one_line_with_the_fix(r, "load")
        assert "already loaded" not in r.stdout and "attached" not in r.stdout
        assert loader.status(pin_dir)["attached"] == []
        links = json.loads(pair.run(pair.b, "ip", "-j", "link", "show", pair.veth_b).stdout)
        assert "xdp" not in links[0], links[0]
        # every verb that opens the pins says the same
        for verb in (("status",), ("list",), ("stats",), ("add", "--src-prefix", "198.51.100.0/24"),
                     ("allow", "add", "192.0.2.0/24"), ("monitor", "--count", "1", "--file", "-")):
            one_line_with_the_fix(cli(pair, pin_dir, *verb), verb)
        # and every service that opens them (enforcer: Datapath; capture: FastRing; monitor)
        for opener in (Datapath.open, RingReader, FastRing):
            with pytest.raises(MapMismatch, match="xdpguard unload --all"):
                opener(pin_dir)
        # the fix works
        assert cli(pair, pin_dir, "unload", "--all").returncode == 0
        r = cli(pair, pin_dir, "load", "-i", pair.veth_b)
        assert r.returncode == 0 and f"attached to {pair.veth_b}" in r.stdout, r.stderr
    finally:
        cli(pair, pin_dir, "unload", "--all")
        loader.unload_all(pin_dir)
