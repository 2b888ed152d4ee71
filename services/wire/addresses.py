"""IP addresses on the wire: textual <-> packed (4 or 16 raw bytes), as the codec's records and
the Kafka keys carry them (services.wire.codec, services.wire.partition), with the caches real
traffic makes worthwhile (it repeats addresses)."""
from __future__ import annotations

import socket

from services.common.errors import DecodeError
from services.records.rules import canonical_address

_CACHE_MAX = 1 << 16
_PACKED: dict[str, bytes] = {}
_UNPACKED: dict[bytes, str] = {}


def packed_address(text: str) -> bytes:
    """Textual IPv4/IPv6 -> its packed form, 4 or 16 raw bytes as on the wire and as a Kafka key
    (ipaddress's `.packed`; cached: real traffic repeats addresses). ValueError if not an
    address. Not the data plane's map form: services.dataplane.structs.addr_bytes always gives
    16 bytes, IPv4 mapped."""
    raw = _PACKED.get(text)
    if raw is None:
        try:
            raw = socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
        except (OSError, TypeError) as exc:
            raise ValueError(f"not an IP address: {text!r}") from exc
        if len(_PACKED) >= _CACHE_MAX:
            _PACKED.clear()
        _PACKED[text] = raw
    return raw


def address_from_packed(raw: bytes) -> str:
    """packed_address's inverse: 4 or 16 raw bytes -> text in its one form (an IPv4-mapped
    16-byte address is the IPv4 address, as everywhere: records.rules.canonical_address);
    DecodeError for anything else."""
    if type(raw) is not bytes:
        raise DecodeError(f"address must be 4 or 16 bytes, got {type(raw).__name__}")
    text = _UNPACKED.get(raw)
    if text is None:
        if len(raw) not in (4, 16):
            raise DecodeError(f"address must be 4 or 16 bytes, got {len(raw)}")
        if len(raw) == 4:
            text = socket.inet_ntop(socket.AF_INET, raw)
        else:
            text = canonical_address(socket.inet_ntop(socket.AF_INET6, raw))
        if len(_UNPACKED) >= _CACHE_MAX:
            _UNPACKED.clear()
        _UNPACKED[raw] = text
    return text


def addresses(raw: list) -> list[str]:
    """address_from_packed of each entry of a decoded record's address column; the cached
    ones (real traffic repeats addresses) looked up in one C pass, the rest, and anything that
    is not an address (DecodeError), through address_from_packed."""
    try:
        texts = list(map(_UNPACKED.get, raw))
    except TypeError:  # an unhashable entry (a list, a map): address_from_packed refuses it
        texts = [None] * len(raw)
    if None in texts:
        texts = [address_from_packed(a) if t is None else t for t, a in zip(texts, raw)]
    return texts
