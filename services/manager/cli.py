"""`xdpguard`: the node CLI. Each verb group lives in its own module with a `register(subparsers)`."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from aiokafka.errors import KafkaError

from services.common.errors import XdpguardError
from services.manager.ruleargs import bounded

# Verb modules, in the order their verbs appear in --help.
VERB_MODULES = [
    "services.manager.load_cmd",
    "services.manager.rules_cmd",
    "services.manager.monitor_cmd",
    "services.manager.topics_cmd",
    "services.manager.groups_cmd",
    "services.manager.top_cmd",
    "services.manager.config_cmd",
    "services.manager.demo_cmd",
    "services.manager.analyze_cmd",
    "services.manager.flows_cmd",
    "services.manager.train_cmd",
    "services.manager.learn_cmd",
    "services.manager.evaluate_cmd",
    "services.manager.models_cmd",
]

EPILOG = """examples:
  xdpguard topics create          create the Kafka topics (idempotent)
  xdpguard topics wait --timeout 60
"""


class Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments in one line (no usage dump) and exits 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def bound_numbers(parser: argparse.ArgumentParser) -> None:
    """Give every plain int/float flag of every verb a bounded type (ruleargs.bounded: whole
    numbers 0..2**31-1, numbers 0..1e9, never NaN or infinite), so a wild value is one argparse
    line before the verb runs; flags with a bounded type of their own keep it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                bound_numbers(sub)
        elif action.type is int:
            action.type = bounded(int, 0, 2**31 - 1)
        elif action.type is float:
            action.type = bounded(float, 0, 1e9)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="xdpguard", description="XDP firewall driven by a streaming ML pipeline",
                    epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log library messages too")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser)
    sub.required = True
    for name in VERB_MODULES:
        importlib.import_module(name).register(sub)
    bound_numbers(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # aiokafka logs every failed connection attempt; the CLI reports the outcome once.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        return int(args.func(args) or 0)
    except XdpguardError as exc:
        print(f"xdpguard {args.verb}: error: {_why_not_loaded(exc, args.verb)}", file=sys.stderr)
        return 1
    except KafkaError as exc:
        print(f"xdpguard {args.verb}: error: Kafka: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def _why_not_loaded(exc: XdpguardError, verb: str) -> XdpguardError:
    """`exc`, or, for "no program pinned" where the pin dir is not on a bpffs here (e.g. inside
    `ip netns exec`, which hides the host's), the error saying so and how to run `verb`."""
    from services.common.errors import ConfigError, NotLoaded

    if not isinstance(exc, NotLoaded):
        return exc
    from services.common.settings import load_common

    from .load_cmd import check_bpffs

    try:
        check_bpffs(load_common().pin_dir, verb)
    except ConfigError as hidden:
        return hidden
    return exc


if __name__ == "__main__":
    sys.exit(main())
