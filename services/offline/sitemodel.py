"""A site model: trained on the site's own traffic merged with the shipped benign baseline, and
validated before anyone may use it (`xdpguard learn`).

The site's captures (pcap files, or one time range of the `packets` topic) are split by time:
the first `1 - holdout_frac` of each is training data, the rest is held back. The model is
trained as the shipped one (services.offline.training.train) on the baseline's benign captures
plus the site's training parts, the site's parts always fitted (never held back for the
threshold). Then two checks, each a replay through the live logic (services.offline.evaluation
.evaluate: pipeline, rules, simulated data plane), by the candidate and by the shipped model:

  false positives  the held-back site traffic replayed alone: the share of its packets dropped
                   must be at most `fp_budget` (default 0.0001 = 0.01% of packets);
  attacks          every attack capture of the reference set replayed alone (repeated to
                   `sustain_s`): an attack kind is caught by a model when it drops at least
                   `catch_share` of that kind's attack packets; every kind the shipped model
                   catches, the site model must catch.

`judge` turns the figures into checks and is pure; `learn` runs the whole of it.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Sequence

from .evaluation import EvalConfig, evaluate
from .reference import ReferenceSet
from .training import DEFAULT_TARGET_FPR, LabelledCapture, TrainResult, train

SITE_PREFIX = "site:"


@dataclass(frozen=True)
class LearnConfig:
    """What `learn` trains and how strictly it validates (shares are fractions, not percent)."""
    holdout_frac: float = 0.3    # last share (time order) of each site capture held back
    fp_budget: float = 0.0001    # held-back site packets the model may drop
    catch_share: float = 0.3     # attack packets a model must drop for a kind to count as caught
    sustain_s: float = 10.0      # attack captures repeated back to back to span this long
    target_fpr: float = DEFAULT_TARGET_FPR
    window_s: float = 1.0
    n_estimators: int = 200
    seed: int = 0


@dataclass(frozen=True)
class Counted:
    """`part` of `whole` packets (dropped of replayed)."""
    part: int
    whole: int

    @property
    def share(self) -> float:
        return self.part / self.whole if self.whole else 0.0


@dataclass
class Validation:
    """The figures and the failed checks (one line each; none: the model may be used)."""
    held_back: Counted
    shipped: dict[str, Counted]
    site: dict[str, Counted]
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        """Plain figures, for the model's metadata."""
        def kinds(d):
            return {k: {"dropped": v.part, "packets": v.whole, "share": v.share} for k, v in d.items()}
        return {"held_back": {"dropped": self.held_back.part, "packets": self.held_back.whole,
                              "share": self.held_back.share},
                "attacks_shipped": kinds(self.shipped), "attacks_site": kinds(self.site),
                "failures": list(self.failures)}


def _pct(x: float) -> str:
    return f"{x * 100:.4f}%"


def judge(held_back: Counted, shipped: dict[str, Counted], site: dict[str, Counted],
          cfg: LearnConfig) -> Validation:
    """The checks of the module doc on given figures: `held_back` = site packets dropped of
    those replayed, `shipped`/`site` = attack packets dropped per kind by each model."""
    v = Validation(held_back, shipped, site)
    if held_back.whole == 0:
        v.failures.append("held-back site traffic: no packet to validate on (more traffic, or "
                          "a larger --holdout)")
    elif held_back.share > cfg.fp_budget:
        v.failures.append(f"held-back site traffic: {held_back.part:,} of {held_back.whole:,} "
                          f"packets dropped ({_pct(held_back.share)}), budget "
                          f"{_pct(cfg.fp_budget)}")
    for kind in sorted(shipped):
        ref = shipped[kind]
        if ref.share < cfg.catch_share:
            continue  # the shipped model does not catch it either
        got = site.get(kind, Counted(0, 0))
        if got.share < cfg.catch_share:
            v.failures.append(f"attack kind {kind}: site model drops {got.part:,} of {got.whole:,} "
                              f"attack packets ({_pct(got.share)}), the shipped model "
                              f"{_pct(ref.share)}; a caught kind needs {_pct(cfg.catch_share)}")
    return v


def split_site(site: Sequence[LabelledCapture], holdout_frac: float
               ) -> tuple[list[LabelledCapture], list[LabelledCapture]]:
    """(training parts, held-back parts): each capture split by time, named `site:<name>`."""
    fit, held = [], []
    for c in site:
        a, b = LabelledCapture(SITE_PREFIX + c.name, "benign", c.kind, c.packets).split(1 - holdout_frac)
        fit.append(a)
        held.append(b)
    return fit, held


def replay_figures(rep: dict) -> tuple[Counted, dict[str, Counted]]:
    """(benign packets dropped of replayed, attack packets dropped per kind) of an
    evaluation report's replays alone (evaluation.evaluate `_stats`)."""
    ben = [0, 0]
    att: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for s in rep["_stats"]:
        c = s.counts
        if s.kind == "benign":
            ben[0] += c["benign_dropped"]
            ben[1] += c["benign_packets"]
        else:
            att[s.kind][0] += c["attack_dropped"]
            att[s.kind][1] += c["attack_packets"]
    return Counted(*ben), {k: Counted(*v) for k, v in sorted(att.items())}


def replay_site(detector, held: Sequence[LabelledCapture], ref: ReferenceSet, cfg: LearnConfig, *,
                merged: bool = False, progress: Callable[[str], None] | None = None) -> dict:
    """evaluation.evaluate of the held-back site traffic and the attack set (attacks alone
    repeated to `sustain_s`; with `merged`, also each attack over all the held-back traffic)."""
    ec = EvalConfig(window_s=cfg.window_s, sustain_s=cfg.sustain_s, merged=merged)
    return evaluate(list(held) + list(ref.attack), detector, ec, progress=progress)


def train_site(ref: ReferenceSet, fit: Sequence[LabelledCapture], cfg: LearnConfig) -> TrainResult:
    """The site model: the baseline's benign captures plus the site's training parts (always
    fitted). ValueError when there is too little data."""
    return train(list(ref.benign) + list(fit), target_fpr=cfg.target_fpr, window_s=cfg.window_s,
                 n_estimators=cfg.n_estimators, seed=cfg.seed,
                 fitted={c.name for c in fit})


def learn(site: Sequence[LabelledCapture], ref: ReferenceSet, shipped, cfg: LearnConfig, *,
          merged: bool = False, progress: Callable[[str], None] | None = None
          ) -> tuple[TrainResult, Validation, dict]:
    """Train the site model on `site` (benign captures) and validate it against the shipped
    detector `shipped` (module doc). Returns the model whether or not it passed, the
    validation, and the evaluation reports {"shipped": ..., "site": ...} of both models on the
    same replays (`replay_site`)."""
    fit, held = split_site(site, cfg.holdout_frac)
    if progress:
        progress("training the site model")
    res = train_site(ref, fit, cfg)
    det = res.detector("site-candidate")
    reports = {name: replay_site(d, held, ref, cfg, merged=merged, progress=progress)
               for name, d in (("shipped", shipped), ("site", det))}
    fp, mine = replay_figures(reports["site"])
    ship = replay_figures(reports["shipped"])[1]
    val = judge(fp, ship, mine, cfg)
    res.training["site"] = {"captures": [c.name for c in fit], "holdout_frac": cfg.holdout_frac,
                            "fp_budget": cfg.fp_budget, "catch_share": cfg.catch_share,
                            "sustain_s": cfg.sustain_s, "baseline_model": getattr(shipped, "model_id", ""),
                            "validation": val.to_dict()}
    return res, val, reports
