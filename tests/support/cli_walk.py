"""Walking the xdpguard CLI's argparse tree, for tests that try every verb."""
from __future__ import annotations

import argparse

from services.manager import cli


def verb_paths(parser: argparse.ArgumentParser | None = None, path: tuple = ()):
    """Every runnable verb path, e.g. ('add',), ('allow', 'del'), ('topics', 'tail')."""
    parser = parser or cli.build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from verb_paths(sub, (*path, name))
            return
    yield path
