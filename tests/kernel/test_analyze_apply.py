"""`xdpguard analyze --apply` writes the model's rules into a loaded program's maps (no shell)."""
import json

from services.records.packet import Packet
from services.records.rules import Scope
from services.offline.seedlog import write_log
from services.manager.cli import main


def test_analyze_apply_blocks_a_scanner_in_the_live_maps(env, tmp_path, capsys):
    t0 = 5 * 10**9
    scan = [Packet(t0 + i * 2_000_000, "10.9.9.9", "10.0.0.1", 45000, port, 6, 0x02, 58)
            for i, port in enumerate(range(1, 301))]
    benign = [Packet(t0 + i * 50_000_000, "10.0.0.7", "10.0.0.1", 51000, 443, 6, 0x18, 400)
              for i in range(10)]
    log = tmp_path / "firewall_log.json"
    write_log(log, sorted(scan + benign, key=lambda p: p.ts_ns))
    out = tmp_path / "cmds.json"
    assert main(["analyze", "--file", str(log), "--apply", "--pin-dir", env.pin_dir,
                 "--out-file", str(out)]) == 0
    rules = [rs.rule for rs in env.dp.rules()]
    assert any(r.scope is Scope.SRC_PREFIX and r.src == "10.9.9.9/32" for r in rules), rules
    assert not any(getattr(r, "src", "").startswith("10.0.0.7") for r in rules)
    cmds = json.loads(out.read_text())
    applied = [c for c in cmds if c.get("result")]
    assert applied and all(c["result"]["applied"] for c in applied)
    assert all(c["fields"]["src"] == "10.9.9.9" for c in applied)
