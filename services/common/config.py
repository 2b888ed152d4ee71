"""Typed settings read once from prefixed environment variables.

Each service declares a frozen dataclass whose fields are made with `setting()`, naming the
environment variable, its default and one line of documentation. `load(cls)` reads the
environment once and fails fast with ConfigError naming the variable: a value that does not
parse, or that the setting's `check` (services.common.checks) refuses. `describe(cls)` lists the
variables for the configuration reference in docs/; `in_effect(cls)` says which value each
variable has now and where it came from (`xdpguard config`). A variable that carries a
service's own prefix (CAPTURE_, SCORER_, ENFORCER_) but names no setting is a typo the service
would otherwise ignore in silence: `unknown(cls)` names it, with the setting it most resembles,
and a service's `load` logs that as a warning.
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import socket
from typing import Any, Callable, Mapping, TypeVar

from .errors import ConfigError

T = TypeVar("T")
log = logging.getLogger("xdpguard.config")
# XDPGUARD_ is shared with the scripts and compose (XDPGUARD_IMAGE, XDPGUARD_KAFKA_HOST_PORT...):
# a variable with it that no settings class reads is not necessarily a typo
SHARED_PREFIXES = ("XDPGUARD_",)


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def parse_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def setting(env: str, default: Any, doc: str, parse: Callable[[str], Any] | None = None,
            check: Callable[[Any], None] | None = None) -> Any:
    """A dataclass field bound to environment variable `env`. `parse` turns the text into the
    value (default: by the default's type); `check(value)` raises ValueError when the value is
    not acceptable (services.common.checks)."""
    if parse is None:
        parse = _parser_for(default)
    meta = {"env": env, "doc": doc, "parse": parse, "check": check}
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
    """An instance of the settings dataclass `cls` from `environ` (default os.environ);
    `overrides` (field name -> value) win over the environment. ConfigError, one line naming
    the variable, for a value that does not parse or is refused by its check or by the class's
    own cross-setting checks (__post_init__, whose messages name their variables). Read from
    os.environ (no `environ` given), each `unknown` variable is logged as a warning."""
    if environ is None:
        environ = os.environ
        for line in unknown(cls, environ):
            log.warning("%s", line)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        env = f.metadata.get("env")
        if f.name in overrides:
            raw, value = overrides[f.name], overrides[f.name]
        elif env and env in environ:
            raw = environ[env]
            try:
                value = f.metadata["parse"](raw)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{env}={raw!r}: {exc}") from None
        else:
            continue
        check = f.metadata.get("check")
        if check is not None:
            try:
                check(value)
            except ValueError as exc:
                raise ConfigError(f"{env}={raw!r}: {exc}") from None
        values[f.name] = value
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


def in_effect(cls: type, environ: Mapping[str, str] | None = None
              ) -> tuple[list[tuple[str, str, str]], str]:
    """((variable, value in effect, source) for every setting of `cls`, error): source is
    "environment" or "default"; error is "" or the ConfigError text of a refused value (the
    values are then shown as given). Tuples are shown comma separated, as the environment
    spells them."""
    environ = os.environ if environ is None else environ
    try:
        loaded, failure = load(cls, environ), ""
    except ConfigError as exc:
        loaded, failure = None, str(exc)
    rows = []
    for f, (env, default, _doc) in zip(_env_fields(cls), describe(cls)):
        if env in environ:
            source, value = "environment", environ[env]
        else:
            source, value = "default", default
        if loaded is not None:
            value = getattr(loaded, f.name)
        if isinstance(value, tuple):
            value = ",".join(value)
        elif isinstance(value, bool):
            value = str(value).lower()
        rows.append((env, str(value), source))
    return rows, failure


def unknown(cls: type, environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per variable of `environ` (default os.environ) that carries `cls`'s own prefix
    (the part before the first "_" that all its variables share, unless in SHARED_PREFIXES)
    and is none of its settings: the name, and the setting it most resembles if any."""
    environ = os.environ if environ is None else environ
    names = [f.metadata["env"] for f in _env_fields(cls)]
    prefixes = {n.split("_", 1)[0] + "_" for n in names}
    if len(prefixes) != 1 or prefixes <= set(SHARED_PREFIXES):
        return []
    prefix = prefixes.pop()
    out = []
    for env in sorted(e for e in environ if e.startswith(prefix) and e not in names):
        near = difflib.get_close_matches(env, names, n=1, cutoff=0.75)
        hint = f"; did you mean {near[0]}?" if near else ""
        out.append(f"{env} is not a {prefix[:-1].lower()} setting: ignored{hint}")
    return out


def _env_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if "env" in f.metadata]


def default_node_id() -> str:
    return socket.gethostname()
