"""Test tiers and shared fixtures.

Tiers are folders and markers: tests/unit (-m unit), tests/kernel (-m kernel, root + BPF),
tests/broker (-m broker, a real Kafka broker), tests/compose (-m compose, root + Docker: the images
and the compose files run for real). When CI is set a missing capability fails the test instead
of skipping it.
"""
from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import pytest

from tests.support import caps
from tests.support.netns import create_pair, destroy_pair

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
TIERS = ("unit", "kernel", "broker", "compose")


def pytest_collection_modifyitems(config, items):
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        if parts and parts[0] in TIERS:
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture(autouse=True)
def _tier_capabilities(request):
    if request.node.get_closest_marker("kernel"):
        caps.require(caps.have_root(), "kernel tests need root")
        caps.require(caps.have_bpffs(), "kernel tests need bpffs mounted on /sys/fs/bpf")
        caps.require(caps.have_bcc(), "kernel tests need Debian's bcc module in .venv")
    if request.node.get_closest_marker("compose"):
        caps.require(caps.have_root(), "compose tests need root (dockerd, XDP, namespaces)")
        caps.require(caps.have_tool("dockerd"), "compose tests need Docker (scripts/setup installs docker.io)")


@pytest.fixture(scope="module")
def detector():
    """The shipped model (services.detection.model.load_model: models/xdpguard-if.json and its
    joblib), loaded once per test module, for the tests that replay traffic through it."""
    from services.detection.model import load_model

    return load_model()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    caps.require(SHARED.is_dir(), f"{SHARED} (shared data) is missing")
    return SHARED


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    from services.common.settings import load_common
    from services.wire.topics import wait_ready

    common = load_common()
    try:
        asyncio.run(wait_ready(common, timeout=20))
    except Exception as exc:
        caps.require(False, f"no Kafka broker at {common.kafka_bootstrap} ({exc}); run scripts/kafka start")
    return common.kafka_bootstrap


@pytest.fixture
def broker(kafka_bootstrap):
    """Settings bound to the running broker with a topic prefix unique to this test,
    so every topic the test (or a service under test) creates is fresh."""
    from services.common.settings import load_common

    return load_common(topic_prefix=f"t{uuid.uuid4().hex[:10]}.")


@pytest.fixture
async def fresh_topic(broker):
    """Create one fresh topic (4 partitions) and return its name."""
    from services.wire.topics import TopicSpec, ensure_topics

    name = broker.topic("test")
    await ensure_topics(broker, [TopicSpec(name, 4, 1)])
    return name


@pytest.fixture
def netns_pair():
    caps.require(caps.have_root(), "network namespaces need root")
    pair = create_pair()
    try:
        yield pair
    finally:
        destroy_pair(pair)


@pytest.fixture
def pin_dir():
    """A bpffs folder unique to this test, removed afterwards."""
    import shutil

    path = caps.fresh_pin_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def private_broker(kafka_bootstrap):
    """A broker of this test's own (started), for tests that stop or kill Kafka."""
    from tests.support.broker import PrivateBroker

    b = PrivateBroker()
    b.start()
    try:
        yield b
    finally:
        b.destroy()
