"""Where the installed project lives, and its shipped files: the XDP C source (`bpf/`) and the
model (`models/`).

Both are package data of `services`: in a checkout services/bpf and services/models are symlinks to
the top-level folders, a wheel (and the container image built from it) holds copies. They are found
with importlib.resources, so a source tree, an editable install, `pip install .` and a wheel all
resolve them the same way. Paths are resolved (a checkout shows bpf/, not services/bpf); the
package must be installed as files on disk (BCC compiles from a real path), which pip always does.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

INSTALL_DIR = Path(__file__).resolve().parents[2]


def _shipped(name: str) -> Path:
    return Path(str(resources.files("services").joinpath(name))).resolve()


BPF_DIR = _shipped("bpf")
MODELS_DIR = _shipped("models")

# bpffs folder of the loaded program's pins (XDPGUARD_PIN_DIR overrides it; tests use their own)
DEFAULT_PIN_DIR = "/sys/fs/bpf/xdpguard"
