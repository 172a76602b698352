"""The source address of a request, believing X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from django.http import HttpRequest

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def client_address(request: HttpRequest, trusted: Sequence[IPNetwork]) -> str:
    """The first address, walking X-Forwarded-For from the right, that is not a trusted proxy.

    Without a trusted peer the header is ignored: anyone can write it.
    """
    peer = request.META.get("REMOTE_ADDR", "") or ""
    peer_ip = _parse(peer)
    if peer_ip is None or not any(peer_ip in net for net in trusted):
        return peer
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        hop_ip = _parse(hop)
        if hop_ip is None:
            return peer  # a garbled chain: fall back to the proxy we can see
        if not any(hop_ip in net for net in trusted):
            return str(hop_ip)
    return peer
