"""Reading and writing token resources: tctl YAML, JSON, Kubernetes manifests and Terraform.

Pure Python, no Django. Input is untrusted (an upload, an API body, a file given to a command), so
decoding is bounded and refuses what could hurt the server: more than `MAX_DOCUMENT_BYTES`,
YAML anchors and aliases (the "billion laughs" expansion), duplicate keys (two `aws_account`
lines, of which YAML would silently keep the last), deep nesting and non-standard YAML tags.

Output is deterministic (stable key order, sorted labels) and round-trips: for every valid
resource `r`, `parse_tokens(to_yaml([r])) == [r]`, and likewise for `to_json` and
`to_kubernetes`. Account IDs are always written as quoted strings so that YAML keeps their
leading zeros. The optional allow-rule conditions (`aws_vpc_ids`, `aws_tags`, `require_imdsv2`,
...) travel in every format exactly as `AllowRule.to_dict` writes them: only the ones set.

Kubernetes: Teleport's operator takes `metadata.name` and `metadata.labels` from the object and
the description from the `description` annotation; this module also keeps `metadata.expires` in
an `expires` annotation (the operator's key for expiring resources), so nothing is lost.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from tokens.constants import (
    K8S_API_VERSION,
    K8S_DESCRIPTION_ANNOTATION,
    K8S_EXPIRES_ANNOTATION,
    K8S_KIND,
    K8S_LIST_KINDS,
    RESOURCE_KIND,
    RESOURCE_VERSION,
)
from tokens.errors import FieldError, ResourceError, field_name
from tokens.kubernetes import to_kubernetes
from tokens.resource import TokenResource, validate_resource
from tokens.terraform import to_terraform
from tokens.yaml_dump import _dump_yaml

# The Kubernetes and Terraform writers and the YAML dumper live in their own modules; callers
# keep importing every public name from here.
__all__ = [
    "EXPORT_FORMATS",
    "MAX_DOCUMENTS",
    "MAX_DOCUMENT_BYTES",
    "DecodeError",
    "load_documents",
    "parse_tokens",
    "to_json",
    "to_json_list",
    "to_kubernetes",
    "to_terraform",
    "to_yaml",
]

MAX_DOCUMENT_BYTES = 1024 * 1024
#: More tokens than this in one upload is a mistake or an attack, not a migration.
MAX_DOCUMENTS = 1000
#: A token resource is four levels deep; anything far deeper is not one.
MAX_DEPTH = 32


class DecodeError(ResourceError):
    """The input could not be read as token documents (size, encoding, syntax, shape).

    Same `code` as ResourceError so that callers answer both alike; `details` name the document.
    """


# --------------------------------------------------------------------------------------------
# Decoding


@dataclass
class _Document:
    """One decoded resource, already in tctl shape, and how to name its fields back to the user."""

    obj: Any
    renames: Mapping[str, str] = field(default_factory=dict)
    #: Problems found while converting it (a malformed Kubernetes manifest); not validated then.
    problems: list[FieldError] = field(default_factory=list)


# Field paths of the tctl shape that a Kubernetes manifest spells differently.
_K8S_RENAMES = {
    "metadata.description": f"metadata.annotations.{K8S_DESCRIPTION_ANNOTATION}",
    "metadata.expires": f"metadata.annotations.{K8S_EXPIRES_ANNOTATION}",
}
# Set by the Kubernetes API server or by tools; they carry no policy.
_K8S_METADATA_IGNORED = (
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "finalizers",
    "ownerReferences",
    "selfLink",
)


def load_documents(data: str | bytes | Mapping[str, Any] | list[Any]) -> list[dict[str, Any]]:
    """Decode JSON or YAML text into tctl-shaped token objects (not yet validated).

    JSON is one object or an array of objects; YAML is one or many `---` documents (a document
    may also be a list of objects). Empty YAML documents are skipped. Kubernetes
    `TeleportProvisionToken` manifests, and `List`s of them, are converted to the tctl shape.
    Already-decoded objects (e.g. a parsed JSON body) are accepted too. The result's positions
    are the document numbers used in errors. Raises DecodeError.
    """
    documents = _load(data)
    problems = [problem for document in documents for problem in document.problems]
    if problems:
        raise DecodeError(problems)
    return [document.obj for document in documents]


def parse_tokens(data: str | bytes | Mapping[str, Any] | list[Any]) -> list[TokenResource]:
    """Decode and validate every document; raises ResourceError naming all problems of all.

    An input without any document is refused: an empty upload is a mistake, not a no-op.
    """
    documents = _load(data)
    if not documents:
        raise DecodeError(
            [FieldError(0, "", "no token resource found in the input; give at least one")]
        )
    resources: list[TokenResource] = []
    problems: list[FieldError] = []
    for index, document in enumerate(documents):
        if document.problems:
            problems.extend(document.problems)
            continue
        try:
            resources.append(validate_resource(document.obj, index))
        except ResourceError as exc:
            problems.extend(_rename(detail, document.renames) for detail in exc.details)
    if problems:
        raise ResourceError(problems)
    return resources


def _rename(detail: FieldError, renames: Mapping[str, str]) -> FieldError:
    for old, new in renames.items():
        if detail.field == old or detail.field.startswith(old + "."):
            return FieldError(detail.document, new + detail.field[len(old) :], detail.message)
    return detail


def _load(data: object) -> list[_Document]:
    if isinstance(data, Mapping | list):
        if _depth(data) > MAX_DEPTH:
            raise _decode_error(0, f"the input is nested deeper than {MAX_DEPTH} levels")
        return _expand_all(data if isinstance(data, list) else [data])
    text = _text(data)
    if not text.strip():
        return []
    if text.lstrip()[0] in "{[":
        value = _load_json(text)
        return _expand_all(value if isinstance(value, list) else [value])
    return _expand_all(_load_yaml(text))


def _text(data: object) -> str:
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        if len(raw) > MAX_DOCUMENT_BYTES:
            raise _too_large(len(raw))
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _decode_error(
                0, f"the input is not UTF-8 text (invalid byte at offset {exc.start})"
            ) from None
    elif isinstance(data, str):
        # A character is at least one byte, so only a short enough string needs encoding.
        if len(data) > MAX_DOCUMENT_BYTES:
            raise _too_large(len(data))
        try:
            size = len(data.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise _decode_error(
                0, f"the input holds an invalid character (a lone surrogate at {exc.start})"
            ) from None
        if size > MAX_DOCUMENT_BYTES:
            raise _too_large(size)
        text = data
    else:
        raise _decode_error(0, f"cannot read token resources from {type(data).__name__}")
    return text.removeprefix("\ufeff")


def _too_large(size: int) -> DecodeError:
    return _decode_error(
        0,
        f"the input is {size} bytes, more than the limit of {MAX_DOCUMENT_BYTES} bytes; "
        "split it into several uploads",
    )


def _decode_error(document: int, message: str) -> DecodeError:
    return DecodeError([FieldError(document, "", message)])


def _load_json(text: str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise _DuplicateKeyError(key)
            out[key] = value
        return out

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    try:
        value = json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise _decode_error(
            0,
            f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno} (input that "
            "starts with { or [ is read as JSON)",
        ) from None
    except _DuplicateKeyError as exc:
        raise _decode_error(
            0, f"the key {json.dumps(exc.key)} appears twice in one object; keep one"
        ) from None
    except ValueError as exc:
        raise _decode_error(0, f"not valid JSON: {_value_problem(exc, 'JSON')}") from None
    except RecursionError:
        raise _decode_error(0, f"the input is nested deeper than {MAX_DEPTH} levels") from None
    if _depth(value) > MAX_DEPTH:
        raise _decode_error(0, f"the input is nested deeper than {MAX_DEPTH} levels")
    return value


class _DuplicateKeyError(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _depth(value: Any, level: int = 1) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, Mapping):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level


class _RefusedError(yaml.YAMLError):
    def __init__(self, message: str, mark: yaml.Mark | None) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


class _StrictConstructor(yaml.constructor.SafeConstructor):
    """SafeConstructor that refuses duplicate keys and turns value errors into YAML errors."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, AttributeError, OverflowError, KeyError) as exc:
            # PyYAML's constructors raise plain Python errors for values such as `!!int x`,
            # a 31st of February or a 5000-digit number; they are input errors all the same.
            raise _RefusedError(_value_problem(exc), node.start_mark) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                raise _RefusedError(
                    "a mapping key must be a plain value, not a list or mapping",
                    key_node.start_mark,
                ) from None
            if duplicate:
                raise _RefusedError(
                    f"the key {_shown_key(key)} appears twice in one mapping; keep one",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# libyaml's parser is some twenty times faster than PyYAML's Python one, which matters at the
# size limit; PyYAML's wheels ship it, the Python parser is the fallback.
_Parser: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_StrictConstructor, _Parser):  # type: ignore[misc, valid-type]
    """The safe loader of this module (parser from libyaml when available)."""


