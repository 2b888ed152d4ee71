"""Where the installed project lives: the folder holding `services/`, `bpf/` and `models/`.
The product ships these beside the code (compose/Dockerfile copies all three), so every default
path is derived from here, once."""
from __future__ import annotations

from pathlib import Path

INSTALL_DIR = Path(__file__).resolve().parents[2]
BPF_DIR = INSTALL_DIR / "bpf"
MODELS_DIR = INSTALL_DIR / "models"

# bpffs folder of the loaded program's pins (XDPGUARD_PIN_DIR overrides it; tests use their own)
DEFAULT_PIN_DIR = "/sys/fs/bpf/xdpguard"
