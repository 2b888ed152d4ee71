"""What the detection tests read off a replay (services.offline.replay) of synthetic packets
(tests/support/synthetic_traffic.py, synthetic_services.py): the rules' reasons with the packets
dropped, and the time of the first drop."""
from __future__ import annotations

import numpy as np

from services.offline.replay import replay

S = 1_000_000_000


def reasons_and_drops(pk: list, detector) -> tuple[list[str], int]:
    """(reason of every rule suggested, in order; packets dropped) when `pk` is replayed whole
    with `detector` (services.detection.model.load_model())."""
    res = replay(pk, detector)
    return [sg.reason for w in res.windows for sg in w.suggestions], int(res.dropped.sum())


def first_block_s(pk: list, dropped) -> float | None:
    """Seconds from the first packet of `pk` to the first one `dropped` (a boolean per packet,
    ReplayResult.dropped), None when none was."""
    d = np.flatnonzero(dropped)
    return (pk[d[0]].ts_ns - pk[0].ts_ns) / S if len(d) else None
