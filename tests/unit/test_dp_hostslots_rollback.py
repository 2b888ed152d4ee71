"""HostSlots._slot_host's rollback (helper-44's review, finding 3): the counts raised for a new
inline host rule are lowered again only when the slot's update failed (BpfErrno / MapFull: a
KernelError), never on an interrupt that may come after the update returned, which would leave a
rule in its slot with its directory bit and src_filter count lowered (skipped by the program)."""
from __future__ import annotations

import errno

import pytest

from services.dataplane.bpfsys import BpfErrno
from services.dataplane.hostslots import HostSlots
from services.dataplane.structs import RuleVal
from services.records.rules import Action, Rule, Scope


class Slots(HostSlots):
    """The calls _slot_host makes, recorded; the slot's update raises `fail` (None: succeeds)."""

    def __init__(self, fail: BaseException | None) -> None:
        self.fail, self.books, self.dirs, self.written = fail, [], [], 0

    def _exists(self, name, key):
        return False

    def _read_percpu(self, name, key):
        return None  # an empty slot

    def _books(self, field, src, prefix, delta):
        self.books.append(delta)

    def _slot_dir(self, idx, used):
        self.dirs.append(used)

    def _write(self, name, key, value, what, flags=0, counts=None):
        self.written += 1
        if self.fail is not None:
            raise self.fail


RULE = Rule(Scope.SRC_PREFIX, Action.DROP, src="203.0.113.9/32")


def slot(fail):
    s = Slots(fail)
    name, key = "src_host4", None
    return s, (lambda: s._slot_host(RULE, name, key, RuleVal()))


def test_a_written_slot_keeps_its_counts():
    s, go = slot(None)
    assert go() is True
    assert (s.books, s.dirs, s.written) == ([1], [True], 1)


@pytest.mark.parametrize("fail", [BpfErrno("update failed", errno.EIO), BpfErrno("full", errno.E2BIG)])
def test_a_failed_update_lowers_the_counts_again(fail):
    s, go = slot(fail)
    with pytest.raises(BpfErrno):
        go()
    assert (s.books, s.dirs) == ([1, -1], [True, False])


@pytest.mark.parametrize("fail", [KeyboardInterrupt(), SystemExit(1)])
def test_an_interrupt_leaves_the_counts_raised(fail):
    """The rule may be in its slot: counts above the truth cost a lookup, below it a rule."""
    s, go = slot(fail)
    with pytest.raises(type(fail)):
        go()
    assert (s.books, s.dirs) == ([1], [True])
