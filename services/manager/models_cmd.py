"""`xdpguard models publish|promote|rollback|status`: model roll-out without restarts.

The state lives in the compacted `models` topic (services/wire/modelrec.py): `publish` writes a
candidate that every scorer worker scores in the shadow of the active model; `promote` makes it
active, `rollback` returns to the previous one; both from a window boundary at least --lead
seconds ahead, the same for every worker (docs/scorer.md, "Model roll-out").
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer

from services.common.errors import ConfigError, DecodeError, ModelError
from services.common.settings import CommonSettings, load_common
from services.detection.model import load_model, load_model_bytes, sanity_check
from services.scorer.rollout import switch_boundary
from services.scorer.settings import load_scorer
from services.wire.kafka import client_options
from services.wire.modelrec import (ACTIVE, CANDIDATE, MAX_MODEL_BYTES, PREVIOUS, ModelRecord,
                                    ShadowReport, decode_model_record, encode_model_record,
                                    is_report_key, merge_reports)
from services.wire.topics import MODELS, MODELS_MAX_MESSAGE_BYTES, ensure_topics, specs_named

from . import kafka_inspect as ki

EPILOG = """examples:
  xdpguard models publish models/site.joblib       shadow phase: scored beside the active one
  xdpguard models status                           agreement, rules it would add or drop
  xdpguard models promote                          the candidate scores from the next boundary
  xdpguard models rollback                         back to the model active before
"""


def register(sub) -> None:
    p = sub.add_parser("models", help="roll a model out to the scorers without restarts",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    msub = p.add_subparsers(dest="models_verb", metavar="ACTION", parser_class=type(p))
    msub.required = True
    pub = msub.add_parser("publish", help="publish a model file as the candidate (shadow phase)")
    pub.add_argument("file", help="model file (.joblib beside its .json)")
    pub.add_argument("--shadow-windows", type=int, default=300,
                     help="windows scored by both models (default 300)")
    pub.set_defaults(func=cmd_publish)
    for verb, text, func in (("promote", "make the candidate the active model", cmd_promote),
                             ("rollback", "make the previous model active again", cmd_rollback)):
        v = msub.add_parser(verb, help=text)
        v.set_defaults(func=func)
    for v in (pub, *[msub.choices[n] for n in ("promote", "rollback")]):
        v.add_argument("--lead", type=float, default=30.0,
                       help="seconds ahead of now the switch happens, rounded up to a window "
                            "boundary (default 30, at least SCORER_MODEL_LEAD_S)")
    st = msub.add_parser("status", help="active, previous and candidate models, the shadow "
                         "report and refused records")
    st.add_argument("--json", action="store_true", help="one JSON object")
    st.set_defaults(func=cmd_status)


# --- the topic ----------------------------------------------------------------------------------

async def read_state(common: CommonSettings) -> tuple[dict[str, ModelRecord], list[ShadowReport]]:
    """The latest record of each role (tombstoned roles left out) and every worker's report.
    Records that do not decode are skipped (the workers dead-letter them)."""
    records: dict[str, ModelRecord] = {}
    reports: dict[bytes, ShadowReport] = {}
    async for r in ki.tail(common, common.topic(MODELS), from_beginning=True):
        try:
            if is_report_key(r.key):
                reports[r.key] = ShadowReport.decode(r.value)
                continue
            rec = decode_model_record(r.key, r.value)
        except DecodeError:
            continue
        if rec is None:
            records.pop(r.key.decode(), None)
        else:
            records[rec.role] = rec
    return records, list(reports.values())


async def write(common: CommonSettings, items: list[tuple[str, ModelRecord | None]]) -> None:
    """Write (role, record or None for a tombstone) in this order, each acknowledged."""
    producer = AIOKafkaProducer(**client_options(common), acks="all",
                                max_request_size=MODELS_MAX_MESSAGE_BYTES)
    await producer.start()
    try:
        for role, rec in items:
            value = None if rec is None else encode_model_record(rec)
            await producer.send_and_wait(common.topic(MODELS), value, key=role.encode(),
                                         partition=0)
    finally:
        await producer.stop()


def _settings(lead: float | None = None) -> tuple[CommonSettings, int]:
    """The shared settings and the scorers' window width (ns); ConfigError for a --lead below
    SCORER_MODEL_LEAD_S (the workers would not wait for the record)."""
    s = load_scorer()
    if lead is not None and lead < s.model_lead_s:
        raise ConfigError(f"--lead {lead:g} is below SCORER_MODEL_LEAD_S={s.model_lead_s:g}: "
                          "a worker could score the switch window before it reads the record")
    common = load_common()
    asyncio.run(ensure_topics(common, specs_named(common, MODELS)))
    return common, int(s.window_s * 1e9)


def _moved(rec: ModelRecord, role: str, from_ns: int, shadow: int = 0) -> ModelRecord:
    return ModelRecord(role, rec.model, rec.meta, rec.sha256, from_ns, rec.width_ns, shadow,
                       time.time_ns())


def _configured(role: str, width_ns: int) -> ModelRecord:
    """The record standing for every worker's own SCORER_MODEL."""
    return ModelRecord(role, None, {}, "", 0, width_ns, 0, time.time_ns())


# --- verbs ----------------------------------------------------------------------------------------

