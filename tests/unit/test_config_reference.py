"""docs/configuration.md is the output of `xdpguard config --markdown`: every variable the
services read is documented with its default, and the doc cannot drift from the code."""
from pathlib import Path

from services.manager.config_cmd import SECTIONS, reference_markdown, settings_classes

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_service_declares_its_settings():
    for title, module in SECTIONS:
        assert settings_classes(module), f"no settings class in {module}"


def test_configuration_reference_is_current():
    assert DOC.read_text() == reference_markdown(), \
        "regenerate with: .venv/bin/xdpguard config --markdown > docs/configuration.md"
