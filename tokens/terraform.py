"""Writing a token as a `teleport_provision_token` block for Teleport's Terraform provider.

Pure Python, no Django. A small HCL writer rather than a library, because the output must be
exactly what `terraform fmt` would leave alone and every string must be inert: no `${...}`
interpolation or `%{...}` directive can come from a token's description or labels.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tokens.constants import TERRAFORM_RESOURCE_TYPE
from tokens.resource import TokenResource

__all__ = ["to_terraform"]

# --------------------------------------------------------------------------------------------
# Terraform


class _QuotedKeys(dict[str, Any]):
    """An HCL map whose keys are written as strings (label keys hold '/' and '.')."""


def to_terraform(resource: TokenResource) -> str:
    """A `teleport_provision_token` resource block for Teleport's Terraform provider."""
    data = resource.to_dict()
    metadata: dict[str, Any] = dict(data["metadata"])
    if "labels" in metadata:
        metadata["labels"] = _QuotedKeys(metadata["labels"])
    spec: dict[str, Any] = dict(data["spec"])
    # Tag keys hold ':' and '/' (aws:autoscaling:groupName), so they are written as strings.
    spec["allow"] = [
        {**rule, "aws_tags": _QuotedKeys(rule["aws_tags"])} if "aws_tags" in rule else rule
        for rule in spec["allow"]
    ]
    lines = [f'resource "{TERRAFORM_RESOURCE_TYPE}" "{_terraform_id(resource.name)}" {{']
    lines += _hcl_attributes([("version", data["version"]), ("metadata", metadata)], 1)
    lines.append("")
    lines += _hcl_attributes([("spec", spec)], 1)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _terraform_id(name: str) -> str:
    """The block label: Terraform allows letters, digits, '_' and '-', not a leading digit."""
    ident = re.sub(r"[^A-Za-z0-9_-]", "_", name)
    return ident if re.match(r"[A-Za-z_]", ident) else f"token_{ident}"


def _hcl_attributes(items: list[tuple[str, Any]], level: int, quoted: bool = False) -> list[str]:
    """`key = value` lines, aligning `=` across neighbouring one-line values as terraform fmt."""
    pad = "  " * level
    out: list[str] = []
    group: list[tuple[str, str]] = []

    def flush() -> None:
        width = max((len(key) for key, _ in group), default=0)
        out.extend(f"{pad}{key.ljust(width)} = {text}" for key, text in group)
        group.clear()

    for key, value in items:
        shown = _hcl_string(key) if quoted else key
        rendered = _hcl_value(value, level)
        if len(rendered) == 1:
            group.append((shown, rendered[0]))
            continue
        flush()
        out.append(f"{pad}{shown} = {rendered[0]}")
        out.extend(rendered[1:])
    flush()
    return out


def _hcl_value(value: Any, level: int) -> list[str]:
    pad = "  " * level
    if isinstance(value, str):
        return [_hcl_string(value)]
    # bool before int: True is an int to Python, and must be written `true`, not `1`.
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, int):
        return [str(value)]
    if isinstance(value, Mapping):
        body = _hcl_attributes(
            list(value.items()), level + 1, quoted=isinstance(value, _QuotedKeys)
        )
        return ["{", *body, f"{pad}}}"]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        inline = "[" + ", ".join(_hcl_string(item) for item in value) + "]"
        if len(inline) <= 80:
            return [inline]
        return ["[", *(f"{pad}  {_hcl_string(item)}," for item in value), f"{pad}]"]
    if isinstance(value, list):
        lines = ["["]
        for item in value:
            first, *rest = _hcl_value(item, level + 1)
            if not rest:
                lines.append(f"{pad}  {first},")
                continue
            lines.append(f"{pad}  {first}")
            lines.extend(rest[:-1])
            lines.append(rest[-1] + ",")
        lines.append(f"{pad}]")
        return lines
    raise TypeError(f"no HCL form for {type(value).__name__}")


_HCL_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _hcl_string(text: str) -> str:
    """A quoted HCL string whose value is exactly `text` (no interpolation, no directives)."""
    out = []
    for char in text:
        if char in _HCL_ESCAPES:
            out.append(_HCL_ESCAPES[char])
        elif ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    # `${` and `%{` start template sequences; doubling the sigil makes them literal.
    escaped = "".join(out).replace("${", "$${").replace("%{", "%%{")
    return f'"{escaped}"'
