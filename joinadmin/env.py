"""Reading the environment's variables, for the settings and for gunicorn.conf.py. No Django.

gunicorn reads its configuration before Django is set up, so the two share these small readers
rather than each spelling out what counts as "true".
"""

from __future__ import annotations

import os


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]
