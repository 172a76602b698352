"""Group names and what each may do. The names are part of the external contract."""

ADMINS_GROUP = "joinadmin-admins"
AUDITORS_GROUP = "joinadmin-auditors"

# Django permissions granted to each group, so that Django's own admin agrees with the console.
AUDITOR_PERMISSIONS = (
    "tokens.view_token",
    "tokens.export_token",
    "joins.view_joinattempt",
    "joins.view_host",
    "audit.view_adminaction",
    "audit.view_seal",
)
ADMIN_PERMISSIONS = (
    *AUDITOR_PERMISSIONS,
    "tokens.add_token",
    "tokens.change_token",
    "tokens.delete_token",
    "joins.delete_host",
    "accounts.view_apikey",
)

API_KEY_PREFIX = "ja"
