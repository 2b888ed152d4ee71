"""`python -m services.scorer worker` — one scorer worker (run N of them with the same env).

Settings: SCORER_* and XDPGUARD_* environment variables (docs/scorer.md). Faust's own CLI
parses the arguments (`worker`, `--loglevel`, ...); SIGTERM stops the worker cleanly.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

from services.detection.detect import DetectParams
from services.common.errors import ConfigError, XdpguardError
from services.common.health import check_bindable
from services.detection.model import load_model
from services.common.settings import load_common

from .app import create_app
from .service import tune_collector
from .topics import ensure_scorer_topics
from .scoring import VerdictPolicy
from .settings import load_scorer


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    # Until the worker installs its own handlers (first: clean stop, second: force), a stop
    # signal during start-up ends the process with status 0: there is nothing to clean up yet.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_early)
    try:
        s, common = load_scorer(), load_common()
        check_bindable(s.metrics_host, s.metrics_port, "SCORER_METRICS_HOST/PORT")
        detector = load_model(s.model)
        policy = VerdictPolicy(
            params=DetectParams(spoof_min_sources=s.spoof_min_sources, limit_pps=s.limit_pps,
                                ttl_s=s.verdict_ttl_s),
            emit_pass=s.emit_pass, pass_ttl_s=s.pass_ttl_s, target_origin=s.target_origin)
        app, scorer = create_app(s, common, detector, policy)
        _make_datadir(Path(app.conf.datadir), s.datadir)
        # packets/verdicts/deadletter AND faust's internal topics, before the worker joins;
        # an unreachable cluster is said once, below, not by aiokafka's own error log too.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        asyncio.run(ensure_scorer_topics(common, app, scorer))
        logging.getLogger("aiokafka").setLevel(logging.NOTSET)
        tune_collector(s.gc_young)
    except XdpguardError as exc:
        print(f"scorer: error: {exc}", file=sys.stderr)
        sys.exit(2)
    if argv and argv[0] == "worker":
        # faust's CLI would override the app's web settings with its own defaults (web on 6066).
        if not any(a.startswith("--loglevel") or a == "-l" for a in argv):
            argv = [*argv, f"--loglevel={s.log_level}"]
        if not any(a.startswith(("--with-web", "--without-web", "--web-port")) for a in argv):
            argv = [*argv, f"--web-port={s.web_port}"] if s.web_port else [*argv, "--without-web"]
    sys.argv = [sys.argv[0] if sys.argv else "scorer", *argv]
    import mode.loop
    mode.loop.use("uvloop")  # before faust's CLI creates the loop
    app.main()


def _make_datadir(path: Path, setting: str) -> None:
    """Make faust's data folder (SCORER_DATADIR, default ./<app id>-data) and its parents now:
    faust makes only the last level, once the worker runs, and a failure there is a traceback.
    ConfigError naming the variable when it cannot be made."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"SCORER_DATADIR={setting!r}: cannot make {path}: "
                          f"{exc.strerror or exc}") from None


def _exit_early(signum, frame) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    main()
