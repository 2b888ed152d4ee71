"""The one table of maps (services/dataplane/maps.py) against the map declarations of
bpf/xdpguard.c, read as text (the loaded maps are compared in tests/kernel/test_dp_structs.py),
and the compatibility check that Datapath.open and the ring readers run on every pinned map."""
import ctypes
import re
from pathlib import Path

import pytest

from services.dataplane import bpfsys, loader, maps, structs
from services.dataplane.maps import MAPS, SPECS, MapSpec

SOURCE = Path(__file__).resolve().parents[2] / "bpf" / "xdpguard.c"

# BCC macro -> (map type, takes a key struct)
MACROS = {"ARRAY": (bpfsys.MAP_TYPE_ARRAY, False), "PERCPU_ARRAY": (bpfsys.MAP_TYPE_PERCPU_ARRAY, False),
          "HASH": (bpfsys.MAP_TYPE_HASH, True), "PERCPU_HASH": (bpfsys.MAP_TYPE_PERCPU_HASH, True),
          "PERCPU_HASH_NOPREALLOC": (bpfsys.MAP_TYPE_PERCPU_HASH, True),
          "LPM_TRIE": (bpfsys.MAP_TYPE_LPM_TRIE, True), "RINGBUF_OUTPUT": (bpfsys.MAP_TYPE_RINGBUF, False)}
# size macro of the C declaration -> the Config field the loader records it in
SIZE_FIELDS = {"1": None, "XG_EXACT_MAX": "exact_max", "XG_PREFIX_MAX": "prefix_max",
               "XG_ALLOW_MAX": "allow_max", "XG_LIMIT_MAX": "limit_max", "XG_RING_PAGES": "ring_bytes",
               "XG_FILTER_SLOTS": structs.XG_FILTER_SLOTS, "XG_HOST_SLOTS": structs.XG_HOST_SLOTS}


def declarations() -> dict[str, tuple[str, list[str]]]:
    """name -> (macro, other arguments) of every BPF_* map declaration in xdpguard.c."""
    out = {}
    for macro, args in re.findall(r"^BPF_(\w+)\((.*)\);$", SOURCE.read_text(), re.M):
        name, *rest = [a.strip() for a in args.split(",")]
        out[name] = (macro, rest)
    return out


def mirror(cname: str):
    if cname == "__u32":
        return ctypes.c_uint32
    assert cname.startswith("struct "), cname
    return structs.MIRRORS[cname.removeprefix("struct ")]


def test_the_table_lists_exactly_the_maps_the_program_declares():
    assert set(declarations()) == set(SPECS)
    assert loader.MAP_NAMES == maps.MAP_NAMES == tuple(s.name for s in MAPS)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_each_spec_has_the_declared_type_structs_and_size(name):
    macro, args = declarations()[name]
    spec = SPECS[name]
    mtype, keyed = MACROS[macro]
    assert spec.type == mtype
    if macro == "RINGBUF_OUTPUT":
        assert (spec.key, spec.value, spec.size) == (None, None, SIZE_FIELDS[args[0]])
        return
    if keyed:
        key, value, size = args
        assert spec.key is mirror(key), "key struct"
    else:
        value, size = args
        assert spec.key is ctypes.c_uint32, "arrays are indexed by a u32"
    assert spec.value is mirror(value), "value struct"
    assert spec.size == SIZE_FIELDS[size], "size"
    assert spec.flags == (maps.BPF_F_NO_PREALLOC if macro in ("LPM_TRIE", "PERCPU_HASH_NOPREALLOC") else 0)


def info(**over) -> bpfsys.MapInfo:
    spec = SPECS["exact4"]
    fields = dict(type=spec.type, key_size=spec.key_size, value_size=spec.value_size,
                  max_entries=64, map_flags=0)
    fields.update(over)
    return bpfsys.MapInfo(**fields)


def test_a_compatible_map_has_no_differences():
    cfg = structs.Config(exact_max=64)
    assert SPECS["exact4"].differences(info(), cfg) == []
    # without the recorded sizes, max entries are not compared
    assert SPECS["exact4"].differences(info(max_entries=5)) == []


def test_every_difference_is_named_with_both_values():
    cfg = structs.Config(exact_max=64)
    got = SPECS["exact4"].differences(
        info(type=bpfsys.MAP_TYPE_HASH, key_size=40, value_size=8, max_entries=32, map_flags=1), cfg)
    assert got == ["type hash (expected per-CPU hash)", "key size 40 (expected 16)",
                   "value size 8 (expected 40)", "flags 1 (expected 0)",
                   "max entries 32 (expected 64)"]


def test_specs_say_which_maps_are_per_cpu_and_where_their_size_is_recorded():
    assert {s.name for s in MAPS if s.percpu} == {"stats", "exact4", "exact6", "exact6x", "src_host4", "src_host6",
                                                       "src_host_slot", "src_prefix4", "src_prefix", "limit_stats"}
    cfg = structs.Config(exact_max=7, ring_bytes=4096)
    assert SPECS["exact6"].max_entries(cfg) == 7 and SPECS["exact6x"].max_entries(cfg) == 7
    assert SPECS["events"].max_entries(cfg) == 4096 and SPECS["config"].max_entries(cfg) == 1
    assert MapSpec("x", bpfsys.MAP_TYPE_RINGBUF, None, None, None).key_size == 0
