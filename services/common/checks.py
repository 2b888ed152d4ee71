"""Validators for settings: `setting(..., check=...)` (services.common.config) calls one on the
parsed value and turns its ValueError into a ConfigError naming the environment variable.

Each factory returns `check(value) -> None`, raising ValueError with a message that says what
is wrong and what is expected (the variable's name is added by config.load):

    at_least(n)        a number >= n (and finite)
    between(lo, hi)    a number in [lo, hi]
    above(x)           a number > x (and finite)
    seconds(hi)        a duration in seconds, > 0 and <= hi (services turn it into ns: 1e308
                       overflowed there, a traceback, not a ConfigError)
    one_of(*choices)   one of the given texts
    port               a TCP port, 0-65535 (0 = off)
    host               an IP address or a host name
    bootstrap          host:port[,host:port...]
    kafka_name         a Kafka topic/group name part: [A-Za-z0-9._-]+ (empty allowed if told)
    absolute_path      an absolute path
    file_or_empty      "" or an existing file
    not_a_file         a path that is not an existing non-directory
    networks           every item a CIDR (or address)
    addresses          every item an IP address
    ifnames            every item a valid interface name
    instant_or_empty   "" or a moment: ISO 8601 with a UTC offset (or Z), or Unix seconds

`instant_ns(text)` is the parser `instant_or_empty` checks with (epoch ns), for the services that
use such a value.
"""
from __future__ import annotations

import ipaddress
import math
import os
import re
from datetime import datetime
from typing import Any, Callable

Check = Callable[[Any], None]

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")
_KAFKA_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def _finite(value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number, not {value}")


def at_least(n: float) -> Check:
    def check(value: Any) -> None:
        _finite(value)
        if value < n:
            raise ValueError(f"must be at least {n}")
    return check


def above(x: float) -> Check:
    def check(value: Any) -> None:
        _finite(value)
        if value <= x:
            raise ValueError(f"must be above {x}")
    return check


def seconds(hi: float, zero: bool = False, lo: float = 0.0) -> Check:
    """A duration: at least `lo` (and above 0; 0 itself allowed with `zero`) and at most `hi`
    seconds."""
    def check(value: Any) -> None:
        _finite(value)
        if not (zero and value == 0) and not (lo <= value <= hi and value > 0):
            low = f"at least {lo:g}" if lo else ("at least 0" if zero else "above 0")
            raise ValueError(f"must be {low} and at most {hi:g} s")
    return check


def one_of(*choices: str) -> Check:
    def check(value: Any) -> None:
        if value not in choices:
            shown = ", ".join(c or '""' for c in choices)
            raise ValueError(f"must be one of {shown}")
    return check


def port(value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number, 0-65535")


def _is_host(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return bool(_HOSTNAME.match(text))


def host(value: str) -> None:
    if not _is_host(value):
        raise ValueError("must be an IP address or a host name")


def bootstrap(value: str) -> None:
    servers = [s.strip() for s in value.split(",") if s.strip()]
    if not servers:
        raise ValueError("must name at least one host:port")
    for server in servers:
        if server.startswith("["):  # [IPv6]:port
            name, _, rest = server[1:].partition("]")
            number = rest[1:] if rest.startswith(":") else ""
        else:
            name, _, number = server.rpartition(":")
        if not name or not number.isdigit() or not 0 < int(number) < 65536 or not _is_host(name):
            raise ValueError(f"{server!r} is not host:port")


def kafka_name(allow_empty: bool = False) -> Check:
    def check(value: str) -> None:
        if value == "" and allow_empty:
            return
        if not _KAFKA_NAME.match(value) or len(value) > 200:
            raise ValueError("must be 1-200 characters of A-Z a-z 0-9 . _ - (a Kafka name part)")
    return check


def absolute_path(value: str) -> None:
    if not os.path.isabs(value):
        raise ValueError("must be an absolute path")


def file_or_empty(value: str) -> None:
    if value and not os.path.isfile(value):
        raise ValueError("no such file")


def existing_file(value: str) -> None:
    if not os.path.isfile(value):
        raise ValueError("no such file")


def not_a_file(value: str) -> None:
    if value and os.path.exists(value) and not os.path.isdir(value):
        raise ValueError("exists and is not a directory")


def networks(values: tuple) -> None:
    for v in values:
        try:
            ipaddress.ip_network(v, strict=False)
        except ValueError:
            raise ValueError(f"{v!r} is not a CIDR or address") from None


def addresses(values: tuple) -> None:
    for v in values:
        try:
            ipaddress.ip_address(v)
        except ValueError:
            raise ValueError(f"{v!r} is not an IP address") from None


def ifnames(values: tuple) -> None:
    for v in values:
        if not 0 < len(v) < 16 or v in (".", "..") or any(c in v for c in "/: \t"):
            raise ValueError(f"{v!r} is not an interface name (1-15 characters, no / : or space)")


def between(lo: float, hi: float) -> Check:
    def check(value: Any) -> None:
        _finite(value)
        if not lo <= value <= hi:
            raise ValueError(f"must be {lo}-{hi}")
    return check


def instant_ns(text: str) -> int:
    """Unix epoch ns of `text`: ISO 8601 with a UTC offset or Z (2026-12-07T08:00:00Z), or Unix
    seconds (1796630400). ValueError otherwise, a time without an offset included: read by a
    service in another time zone it would name another moment."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError("must be ISO 8601 with a UTC offset (2026-12-07T08:00:00Z) or Unix "
                             "seconds") from None
        if moment.tzinfo is None:
            raise ValueError("needs a UTC offset or Z (a time without one depends on the time "
                             "zone of whoever reads it)") from None
        return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("must be a Unix time in seconds, at least 0")
    return int(seconds * 1e9)


def instant_or_empty(value: str) -> None:
    if value.strip():
        instant_ns(value)
