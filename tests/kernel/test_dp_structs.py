"""services/dataplane/structs.py mirrors bpf/xdpguard.h: every size and offset is checked against
the header compiled by a C compiler, so neither side can drift alone."""
import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from services.dataplane import structs
from tests.support import caps

HEADER = Path(__file__).resolve().parents[2] / "bpf" / "xdpguard.h"


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory):
    cc = shutil.which("clang") or shutil.which("gcc") or shutil.which("cc")
    caps.require(cc is not None, "a C compiler (clang or gcc) is needed")
    lines = []
    for cname, mirror in structs.MIRRORS.items():
        lines.append(f'printf("{cname} size %zu\\n", sizeof(struct {cname}));')
        for field, _ in mirror._fields_:
            lines.append(f'printf("{cname} {field} %zu\\n", offsetof(struct {cname}, {field}));')
    src = ("#include <stdio.h>\n#include <stddef.h>\n"
           f'#include "{HEADER}"\nint main(void) {{\n' + "\n".join(lines) + "\nreturn 0;\n}\n")
    d = tmp_path_factory.mktemp("layout")
    (d / "layout.c").write_text(src)
    subprocess.run([cc, "-o", str(d / "layout"), str(d / "layout.c")], check=True)
    out = subprocess.run([str(d / "layout")], check=True, capture_output=True, text=True).stdout
    return {tuple(line.split()[:2]): int(line.split()[2]) for line in out.splitlines()}


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


def test_magic_matches_the_header():
    import re
    m = re.search(r"#define XG_MAGIC (0x[0-9a-fA-F]+)u", HEADER.read_text())
    assert int(m.group(1), 16) == structs.XG_MAGIC
