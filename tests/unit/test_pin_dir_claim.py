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


def test_two_spellings_of_one_pin_directory_are_one_claim(tmp_path):
    """helper-74: a symlink to the pin directory (or "/." after it) claimed beside the first."""
    pins = tmp_path / "xdpguard"
    pins.mkdir()
    (tmp_path / "alias").symlink_to(pins)
    first = PinDirClaim(str(pins), "enforcer").acquire()
    try:
        for other in (str(tmp_path / "alias"), f"{pins}/.", f"{pins}//"):
            with pytest.raises(PinDirClaimed):
                PinDirClaim(other, "enforcer").acquire()
    finally:
        first.release()


def test_a_claim_path_made_by_another_user_is_taken_back(tmp_path):
    """helper-74: on a bpffs of mode 1777 any user could make the claim directory and flock it,
    and no enforcer would start; one owned by another user is removed and made again."""
    from tests.support.caps import have_root, require

    require(have_root(), "root (to make a directory another user owns)")
    pins = str(tmp_path / "xdpguard")
    os.mkdir(pins + "_enforcer")
    os.chown(pins + "_enforcer", 65534, 65534)  # nobody
    claim = PinDirClaim(pins, "enforcer").acquire()
    assert os.stat(claim.path).st_uid == os.geteuid()
    claim.release()


def test_a_claim_directory_that_cannot_be_made_is_one_kernel_error(tmp_path):
    """helper-74: with bpffs unmounted (or a pin directory on sysfs) the claim's mkdir raised an
    OSError past the enforcer's one-line errors: a traceback."""
    from services.common.errors import KernelError

    (tmp_path / "file").write_text("")
    with pytest.raises(KernelError, match="cannot open .*file/pins_enforcer to lock it"):
        PinDirClaim(str(tmp_path / "file" / "pins"), "enforcer").acquire()
    with pytest.raises(KernelError, match="cannot make /proc/xdpguard-none/pins_enforcer"):
        PinDirClaim("/proc/xdpguard-none/pins", "enforcer").acquire()  # mkdir refused there
