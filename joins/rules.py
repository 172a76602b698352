"""How an allow rule is matched against a verified identity document (Teleport's semantics,
with a role-only rule bound to its role's account)."""

from __future__ import annotations

from joins.iid import IdentityDocument
from tokens.resource import AllowRule


def rule_account(rule: AllowRule) -> str:
    """The account a rule admits: `aws_account`, else the account of its `aws_role` ARN.

    Teleport lets a role-only rule match any account; we read the role's account instead, since
    that role can only describe instances of its own account anyway.
    """
    if rule.aws_account:
        return rule.aws_account
    parts = rule.aws_role.split(":")
    return parts[4] if len(parts) > 4 else ""


def rule_matches(rule: AllowRule, document: IdentityDocument) -> bool:
    """Account equal (see `rule_account`), regions empty or containing the document's region."""
    account = rule_account(rule)
    account_ok = not account or account == document.account_id
    region_ok = not rule.aws_regions or document.region in rule.aws_regions
    return account_ok and region_ok
