"""Every metric, setting and verb the documentation names exists (issue 14: troubleshooting.md
named `xdpguard_capture_buffered_events`, a metric that never was).

- metrics: every `xdpguard_*` name in README.md and docs/*.md is a family or sample of a service's
  registry (capture, enforcer, scorer), and a shorthand `_name` in a paragraph that named a
  family of the same service before it expands to one;
- settings: every `XDPGUARD_*`, `CAPTURE_*`, `SCORER_*`, `ENFORCER_*` name is a setting
  (`xdpguard config`) or a variable of scripts/ or compose/;
- verbs: every `xdpguard VERB [ACTION] --flag ...` in code (spans and blocks), and every row of
  the README's CLI table, is a verb (and action) of the CLI's parser taking those flags.
"""
import argparse
import re
from pathlib import Path

from services.common.config import describe
from services.manager import cli
from services.manager.config_cmd import SECTIONS, settings_classes

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def code_texts(text: str) -> list[str]:
    """Fenced blocks and inline code spans of a Markdown text."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M)
    rest = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)
    return blocks + re.findall(r"`([^`\n]+)`", rest)


# -- metrics ---------------------------------------------------------------------------------

def metric_names() -> set[str]:
    from services.capture.service import Capture
    from services.capture.settings import CaptureSettings
    from services.common.settings import CommonSettings
    from services.enforcer.metrics import EnforcerMetrics
    from services.scorer.metrics import ScorerMetrics

    cap = Capture(CommonSettings(), CaptureSettings())
    cap.datapath = type("FakeDatapath", (), {"stats": lambda self: {"seen": 0}})()
    names = set()
    for registry in (cap.registry, EnforcerMetrics().registry, ScorerMetrics().registry):
        for family in registry.collect():
            names.add(family.name)
            names.update(s.name for s in family.samples)
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
            names.update(family.name + x for x in suffixes.get(family.type, ()))
    return names


def test_every_metric_named_in_the_docs_exists():
    known = metric_names()
    missing = []
    for doc in DOCS:
        for para in re.split(r"\n\s*\n", doc.read_text()):
            family = None
            for m in re.finditer(r"\bxdpguard_[a-z0-9_]+|`(_[a-z][a-z0-9_]*)", para):
                name = m.group(0)
                if name.startswith("xdpguard_"):
                    if name not in known:
                        missing.append(f"{doc.name}: {name}")
                    family = "_".join(name.split("_")[:2])
                elif family is not None and family + m.group(1) not in known:
                    missing.append(f"{doc.name}: {m.group(1)} (as {family}{m.group(1)})")
    assert not missing, "\n".join(missing)


# -- settings --------------------------------------------------------------------------------

def test_every_setting_named_in_the_docs_exists():
    settings = {env for _t, module in SECTIONS for cls in settings_classes(module)
                for env, _d, _doc in describe(cls)}
    elsewhere = "\n".join(p.read_text(errors="replace") for d in ("scripts", "compose", "tests/support")
                          for p in (ROOT / d).rglob("*") if p.is_file())
    missing = set()
    for doc in DOCS:
        text = doc.read_text()
        for m in re.finditer(r"\b(?:XDPGUARD|CAPTURE|SCORER|ENFORCER)_[A-Z0-9_]*", text):
            name = m.group(0)
            if name.endswith("_") or text[m.end():m.end() + 1] == "*":
                continue  # a prefix (`CAPTURE_`, `XDPGUARD_KAFKA_SSL_*`)
            if name not in settings and not re.search(rf"\b{name}\b", elsewhere):
                missing.add(f"{doc.name}: {name}")
    assert not missing, "\n".join(sorted(missing))


# -- verbs -----------------------------------------------------------------------------------

def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def check_command(tokens: list[str]) -> str:
    """"" when `tokens` (what follows `xdpguard`) is a valid verb path with known flags."""
    parser = cli.build_parser()
    path = []
    for tok in tokens:
        tok = tok.strip("[]()`,")
        if not tok or tok in ("...", "…"):
            continue
        if tok.startswith("-"):
            flag = tok.split("=", 1)[0]
            options = {o for a in parser._actions for o in a.option_strings}
            if flag not in options:
                return f"xdpguard {' '.join(path)}: no option {flag}"
            continue
        subs = subparsers(parser)
        if subs:
            names = re.split(r"[|/]", tok)
            unknown = [n for n in names if n not in subs]
            if unknown:
                return f"xdpguard {' '.join(path)}: no verb {'|'.join(unknown)}"
            path.append(names[0])
            parser = subs[names[0]]
    return ""


# where a command starts: a line's start (after `$ `, `sudo `, VAR=value, a path to the
# binary) or a shell operator; "no xdpguard program pinned" in a message is prose
COMMAND = re.compile(r"(?:^|[|;(]|&&)\s*(?:\$\s+)?(?:sudo\s+)?(?:[A-Z_]+=\S*\s+)*"
                     r"(?:\S*/)?xdpguard\s+([a-z-].*)")


def commands_in(code: str) -> list[list[str]]:
    out = []
    for line in code.splitlines():
        for m in COMMAND.finditer(line):
            rest = re.split(r"\s(?:\||;|&&|#|>|2>)\s?|\s{2,}", m.group(1))[0]
            out.append(rest.split())
    return out


def test_every_verb_and_flag_named_in_the_docs_exists():
    bad = []
    for doc in DOCS:
        for code in code_texts(doc.read_text()):
            for tokens in commands_in(code):
                problem = check_command(tokens)
                if problem:
                    bad.append(f"{doc.name}: `xdpguard {' '.join(tokens)}`: {problem}")
    assert not bad, "\n".join(bad)


def test_the_readme_cli_table_names_real_verbs():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## The CLI", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    assert rows
    bad = []
    for row in rows:
        for span in re.findall(r"`([^`]+)`", row.replace("\\|", "|")):
            first = span.split()[0]
            if first.startswith("-"):
                continue  # flags of the verb before, e.g. (`--src --dst`)
            problem = check_command(span.split())
            if problem:
                bad.append(f"`{span}`: {problem}")
    assert not bad, "\n".join(bad)


# -- tests cited as evidence -----------------------------------------------------------------

def test_every_test_the_docs_cite_exists():
    """A promise backed by `tests/…/test_x.py` (and `::test_name`, or a following `::test_name`
    of the same file) is backed only if that file and function exist: README.md and
    operations.md cited tests/kernel/test_ops_by_hand.py, which never existed."""
    missing = []
    for doc in [*DOCS, ROOT / "models" / "README.md"]:
        text = doc.read_text()
        for path, names in re.findall(r"(tests/[\w/]+\.py)((?:`?,? ?`?::\w+)*)", text):
            f = ROOT / path
            if not f.is_file():
                missing.append(f"{doc.name}: {path}")
                continue
            source = f.read_text()
            for name in re.findall(r"::(\w+)", names):
                if not re.search(rf"def {name}\b", source):
                    missing.append(f"{doc.name}: {path}::{name}")
    assert not missing, missing
