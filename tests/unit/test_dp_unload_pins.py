"""`unload --all` removes the pins of every layout (helper-44's review, finding 4): this build's
maps (src_host_slot among them, XDG9) and those earlier builds pinned (src_stats), then the
directory. Plain files in a temporary directory stand in for the pins (unlink is the same)."""
from __future__ import annotations

from services.dataplane import loader
from services.dataplane.maps import MAP_NAMES


def test_unload_all_unlinks_every_pin_name_and_the_directory(tmp_path):
    d = tmp_path / "pins"
    d.mkdir()
    names = ["prog", *MAP_NAMES, "src_stats", "exact", "link_native_eth0"]
    assert "src_host_slot" in names
    for n in names:
        (d / n).write_bytes(b"")
    loader.unload_all(str(d))
    assert not d.exists()


def test_the_pin_names_are_this_builds_maps_and_the_former_ones():
    # exact: XDG1's one exact-rule map (helper-51's review: an XDG1 pin kept the directory)
    assert set(loader.PIN_NAMES) == {"prog", *MAP_NAMES, "src_stats", "exact"}
    assert len(loader.PIN_NAMES) == len(set(loader.PIN_NAMES))
