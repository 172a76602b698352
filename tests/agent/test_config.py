"""The teleport.yaml-shaped config file and its strict YAML-subset reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from joinadmin_agent.config import ConfigError, load_config, parse_yaml_subset

GUIDE_EXAMPLE = """\
# /etc/teleport.yaml
version: v3
teleport:
  join_params:
    token_name: ec2-token
    method: ec2
  proxy_server: https://teleport.example.com:443
ssh_service:
  enabled: true
auth_service:
  enabled: false
proxy_service:
  enabled: false
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "teleport.yaml"
    path.write_text(text)
    return path


def test_it_reads_token_method_and_proxy_from_the_guides_teleport_yaml(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GUIDE_EXAMPLE))

    assert config.token_name == "ec2-token"
    assert config.method == "ec2"
    assert config.proxy_server == "https://teleport.example.com:443"
    assert config.node_name is None


def test_it_reads_the_nodename_and_ignores_sections_it_does_not_need(tmp_path: Path) -> None:
    text = """\
---
version: v3
teleport:
  nodename: web-1   # as in Teleport
  data_dir: /var/lib/teleport
  join_params: {token_name: ignored} # never reached: flow mappings are refused
"""
    with pytest.raises(ConfigError, match=r"teleport.yaml:6: flow mappings"):
        load_config(write(tmp_path, text))

    text = text.replace("join_params: {token_name: ignored}", "join_params:")
    text += '    token_name: "ec2-token"\n    method: ec2\nssh_service:\n  commands:\n'
    text += "  - name: hostname\n    command: [hostname]\n    period: 1m0s\n"
    config = load_config(write(tmp_path, text))

    assert (config.token_name, config.node_name, config.proxy_server) == (
        "ec2-token",
        "web-1",
        None,
    )


def test_a_method_other_than_ec2_is_refused_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, GUIDE_EXAMPLE.replace("method: ec2", "method: iam"))

    with pytest.raises(ConfigError) as refused:
        load_config(path)

    assert str(refused.value).startswith(f"{path}:6: ")
    assert "'iam'" in str(refused.value)
    assert "'ec2'" in str(refused.value)


def test_a_missing_method_is_refused_rather_than_defaulted(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"teleport\.join_params\.method is required"):
        load_config(write(tmp_path, GUIDE_EXAMPLE.replace("    method: ec2\n", "")))


def test_a_missing_token_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="token_name is required"):
        load_config(write(tmp_path, GUIDE_EXAMPLE.replace("    token_name: ec2-token\n", "")))


def test_a_file_without_join_params_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="join_params"):
        load_config(write(tmp_path, "teleport:\n  proxy_server: example.com:443\n"))


def test_a_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    ("text", "line", "complaint"),
    [
        ("teleport:\n  join_params: &params\n", 2, "anchors"),
        ("a: 1\nb: *ref\n", 2, "aliases"),
        ("a: !!str x\n", 1, "tags"),
        ("a: |\n  text\n", 1, "block scalars"),
        ("a: {b: c}\n", 1, "flow mappings"),
        ("a:\n\tb: c\n", 2, "tabs"),
        ("a: b\tc\n", 1, "tabs"),
        ("a: 1\n---\nb: 2\n", 2, "several YAML documents"),
        ("a: 1\na: 2\n", 2, "duplicate key"),
        ("a: 1\n   b: 2\n", 2, "unexpected indentation"),
        ("a:\n  b: 1\n c: 2\n", 3, "unexpected indentation"),
        ("just a scalar\n", 1, "expected 'key: value'"),
        ('a: "unterminated\n', 1, "close on the same line"),
        ("a: b: c\n", 1, "must be quoted"),
        ("a: [x, [y]]\n", 1, "flow sequences"),
        ('a: "bad \\q escape"\n', 1, "unsupported escape"),
        ("- a\n- b\n", 1, "top level must be a mapping"),
        ("a:\n  - x\n  b: y\n", 3, "unexpected indentation"),
    ],
)
def test_unsupported_yaml_is_refused_with_its_line_number(
    tmp_path: Path, text: str, line: int, complaint: str
) -> None:
    path = write(tmp_path, text)

    with pytest.raises(ConfigError) as refused:
        load_config(path)

    assert str(refused.value).startswith(f"{path}:{line}: ")
    assert complaint in str(refused.value)


def test_the_reader_understands_the_subset_it_promises() -> None:
    text = """\
# comment
top:
  plain: value with spaces # trailing comment
  url: https://example.com:443/a#fragment
  single: 'it''s # not a comment'
  double: "tab\\there \\"quoted\\""
  empty:
  flow: [Node, "App", 'Db']
  nothing: []
  list:
  - one
  - two
  nested_list:
    - name: first
      value: 1
    - name: second
  hash#in: key
"""
    assert parse_yaml_subset(text) == {
        "top": {
            "plain": "value with spaces",
            "url": "https://example.com:443/a#fragment",
            "single": "it's # not a comment",
            "double": 'tab\there "quoted"',
            "empty": None,
            "flow": ["Node", "App", "Db"],
            "nothing": [],
            "list": ["one", "two"],
            "nested_list": [{"name": "first", "value": "1"}, {"name": "second"}],
            "hash#in": "key",
        }
    }
