#!/usr/bin/env python3
"""Packets per second the XDP program handles on a real path, against the original tool's
(bench/reference_xdp.c), in one run: a veth pair between two network namespaces of its own, both
programs attached in native (driver) mode to the receiving end in turn, trafgen (netsniff-ng)
sending one fixed frame from the other end on every CPU.

Each case runs --rounds rounds; a round measures the reference and xdpguard one after the other
(the order alternates between rounds) with the same trafgen command and frame: the program is
attached, trafgen starts, after --warmup seconds the counters are read, --seconds later read
again, trafgen stops and the program is detached. Drop cases report the programs' own drop
counters (xdpguard's `stats`, the reference's rule hit counter); every case also reports the
receiving veth's rx packets (every packet its XDP program ran on, whatever the verdict) and what
trafgen offered (the sending veth's tx packets and tx drops). On a 2-CPU machine the generator,
the veth's NAPI poll (where XDP runs) and everything else share the CPUs, so the rates are the
whole path's, not the program's alone; bench/xdp_bench.py isolates the program.

Rules as bench/xdp_bench.py: xdpguard holds --exact-rules exact rules per family, --prefixes
mixed prefixes (among them the /32 the host case hits) and 1 limit; the reference --exact-rules
IPv4 5-tuples plus the 5-tuple of the host case's frame. Unmatched frames carry a destination
MAC that is not the receiver's, so the stack drops what XDP passes right after eth_type_trans.
Both rings exist and nobody reads them: after the first few thousand events both programs take
their "ring full, count the loss" path.

Needs root, bpffs, native XDP on veth (Linux >= 5.9 for bpf_link) and trafgen:
  apt-get install -y netsniff-ng

examples:
  .venv/bin/python bench/veth_bench.py                          # 3 rounds of 5 s per case
  .venv/bin/python bench/veth_bench.py --seconds 10 --rounds 5 --cpus 2 --markdown
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xdp_bench import (DROP, REFERENCE, exact_src, fill_reference, fill_xdpguard,  # noqa: E402
                       frame, prefix_hit, reference_key)

from services.dataplane import bpfsys, loader  # noqa: E402
from services.dataplane.datapath import Datapath  # noqa: E402
from services.manager import netns  # noqa: E402

INSTALL = "apt-get install -y netsniff-ng"
WMEM_DEFAULT = Path("/proc/sys/net/core/wmem_default")


@contextlib.contextmanager
def send_buffer(nbytes: int):
    """Raise the default socket send buffer (a host-wide sysctl: namespaces share it) to
    `nbytes` for the body, then put the old value back. trafgen stops with "Flushing TX_RING
    failed: Resource temporarily unavailable" when its socket's send buffer is full of frames
    the receiving veth has not consumed yet (the default 212,992 bytes hold about 256 frames,
    one veth ring); trafgen's own tuning (without --no-sock-mem) would do the same but not put
    the value back when killed."""
    old = WMEM_DEFAULT.read_text().strip()
    WMEM_DEFAULT.write_text(f"{max(nbytes, int(old))}\n")
    try:
        yield
    finally:
        WMEM_DEFAULT.write_text(f"{old}\n")


def trafgen_config(pkt: bytes) -> str:
    """trafgen's packet configuration for one fixed frame: `{ 0x.., ... }`."""
    return "{ " + ", ".join(f"0x{b:02x}" for b in pkt) + " }\n"


def link_counters(ns: str, dev: str) -> dict[str, int]:
    """{rx, tx, tx_dropped} packet counters of `dev` in namespace `ns` (ip -s -j link)."""
    out = netns.sh("ip", "-n", ns, "-s", "-j", "link", "show", "dev", dev).stdout
    s = json.loads(out)[0]["stats64"]
    return {"rx": s["rx"]["packets"], "tx": s["tx"]["packets"], "tx_dropped": s["tx"]["dropped"]}