def cmd_publish(args) -> int:
    path = Path(args.file)
    if path.suffix == ".json":
        path = path.with_suffix(".joblib")
    if not path.is_file():
        raise ConfigError(f"no model file {path}")
    det = load_model(path)  # ModelError: one line
    sanity_check(det, path.name)
    data = path.read_bytes()
    if len(data) > MAX_MODEL_BYTES:
        raise ConfigError(f"{path} has {len(data)} bytes, the models topic carries at most "
                          f"{MAX_MODEL_BYTES}")
    if args.shadow_windows < 1:
        raise ConfigError("--shadow-windows must be at least 1")
    common, width = _settings(args.lead)
    start = switch_boundary(time.time_ns(), width, args.lead)
    rec = ModelRecord(CANDIDATE, data, det.meta, det.meta["sha256"], start, width,
                      args.shadow_windows, time.time_ns())
    asyncio.run(write(common, [(CANDIDATE, rec)]))
    print(f"candidate {det.model_id}: shadow phase of {args.shadow_windows} windows from "
          f"{_when(start)}")
    return 0


def cmd_promote(args) -> int:
    cand, old, start, reports = _switch(args, CANDIDATE, "no candidate model: `xdpguard models "
                                        "publish FILE` first")
    r = merge_reports(reports, cand.sha256)
    print(f"active from {_when(start)}: {cand.model_id} (was {old.model_id}; shadow: "
          f"{r.windows} windows, {_share(r.agree, r.flows)} agreement)")
    if not r.windows:
        print("warning: promoted before any worker scored a shadow window: nothing says how it "
              "compares with the model it replaces (`xdpguard models rollback` undoes it)",
              file=sys.stderr)
    return 0


def cmd_rollback(args) -> int:
    prev, cur, start, _ = _switch(args, PREVIOUS, "no previous model to roll back to (nothing "
                                  "was promoted)")
    print(f"active from {_when(start)}: {prev.model_id} (was {cur.model_id})")
    return 0


def _switch(args, source: str, missing: str):
    """Make the `source` record's model active from the first boundary --lead ahead; the
    active one becomes previous (a candidate promoted is deleted). Returns (the new active
    record, the old one, the boundary, the shadow reports); ConfigError `missing` without a
    `source` record."""
    common, width = _settings(args.lead)
    records, reports = asyncio.run(read_state(common))
    new = records.get(source)
    if new is None:
        raise ConfigError(missing)
    if new.model is not None:  # the workers refuse a model that does not load: so does this
        try:
            load_model_bytes(new.model, new.meta, f"the {source} record ({new.model_id})")
        except ModelError as exc:
            raise ModelError(f"{exc}; not made active (a worker refuses what does not load "
                             "and keeps its models): publish a good file") from None
    start = switch_boundary(time.time_ns(), width, args.lead)
    old = records.get(ACTIVE) or _configured(ACTIVE, width)
    items = [(PREVIOUS, _moved(old, PREVIOUS, old.from_ns)), (ACTIVE, _moved(new, ACTIVE, start))]
    asyncio.run(write(common, items + ([(CANDIDATE, None)] if source == CANDIDATE else [])))
    return new, old, start, reports


def cmd_status(args) -> int:
    common, _ = _settings()
    records, reports = asyncio.run(read_state(common))
    out = status(records, reports)
    if args.json:
        print(json.dumps(out, sort_keys=True))
        return 0
    for role in (ACTIVE, PREVIOUS, CANDIDATE):
        m = out[role]
        print(f"{role:9} " + ("-" if m is None else f"{m['model_id']} from {_when(m['from_ns'])}"
                              + (f" for {m['shadow_windows']} windows" if role == CANDIDATE else "")))
    if out["shadow"]:
        r = out["shadow"]
        print(f"shadow    {r['windows']} windows, {r['flows']} flows, "
              f"{_share(r['agree'], r['flows'])} agreement; flagged: active {r['flagged_active']}, "
              f"candidate {r['flagged_shadow']}; rules it would add {r['rules_added']}, "
              f"drop {r['rules_dropped']}")
        for key in r["added"]:
            print(f"  + {key}")
        for key in r["dropped"]:
            print(f"  - {key}")
    for w in out["refusals"]:
        print(f"refused   {w['worker']}: {w['refused']} records, last: {w['last_refusal']}")
    return 0


def status(records: dict[str, ModelRecord], reports: list[ShadowReport]) -> dict:
    """The JSON form of `xdpguard models status`."""
    def model(rec: ModelRecord | None):
        return None if rec is None else {"model_id": rec.model_id, "sha256": rec.sha256,
                                         "from_ns": rec.from_ns, "shadow_windows": rec.shadow_windows,
                                         "published_ns": rec.published_ns}
    cand = records.get(CANDIDATE)
    shadow = merge_reports(reports, cand.sha256).__dict__ if cand else None
    active = records.get(ACTIVE) or _configured(ACTIVE, 0)
    return {ACTIVE: model(active), PREVIOUS: model(records.get(PREVIOUS)),
            CANDIDATE: model(cand), "shadow": shadow,
            "refusals": [{"worker": r.worker, "refused": r.refused,
                          "last_refusal": r.last_refusal} for r in reports if r.refused]}


def _when(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns / 1e9)) if ns else "the start"


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f}%" if whole else "-"
