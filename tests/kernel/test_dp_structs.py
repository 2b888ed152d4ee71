"""services/dataplane/structs.py mirrors bpf/xdpguard.h: every struct size and offset and every
XG_* constant is checked against the header compiled by a C compiler, and the table of maps
(services/dataplane/maps.py) against the maps the kernel creates when the program loads, so
neither side can drift alone."""
import ctypes
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from services.dataplane import bpfsys, loader, structs
from services.dataplane.maps import MAPS, open_pinned, read_config
from tests.support import caps

HEADER = Path(__file__).resolve().parents[2] / "bpf" / "xdpguard.h"


def header_constants() -> list[str]:
    """Every object-like XG_* macro with a value in the header (the include guard has none)."""
    return re.findall(r"^#define (XG_\w+)\s+\S", HEADER.read_text(), re.M)


def compile_and_run(tmp_path_factory, name: str, lines: list[str]) -> dict[tuple[str, str], int]:
    """Print statements run in a C program that includes the header: {(word1, word2): value}."""
    cc = shutil.which("clang") or shutil.which("gcc") or shutil.which("cc")
    caps.require(cc is not None, "a C compiler (clang or gcc) is needed")
    src = ("#include <stdio.h>\n#include <stddef.h>\n"
           f'#include "{HEADER}"\nint main(void) {{\n' + "\n".join(lines) + "\nreturn 0;\n}\n")
    d = tmp_path_factory.mktemp(name)
    (d / f"{name}.c").write_text(src)
    subprocess.run([cc, "-o", str(d / name), str(d / f"{name}.c")], check=True)
    out = subprocess.run([str(d / name)], check=True, capture_output=True, text=True).stdout
    return {tuple(line.split()[:2]): int(line.split()[2]) for line in out.splitlines()}


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory):
    lines = []
    for cname, mirror in structs.MIRRORS.items():
        lines.append(f'printf("{cname} size %zu\\n", sizeof(struct {cname}));')
        for field, _ in mirror._fields_:
            lines.append(f'printf("{cname} {field} %zu\\n", offsetof(struct {cname}, {field}));')
    return compile_and_run(tmp_path_factory, "layout", lines)


@pytest.fixture(scope="module")
def c_constants(tmp_path_factory):
    lines = [f'printf("const {n} %llu\\n", (unsigned long long)({n}));' for n in header_constants()]
    return {name: v for (_, name), v in compile_and_run(tmp_path_factory, "consts", lines).items()}


@pytest.mark.parametrize("cname", sorted(structs.MIRRORS))
def test_mirror_size_and_offsets_match_the_header(c_layout, cname):
    mirror = structs.MIRRORS[cname]
    assert ctypes.sizeof(mirror) == c_layout[(cname, "size")]
    for field, _ in mirror._fields_:
        assert getattr(mirror, field).offset == c_layout[(cname, field)], f"{cname}.{field}"


def test_every_struct_in_the_header_has_a_mirror():
    import re
    declared = set(re.findall(r"^struct (xg_\w+) \{", HEADER.read_text(), re.M))
    assert declared == set(structs.MIRRORS)


def test_every_constant_of_the_header_is_mirrored_with_its_value(c_constants):
    names = header_constants()
    assert len(names) >= 15 and "XG_MAGIC" in names and "XG_EV_IPV6" in names
    assert {n: getattr(structs, n, None) for n in names} == c_constants


def test_python_declares_no_constant_the_header_lacks():
    mirrored = {n for n, v in vars(structs).items() if n.startswith("XG_") and isinstance(v, int)}
    assert mirrored == set(header_constants())


def test_the_map_table_matches_the_maps_the_kernel_creates():
    """Type, key and value size, flags and max entries of every pinned map, at sizes that differ
    from each other and from the defaults, so a spec reading the wrong size field fails."""
    caps.require(caps.have_root() and caps.have_bpffs() and caps.have_bcc(), "needs root, bpffs, BCC")
    pin_dir = caps.fresh_pin_dir()
    loader.load([], pin_dir=pin_dir, sizes=loader.Sizes(exact=72, prefix=40, allow=24, limit=8,
                                                        ring_pages=4))
    try:
        assert sorted(os.listdir(pin_dir)) == sorted([s.name for s in MAPS] + ["prog"])
        cfg_fd, _ = open_pinned(pin_dir, "config")
        cfg = read_config(cfg_fd, pin_dir)
        os.close(cfg_fd)
        assert (cfg.exact_max, cfg.prefix_max, cfg.allow_max, cfg.limit_max, cfg.ring_bytes) == \
            (72, 40, 24, 8, 4 * 4096)
        for spec in MAPS:
            fd = bpfsys.obj_get(f"{pin_dir}/{spec.name}")
            try:
                assert spec.differences(bpfsys.map_info(fd), cfg) == [], spec.name
            finally:
                os.close(fd)
    finally:
        loader.unload_all(pin_dir)
