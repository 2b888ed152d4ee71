"""The reference set shipped beside the model: the packets the shipped model was trained on
(the benign baseline) and the attack captures it was measured against, in one compact file.

    models/xdpguard-if.reference.npz   written by `xdpguard train --reference-out` from the same
                                       inputs as the model; read by `xdpguard learn`

A site model is trained on the site's own traffic merged with the benign baseline, and must
still catch every attack kind the shipped model catches on the attack set: so both travel with
the product and nothing under ../shared is needed at run time. Only the header fields the
pipeline reads are kept (Packet: time, addresses, ports, protocol, TCP flags, length), never
payloads; the file is a numpy .npz of plain arrays (loaded with allow_pickle=False):

    names, labels, kinds   one entry per capture (str arrays)
    starts                 int64, capture i's packets are rows starts[i]:starts[i+1]
    ts_ns                  int64 per packet
    addr                   str array, the distinct addresses
    src, dst               int32 index into addr per packet
    sport, dport, length   int32 per packet; proto, tcp_flags uint8 per packet
    format                 FORMAT

`benign_digest` is training.data_digest of the benign captures, the digest the model's metadata
records as `training.data_digest`: `load_reference` compares them, so a reference file that is
not what the model was trained on is refused (ModelError).
"""
from __future__ import annotations

import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from services.common.errors import ModelError
from services.records.packet import Packet

from .training import LabelledCapture, data_digest

FORMAT = "xdpguard-reference/1"


def reference_path(model_path: str | os.PathLike) -> Path:
    """The reference file of a model file: `<stem>.reference.npz` beside it."""
    p = Path(model_path)
    return p.with_name(p.stem + ".reference.npz")


@dataclass
class ReferenceSet:
    """The benign baseline and the attack set (LabelledCapture lists, packets in time order)."""
    benign: list[LabelledCapture]
    attack: list[LabelledCapture]

    @property
    def benign_digest(self) -> str:
        return data_digest(self.benign)

    def kinds(self) -> list[str]:
        """The attack kinds, sorted."""
        return sorted({c.kind for c in self.attack})


def write_reference(captures: Sequence[LabelledCapture], path: str | os.PathLike) -> Path:
    """Write the captures (benign and attack, as given) to `path` atomically; returns it."""
    path = Path(path)
    addrs: dict[str, int] = {}
    pk = [p for c in captures for p in c.packets]
    starts = np.cumsum([0] + [len(c.packets) for c in captures]).astype(np.int64)

    def ix(a: str) -> int:
        return addrs.setdefault(a, len(addrs))

    arrays = {
        "format": np.array(FORMAT),
        "names": np.array([c.name for c in captures], dtype=str),
        "labels": np.array([c.label for c in captures], dtype=str),
        "kinds": np.array([c.kind for c in captures], dtype=str),
        "starts": starts,
        "ts_ns": np.array([p.ts_ns for p in pk], dtype=np.int64),
        "src": np.array([ix(p.src) for p in pk], dtype=np.int32),
        "dst": np.array([ix(p.dst) for p in pk], dtype=np.int32),
        "sport": np.array([p.sport for p in pk], dtype=np.int32),
        "dport": np.array([p.dport for p in pk], dtype=np.int32),
        "proto": np.array([p.proto for p in pk], dtype=np.uint8),
        "tcp_flags": np.array([p.tcp_flags for p in pk], dtype=np.uint8),
        "length": np.array([p.length for p in pk], dtype=np.int32),
    }
    arrays["addr"] = np.array(list(addrs), dtype=str)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    os.close(fd)
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def read_reference(path: str | os.PathLike) -> ReferenceSet:
    """The captures of a reference file; ModelError when it is missing or not one (not an
    .npz, another format, an array missing or of the wrong length)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise ModelError(f"reference set {path} is missing (xdpguard train --reference-out "
                         "writes it)") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelError(f"reference set {path} is unreadable: {exc}") from None
    if str(a.get("format", "")) != FORMAT:
        raise ModelError(f"{path} is not a reference set ({FORMAT})")
    why = _malformed(a)
    if why:
        raise ModelError(f"reference set {path} is corrupt: {why}")
    addr = a["addr"].tolist()
    cols = [a[k].tolist() for k in _PACKET_COLUMNS]
    rows = [Packet(t, addr[s], addr[d], sp, dp, pr, fl, ln) for t, s, d, sp, dp, pr, fl, ln in zip(*cols)]
    out = ReferenceSet([], [])
    st = a["starts"].tolist()
    for i, (name, label, kind) in enumerate(zip(a["names"].tolist(), a["labels"].tolist(),
                                                a["kinds"].tolist())):
        c = LabelledCapture(name, label, kind, rows[st[i]:st[i + 1]])
        (out.benign if label == "benign" else out.attack).append(c)
    return out


_PACKET_COLUMNS = ("ts_ns", "src", "dst", "sport", "dport", "proto", "tcp_flags", "length")


def _malformed(a: dict) -> str:
    """Why the arrays `a` of a reference file are not the layout of the module doc ("" if
    they are): every array present, one row per packet, `starts` bounds, address indexes."""
    missing = [k for k in ("names", "labels", "kinds", "starts", "addr", *_PACKET_COLUMNS)
               if k not in a]
    if missing:
        return f"no array {', '.join(missing)}"
    n = len(a["ts_ns"])
    if any(a[k].shape != (n,) for k in _PACKET_COLUMNS):
        return f"packet columns of unequal length (ts_ns has {n})"
    st, m = a["starts"], len(a["names"])
    if len(a["labels"]) != m or len(a["kinds"]) != m or st.shape != (m + 1,):
        return f"{m} captures but {len(a['labels'])} labels, {len(a['kinds'])} kinds, " \
               f"{st.size} starts (captures + 1)"
    if st[0] != 0 or st[-1] != n or (np.diff(st) < 0).any():
        return f"capture starts are not 0..{n} in order"
    k = len(a["addr"])
    if n and (min(a["src"].min(), a["dst"].min()) < 0 or max(a["src"].max(), a["dst"].max()) >= k):
        return f"an address index outside the {k} addresses"
    return ""


def load_reference(model_path: str | os.PathLike, meta: dict) -> ReferenceSet:
    """The reference set beside `model_path`, checked against the model's metadata `meta`:
    its benign captures must be the ones the model was trained on (data digest), and it
    must hold attack captures. ModelError otherwise."""
    path = reference_path(model_path)
    ref = read_reference(path)
    want = (meta.get("training") or {}).get("data_digest")
    if want != ref.benign_digest:
        raise ModelError(f"reference set {path} does not hold the benign data model "
                         f"{meta.get('model_id')} was trained on (digest {ref.benign_digest[:12]}, "
                         f"model {str(want)[:12]}): write it with the model (--reference-out)")
    if not ref.attack:
        raise ModelError(f"reference set {path} holds no attack capture")
    return ref
