"""The parity check between the replay's evidence (services.detection.evidence.assess, per flow)
and the scorer's (services.scorer.evidence_columns.assess_columns, from columns), written once
for the property tests that draw windows for it."""
from __future__ import annotations

import numpy as np

from services.detection.evidence import assess
from services.scorer.evidence_columns import assess_columns


def assert_columns_match(keys: list[tuple], flows: dict, answers, own: dict, end_ns: int) -> None:
    """assess_columns gives the marks and the source and destination measures of the per-flow
    assess of window `keys` / `flows` (features flow-state dicts with packets, bytes, flags,
    syn, last) ending at `end_ns`, to the bit and the type (repr)."""
    want = assess(keys, flows, answers, end_ns, own)
    col = {f: np.array([flows[k][f] for k in keys], dtype=np.uint64)
           for f in ("packets", "bytes", "flags", "syn", "last")}
    got = assess_columns(keys, col["packets"], col["bytes"], col["flags"], col["syn"],
                         col["last"], answers, end_ns, own)
    assert got.marks == want.marks and list(got.marks) == list(want.marks)
    assert repr(got.src) == repr(want.src) and repr(got.dst) == repr(want.dst)
