"""Records of the compacted `models` topic (docs/events.md, docs/scorer.md "Model roll-out").

One partition, keyed so compaction keeps the current state:

    key "active"      the model the scorers use from window `from_ns` on
    key "previous"    the model active before it (what `xdpguard models rollback` goes back to)
    key "candidate"   the model in its shadow phase: scored beside the active one for
                      `shadow_windows` windows from `from_ns`, its verdicts never published
    key "report/<worker>"  one worker's shadow tally (ShadowReport), rewritten as it grows

A model record carries the joblib file inline (`model`, at most MAX_MODEL_BYTES: the record must
fit codec.MAX_RECORD_BYTES and the topic's max.message.bytes) with its metadata JSON (`meta`) and
`sha256`. A record without `model` names the model every worker was started with
(SCORER_MODEL), so a rollback can return to it. `decode_model_record` refuses (DecodeError) a
malformed record and one whose bytes do not hash to its `sha256` or to its metadata's; unpickling
and the model's own checks are services.detection.model.load_model_bytes.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from services.common.errors import DecodeError

from .codec import MAX_RECORD_BYTES, SCHEMA_VERSION, _field, _pack, _unpack

ACTIVE, PREVIOUS, CANDIDATE = "active", "previous", "candidate"
ROLES = (ACTIVE, PREVIOUS, CANDIDATE)
REPORT_PREFIX = "report/"
T_MODEL, T_SHADOW = "model", "shadow-report"
MAX_MODEL_BYTES = MAX_RECORD_BYTES - 256 * 1024   # room for the metadata and the envelope
MAX_SAMPLE_RULES = 10                             # rule keys a report lists per side


@dataclass(frozen=True)
class ModelRecord:
    """A model and when it applies. `model`: the joblib bytes, or None for the worker's own
    SCORER_MODEL (then `meta` is {} and `sha256` ""); `from_ns`: the first window start (event
    time, ns, a multiple of `width_ns`) it scores; `shadow_windows`: windows of shadow scoring
    (candidate only); `published_ns`: wall clock of the CLI that wrote it."""
    role: str
    model: bytes | None
    meta: dict
    sha256: str
    from_ns: int
    width_ns: int
    shadow_windows: int = 0
    published_ns: int = 0

    @property
    def model_id(self) -> str:
        return str(self.meta.get("model_id", "configured")) if self.model is not None \
            else "configured (SCORER_MODEL)"

    @property
    def until_ns(self) -> int:
        """End (exclusive) of the shadow phase: from_ns + shadow_windows windows."""
        return self.from_ns + self.shadow_windows * self.width_ns


def encode_model_record(rec: ModelRecord) -> bytes:
    """The value of `rec` (its key is rec.role). ValueError for a model above MAX_MODEL_BYTES
    or an unknown role."""
    if rec.role not in ROLES:
        raise ValueError(f"unknown model role {rec.role!r}")
    if rec.model is not None and len(rec.model) > MAX_MODEL_BYTES:
        raise ValueError(f"model of {len(rec.model)} bytes exceeds {MAX_MODEL_BYTES} "
                         "(the models topic carries it inline)")
    out = {"v": SCHEMA_VERSION, "t": T_MODEL, "role": rec.role, "from": rec.from_ns,
           "width": rec.width_ns, "shadow": rec.shadow_windows, "published": rec.published_ns}
    if rec.model is not None:
        out.update(model=bytes(rec.model), meta=rec.meta, sha256=rec.sha256)
    return _pack(out)


def decode_model_record(key: bytes | None, value: bytes | None) -> ModelRecord | None:
    """The record of `key` (one of ROLES), None for a tombstone. DecodeError (the reason) for
    an unknown key, a malformed value, a role that is not its key, or bytes that do not hash
    to the record's sha256 or to its metadata's."""
    role = _role(key)
    if value is None:
        return None
    rec = _unpack(value, T_MODEL)
    k = T_MODEL
    if _field(rec, "role", str, k) != role:
        raise DecodeError(f"model record under key {role!r} says role {rec.get('role')!r}")
    from_ns, width = _field(rec, "from", int, k), _field(rec, "width", int, k)
    shadow = _field(rec, "shadow", int, k, 0)
    if width <= 0 or from_ns < 0 or from_ns % width or shadow < 0:
        raise DecodeError(f"model record: window start {from_ns} / width {width} / shadow "
                          f"{shadow} is not a window boundary")
    model = _field(rec, "model", bytes, k, None)
    meta, digest = {}, ""
    if model is not None:
        meta, digest = _field(rec, "meta", dict, k), _field(rec, "sha256", str, k)
        have = hashlib.sha256(model).hexdigest()
        if have != digest or meta.get("sha256") != digest:
            raise DecodeError(f"model record: the model bytes hash to {have[:16]}…, the record "
                              f"says {digest[:16]}… and its metadata {str(meta.get('sha256'))[:16]}…")
    return ModelRecord(role, model, meta, digest, from_ns, width, shadow,
                       _field(rec, "published", int, k, 0))


def _role(key: bytes | None) -> str:
    try:
        role = (key or b"").decode()
    except UnicodeDecodeError:
        role = repr(key)
    if role not in ROLES:
        raise DecodeError(f"models topic: unknown key {role!r} (expected one of {', '.join(ROLES)})")
    return role


def is_report_key(key: bytes | None) -> bool:
    return bool(key) and key.startswith(REPORT_PREFIX.encode())


@dataclass
class ShadowReport:
    """One worker's tally of a shadow phase (candidate `sha256`): windows and flows scored by
    both models, flows on which they agree (both below or both at/above their thresholds),
    flows each flags, and the drop/limit rules the candidate would add (it suggests them, the
    active model does not) or drop, counted per window, with up to MAX_SAMPLE_RULES keys each.
    `refused`/`last_refusal`: model records this worker refused and why."""
    worker: str
    sha256: str = ""
    model_id: str = ""
    windows: int = 0
    flows: int = 0
    agree: int = 0
    flagged_active: int = 0
    flagged_shadow: int = 0
    rules_added: int = 0
    rules_dropped: int = 0
    added: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    refused: int = 0
    last_refusal: str = ""

    def key(self) -> bytes:
        return (REPORT_PREFIX + self.worker).encode()

    def encode(self) -> bytes:
        return _pack({"v": SCHEMA_VERSION, "t": T_SHADOW, **self.__dict__})

    @classmethod
    def decode(cls, value: bytes) -> "ShadowReport":
        """DecodeError on a malformed report."""
        rec = _unpack(value, T_SHADOW)
        k = T_SHADOW
        ints = {n: _field(rec, n, int, k, 0) for n in (
            "windows", "flows", "agree", "flagged_active", "flagged_shadow", "rules_added",
            "rules_dropped", "refused")}
        strs = {n: _field(rec, n, str, k, "") for n in ("sha256", "model_id", "last_refusal")}
        return cls(_field(rec, "worker", str, k), **strs, **ints,
                   added=[str(x) for x in _field(rec, "added", list, k, [])],
                   dropped=[str(x) for x in _field(rec, "dropped", list, k, [])])


def merge_reports(reports: list[ShadowReport], sha256: str) -> ShadowReport:
    """The sum of the reports of candidate `sha256` (workers score disjoint windows)."""
    total = ShadowReport("all", sha256)
    for r in reports:
        if r.sha256 != sha256:
            continue
        total.model_id = r.model_id
        for n in ("windows", "flows", "agree", "flagged_active", "flagged_shadow",
                  "rules_added", "rules_dropped"):
            setattr(total, n, getattr(total, n) + getattr(r, n))
        total.added = sorted(set(total.added) | set(r.added))[:MAX_SAMPLE_RULES]
        total.dropped = sorted(set(total.dropped) | set(r.dropped))[:MAX_SAMPLE_RULES]
    return total
