"""``--config FILE``: the agent's settings in Teleport's ``teleport.yaml`` shape.

Read keys: ``teleport.join_params.token_name``, ``teleport.join_params.method`` (must be
``ec2``), ``teleport.proxy_server`` and, as in Teleport, ``teleport.nodename``. Other keys
and sections are parsed but ignored; ``teleport.data_dir`` on purpose, since it names
Teleport's own data dir, which the agent must not share.

The agent depends on the standard library and cryptography only, so instead of PyYAML it
carries a small strict reader for the subset of YAML such files use: block mappings, block
sequences, plain and quoted scalars, flow sequences of scalars, comments. Anything else
(anchors, aliases, tags, block scalars, flow mappings, several documents, tabs) is refused
with its line number rather than guessed at; a misread config would join the wrong cluster or
with the wrong token. Scalars stay strings: nothing here needs numbers or booleans.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_CONFIG_BYTES = 1024 * 1024

_EMPTY = object()
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
_REFUSED_STARTS = {
    "{": "flow mappings ({...}) are not supported",
    "&": "anchors (&) are not supported",
    "*": "aliases (*) are not supported",
    "!": "tags (!) are not supported",
    "|": "block scalars (|) are not supported",
    ">": "block scalars (>) are not supported",
    "%": "directives (%) are not supported",
    "@": "'@' cannot start a plain scalar",
    "`": "'`' cannot start a plain scalar",
    "?": "complex keys (?) are not supported",
}
_DOUBLE_QUOTED_ESCAPES = {
    '"': '"',
    "\\": "\\",
    "/": "/",
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "0": "\0",
}


class ConfigError(Exception):
    """The config file cannot be used; the message names the file and, when known, the line."""


@dataclass(frozen=True)
class AgentConfig:
    """The settings the agent takes from a teleport.yaml-shaped file."""

    token_name: str
    method: str
    proxy_server: str | None = None
    node_name: str | None = None


def load_config(path: str | Path) -> AgentConfig:
    """Read and validate ``path``; raises ConfigError with the line of the problem."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    try:
        data = parse_yaml_subset(text)
    except _SyntaxError as exc:
        raise ConfigError(f"{path}:{exc.line}: {exc.message}") from None
    return _agent_config(data, path)


def parse_yaml_subset(text: str) -> _Mapping:
    """Parse the supported YAML subset into nested dicts, lists and strings.

    Raises _SyntaxError (with ``line``) for anything outside the subset.
    """
    lines = _tokenize(text)
    if not lines:
        return _Mapping()
    if lines[0].kind != "pair":
        raise _SyntaxError(lines[0].number, "the top level must be a mapping")
    value, pos = _parse_block(lines, 0, lines[0].indent)
    if pos < len(lines):
        raise _SyntaxError(lines[pos].number, "unexpected indentation")
    assert isinstance(value, _Mapping)
    return value


class _Mapping(dict[str, Any]):
    """A mapping that remembers the line of each key, for error messages."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[str, int] = {}


class _SyntaxError(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


@dataclass(frozen=True)
class _Line:
    number: int
    indent: int
    kind: str  # "pair" or "item"
    key: str | None
    value: Any  # _EMPTY when nothing follows ':' or '-'


def _tokenize(text: str) -> list[_Line]:
    lines: list[_Line] = []
    seen_content = seen_marker = False
    # Only \n and \r\n end a line here; str.splitlines would also split on characters that
    # YAML treats as content.
    for number, raw in enumerate(text.split("\n"), start=1):
        raw = raw.removesuffix("\r")
        if _CONTROL_RE.search(raw):
            raise _SyntaxError(number, "control characters are not allowed")
        if raw.lstrip(" ").startswith("#"):
            continue
        if "\t" in raw:
            raise _SyntaxError(number, "tabs are not supported; indent and separate with spaces")
        body = raw.rstrip(" ")
        stripped = body.lstrip(" ")
        if not stripped:
            continue
        indent = len(body) - len(stripped)
        if indent == 0 and (stripped == "---" or stripped.startswith("--- ")):
            if seen_content or seen_marker:
                raise _SyntaxError(number, "several YAML documents in one file are not supported")
            seen_marker = True
            if stripped[3:].strip() and not stripped[3:].lstrip(" ").startswith("#"):
                raise _SyntaxError(number, "content after '---' is not supported")
            continue
        if indent == 0 and stripped.startswith("..."):
            raise _SyntaxError(number, "document end markers (...) are not supported")
        seen_content = True
        lines.extend(_split(stripped, indent, number))
    return lines


def _split(content: str, column: int, number: int) -> list[_Line]:
    """Turn one line's content into tokens; ``- key: v`` yields an item and a nested pair."""
    if content == "-" or content.startswith("- "):
        rest = content[1:]
        inner = rest.lstrip(" ")
        if not inner or inner.startswith("#"):
            return [_Line(number, column, "item", None, _EMPTY)]
        inner_column = column + 1 + len(rest) - len(inner)
        if inner == "-" or inner.startswith("- ") or _key_of(inner, number) is not None:
            item = _Line(number, column, "item", None, _EMPTY)
            return [item, *_split(inner, inner_column, number)]
        return [_Line(number, column, "item", None, _value(inner, number))]
    found = _key_of(content, number)
    if found is None:
        raise _SyntaxError(number, "expected 'key: value' or '- item'")
    key, rest = found
    return [_Line(number, column, "pair", key, _value(rest, number))]