_NULLS = ("", "~", "null", "Null", "NULL")


def _scan(text: str) -> None:
    """Refuse anchors, aliases, deep nesting and too many documents before building anything.

    Aliases are refused outright rather than counted: a token never needs them, and refusing
    them from the event stream means nothing is ever expanded (the "billion laughs").
    """
    loader: _Loader | None = None
    depth, documents, current = 0, 0, 0
    try:
        # PyYAML's Python reader checks every character as it is built, so this can fail too.
        loader = _Loader(text)
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.DocumentStartEvent):
                current = documents
                following = loader.peek_event()
                empty = isinstance(following, yaml.ScalarEvent) and (
                    following.implicit[0] and following.value in _NULLS
                )
                documents += 0 if empty else 1
                if documents > MAX_DOCUMENTS:
                    raise _too_many()
            elif isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                raise _decode_error(
                    current,
                    _at(
                        "YAML anchors and aliases (&name, *name) are not accepted, because they "
                        "let a small file expand into a huge one; write the values out in full",
                        event.start_mark,
                    ),
                )
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _decode_error(
                        current,
                        _at(
                            f"the document is nested deeper than {MAX_DEPTH} levels",
                            event.start_mark,
                        ),
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError as exc:
        raise _yaml_problem(exc, current) from None
    finally:
        if loader is not None:
            loader.dispose()


def _yaml_problem(exc: yaml.YAMLError, document: int) -> DecodeError:
    if isinstance(exc, yaml.reader.ReaderError):
        return _decode_error(
            document,
            f"not valid YAML: the character U+{exc.character:04X} at position {exc.position} "
            "is not allowed in YAML text; remove it or write it as an escape in a "
            "double-quoted string",
        )
    if isinstance(exc, _RefusedError):
        return _decode_error(document, _at(exc.message, exc.mark))
    if isinstance(exc, yaml.MarkedYAMLError):
        problem = exc.problem or exc.context or "syntax error"
        return _decode_error(document, _at(f"not valid YAML: {problem}", exc.problem_mark))
    return _decode_error(document, f"not valid YAML: {exc}")


def _value_problem(exc: Exception, language: str = "YAML") -> str:
    text = str(exc)
    if "Exceeds the limit" in text:
        return "a number has too many digits"
    if language == "JSON":
        return text[:120]
    return f"a value cannot be read as its YAML type ({text[:120]})"


def _shown_key(key: Any) -> str:
    return json.dumps(key) if isinstance(key, str) and len(key) <= 80 else field_name(key)


def _load_yaml(text: str) -> list[Any]:
    _scan(text)
    values: list[Any] = []
    loader = _Loader(text)
    try:
        while loader.check_data():
            value = loader.get_data()
            if value is not None:
                values.append(value)
    except yaml.YAMLError as exc:
        raise _yaml_problem(exc, len(values)) from None
    finally:
        loader.dispose()
    return values


def _at(message: str, mark: yaml.Mark | None) -> str:
    if mark is None:
        return message
    return f"{message} (line {mark.line + 1}, column {mark.column + 1})"


def _too_many() -> DecodeError:
    return _decode_error(
        MAX_DOCUMENTS, f"more than {MAX_DOCUMENTS} documents in one input; split it"
    )


def _expand_all(values: list[Any]) -> list[_Document]:
    """Flatten lists and Kubernetes Lists into documents, converting manifests to tctl shape."""
    flat: list[Any] = []
    for value in values:
        flat.extend(value if isinstance(value, list) else [value])
    documents: list[_Document] = []
    for value in flat:
        if isinstance(value, Mapping) and value.get("kind") in K8S_LIST_KINDS:
            # A broken List wrapper is reported with its first item (or alone if it has none).
            pending = _k8s_list_problems(value, len(documents))
            items = value.get("items")
            for item in items if isinstance(items, list) else []:
                document = _from_kubernetes(item, len(documents))
                document.problems[:0], pending = pending, []
                documents.append(document)
            if pending:
                documents.append(_Document(value, problems=pending))
        elif isinstance(value, Mapping) and (
            "apiVersion" in value or value.get("kind") == K8S_KIND
        ):
            documents.append(_from_kubernetes(value, len(documents)))
        else:
            documents.append(_Document(value))
        if len(documents) > MAX_DOCUMENTS:
            raise _too_many()
    return documents


def _k8s_list_problems(value: Mapping[str, Any], document: int) -> list[FieldError]:
    problems: list[FieldError] = []
    kind = value.get("kind")
    expected = "v1" if kind == "List" else K8S_API_VERSION
    if value.get("apiVersion") != expected:
        problems.append(
            FieldError(document, "apiVersion", f"a {kind} needs apiVersion: {expected}")
        )
    if not isinstance(value.get("items"), list):
        problems.append(FieldError(document, "items", f"a {kind} needs a list of items"))
    for key in value:
        if key not in ("apiVersion", "kind", "items", "metadata"):
            problems.append(
                FieldError(document, field_name(key), f"unknown field in a {kind}; remove it")
            )
    return problems


def _from_kubernetes(value: Any, document: int) -> _Document:
    """Turn a TeleportProvisionToken manifest into the tctl object Teleport's operator makes."""
    problems: list[FieldError] = []
    if not isinstance(value, Mapping):
        problems.append(
            FieldError(document, "", "a list item must be a TeleportProvisionToken mapping")
        )
        return _Document(value, problems=problems)
    if value.get("apiVersion") != K8S_API_VERSION:
        problems.append(
            FieldError(
                document,
                "apiVersion",
                f"must be {K8S_API_VERSION} for a {K8S_KIND}; Teleport has no other version of "
                "this manifest",
            )
        )
    if value.get("kind") != K8S_KIND:
        problems.append(
            FieldError(
                document,
                "kind",
                f"a {K8S_API_VERSION} manifest must be of kind {K8S_KIND} to be a token",
            )
        )
    for key in value:
        if key not in ("apiVersion", "kind", "metadata", "spec", "status"):
            problems.append(
                FieldError(
                    document,
                    field_name(key),
                    f"unknown field in a {K8S_KIND}; it takes apiVersion, kind, metadata and "
                    "spec: remove it",
                )
            )
    raw_meta = value.get("metadata")
    metadata: dict[str, Any] = {}
    if raw_meta is not None and not isinstance(raw_meta, Mapping):
        problems.append(FieldError(document, "metadata", "must be a mapping"))
    elif raw_meta is not None:
        for key, item in raw_meta.items():
            if key in ("name", "labels"):
                metadata[key] = item
            elif key == "annotations":
                _k8s_annotations(item, document, metadata, problems)
            elif key not in _K8S_METADATA_IGNORED:
                problems.append(
                    FieldError(
                        document,
                        f"metadata.{field_name(key)}",
                        "not supported for a token; set metadata.name, labels and annotations only"
                        if key != "generateName"
                        else "generated names are not supported; set metadata.name",
                    )
                )
    if problems:
        return _Document(value, problems=problems)
    converted: dict[str, Any] = {
        "kind": RESOURCE_KIND,
        "version": RESOURCE_VERSION,
        "metadata": metadata,
    }
    if "spec" in value:
        converted["spec"] = value["spec"]
    return _Document(converted, _K8S_RENAMES)


def _k8s_annotations(
    value: Any, document: int, metadata: dict[str, Any], problems: list[FieldError]
) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        problems.append(FieldError(document, "metadata.annotations", "must be a mapping"))
        return
    # Other annotations belong to Kubernetes tooling (kubectl, Argo CD, ...), not to the token.
    if K8S_DESCRIPTION_ANNOTATION in value:
        metadata["description"] = value[K8S_DESCRIPTION_ANNOTATION]
    if K8S_EXPIRES_ANNOTATION in value:
        metadata["expires"] = value[K8S_EXPIRES_ANNOTATION]


# --------------------------------------------------------------------------------------------
# YAML and JSON


def to_yaml(resources: Sequence[TokenResource] | TokenResource) -> str:
    """tctl YAML, one document per token, `---` between documents (what `tctl get` writes)."""
    if isinstance(resources, TokenResource):
        resources = [resources]
    return "---\n".join(_dump_yaml(resource.to_dict()) for resource in resources)


def to_json(resource: TokenResource) -> str:
    """One resource object (`kind`, `version`, `metadata`, `spec`) as indented JSON."""
    return json.dumps(resource.to_dict(), indent=2, ensure_ascii=False) + "\n"


def to_json_list(resources: Sequence[TokenResource]) -> str:
    """An array of resource objects, which `parse_tokens` reads back."""
    return json.dumps([r.to_dict() for r in resources], indent=2, ensure_ascii=False) + "\n"


def _yaml_one(resource: TokenResource) -> str:
    return to_yaml([resource])


#: Export formats by the name commands and views use: (media type, file extension, renderer).
#: The extension has no leading dot.
EXPORT_FORMATS: dict[str, tuple[str, str, Callable[[TokenResource], str]]] = {
    "yaml": ("application/yaml", "yaml", _yaml_one),
    "json": ("application/json", "json", to_json),
    "k8s": ("application/yaml", "k8s.yaml", to_kubernetes),
    "terraform": ("text/plain", "tf", to_terraform),
}
