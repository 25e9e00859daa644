"""The client's address behind trusted reverse proxies (``TRUSTED_PROXIES``), and nowhere else.

Rate limits for anonymous callers are keyed on the client address, so whoever can choose
that address can choose their own budget. ``X-Forwarded-For`` is therefore read only
when the TCP peer is one of the operator's proxies (CIDRs in ``TRUSTED_PROXIES``), and
then from the right: each proxy appends the address it saw, so the right-most entry that
is not itself a trusted proxy is the first address no one of ours vouches for, whatever
the client wrote to the left of it. deploy/nginx/chat.conf goes further and *sets* the
header to ``$remote_addr``, so through it the header holds exactly one address.

A leaf: the standard library and Django's settings only (the gateway, the websocket
consumer and the logs may all call it).
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any

from django.conf import settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def _networks(spec: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr.strip(), strict=False) for cidr in spec if cidr.strip())


def parse_networks(spec: list[str] | tuple[str, ...]) -> tuple[Network, ...]:
    """CIDRs (or single addresses) as networks; raises ValueError for a malformed entry."""
    return _networks(tuple(spec))


@lru_cache(maxsize=1024)
def _is_trusted(address: str, spec: tuple[str, ...]) -> bool:
    # Cached per address: a server sees a handful of proxy addresses, so the hot path pays a dict lookup.
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in _networks(spec))


def is_trusted_proxy(address: str) -> bool:
    return bool(address) and _is_trusted(address, tuple(settings.TRUSTED_PROXIES))


def client_address(peer: str, forwarded_for: str | None) -> str:
    """The client's address: ``peer`` unless it is a trusted proxy that forwarded the request.

    ``forwarded_for`` is the raw ``X-Forwarded-For`` value (several headers joined by commas).
    Walking from the right, trusted proxies are skipped; the first other entry is the client.
    A malformed entry there stops the walk at the last good address (never the client's word).
    """
    if not forwarded_for or not is_trusted_proxy(peer):
        return peer
    spec = tuple(settings.TRUSTED_PROXIES)
    client = peer
    for hop in reversed(forwarded_for.split(",")):
        hop = hop.strip()
        try:
            ipaddress.ip_address(hop.strip("[]"))
        except ValueError:
            break  # garbage (or a "for=" token): do not go further left than what a proxy wrote
        client = hop
        if not _is_trusted(hop, spec):
            break
    return client


def client_ip(meta_or_scope: dict[str, Any]) -> str:
    """The client address from a Django ``request.META`` or an ASGI scope (see ``client_address``)."""
    if "REMOTE_ADDR" in meta_or_scope or "HTTP_X_FORWARDED_FOR" in meta_or_scope:
        peer = str(meta_or_scope.get("REMOTE_ADDR") or "")
        return client_address(peer, meta_or_scope.get("HTTP_X_FORWARDED_FOR"))
    client = meta_or_scope.get("client")
    peer = str(client[0]) if client else ""
    forwarded = [v for k, v in meta_or_scope.get("headers") or () if k == b"x-forwarded-for"]
    return client_address(peer, b",".join(forwarded).decode("latin-1") if forwarded else None)
