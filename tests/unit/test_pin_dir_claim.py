"""PinDirClaim: one enforcer per pin directory, held for its lifetime (the claim is a flock on
a directory beside the pin directory, which works on any filesystem: tmp_path here, bpffs in
the kernel tier's tests/kernel/test_enforcer_service.py)."""
import os

import pytest

from services.dataplane.pinlock import PinDirClaim, PinDirClaimed


def test_a_second_claim_is_refused_naming_the_holder_until_the_first_is_released(tmp_path):
    pins = str(tmp_path / "xdpguard")
    first = PinDirClaim(pins, "enforcer").acquire()
    assert os.path.isdir(first.path) and first.path == pins + "_enforcer"
    with pytest.raises(PinDirClaimed, match=rf"another enforcer already works on {pins} "
                                            rf"\(pid {os.getpid()} "):
        PinDirClaim(pins, "enforcer").acquire()  # another open file: as another process
    PinDirClaim(str(tmp_path / "other"), "enforcer").acquire().release()  # other pins: free
    first.release()
    first.release()  # idempotent
    assert not os.path.exists(first.path)
    again = PinDirClaim(pins + "/", "enforcer").acquire()
    again.release()


def test_a_claim_left_by_a_killed_holder_is_taken_over(tmp_path):
    pins = str(tmp_path / "xdpguard")
    os.mkdir(pins + "_enforcer")  # what a SIGKILL leaves: the directory, no lock
    PinDirClaim(pins, "enforcer").acquire().release()
