"""Fixtures of the kernel tier: a loaded, unattached program per test module (BPF_PROG_TEST_RUN)."""
from __future__ import annotations

import pytest

from tests.support import caps
from tests.support.dp_env import Env
from tests.support.xdpfuzz import FuzzEnv


def _loaded(make):
    caps.require(caps.have_root() and caps.have_bpffs() and caps.have_bcc(), "needs root, bpffs, BCC")
    e = make()
    yield e
    e.close()


@pytest.fixture(scope="module")
def loaded_env():
    """The program loaded once for the module (small maps, tests/support/dp_env.py)."""
    yield from _loaded(Env)


@pytest.fixture
def env(loaded_env):
    """The module's program with every rule map emptied, sampling 1 in 1 and the ring drained."""
    loaded_env.reset()
    return loaded_env


@pytest.fixture(scope="module")
def fuzz_env():
    """The program holding the fuzz rule set, with its reference model (tests/support/xdpfuzz.py)."""
    yield from _loaded(FuzzEnv)
