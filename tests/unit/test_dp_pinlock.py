"""The pin-directory lock (services/dataplane/pinlock.py) on an ordinary directory: another
process holding flock(1) on it keeps us out until it lets go, one PinLock is re-entrant, and a
directory replaced while we wait is not the one we end up holding. (Two processes editing real
pinned maps at once: tests/kernel/test_dp_lock.py.)"""
import os
import shutil
import signal
import subprocess
import time

import pytest

from services.dataplane.pinlock import PinDirBusy, PinLock

pytestmark = pytest.mark.skipif(shutil.which("flock") is None, reason="needs flock(1) (util-linux)")


class Holder:
    """flock(1) holding `path` in another process until stop()."""

    def __init__(self, path, marker, then: str = "sleep 30"):
        self.proc = subprocess.Popen(["flock", str(path), "sh", "-c", f"touch {marker}; {then}"],
                                     start_new_session=True)
        deadline = time.monotonic() + 10
        while not os.path.exists(marker):
            assert time.monotonic() < deadline, "flock(1) never took the lock"
            time.sleep(0.01)

    def stop(self):
        """Kill flock(1) and its command (which holds the locked file too)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def test_another_process_holding_the_lock_keeps_us_out_until_it_lets_go(tmp_path):
    d = tmp_path / "pins"
    d.mkdir()
    h = Holder(d, tmp_path / "held")
    try:
        t0 = time.monotonic()
        with pytest.raises(PinDirBusy, match="held the lock on .*pins for 0.2 s"):
            with PinLock(str(d), timeout_s=0.2):
                pass
        assert time.monotonic() - t0 >= 0.2
    finally:
        h.stop()
    lock = PinLock(str(d), timeout_s=0.2)
    with lock:
        assert lock.held
    assert not lock.held


def test_a_waiting_writer_gets_the_lock_when_the_holder_finishes(tmp_path):
    d = tmp_path / "pins"
    d.mkdir()
    h = Holder(d, tmp_path / "held", then="sleep 0.3")  # lets go by itself
    t0 = time.monotonic()
    with PinLock(str(d), timeout_s=10):
        waited = time.monotonic() - t0
    h.stop()
    assert 0.1 < waited < 5


def test_one_lock_is_reentrant_but_a_second_lock_object_waits(tmp_path):
    lock = PinLock(str(tmp_path), timeout_s=0.1)
    with lock:
        with lock:  # a locked method calling another
            assert lock.held
        assert lock.held
        with pytest.raises(PinDirBusy):  # flock belongs to the open file, not the process
            with PinLock(str(tmp_path), timeout_s=0.1):
                pass
    assert not lock.held


def test_a_missing_directory_is_created_only_when_asked(tmp_path):
    gone = tmp_path / "gone"
    with PinLock(str(gone)) as lock:  # nothing pinned: no other process can reach those maps
        assert lock.held and not gone.exists()
    with PinLock(str(gone), create=True):
        assert gone.is_dir()


def test_a_directory_replaced_while_we_wait_is_not_the_one_we_hold(tmp_path):
    d = tmp_path / "pins"
    d.mkdir()
    # the holder removes the directory and makes a new one (an unload, then a load) before it
    # lets go; we must end up locking the new directory, not the removed one
    h = Holder(d, tmp_path / "held", then=f"sleep 0.3; mv {d} {tmp_path}/old; mkdir {d}")
    try:
        lock = PinLock(str(d), timeout_s=10)
        with lock:
            assert os.fstat(lock._fd).st_ino == os.stat(d).st_ino != os.stat(tmp_path / "old").st_ino
    finally:
        h.stop()
