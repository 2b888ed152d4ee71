"""Fixtures of the broker tier."""
from __future__ import annotations

import pytest

from tests.support.scorer_traffic import make_model


@pytest.fixture
def model(tmp_path):
    """A small scorer model file (tests/support/scorer_traffic.make_model) in tmp_path."""
    return make_model(tmp_path)