def _key_of(content: str, number: int) -> tuple[str, str] | None:
    """Split ``key: rest``; None when ``content`` is not a key/value pair."""
    if content[0] in "\"'":
        key, end = _quoted(content, 0, number)
        rest = content[end:]
        if rest == ":" or rest.startswith(": "):
            return key, rest[1:]
        return None
    plain = content[: _comment_start(content)]
    for index, char in enumerate(plain):
        if char == ":" and (index + 1 == len(plain) or plain[index + 1] == " "):
            key = plain[:index].rstrip()
            if key and key[0] in _REFUSED_STARTS:
                raise _SyntaxError(number, _REFUSED_STARTS[key[0]])
            if not key or key[0] in "[]{}-,#":
                raise _SyntaxError(number, f"unsupported key {key!r}")
            return key, content[index + 1 :]
    return None


def _value(text: str, number: int) -> Any:
    """Parse what follows ``key:`` or ``- `` up to an optional trailing comment."""
    text = text.lstrip(" ")
    if not text or text.startswith("#"):
        return _EMPTY
    if text[0] in "\"'":
        value, end = _quoted(text, 0, number)
        _expect_line_end(text[end:], number)
        return value
    if text[0] == "[":
        items, end = _flow_sequence(text, number)
        _expect_line_end(text[end:], number)
        return items
    return _plain(text[: _comment_start(text)].rstrip(), number)


def _comment_start(text: str) -> int:
    """Index of a ``#`` that starts a comment in plain text, or the length of ``text``."""
    for index, char in enumerate(text):
        if char == "#" and (index == 0 or text[index - 1] == " "):
            return index
    return len(text)


def _expect_line_end(rest: str, number: int) -> None:
    stripped = rest.lstrip(" ")
    if stripped and not (stripped.startswith("#") and stripped != rest):
        raise _SyntaxError(number, f"unexpected text {stripped!r} after a value")


def _plain(text: str, number: int) -> str:
    if text[0] in _REFUSED_STARTS:
        raise _SyntaxError(number, _REFUSED_STARTS[text[0]])
    if text[0] in "]},":
        raise _SyntaxError(number, f"unsupported value {text!r}")
    if text == "-" or text.startswith("- "):
        raise _SyntaxError(number, "a list item must start its own line")
    if ": " in text or text.endswith(":"):
        raise _SyntaxError(number, "a value containing ': ' must be quoted")
    return text


def _flow_sequence(text: str, number: int) -> tuple[list[str], int]:
    """Read ``[a, "b"]`` at the start of ``text``; returns the items and the index after it."""
    items: list[str] = []
    pos = 1
    while True:
        while pos < len(text) and text[pos] == " ":
            pos += 1
        if pos >= len(text):
            raise _SyntaxError(number, "a flow sequence must end on its line with ']'")
        if text[pos] == "]" and not items:
            return items, pos + 1
        if text[pos] in "\"'":
            item, pos = _quoted(text, pos, number)
        else:
            end = pos
            while end < len(text) and text[end] not in ",]":
                end += 1
            plain = text[pos:end].strip()
            if not plain or any(char in plain for char in "[]{}\"'#"):
                raise _SyntaxError(number, "flow sequences may hold plain or quoted scalars only")
            item, pos = _plain(plain, number), end
        items.append(item)
        while pos < len(text) and text[pos] == " ":
            pos += 1
        if pos < len(text) and text[pos] == "]":
            return items, pos + 1
        if pos >= len(text) or text[pos] != ",":
            raise _SyntaxError(number, "expected ',' or ']' after a flow sequence item")
        pos += 1
        if text[pos:].lstrip(" ").startswith("]"):
            raise _SyntaxError(number, "a flow sequence must not end with ','")


