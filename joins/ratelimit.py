"""Fixed-window rate limits in the shared cache (Redis across servers, memory on one)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.core.cache import cache

UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600}


@dataclass(frozen=True)
class Rate:
    count: int
    period: int  # seconds


def parse_rate(text: str) -> Rate | None:
    """'20/s', '600/m', '1000/h'; 'off' (or empty) means no limit. Raises ValueError otherwise."""
    text = (text or "").strip().lower()
    if text in {"", "off", "none", "0"}:
        return None
    count, _, unit = text.partition("/")
    if not count.isdigit() or int(count) <= 0 or unit not in UNITS:
        raise ValueError(f"rate {text!r} is not of the form N/s, N/m or N/h (or 'off')")
    return Rate(int(count), UNITS[unit])


def hit(scope: str, key: str, rate: Rate | None) -> int:
    """Count one hit; return 0 when allowed, else the seconds to wait before trying again.

    A cache that cannot be reached does not block joins: the limit is a guard against floods,
    not an access control, and failing closed here would turn a Redis outage into a join outage.
    """
    if rate is None:
        return 0
    now = time.time()
    window = int(now // rate.period)
    cache_key = f"rl:{scope}:{key}:{window}"
    try:
        added = cache.add(cache_key, 1, timeout=rate.period + 1)
        count = 1 if added else cache.incr(cache_key)
    except ValueError:  # the key expired between add and incr
        cache.add(cache_key, 1, timeout=rate.period + 1)
        count = 1
    except Exception:
        return 0
    if count > rate.count:
        return max(1, int((window + 1) * rate.period - now + 0.999))
    return 0
