"""Writing a token as a `TeleportProvisionToken` manifest for Teleport's Kubernetes operator.

Pure Python, no Django. The manifest keeps the spec as `AllowRule.to_dict` writes it and moves
the description and expiry into annotations (see `tokens.codecs`, which reads such manifests
back). Kubernetes' own naming rules are stricter than Teleport's, so a token Kubernetes would
refuse gets warning comments rather than a silently different name.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tokens.constants import (
    K8S_API_VERSION,
    K8S_DESCRIPTION_ANNOTATION,
    K8S_EXPIRES_ANNOTATION,
    K8S_KIND,
)
from tokens.durations import format_timestamp
from tokens.resource import TokenResource
from tokens.yaml_dump import _dump_yaml

__all__ = ["to_kubernetes"]

# --------------------------------------------------------------------------------------------
# Kubernetes

_K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_K8S_LABEL_PART = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")


def to_kubernetes(resource: TokenResource) -> str:
    """A `TeleportProvisionToken` manifest for Teleport's Kubernetes operator.

    Kubernetes is stricter than Teleport about names and labels; when this token's would be
    refused by the API server the manifest starts with a comment saying so, and the values are
    kept as they are (renaming silently would make a different token).
    """
    metadata: dict[str, Any] = {"name": resource.name}
    if resource.labels:
        metadata["labels"] = dict(resource.labels)
    annotations: dict[str, str] = {}
    if resource.description:
        annotations[K8S_DESCRIPTION_ANNOTATION] = resource.description
    if resource.expires is not None:
        annotations[K8S_EXPIRES_ANNOTATION] = format_timestamp(resource.expires)
    if annotations:
        metadata["annotations"] = annotations
    manifest = {
        "apiVersion": K8S_API_VERSION,
        "kind": K8S_KIND,
        "metadata": metadata,
        "spec": resource.to_dict()["spec"],
    }
    warnings = "".join(f"# warning: {line}\n" for line in _kubernetes_warnings(resource))
    return warnings + _dump_yaml(manifest)


def _kubernetes_warnings(resource: TokenResource) -> list[str]:
    warnings = []
    if len(resource.name) > 253 or not _K8S_NAME.fullmatch(resource.name):
        warnings.append(
            "Kubernetes accepts only lower-case letters, digits, '-' and '.' in metadata.name; "
            "this name will be refused"
        )
    for key, value in resource.labels.items():
        prefix, _, name = key.rpartition("/")
        key_ok = (
            0 < len(name) <= 63
            and bool(_K8S_LABEL_PART.fullmatch(name))
            and (not prefix or (len(prefix) <= 253 and bool(_K8S_NAME.fullmatch(prefix))))
        )
        value_ok = len(value) <= 63 and bool(_K8S_LABEL_PART.fullmatch(value))
        if not (key_ok and value_ok):
            warnings.append(f"label {json.dumps(key)} will be refused by Kubernetes")
    return warnings
