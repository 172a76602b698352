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
    # Allow-rule conditions (docs/extensions.md, "Allow-rule conditions"), by CONDITION_CODES.
    "instance_vpc_not_allowed": (403, "VPC not allowed"),
    "instance_subnet_not_allowed": (403, "Subnet not allowed"),
    "instance_ami_not_allowed": (403, "AMI not allowed"),
    "instance_profile_not_allowed": (403, "Instance profile not allowed"),
    "instance_security_group_not_allowed": (403, "Security groups not allowed"),
    "instance_tags_not_allowed": (403, "Tags not allowed"),
    "instance_imdsv1_allowed": (403, "IMDSv1 enabled"),
    "instance_imds_hop_limit_too_high": (403, "IMDS hop limit too high"),
    "source_ip_mismatch": (403, "Source address mismatch"),
    # Re-join of a registered host (docs/extensions.md, "Re-join"; joins/rejoin.py).
    "rejoin_challenge_invalid": (403, "Re-join challenge invalid"),
    "rejoin_proof_invalid": (403, "Re-join proof invalid"),
    "iid_replayed": (403, "Older document replayed"),
    "aws_denied": (502, "AWS refused our call"),
    "aws_unavailable": (503, "AWS unavailable"),
    "rate_limited": (429, "Rate limited"),
    "internal_error": (500, "Internal error"),
}

# The code each allow-rule condition refuses with (`joins.conditions`); the trace names the
# check `condition:<field>`.
CONDITION_CODES = {
    "aws_vpc_ids": "instance_vpc_not_allowed",
    "aws_subnet_ids": "instance_subnet_not_allowed",
    "aws_ami_ids": "instance_ami_not_allowed",
    "aws_instance_profile_arns": "instance_profile_not_allowed",
    "aws_security_group_ids": "instance_security_group_not_allowed",
    "aws_tags": "instance_tags_not_allowed",
    "require_imdsv2": "instance_imdsv1_allowed",
    "max_imds_hop_limit": "instance_imds_hop_limit_too_high",
    "require_source_ip_match": "source_ip_mismatch",
}

# Statuses of 5xx are our side or AWS's, not a decision about the instance.
ERROR_OUTCOME = {
    code: OUTCOME_ERROR if status >= 500 else OUTCOME_DENIED
    for code, (status, _) in ERROR_CODES.items()
}

# The checks of a join, in the order they run; each appears in an attempt's trace. A rule with
# conditions adds `condition:<field>` checks between "instance" and "issue" (CONDITION_CODES).
# A request carrying a re-join proof adds a "rejoin" check after "host_id"; for a registered
# host it stands in for "not_joined" (joins/rejoin.py).
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
