"""Exceptions shared by every xdpguard service and the CLI.

    XdpguardError                 base; `retriable` says whether trying again may help
    ├── ConfigError               a setting is missing or malformed
    ├── KernelError               BPF/XDP operation refused by the kernel
    │   ├── NotSupported          a kernel feature this host lacks
    │   ├── MapMismatch           a pinned map's layout differs from this build's structs
    │   ├── MapFull               a rule map has no room left
    │   └── NotLoaded             no xdpguard program/pins where expected
    ├── KafkaUnavailable          the broker could not be reached (retriable)
    ├── DecodeError               a record could not be decoded (goes to the dead-letter topic)
    └── ModelError                a model file is missing, changed or does not match its metadata

The CLI prints `str(err)` as one line and exits non-zero; tracebacks are for bugs only.
"""
from __future__ import annotations

import sys
from typing import Callable, NoReturn


class XdpguardError(Exception):
    retriable = False


class ConfigError(XdpguardError):
    pass


class KernelError(XdpguardError):
    pass


class NotSupported(KernelError):
    pass


class MapMismatch(KernelError):
    pass


class MapFull(KernelError):
    pass


class NotLoaded(KernelError):
    pass


class KafkaUnavailable(XdpguardError):
    retriable = True


class DecodeError(XdpguardError):
    pass


class ModelError(XdpguardError):
    pass


def exit_on_error(prog: str, main: Callable[[], int | None]) -> NoReturn:
    """Run a command's `main()` and exit with the status it returns (None: 0). An XdpguardError
    (no broker, not root, no BPF, a bad setting) ends it as the CLI ends: one line
    `<prog>: error: <what>` on stderr and status 1, never a traceback. The benches use it;
    the services' entry points do the same and also catch aiokafka's errors, which this
    package does not import."""
    try:
        status = main()
    except XdpguardError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(1)
    sys.exit(status or 0)
