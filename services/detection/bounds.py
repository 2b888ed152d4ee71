"""Evidence bounds: how much of each evidence measure (services.detection.evidence) benign
traffic shows, plus a margin. Pure; stored in the model metadata (`evidence`).

    bound(measure) = max(FLOORS[measure], MARGIN x the largest value any benign window showed)

The largest values come from benign captures the model's threshold was not fitted on either
(`xdpguard train` reads them from every benign training capture: `calibrate`). A measure at or
above its bound is evidence; at or above STRONG x its bound it is strong evidence, answered at
once with the full rule (drop, the tight rate limit, the long TTL); weaker evidence first gets a
short TTL or the loose rate limit, escalated when it comes back (services.detection.detect).

The floors are priors, not fitted: the benign corpora are client-side captures of one host each,
so some counts (distinct half-open sources towards one destination: 1) would give bounds a
busy server or a LAN exceeds every second. Each floor is the smallest count at which the
behaviour stops being something a handful of ordinary peers do at once. The probe floors (10
probes of one target group over the horizon) weigh two things, neither fitted on a capture: a
monitoring station (load balancer checks, a ping or SNMP monitor) re-probes the same targets
every few seconds, and during a partial outage several of them never answer, while a sweep
reaches 10 empty addresses of one /24 within 1-2 s at 5-10 probes/s. At 10, a monitor with up
to 9 dead targets of one /24 is left alone; a sweep at 10 probes/s has its rule within 3 s of
its first probe, one at 5 probes/s within 3-4.2 s (86-90% of a 30 s sweep dropped instead of
the goal's 90%). The benign corpora's maxima (2 TCP, 3 other) are far below either. The
half_open floor (64 half-open flows from one source to one host in a window) is above what an
app host's connection pool shows while its database is down (every worker retrying each
second: 28 and 37 a window in real-tool captures of 30 and 50 workers, refused and blackholed;
at 20 both were blocked, and their queries with them once the database was back); a SYN flood
from one address sends far more; one under 64 a second to one port is named by no measure (an
accepted evasion, docs/detection.md "Bounds": at 40 a second the model scores every such flow
over its threshold, and nothing else counts it: tests/unit/test_review13_findings.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .evidence import DST_MEASURES, SRC_MEASURES

MARGIN = 2.0
STRONG = 3.0
FLOORS: dict[str, dict[str, float]] = {
    "src": {"half_open": 64, "probe_tcp": 10, "probe_other": 10, "login": 8, "packets": 2000},
    "dst": {"half_open_srcs": 12, "synack_srcs": 12, "rst_srcs": 12, "reflector_srcs": 12,
            "fragments": 20, "dhcp": 10, "unsolicited_srcs": 24, "packets": 2000},
}
MEASURES = {"src": SRC_MEASURES, "dst": DST_MEASURES}


@dataclass(frozen=True)
class EvidenceBounds:
    """Bounds per scope ("src", "dst") and measure; `benign_max` keeps what they came from."""
    bounds: dict[str, dict[str, float]]
    benign_max: dict[str, dict[str, float]] = field(default_factory=dict)
    margin: float = MARGIN
    strong: float = STRONG

    @classmethod
    def calibrate(cls, benign_max: dict[str, dict[str, float]], margin: float = MARGIN,
                  strong: float = STRONG) -> "EvidenceBounds":
        """Bounds from the largest benign values per scope and measure (missing: 0)."""
        bounds = {scope: {m: max(FLOORS[scope][m], margin * float(benign_max.get(scope, {}).get(m, 0)))
                          for m in names} for scope, names in MEASURES.items()}
        seen = {scope: {m: float(benign_max.get(scope, {}).get(m, 0)) for m in names}
                for scope, names in MEASURES.items()}
        return cls(bounds, seen, margin, strong)

    @classmethod
    def default(cls) -> "EvidenceBounds":
        """The floors alone (a model trained before bounds existed)."""
        return cls.calibrate({})

    def findings(self, scope: str, values: list[float]) -> list[tuple[str, float, bool]]:
        """(measure, value, strong) of every measure of `values` (MEASURES[scope] order) at or
        above its bound."""
        b = self.bounds[scope]
        return [(m, v, v >= self.strong * b[m]) for m, v in zip(MEASURES[scope], values)
                if v >= b[m]]

    def to_dict(self) -> dict:
        return {"bounds": self.bounds, "benign_max": self.benign_max, "margin": self.margin,
                "strong": self.strong}

    @classmethod
    def from_dict(cls, d: dict | None) -> "EvidenceBounds":
        """From model metadata; measures it lacks get their floor."""
        if not d:
            return cls.default()
        base = cls.calibrate({}, d.get("margin", MARGIN), d.get("strong", STRONG))
        bounds = {s: {**base.bounds[s], **{k: float(v) for k, v in d.get("bounds", {}).get(s, {}).items()
                                           if k in base.bounds[s]}} for s in base.bounds}
        return cls(bounds, d.get("benign_max", {}), base.margin, base.strong)


def widen(maxima: dict[str, dict[str, float]], scope: str, values: dict[str, list[float]]) -> None:
    """Fold one window's measures (address -> MEASURES[scope] values) into running maxima."""
    best = maxima.setdefault(scope, {})
    names = MEASURES[scope]
    for vals in values.values():
        for m, v in zip(names, vals):
            if v > best.get(m, 0.0):
                best[m] = float(v)
