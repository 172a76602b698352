"""Go durations (`5m`, `1h30m`) and RFC 3339 timestamps, as Teleport writes them in a token.

Pure Python, no Django. A token's `aws_iid_ttl` is a Go `time.Duration` string and its
`metadata.expires` an RFC 3339 timestamp; parsing them here with Go's rules (and formatting them
back in the short form users write) keeps a token exported by this product readable by `tctl`
and the other way round. Errors are ValueErrors whose message is fit to show a user.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation

from tokens.constants import DEFAULT_IID_TTL
from tokens.errors import _show

__all__ = ["format_duration", "format_timestamp", "parse_duration", "parse_timestamp"]

# --------------------------------------------------------------------------------------------
# Durations (Go's time.ParseDuration syntax)

_DURATION_UNITS_NS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign, as Go prints it
    "\u03bcs": 1_000,  # Greek mu, which Go also accepts
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION_ELEMENT = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)?")
_DURATION_MAX_LENGTH = 64
# Go's time.Duration is an int64 of nanoseconds; beyond that Go reports an overflow.
_DURATION_MAX_NS = 2**63 - 1


def _duration_ns(text: str) -> int:
    if not isinstance(text, str):
        raise ValueError(f"a duration must be a string such as {DEFAULT_IID_TTL!r}")
    if not text:
        raise ValueError(f"the duration is empty; write one such as {DEFAULT_IID_TTL!r}")
    if len(text) > _DURATION_MAX_LENGTH:
        raise ValueError("the duration is too long to be a real one")
    rest, sign = text, 1
    if rest[0] in "+-":
        sign = -1 if rest[0] == "-" else 1
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise ValueError(f"{_show(text)} is not a duration; write one such as {DEFAULT_IID_TTL!r}")
    total = Decimal(0)
    while rest:
        match = _DURATION_ELEMENT.match(rest)
        number, unit = (match.group(1), match.group(2)) if match else ("", None)
        if number in ("", "."):
            raise ValueError(
                f"{_show(text)} is not a duration; write a number followed by a unit, such as "
                f"{DEFAULT_IID_TTL!r}, '90s' or '1h30m'"
            )
        if unit is None:
            trailing = rest[len(number) :]
            if trailing and trailing[0].isalpha():
                bad = re.match(r"[^0-9.]+", trailing)
                raise ValueError(
                    f"{_show(text)} has the unknown unit {bad.group(0) if bad else trailing!r}; "
                    "units are ns, us, ms, s, m and h (e.g. '24h' rather than '1d')"
                )
            raise ValueError(
                f"{_show(text)} has a number without a unit; add one of ns, us, ms, s, m, h "
                f"(e.g. {DEFAULT_IID_TTL!r})"
            )
        try:
            total += Decimal(number) * _DURATION_UNITS_NS[unit]
        except InvalidOperation as exc:
            raise ValueError(f"{_show(text)} is not a duration") from exc
        rest = rest[match.end() :] if match else ""
        if total > _DURATION_MAX_NS:
            raise ValueError(f"{_show(text)} is too large for a duration")
    return sign * int(total)


def parse_duration(text: str) -> timedelta:
    """Parse a Go duration (`"5m"`, `"1h30m"`, `"90s"`, `"1.5h"`, `"300ms"`).

    Raises ValueError with a message fit to show a user. Sub-microsecond parts are dropped
    (timedelta's resolution); nothing this product stores needs them.
    """
    ns = _duration_ns(text)
    micro = abs(ns) // 1_000
    return timedelta(microseconds=micro if ns >= 0 else -micro)


def format_duration(td: timedelta) -> str:
    """The shortest Go-parsable spelling: `5m`, `1h30m`, `1m30.5s`, `300ms`, `0s`.

    Go's own `Duration.String()` writes `5m0s`; both parse to the same value in Go and here, and
    the short form is the one Teleport's documentation and users write.
    """
    micro = td // timedelta(microseconds=1)
    if micro == 0:
        return "0s"
    sign = "-" if micro < 0 else ""
    micro = abs(micro)
    if micro < 1_000_000:
        if micro < 1_000:
            return f"{sign}{micro}us"
        return f"{sign}{_decimal_text(micro, 1_000)}ms"
    hours, micro = divmod(micro, 3_600_000_000)
    minutes, micro = divmod(micro, 60_000_000)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if micro:
        parts.append(f"{_decimal_text(micro, 1_000_000)}s")
    return sign + "".join(parts)


def _decimal_text(value: int, scale: int) -> str:
    whole, frac = divmod(value, scale)
    if not frac:
        return str(whole)
    digits = len(str(scale)) - 1
    return f"{whole}.{frac:0{digits}d}".rstrip("0")


# --------------------------------------------------------------------------------------------
# Timestamps (RFC 3339)

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


def parse_timestamp(text: str) -> datetime:
    """Parse an RFC 3339 timestamp, which must carry a zone; the result is in UTC.

    Fractions beyond microseconds (Go writes nanoseconds) are truncated. Raises ValueError.
    """
    match = _RFC3339.fullmatch(text)
    if not match:
        raise ValueError(
            f"{_show(text)} is not an RFC 3339 timestamp with a zone; write it like "
            "2030-01-01T00:00:00Z"
        )
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = (match.group(7) or "").ljust(6, "0")[:6]
    if match.group(8):
        offset = timedelta(0)
    else:
        offset = timedelta(hours=int(match.group(10)), minutes=int(match.group(11)))
        if match.group(9) == "-":
            offset = -offset
    try:
        zone = timezone(offset)
        moment = datetime(year, month, day, hour, minute, second, int(fraction), tzinfo=zone)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"{_show(text)} is not a valid date and time ({exc})") from exc


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, fractions only when present: `2030-01-01T00:00:00Z`."""
    moment = moment.astimezone(UTC)
    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"
