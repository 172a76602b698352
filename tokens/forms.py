"""Forms of the token pages: the token editor with its allow-rule rows, and the upload.

The forms only turn browser input into the tctl object (`kind: token`, `version: v2`); the
rules of what a valid token is live once, in `tokens.resource.validate_resource`. Its errors
name a field path (`spec.allow[1].aws_regions[0]`), which `TokenEditor.attach_errors` maps back
to the input the user typed it in, so that the console, the API and the commands agree on every
message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.forms import formset_factory

from tokens.codecs import MAX_DOCUMENT_BYTES
from tokens.constants import (
    CONDITION_FIELDS,
    DEFAULT_IID_TTL,
    DESCRIPTION_MAX_LENGTH,
    JOIN_METHOD_EC2,
    MAX_ALLOW_RULES,
    MAX_IMDS_HOP_LIMIT,
    MIN_IMDS_HOP_LIMIT,
    NAME_MAX_LENGTH,
    RESOURCE_ID_CONDITIONS,
    RESOURCE_KIND,
    RESOURCE_VERSION,
    ROLES,
)
from tokens.models import Token
from tokens.resource import FieldError, format_timestamp

RULES_PREFIX = "rules"
_REGION_SEPARATORS = re.compile(r"[\s,]+")
_ID_SEPARATORS = _REGION_SEPARATORS
# IAM names may hold commas, so instance profile ARNs are separated by white space only.
_ARN_SEPARATORS = re.compile(r"\s+")
_RULE_FIELDS = ("aws_account", "aws_regions", "aws_role", *CONDITION_FIELDS)
_RULE_PATH = re.compile(
    r"spec\.allow\[(\d+)\](?:\.(" + "|".join(_RULE_FIELDS) + r")(?P<tail>\[.*)?$)?"
)
_TAG_TAIL = re.compile(r'\["((?:[^"\\]|\\.)*)"\]')
_LABEL_PATH = re.compile(r"metadata\.labels\[(.+)\]")
#: Field paths of the resource, by the form field that holds them (longest prefix first).
_FIELD_FOR_PATH = (
    ("metadata.name", "name"),
    ("metadata.description", "description"),
    ("metadata.expires", "expires"),
    ("metadata.labels", "labels"),
    ("spec.roles", "roles"),
    ("spec.aws_iid_ttl", "aws_iid_ttl"),
    ("spec.allow_rejoin", "allow_rejoin"),
)


class TokenForm(forms.Form):
    """The token's own fields. Values are parsed here, and validated by `validate_resource`."""

    name = forms.CharField(
        max_length=NAME_MAX_LENGTH,
        help_text="Letters, digits, '-', '_' and '.'. Agents present this name; it cannot be "
        "changed later.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    roles = forms.MultipleChoiceField(
        choices=[(role, role) for role in ROLES],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="The system roles a host joining with this token may take.",
    )
    aws_iid_ttl = forms.CharField(
        label="Identity document TTL",
        required=False,
        initial=DEFAULT_IID_TTL,
        max_length=32,
        help_text="How old an instance's identity document may be (since its pendingTime), "
        f"as a duration such as 5m, 90s or 1h30m. Empty means {DEFAULT_IID_TTL}.",
        widget=forms.TextInput(attrs={"spellcheck": "false"}),
    )
    expires = forms.DateTimeField(
        label="Expires (UTC)",
        required=False,
        help_text="Date and time in UTC. Leave empty for a token that does not expire.",
        widget=forms.DateTimeInput(
            attrs={"type": "datetime-local", "step": "1"}, format="%Y-%m-%dT%H:%M:%S"
        ),
    )
    description = forms.CharField(
        required=False,
        max_length=DESCRIPTION_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    labels = forms.CharField(
        required=False,
        strip=False,
        help_text="One key=value per line, e.g. env=production.",
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
    )
    allow_rejoin = forms.BooleanField(
        label="Allow re-join",
        required=False,
        help_text="A host that joined with this token may join again without an admin, by "
        "signing a fresh server challenge with the key of its last certificate (e.g. after a "
        "reboot or when its certificate expires). Off means it stays refused as already joined "
        "until an admin forgets it, as in Teleport.",
    )

    def __init__(self, *args: Any, editing: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if editing:
            # A rename would be a different token; the edit page keeps the name it was opened for.
            self.fields["name"].disabled = True
            self.fields["name"].help_text = "The name of an existing token cannot change."

    def clean_labels(self) -> dict[str, str]:
        labels: dict[str, str] = {}
        problems: list[str] = []
        for number, line in enumerate(self.cleaned_data["labels"].splitlines(), start=1):
            if not line.strip():
                continue
            key, sep, value = line.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or not key:
                problems.append(f"Line {number}: write the label as key=value.")
            elif key in labels:
                problems.append(f"Line {number}: the key {key} is given twice; keep one line.")
            else:
                labels[key] = value
        if problems:
            raise ValidationError(problems)
        return labels


def _ec2_ids_field(label: str, help_text: str, prefix: str) -> forms.CharField:
    """An optional condition input listing EC2 ids of one kind (`vpc`, `subnet`, ...)."""
    return forms.CharField(
        label=label,
        required=False,
        max_length=4000,
        help_text=help_text,
        widget=forms.TextInput(
            attrs={"spellcheck": "false", "placeholder": f"{prefix}-0a1b2c3d4e5f60718"}
        ),
    )


class AllowRuleForm(forms.Form):
    """One allow rule row; an instance matches it if its account and region are allowed.

    The condition inputs are the rule's optional `tokens.constants.CONDITION_FIELDS`; left
    empty they add nothing, so a row without them is a plain Teleport rule.
    """

    aws_account = forms.CharField(
        label="AWS account",
        required=False,
        max_length=64,
        widget=forms.TextInput(
            attrs={"inputmode": "numeric", "autocomplete": "off", "placeholder": "111111111111"}
        ),
    )
    aws_regions = forms.CharField(
        label="Regions",
        required=False,
        max_length=2000,
        widget=forms.TextInput(
            attrs={"spellcheck": "false", "placeholder": "us-west-2, eu-central-1"}
        ),
    )
    aws_role = forms.CharField(
        label="Role ARN",
        required=False,
        max_length=2048,
        widget=forms.TextInput(
            attrs={
                "spellcheck": "false",
                "placeholder": "arn:aws:iam::111111111111:role/describe-instances",
            }
        ),
    )

    # Optional conditions, checked against DescribeInstances once this rule matched (see
    # docs/extensions.md). They sit in the row's expandable "Conditions" part.
    aws_vpc_ids = _ec2_ids_field("VPC ids", "The instance's VPC must be one of these.", "vpc")
    aws_subnet_ids = _ec2_ids_field(
        "Subnet ids", "The instance's subnet must be one of these.", "subnet"
    )
    aws_ami_ids = _ec2_ids_field("AMI ids", "The instance's image must be one of these.", "ami")
    aws_security_group_ids = _ec2_ids_field(
        "Security group ids", "The instance must be in every one of these groups.", "sg"
    )
    aws_instance_profile_arns = forms.CharField(
        label="Instance profile ARNs",
        required=False,
        max_length=20000,
        help_text="One per line. The instance's profile must be one of these; an ARN ending in * "
        "allows every profile whose ARN starts with the part before it.",
        widget=forms.Textarea(
            attrs={
                "rows": 2,
                "spellcheck": "false",
                "placeholder": "arn:aws:iam::111111111111:instance-profile/web/*",
            }
        ),
    )
    aws_tags = forms.CharField(
        label="Tags",
        required=False,
        strip=False,
        max_length=20000,
        help_text="One key=value per line; repeat a key to allow several values. The instance "
        "must carry every key with one of its values.",
        widget=forms.Textarea(
            attrs={"rows": 2, "spellcheck": "false", "placeholder": "env=production"}
        ),
    )
    require_imdsv2 = forms.BooleanField(
        label="Require IMDSv2",
        required=False,
        help_text="Refuse instances whose metadata service still answers IMDSv1.",
    )
    max_imds_hop_limit = forms.IntegerField(
        label="Highest IMDS hop limit",
        required=False,
        help_text=f"{MIN_IMDS_HOP_LIMIT} to {MAX_IMDS_HOP_LIMIT}; 1 keeps the metadata service out "
        "of reach of containers.",
        widget=forms.TextInput(attrs={"inputmode": "numeric", "placeholder": "1"}),
    )
    require_source_ip_match = forms.BooleanField(
        label="Require the instance's own address",
        required=False,
        help_text="The join request must come from one of the instance's private or public "
        "addresses (through trusted proxies only).",
    )

    def rule_fields(self) -> list[forms.BoundField]:
        """The row's main inputs: account, regions and role."""
        return [self[name] for name in ("aws_account", "aws_regions", "aws_role")]

    def condition_fields(self) -> list[forms.BoundField]:
        """The inputs of the row's "Conditions" part, in the order a join checks them."""
        return [self[name] for name in CONDITION_FIELDS]

    @property
    def has_conditions(self) -> bool:
        """Whether the row sets a condition or has one marked wrong (its part starts open)."""
        if any(self[name].errors for name in CONDITION_FIELDS if self.is_bound):
            return True
        source = self.data if self.is_bound else self.initial
        prefix = self.add_prefix("") if self.is_bound else ""
        return any(
            source.get(prefix + name) not in (None, "", False, "False", "false")
            for name in CONDITION_FIELDS
        )

    def clean_aws_tags(self) -> dict[str, list[str]]:
        tags: dict[str, list[str]] = {}
        problems: list[str] = []
        for number, line in enumerate(self.cleaned_data["aws_tags"].splitlines(), start=1):
            if not line.strip():
                continue
            key, sep, value = line.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or not key:
                problems.append(f"Line {number}: write the tag as key=value.")
            elif value in tags.get(key, []):
                problems.append(f"Line {number}: {key}={value} is given twice; keep one line.")
            else:
                tags.setdefault(key, []).append(value)
        if problems:
            raise ValidationError(problems)
        return tags

    def rule(self) -> dict[str, Any] | None:
        """The rule in tctl shape, or None for a row left blank or marked for removal."""
        data = self.cleaned_data
        if data.get("DELETE"):
            return None
        regions = [r for r in _REGION_SEPARATORS.split(data.get("aws_regions", "")) if r]
        rule: dict[str, Any] = {}
        if data.get("aws_account"):
            rule["aws_account"] = data["aws_account"]
        if regions:
            rule["aws_regions"] = regions
        if data.get("aws_role"):
            rule["aws_role"] = data["aws_role"]
        for name in CONDITION_FIELDS:
            value = self._condition(name, data.get(name))
            # By identity: a hop limit of 0 is a value (refused with a reason), not "unset".
            if value is not None and value is not False and value != [] and value != {}:
                rule[name] = value
        return rule or None

    @staticmethod
    def _condition(name: str, value: Any) -> Any:
        """One condition input in tctl shape: lists split, unset ones as None or False."""
        if name in RESOURCE_ID_CONDITIONS:
            return [item for item in _ID_SEPARATORS.split(value or "") if item]
        if name == "aws_instance_profile_arns":
            return [item for item in _ARN_SEPARATORS.split(value or "") if item]
        return value


AllowRuleFormSet = formset_factory(
    AllowRuleForm,
    extra=0,
    can_delete=True,
    max_num=MAX_ALLOW_RULES,
    absolute_max=MAX_ALLOW_RULES + 1,
)


def _rule_initial(rule: Mapping[str, Any]) -> dict[str, Any]:
    initial: dict[str, Any] = {
        "aws_account": str(rule.get("aws_account", "")),
        "aws_regions": ", ".join(rule.get("aws_regions", ())),
        "aws_role": str(rule.get("aws_role", "")),
    }
    for name in RESOURCE_ID_CONDITIONS:
        initial[name] = ", ".join(rule.get(name, ()))
    initial["aws_instance_profile_arns"] = "\n".join(rule.get("aws_instance_profile_arns", ()))
    initial["aws_tags"] = "\n".join(
        f"{key}={value}" for key, values in (rule.get("aws_tags") or {}).items() for value in values
    )
    initial["require_imdsv2"] = rule.get("require_imdsv2") is True
    hop_limit = rule.get("max_imds_hop_limit")
    initial["max_imds_hop_limit"] = "" if hop_limit is None else str(hop_limit)
    initial["require_source_ip_match"] = rule.get("require_source_ip_match") is True
    return initial


class TokenEditor:
    """The token form and its allow-rule rows, handled as one form.

    Rows are added without JavaScript: the "Add rule" button posts the form, and the page comes
    back with the same values and one more empty row (`with_new_row`). Rows ticked "Remove" and
    blank rows are left out of the token.
    """

    def __init__(
        self,
        data: Mapping[str, Any] | None = None,
        *,
        token: Token | None = None,
        initial: dict[str, Any] | None = None,
        rules: list[dict[str, str]] | None = None,
    ) -> None:
        self.token = token
        editing = token is not None
        if initial is None and token is not None:
            initial = {
                "name": token.name,
                "roles": list(token.roles),
                "aws_iid_ttl": token.aws_iid_ttl,
                "expires": token.expires,
                "description": token.description,
                "labels": "\n".join(f"{k}={v}" for k, v in sorted((token.labels or {}).items())),
                "allow_rejoin": token.allow_rejoin,
            }
        if rules is None:
            rules = [_rule_initial(rule) for rule in token.allow] if token is not None else []
            rules = rules or [{}]
        self.form = TokenForm(data, initial=initial, editing=editing)
        self.rules = AllowRuleFormSet(data, initial=rules, prefix=RULES_PREFIX)
        self.rules_errors: list[str] = []
        self._rule_rows: list[int] = []

    @classmethod
    def with_new_row(cls, data: Mapping[str, Any], *, token: Token | None = None) -> TokenEditor:
        """An unbound editor showing what was posted, minus removed rows, plus one empty row.

        Unbound, so that a half-filled form is not greeted with "this field is required".
        """
        getlist = getattr(data, "getlist", None)
        initial = {
            "name": token.name if token is not None else data.get("name", ""),
            "roles": getlist("roles") if getlist else data.get("roles", []),
            "aws_iid_ttl": data.get("aws_iid_ttl", ""),
            "expires": data.get("expires", ""),
            "description": data.get("description", ""),
            "labels": data.get("labels", ""),
            "allow_rejoin": bool(data.get("allow_rejoin")),
        }
        try:
            total = int(data.get(f"{RULES_PREFIX}-TOTAL_FORMS", 0))
        except (TypeError, ValueError):
            total = 0
        rows = []
        for index in range(min(max(total, 0), MAX_ALLOW_RULES)):
            prefix = f"{RULES_PREFIX}-{index}-"
            if data.get(prefix + "DELETE"):
                continue
            rows.append(
                {name: str(data.get(prefix + name, "")) for name in AllowRuleForm.base_fields}
            )
        if len(rows) < MAX_ALLOW_RULES:
            rows.append({})
        return cls(token=token, initial=initial, rules=rows)

    @property
    def can_add_row(self) -> bool:
        return self.rules.total_form_count() < MAX_ALLOW_RULES

    @property
    def has_errors(self) -> bool:
        """Whether anything on the page is marked wrong (for the summary above the form)."""
        if not self.form.is_bound:
            return False
        return bool(
            self.form.errors
            or self.rules_errors
            or self.rules.non_form_errors()
            or any(row.errors for row in self.rules.forms)
        )

    def is_valid(self) -> bool:
        form_ok = self.form.is_valid()
        return self.rules.is_valid() and form_ok

    def resource_object(self) -> dict[str, Any]:
        """The tctl object of the valid input; remembers which row each rule came from."""
        data = self.form.cleaned_data
        metadata: dict[str, Any] = {"name": data["name"]}
        if data["description"]:
            metadata["description"] = data["description"]
        if data["labels"]:
            metadata["labels"] = data["labels"]
        if data["expires"] is not None:
            metadata["expires"] = format_timestamp(data["expires"])
        spec: dict[str, Any] = {"roles": list(data["roles"]), "join_method": JOIN_METHOD_EC2}
        if data["aws_iid_ttl"]:
            spec["aws_iid_ttl"] = data["aws_iid_ttl"]
        if data.get("allow_rejoin"):
            spec["allow_rejoin"] = True
        allow = []
        self._rule_rows = []
        for index, row in enumerate(self.rules.forms):
            rule = row.rule()
            if rule is not None:
                allow.append(rule)
                self._rule_rows.append(index)
        spec["allow"] = allow
        return {
            "kind": RESOURCE_KIND,
            "version": RESOURCE_VERSION,
            "metadata": metadata,
            "spec": spec,
        }

    def attach_errors(self, errors: Iterable[FieldError]) -> None:
        """Show each resource error next to the input it is about."""
        for error in errors:
            self._attach(error.field, error.message)

    def _attach(self, path: str, message: str) -> None:
        rule = _RULE_PATH.match(path)
        if rule is not None:
            position = int(rule.group(1))
            if rule.group(2) == "aws_tags":
                tag = _TAG_TAIL.match(rule.group("tail") or "")
                if tag is not None:
                    message = f"Tag {tag.group(1)}: {message}"
            if position < len(self._rule_rows):
                self.rules.forms[self._rule_rows[position]].add_error(rule.group(2), message)
            else:
                self.rules_errors.append(message)
            return
        if path.startswith("spec.allow"):
            self.rules_errors.append(message)
            return
        label = _LABEL_PATH.match(path)
        if label is not None:
            self.form.add_error("labels", f"Label {label.group(1)}: {message}")
            return
        for prefix, field in _FIELD_FOR_PATH:
            if path == prefix or path.startswith((prefix + ".", prefix + "[")):
                self.form.add_error(field, message)
                return
        self.form.add_error(None, f"{path}: {message}" if path else message)


class UploadForm(forms.Form):
    """Token documents to import, from a file or pasted: tctl YAML, JSON or Kubernetes."""

    file = forms.FileField(
        required=False,
        help_text="YAML or JSON: one or many tctl documents, or Kubernetes "
        "TeleportProvisionToken manifests.",
    )
    text = forms.CharField(
        label="Or paste the documents",
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 14, "spellcheck": "false", "class": "code"}),
    )
    replace = forms.BooleanField(
        label="Replace tokens that already exist",
        required=False,
        help_text="Without this, an upload naming an existing token is refused as a whole.",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        upload = data.get("file")
        text = data.get("text") or ""
        if upload is not None and text.strip():
            raise ValidationError("Choose a file or paste text, not both.")
        if upload is not None:
            raw = upload.read(MAX_DOCUMENT_BYTES + 1)
            if len(raw) > MAX_DOCUMENT_BYTES:
                raise ValidationError(
                    f"The file is larger than {MAX_DOCUMENT_BYTES // 1024} KiB; split it."
                )
            try:
                text = raw.decode("utf-8-sig")
            except UnicodeDecodeError:
                raise ValidationError("The file is not UTF-8 text.") from None
        if not text.strip():
            raise ValidationError("Choose a file or paste the token documents.")
        data["content"] = text
        return data


class ApplyUploadForm(forms.Form):
    """The previewed documents, posted back unchanged, and whether to replace existing tokens."""

    content = forms.CharField(widget=forms.HiddenInput, strip=False)
    replace = forms.BooleanField(label="Replace tokens that already exist", required=False)
