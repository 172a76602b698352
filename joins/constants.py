"""Join outcomes, error codes and their HTTP statuses: the contract's table in one place."""

OUTCOME_ALLOWED = "allowed"
OUTCOME_DENIED = "denied"
OUTCOME_ERROR = "error"
OUTCOMES = (OUTCOME_ALLOWED, OUTCOME_DENIED, OUTCOME_ERROR)

# code -> (HTTP status, label shown in the console)
ERROR_CODES: dict[str, tuple[int, str]] = {
    "invalid_request": (400, "Invalid request"),
    "request_too_large": (413, "Request too large"),
    "token_invalid": (403, "Token missing or expired"),
    "join_method_mismatch": (403, "Join method mismatch"),
    "role_not_allowed": (403, "Role not allowed"),
    "iid_malformed": (403, "Malformed identity document"),
    "iid_unsupported_form": (403, "Unsupported document form"),
    "iid_region_unsupported": (403, "Region not supported"),
    "iid_signature_invalid": (403, "Invalid signature"),
    "host_id_mismatch": (403, "Host id mismatch"),
    "iid_pending_time_in_future": (403, "Pending time in the future"),
    "iid_expired": (403, "Document too old"),
    "no_matching_rule": (403, "No matching allow rule"),
    "instance_already_joined": (403, "Instance already joined"),
    "instance_not_found": (403, "Instance not found"),
    "instance_not_running": (403, "Instance not running"),
    "aws_denied": (502, "AWS refused our call"),
    "aws_unavailable": (503, "AWS unavailable"),
    "rate_limited": (429, "Rate limited"),
    "internal_error": (500, "Internal error"),
}

# Statuses of 5xx are our side or AWS's, not a decision about the instance.
ERROR_OUTCOME = {code: OUTCOME_ERROR if status >= 500 else OUTCOME_DENIED
                 for code, (status, _) in ERROR_CODES.items()}

# The checks of a join, in the order they run; each appears in an attempt's trace.
CHECKS = (
    "request",
    "token",
    "join_method",
    "roles",
    "document",
    "host_id",
    "pending_time",
    "allow_rule",
    "not_joined",
    "instance",
    "issue",
)

PENDING_TIME_SKEW_SECONDS = 60
