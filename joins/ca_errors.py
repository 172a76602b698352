"""The errors of the host CA itself (as opposed to `joins.keys.KeyRejected`, the requester's).

No Django import. Shared by the CA (`joins.ca`) and the at-rest key wrapping (`joins.keywrap`),
which both must report unusable CA material the same way; `joins.ca` re-exports them.
"""

from __future__ import annotations

__all__ = ["CAError", "CAKeyError", "CAUnusableError"]


class CAError(Exception):
    """The CA itself cannot be used; a server-side problem, never the requester's fault."""

    code = "ca_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CAKeyError(CAError):
    """Stored CA material does not decrypt, does not parse or does not belong together."""

    code = "ca_key_invalid"


class CAUnusableError(CAError):
    """The CA cannot sign now: expired, not yet valid, or for another cluster."""

    code = "ca_unusable"
