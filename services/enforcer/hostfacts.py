"""Facts about this host that the enforcer's policy protects, gathered once at start.

`local_addresses()` lists this network namespace's own addresses (`ip -j addr show`), never a
verdict's target. `build_allowlist()` gathers the networks never blocked: loopback, every address
the Kafka bootstrap hosts resolve to, ENFORCER_ALLOWLIST and the kernel's own allowlist.
`policy_config()` puts both, with the settings' bounds, into the RulePolicyConfig the service
starts with. Lookups that fail are logged and skipped: the rest of the allowlist still holds.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import socket
import subprocess

from services.common.settings import CommonSettings
from services.wire.kafka import bootstrap_hosts

from .maps import RuleMaps
from .policy import RulePolicyConfig
from .settings import EnforcerSettings

log = logging.getLogger("xdpguard.enforcer")

LOOPBACK = ("127.0.0.0/8", "::1/128")


def policy_config(common: CommonSettings, settings: EnforcerSettings,
                  maps: RuleMaps) -> RulePolicyConfig:
    """The policy's configuration on this host: allowlist from build_allowlist(), local
    addresses plus ENFORCER_PROTECT_ADDRESSES, TTLs and caps from the settings."""
    return RulePolicyConfig(
        node_id=common.node_id, allowlist=tuple(build_allowlist(common, settings, maps)),
        local_addresses=tuple(local_addresses()) + tuple(settings.protect),
        ttl_s=settings.ttl_s, max_ttl_s=settings.max_ttl_s,
        max_per_second=settings.max_per_second, max_per_minute=settings.max_per_minute,
        max_per_source=settings.max_per_source, max_model_rules=settings.max_model_rules)


def build_allowlist(common: CommonSettings, settings: EnforcerSettings,
                    maps: RuleMaps) -> list[str]:
    """Networks never blocked, as normalised CIDR texts in first-seen order without repeats:
    loopback, the Kafka bootstrap addresses (/32 or /128), ENFORCER_ALLOWLIST, then the kernel
    allowlist read from `maps` (skipped with a warning when unreadable). ValueError on a
    malformed ENFORCER_ALLOWLIST entry."""
    cidrs = list(LOOPBACK)
    for host in bootstrap_hosts(common):
        for addr in resolve(host):
            cidrs.append(f"{addr}/{32 if ':' not in addr else 128}")
    cidrs.extend(settings.allowlist)
    try:
        cidrs.extend(str(c) for c in maps.allowlist())
    except Exception as exc:  # an unreadable kernel allowlist must not hide the others
        log.warning("cannot read the kernel allowlist: %s", exc)
    return list(dict.fromkeys(str(ipaddress.ip_network(c, strict=False)) for c in cidrs))


def resolve(host: str) -> list[str]:
    """Sorted addresses `host` resolves to; [] (with a warning) when it does not resolve."""
    try:
        return sorted({ai[4][0] for ai in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)})
    except socket.gaierror:
        log.warning("cannot resolve Kafka bootstrap host %s for the allowlist", host)
        return []


def local_addresses() -> list[str]:
    """This network namespace's own addresses as texts (never a verdict's target); [] with a
    warning when `ip` cannot list them (then only loopback is protected)."""
    try:
        out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True,
                             check=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("cannot list local addresses (%s); only loopback protected", exc)
        return []
    return [a["local"] for link in json.loads(out) for a in link.get("addr_info", [])
            if a.get("local")]