class Programs:
    """Both programs loaded with their rules: `fd[name]` and `handled(name, case)`, the program's
    own count of the packets it handled the case's way (None: the program has no such counter)."""

    def __init__(self, args, pin_dir: str):
        self.pin_dir, self.ref, self.dp, self.fd = pin_dir, None, None, {}
        try:
            self.ref, self.fd["reference"] = loader.compile_program(text=REFERENCE.read_text())
            self.ref[b"events"].open_perf_buffer(lambda cpu, data, size: None, page_cnt=64)
            loader.load([], pin_dir=pin_dir)
            self.dp = Datapath.open(pin_dir)
            self.fd["xdpguard"] = loader.prog_fd(pin_dir)
            fill_reference(self.ref, args.exact_rules)
            fill_xdpguard(self.dp, args.exact_rules, args.prefixes)
        except BaseException:
            self.close()
            raise

    def add_reference_rule(self, src: str, dst: str, sport: int, dport: int) -> None:
        leaf = self.ref[b"rules"].Leaf()
        leaf.action = DROP
        bpfsys.update(self.ref[b"rules"].map_fd, reference_key(self.ref, src, dst, sport, dport), leaf)

    def handled(self, name: str, case: dict) -> int | None:
        if name == "xdpguard":
            st = self.dp.stats()
            return st["drop_exact"] + st["drop_prefix"] if case["drop"] else st["unmatched"]
        if not case["drop"]:
            return None
        m = self.ref[b"rules"]
        leaf = m.Leaf()
        return leaf.hits if bpfsys.lookup(m.map_fd, reference_key(self.ref, *case["flow"]), leaf) else 0

    def close(self) -> None:
        """Close and unpin everything this object made (also after a half-done __init__)."""
        if self.dp is not None:
            self.dp.close()
        if "xdpguard" in self.fd:
            os.close(self.fd["xdpguard"])
        loader.unload_all(self.pin_dir)
        if self.ref is not None:
            self.ref.cleanup()


class Generator:
    """trafgen in the sending namespace, in its own process group so one signal stops its
    per-CPU children too."""

    def __init__(self, topo, cfg_path: str, cpus: int):
        self.proc = topo.popen(topo.attacker, shutil.which("trafgen"), "--dev", topo.veth_attacker,
                               "--conf", cfg_path, "--cpus", str(cpus), "--no-sock-mem",
                               "--notouch-irq", "--no-cpu-stats", stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, start_new_session=True)

    def stop(self) -> None:
        """SIGINT the group, then SIGKILL after 5 s; SystemExit if trafgen died on its own."""
        early = self.proc.poll() is not None
        os.killpg(self.proc.pid, signal.SIGKILL if early else signal.SIGINT)  # children too
        try:
            _, err = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            _, err = self.proc.communicate()
        self._gone()
        if early:
            lines = err.decode(errors="replace").strip().splitlines()
            raise SystemExit(f"veth_bench: trafgen exited early: {lines[-1] if lines else self.proc.returncode}")

    def kill(self) -> None:
        """SIGKILL the group (cleanup after an error or Ctrl-C)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.communicate()
        self._gone()

    def _gone(self, timeout_s: float = 5.0) -> None:
        """Wait up to 2 x timeout_s until no process of the group is left (the per-CPU children
        are not ours to wait for: they go to init when the parent exits), SIGKILLing them after
        timeout_s; a child init has not reaped yet still counts, so give up after that."""
        for _ in range(2):
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                try:
                    os.killpg(self.proc.pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)


def measure(args, topo, progs: Programs, name: str, case: dict, cfg_path: str) -> dict:
    """One program on one case: {"handled": pkt/s by its own counter or None, "rx": pkt/s XDP ran
    on, "offered": pkt/s trafgen sent or had dropped at the sending veth}."""
    with netns.in_netns(topo.victim):
        link = bpfsys.link_create_xdp(progs.fd[name], socket.if_nametoindex(topo.veth_victim),
                                      bpfsys.XDP_FLAGS_DRV_MODE)
    gen = None
    try:
        gen = Generator(topo, cfg_path, args.cpus)
        time.sleep(args.warmup)
        snaps = []
        for i in range(2):
            if i:
                time.sleep(args.seconds)
            snaps.append((time.monotonic(), progs.handled(name, case),
                          link_counters(topo.victim, topo.veth_victim),
                          link_counters(topo.attacker, topo.veth_attacker)))
        gen.stop()
        gen = None
    finally:
        if gen is not None:
            gen.kill()
        os.close(link)  # the link's last reference: the kernel detaches the program
    (t0, h0, v0, a0), (t1, h1, v1, a1) = snaps
    dt = t1 - t0
    return {"handled": None if h0 is None else (h1 - h0) / dt, "rx": (v1["rx"] - v0["rx"]) / dt,
            "offered": (a1["tx"] + a1["tx_dropped"] - a0["tx"] - a0["tx_dropped"]) / dt}


def cases(args) -> list[dict]:
    """The measured cases: name, frame, whether both programs drop it, the reference's flow."""
    hit = args.exact_rules // 2
    host = (prefix_hit(args.prefixes, False, 32), "10.9.9.9", 5555, 80)
    exact = (exact_src(hit, False), "10.9.9.9", 1000 + hit % 50000, 80)
    miss = ("10.1.1.1", "10.2.2.2", 1234, 443)
    return [
        {"name": "source /32 drop (IPv4)", "flow": host, "drop": True, "rate": 0},
        {"name": "exact 5-tuple drop (IPv4)", "flow": exact, "drop": True, "rate": 0},
        {"name": "unmatched, event emitted (IPv4)", "flow": miss, "drop": False, "rate": 1},
        {"name": "unmatched, sampling off (IPv4)", "flow": miss, "drop": False, "rate": 0},
    ]


