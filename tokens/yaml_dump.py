"""Writing YAML for token exports: block style, no anchors, strings that read back as strings.

Pure Python, no Django. Shared by the tctl YAML export (`tokens.codecs.to_yaml`) and the
Kubernetes manifest (`tokens.kubernetes.to_kubernetes`) so that both quote account ids and
other look-alike strings the same way, and never emit an alias our own loader would refuse.
"""

from __future__ import annotations

from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    """Block-style YAML that never emits anchors (our own loader refuses them)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style: str | None = None
    if "\n" in value:
        style = "|"
    elif dumper.resolve(yaml.ScalarNode, value, (True, False)) != "tag:yaml.org,2002:str":
        # "111111111111", "yes", "2030-01-01T00:00:00Z" would read back as other types.
        style = '"'
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def _dump_yaml(obj: Any) -> str:
    return yaml.dump(
        obj,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1_000_000,
    )
