"""A small baseline model with its reference set, from synthetic traffic, as `xdpguard train
--reference-out` writes the shipped pair: for tests of `xdpguard learn` (--baseline-model)."""
from __future__ import annotations

from pathlib import Path

from services.detection.model import save_model
from services.offline import training as T
from services.offline.reference import reference_path, write_reference
from tests.support import synthetic_traffic as S


def make_baseline(directory: Path, t0_ns: int, *, trees: int = 50) -> Path:
    """`directory`/base.joblib (+ .json, + .reference.npz): five benign shapes of 40 s fitted;
    a spoofed SYN flood and FTP guessing as the attack set."""
    benign = [T.LabelledCapture(n, "benign", "benign", f(t0_ns, 40)) for n, f in (
        ("doh.pcap", S.doh_client), ("dns.pcap", S.dns_prober), ("call.pcap", S.media_call),
        ("web.pcap", S.browser), ("poll.pcap", S.web_poller))]
    attack = [T.LabelledCapture("syn.pcap", "attack", "syn_flood", S.syn_flood(t0_ns, 5, 300)),
              T.LabelledCapture("ftp.pcap", "attack", "bruteforce_ftp", S.ftp_guessing(t0_ns, 5))]
    res = T.train(benign, n_estimators=trees)
    model = directory / "base.joblib"
    save_model(res.estimator, model, threshold=res.threshold, wide_threshold=res.wide_threshold,
               feature_names=res.feature_names, training=res.training, params=res.params,
               evidence=res.evidence)
    write_reference(benign + attack, reference_path(model))
    return model