def run(args, topo, progs: Programs, tmp: str) -> list[tuple]:
    """Every case in alternating rounds: [(case, {program: [result per round]})]."""
    out = []
    for case in cases(args):
        if case["drop"]:
            progs.add_reference_rule(*case["flow"])
        progs.dp.set_sample_rate(case["rate"])
        cfg_path = os.path.join(tmp, "frame.cfg")
        Path(cfg_path).write_text(trafgen_config(frame(*case["flow"])))
        got = {"reference": [], "xdpguard": []}
        for r in range(args.rounds):
            for name in (("reference", "xdpguard") if r % 2 == 0 else ("xdpguard", "reference")):
                got[name].append(measure(args, topo, progs, name, case, cfg_path))
                print(f"{case['name']}, round {r + 1}, {name}: {got[name][-1]}", file=sys.stderr)
        out.append((case, got))
    return out


def report(args, results, markdown: bool) -> None:
    """The table: medians per program, the median of the per-round xdpguard/reference ratios."""
    print(f"{args.seconds} s per measurement after {args.warmup} s warm-up, {args.rounds} rounds "
          f"(order alternating), trafgen --cpus {args.cpus}, kernel {os.uname().release}, "
          f"{os.cpu_count()} CPUs; pkt/s are medians over the rounds")
    cols = ("case", "counted by", "reference pkt/s", "xdpguard pkt/s", "xdpguard / reference",
            "offered pkt/s (ref / xdpguard)")
    fmt = (lambda *c: "| " + " | ".join(c) + " |") if markdown else \
        (lambda *c: f"{c[0]:<34} {c[1]:<22} {c[2]:>15} {c[3]:>15} {c[4]:>20} {c[5]:>30}")
    print(fmt(*cols))
    if markdown:
        print("|---|---|---:|---:|---:|---:|")
    for case, got in results:
        key = "handled" if case["drop"] else "rx"
        med = {n: statistics.median(m[key] for m in got[n]) for n in got}
        off = {n: statistics.median(m["offered"] for m in got[n]) for n in got}
        ratio = statistics.median(x[key] / r[key] for x, r in zip(got["xdpguard"], got["reference"]))
        by = "each program's drop counter" if case["drop"] else "veth rx (XDP ran)"
        print(fmt(case["name"], by, f"{med['reference']:,.0f}", f"{med['xdpguard']:,.0f}",
                  f"{ratio:.3f}", f"{off['reference']:,.0f} / {off['xdpguard']:,.0f}"))


def _interrupt(signum, frame) -> None:
    """SIGTERM cleans up like Ctrl-C: trafgen, the programs, their pins and the namespaces go."""
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds per program and round")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of traffic before measuring")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per case (order alternates)")
    ap.add_argument("--cpus", type=int, default=os.cpu_count(), help="trafgen --cpus (forks)")
    ap.add_argument("--exact-rules", type=int, default=100_000, help="exact rules per family")
    ap.add_argument("--prefixes", type=int, default=10_000, help="source prefixes, both families")
    ap.add_argument("--sndbuf", type=int, default=4 << 20,
                    help="net.core.wmem_default while trafgen runs, bytes (restored after)")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = ap.parse_args()
    if shutil.which("trafgen") is None:
        print(f"veth_bench: trafgen not found (it is in netsniff-ng: {INSTALL})", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("veth_bench: needs root (network namespaces, BPF)", file=sys.stderr)
        return 2
    if args.seconds <= 0 or args.rounds < 1 or args.cpus < 1 or args.exact_rules < 2 or args.prefixes < 40:
        print("veth_bench: --seconds > 0, --rounds >= 1, --cpus >= 1, --exact-rules >= 2, "
              "--prefixes >= 40", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    topo = progs = None
    try:
        topo = netns.create(uuid.uuid4().hex[:6])
        progs = Programs(args, f"/sys/fs/bpf/xdpguard-bench-{uuid.uuid4().hex[:8]}")
        with tempfile.TemporaryDirectory(prefix="veth-bench-") as tmp, send_buffer(args.sndbuf):
            results = run(args, topo, progs, tmp)
    except KeyboardInterrupt:
        print("veth_bench: interrupted; cleaned up", file=sys.stderr)
        return 130
    finally:
        if progs is not None:
            progs.close()
        if topo is not None:
            netns.teardown(topo)
    report(args, results, args.markdown)
    return 0


if __name__ == "__main__":
    from services.common.errors import exit_on_error
    exit_on_error("veth_bench", main)
