"""Login throttling: too many failed sign-ins lock the account name and the source address.

Passwords are the one secret of the console that a person chooses, so guessing them is the
attack to slow down. Failures are counted in the shared cache (Redis across app servers,
memory on one), per account name and per source address:

- `LOGIN_MAX_FAILURES` failures for one account name within `LOGIN_LOCKOUT_SECONDS` lock that
  name for `LOGIN_LOCKOUT_SECONDS`, whatever address the next attempt comes from;
- `LOGIN_MAX_FAILURES_PER_ADDRESS` failures from one address (any names) lock that address.

While a lock holds, no password is checked at all (a right password does not lift it, or the
lock would only slow the guessing down), and the page says plainly what is locked and until
when. Names that do not exist are counted and locked like real ones, so a lock never tells
whether an account exists. A successful sign-in clears the failures of its account name; it
does not clear the address's count, so that signing in to one's own account buys no extra
guesses at someone else's.

Starting a lock is recorded once in the admin action log (`login.lockout`) and in the log.
When the cache cannot be reached the console refuses sign-in (fail closed) rather than let
guesses through unthrottled; API keys keep working.

The OpenAPI description of the API key scheme lives here too, so that the schema names how the
API authenticates (and tools such as schemathesis send the key where the server reads it).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.forms import Form
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object

from audit.services import record_action
from joinadmin.console import source_address

log = logging.getLogger(__name__)

LOCKED_CODE = "login_locked"
UNAVAILABLE_CODE = "login_unavailable"
UNAVAILABLE_MESSAGE = (
    "Sign-in is unavailable right now: the server cannot reach the store it uses to limit "
    "failed sign-ins, and it does not check passwords without that limit. Try again in a "
    "minute; if this persists, an operator should check the cache (JOINADMIN_CACHE_URL)."
)
ACCOUNT = "account"
ADDRESS = "address"


class LoginThrottleUnavailableError(Exception):
    """The cache holding the failure counts could not be read or written."""


@dataclass(frozen=True)
class Lockout:
    """A lock in force: on an account name or on a source address, until a UNIX time."""

    scope: str  # ACCOUNT or ADDRESS
    value: str
    until: float

    def seconds_left(self, now: float | None = None) -> int:
        return max(1, int(self.until - (time.time() if now is None else now) + 0.999))

    @property
    def message(self) -> str:
        """What the sign-in page says: what is locked, why, until when, what to do."""
        minutes = max(1, round(self.seconds_left() / 60))
        until = datetime.fromtimestamp(self.until, UTC).strftime("%H:%M UTC")
        what = "this account" if self.scope == ACCOUNT else f"your network address ({self.value})"
        return (
            f"Too many failed sign-in attempts for {what}. Sign-in is locked for about "
            f"{minutes} minute{'s' if minutes != 1 else ''} (until {until}); no password is "
            "checked until then. If you forgot your password, ask an administrator to reset it."
        )


def normalise_username(username: str) -> str:
    """The form of a name failures are counted under: case and surrounding spaces ignored, so
    `Admin` and ` admin` share one budget."""
    return (username or "").strip().lower()


def _key(kind: str, scope: str, value: str) -> str:
    # Hashed: names are attacker-chosen text of any length and alphabet, not cache-key material.
    digest = hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:32]
    return f"login:{kind}:{scope}:{digest}"


def _subjects(username: str, address: str) -> list[tuple[str, str, int]]:
    """(scope, value, failure limit) for each thing counted; empty values are not counted."""
    subjects = []
    name = normalise_username(username)
    if name:
        subjects.append((ACCOUNT, name, settings.LOGIN_MAX_FAILURES))
    if address:
        subjects.append((ADDRESS, address, settings.LOGIN_MAX_FAILURES_PER_ADDRESS))
    return subjects


def login_lockout(username: str, address: str) -> Lockout | None:
    """The lock in force on this account name or this address, if any.

    Raises LoginThrottleUnavailableError when the cache cannot be read.
    """
    now = time.time()
    try:
        for scope, value, _limit in _subjects(username, address):
            until = cache.get(_key("lock", scope, value))
            if until is not None and float(until) > now:
                return Lockout(scope, value, float(until))
    except Exception as exc:  # any cache failure means "cannot tell": refuse
        log.error("login throttle: cache unavailable: %s: %s", type(exc).__name__, exc)
        raise LoginThrottleUnavailableError(str(exc)) from exc
    return None


def _count_failure(key: str, window: int) -> int:
    if cache.add(key, 1, timeout=window):
        return 1
    try:
        return int(cache.incr(key))
    except ValueError:  # the counter expired between add and incr: this failure starts anew
        cache.add(key, 1, timeout=window)
        return 1


def record_login_failure(username: str, address: str) -> Lockout | None:
    """Count one failed sign-in; start and record a lock when a limit is reached.

    Returns the lock this failure started, if any. Raises LoginThrottleUnavailableError when
    the cache cannot be written (the caller refuses the sign-in).
    """
    window = settings.LOGIN_LOCKOUT_SECONDS
    started: Lockout | None = None
    try:
        for scope, value, limit in _subjects(username, address):
            failures = _count_failure(_key("fail", scope, value), window)
            if failures < limit:
                continue
            until = time.time() + window
            # add, not set: when two servers cross the limit together, one lock is started and
            # recorded, not two.
            if cache.add(_key("lock", scope, value), until, timeout=window):
                cache.delete(_key("fail", scope, value))
                lock = Lockout(scope, value, until)
                _record_lockout(lock, failures, address)
                started = started or lock
    except LoginThrottleUnavailableError:
        raise
    except Exception as exc:  # see docstring
        log.error("login throttle: cache unavailable: %s: %s", type(exc).__name__, exc)
        raise LoginThrottleUnavailableError(str(exc)) from exc
    return started


def record_login_success(username: str) -> None:
    """Forget the failures of this account name after a successful sign-in.

    A cache error here is logged and ignored: the person proved the password, and the counts
    expire on their own.
    """
    name = normalise_username(username)
    if not name:
        return
    try:
        cache.delete(_key("fail", ACCOUNT, name))
    except Exception as exc:  # see docstring
        log.warning("login throttle: could not clear failures of %r: %s", name, exc)


def lift_lockout(*, username: str = "", address: str = "") -> None:
    """Remove the lock and the failure count of an account name and/or an address.

    For an operator who has checked who is locked out and why, e.g. with `manage.py shell -c
    "from joinadmin.security import lift_lockout; lift_lockout(username='alice')"`.
    """
    for scope, value, _limit in _subjects(username, address):
        cache.delete_many([_key("lock", scope, value), _key("fail", scope, value)])


def _record_lockout(lock: Lockout, failures: int, address: str) -> None:
    """One admin action row and one warning per lock started, never one per failure."""
    until = datetime.fromtimestamp(lock.until, UTC)
    what = f"account name {lock.value!r}" if lock.scope == ACCOUNT else f"address {lock.value}"
    reason = (
        f"{failures} failed sign-in attempts for {what} within "
        f"{settings.LOGIN_LOCKOUT_SECONDS}s; sign-in locked until {until.isoformat()}"
    )
    log.warning("login throttle: %s (last attempt from %s)", reason, address or "unknown")
    try:
        record_action(
            actor=None,
            action="login.lockout",
            object_type=lock.scope,
            object_id=lock.value[:200],
            after={"locked_until": until.isoformat(), "failures": failures},
            reason=reason,
            remote_addr=address[:64],
            via="console",
        )
    except Exception:  # the lock itself holds; a database hiccup must not unlock guessing
        log.exception("login throttle: could not record the lockout in the admin action log")


class ThrottledLoginMixin(Form):
    """Checks the lock before the password, counts failures, clears them on success.

    Mixed into Django's authentication forms (the console's and the Django admin's), so that
    both sign-in pages share one budget of guesses.
    """

    request: Any
    user_cache: Any
    lockout: Lockout | None = None

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username") or ""
        password = self.cleaned_data.get("password")
        if not username or not password:
            return super().clean()  # a missing field: nothing was tried, nothing to count
        address = source_address(self.request) if self.request is not None else ""
        try:
            self.lockout = login_lockout(username, address)
            if self.lockout is not None:
                raise ValidationError(self.lockout.message, code=LOCKED_CODE)
            try:
                cleaned = super().clean()
            except ValidationError:
                if self.user_cache is None:  # a wrong password, not an inactive account
                    self.lockout = record_login_failure(username, address)
                    if self.lockout is not None:
                        raise ValidationError(self.lockout.message, code=LOCKED_CODE) from None
                raise
        except LoginThrottleUnavailableError:
            raise ValidationError(UNAVAILABLE_MESSAGE, code=UNAVAILABLE_CODE) from None
        record_login_success(username)
        return cleaned


class ThrottledAuthenticationForm(ThrottledLoginMixin, AuthenticationForm):
    """The console's sign-in form."""


class ThrottledAdminAuthenticationForm(ThrottledLoginMixin, AdminAuthenticationForm):
    """The Django admin's sign-in form, on the same budget as the console's."""


def refusal_status(form: Form) -> tuple[int, dict[str, str]]:
    """HTTP status and headers for a refused sign-in form: 429 with Retry-After when locked,
    503 when the throttle cannot be checked, else 200 (a plain wrong password)."""
    lockout = getattr(form, "lockout", None)
    if form.has_error(NON_FIELD_ERRORS, LOCKED_CODE) and lockout is not None:
        return 429, {"Retry-After": str(lockout.seconds_left())}
    if form.has_error(NON_FIELD_ERRORS, UNAVAILABLE_CODE):
        return 503, {"Retry-After": "60"}
    return 200, {}


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """Describes `Authorization: Bearer <api key>` (accounts.authentication) in the schema."""

    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = "apiKeyAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        definition = build_bearer_security_scheme_object(
            header_name="Authorization", token_prefix=self.target.keyword
        )
        definition["description"] = "An API key made with `manage.py apikeys create`."
        return definition
