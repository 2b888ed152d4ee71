"""Flow marks: the bits `evidence.flow_marks` sets per flow of a window, read by every evidence
measure (services.detection.evidence), the fragment budget (services.detection.fragments), the
decisions (services.detection.detect) and the scorer's column mirror
(services.scorer.evidence_columns). Pure constants; what each one means is in evidence.py's
module docstring and docs/detection.md (Evidence)."""
from __future__ import annotations

HALF_OPEN, INITIATED, PROBE, UNANSWERED, ANSWERED, GROUP = 1, 2, 4, 8, 512, 1024
SOLICITED = 2048  # with ANSWERED: answered by being solicited (a reply to a request D sent)
ONE_WAY = 4096  # with UNANSWERED: UDP to a port of a one-way protocol (ONE_WAY_PORTS)
SYNACK, RST_ONLY, REFLECTED, FRAGMENT, DHCP = 16, 32, 64, 128, 256
