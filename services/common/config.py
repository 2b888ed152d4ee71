"""Typed settings read once from prefixed environment variables.

Each service declares a frozen dataclass whose fields are made with `setting()`, naming the
environment variable, its default and one line of documentation. `load(cls)` reads the
environment once and fails fast with ConfigError naming the variable. `describe(cls)` lists the
variables for the configuration reference in docs/.
"""
from __future__ import annotations

import dataclasses
import os
import socket
from typing import Any, Callable, Mapping, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def parse_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def setting(env: str, default: Any, doc: str, parse: Callable[[str], Any] | None = None) -> Any:
    """A dataclass field bound to environment variable `env`."""
    if parse is None:
        parse = _parser_for(default)
    meta = {"env": env, "doc": doc, "parse": parse}
    if callable(default) and not isinstance(default, (str, int, float, bool, tuple)):
        return dataclasses.field(default_factory=default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _parser_for(default: Any) -> Callable[[str], Any]:
    if isinstance(default, bool):
        return parse_bool
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    if isinstance(default, tuple):
        return parse_list
    return str


def load(cls: type[T], environ: Mapping[str, str] | None = None, **overrides: Any) -> T:
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in overrides:
            values[f.name] = overrides[f.name]
            continue
        env = f.metadata.get("env")
        if env and env in environ:
            raw = environ[env]
            try:
                values[f.name] = f.metadata["parse"](raw)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{env}={raw!r}: {exc}") from None
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None


def describe(cls: type) -> list[tuple[str, str, str]]:
    """(variable, default, doc) for every setting of `cls`."""
    rows = []
    for f in dataclasses.fields(cls):
        if "env" not in f.metadata:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = "(computed)"
        else:
            default = "(required)"
        if isinstance(default, tuple):
            default = ",".join(default)
        rows.append((f.metadata["env"], str(default), f.metadata["doc"]))
    return rows


def default_node_id() -> str:
    return socket.gethostname()