def _quoted(text: str, start: int, number: int) -> tuple[str, int]:
    """Read a quoted scalar at ``start``; returns its value and the index after it."""
    quote = text[start]
    out: list[str] = []
    pos = start + 1
    while pos < len(text):
        char = text[pos]
        if quote == "'" and char == "'":
            if text[pos + 1 : pos + 2] == "'":
                out.append("'")
                pos += 2
                continue
            return "".join(out), pos + 1
        if quote == '"' and char == '"':
            return "".join(out), pos + 1
        if quote == '"' and char == "\\":
            escape = text[pos + 1 : pos + 2]
            if escape in _DOUBLE_QUOTED_ESCAPES:
                out.append(_DOUBLE_QUOTED_ESCAPES[escape])
                pos += 2
                continue
            raise _SyntaxError(number, f"unsupported escape '\\{escape}' in a quoted string")
        out.append(char)
        pos += 1
    raise _SyntaxError(number, "quoted strings must close on the same line")


def _parse_block(lines: list[_Line], pos: int, indent: int) -> tuple[Any, int]:
    if lines[pos].kind == "item":
        return _parse_sequence(lines, pos, indent)
    return _parse_mapping(lines, pos, indent)


def _parse_mapping(lines: list[_Line], pos: int, indent: int) -> tuple[_Mapping, int]:
    result = _Mapping()
    while pos < len(lines):
        line = lines[pos]
        if line.indent < indent:
            break
        if line.indent > indent:
            raise _SyntaxError(line.number, "unexpected indentation")
        if line.kind != "pair":
            raise _SyntaxError(line.number, "a list item where a 'key: value' was expected")
        assert line.key is not None
        if line.key in result:
            raise _SyntaxError(line.number, f"duplicate key {line.key!r}")
        pos += 1
        value: Any = line.value
        if value is _EMPTY:
            following = lines[pos] if pos < len(lines) else None
            if following is not None and following.indent > indent:
                value, pos = _parse_block(lines, pos, following.indent)
            elif following is not None and following.indent == indent and following.kind == "item":
                value, pos = _parse_sequence(lines, pos, indent)
            else:
                value = None
        result[line.key] = value
        result.lines[line.key] = line.number
    return result, pos


def _parse_sequence(lines: list[_Line], pos: int, indent: int) -> tuple[list[Any], int]:
    items: list[Any] = []
    while pos < len(lines):
        line = lines[pos]
        if line.indent != indent or line.kind != "item":
            if line.indent > indent:
                raise _SyntaxError(line.number, "unexpected indentation")
            break
        pos += 1
        value: Any = line.value
        if value is _EMPTY:
            following = lines[pos] if pos < len(lines) else None
            if following is not None and following.indent > indent:
                value, pos = _parse_block(lines, pos, following.indent)
            else:
                value = None
        items.append(value)
    return items, pos


def _agent_config(data: _Mapping, path: Path) -> AgentConfig:
    teleport = data.get("teleport")
    if not isinstance(teleport, _Mapping):
        raise ConfigError(f"{path}: no 'teleport' section")
    join_params = teleport.get("join_params")
    if not isinstance(join_params, _Mapping):
        raise ConfigError(
            f"{path}:{teleport.lines.get('join_params', data.lines['teleport'])}: "
            "no 'teleport.join_params' section"
        )
    token_name = _string(join_params, "token_name", "teleport.join_params", path, required=True)
    method = _string(join_params, "method", "teleport.join_params", path, required=True)
    if method != "ec2":
        raise ConfigError(
            f"{path}:{join_params.lines['method']}: teleport.join_params.method is {method!r}; "
            "this agent joins with the 'ec2' method only"
        )
    assert token_name is not None and method is not None
    return AgentConfig(
        token_name=token_name,
        method=method,
        proxy_server=_string(teleport, "proxy_server", "teleport", path),
        node_name=_string(teleport, "nodename", "teleport", path),
    )


def _string(
    section: _Mapping, key: str, prefix: str, path: Path, *, required: bool = False
) -> str | None:
    value = section.get(key)
    if value is None or value == "":
        if required:
            raise ConfigError(f"{path}: {prefix}.{key} is required")
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{path}:{section.lines[key]}: {prefix}.{key} must be a single value")
    return value
