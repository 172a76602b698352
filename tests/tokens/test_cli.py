"""`manage.py tokens ...` and `manage.py apikeys ...`: the contract's commands."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command

from accounts.models import ApiKey
from audit.models import AdminAction
from tokens.models import Token

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
GUIDE_TOKEN = """kind: token
version: v2
metadata:
  name: ec2-token
spec:
  roles: [Node]
  join_method: ec2
  aws_iid_ttl: 5m
  allow:
  - aws_account: "111111111111"
    aws_regions:
    - us-west-1
    - us-west-2
"""


def run(*args: str, stdin: str = "") -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        call_command(*args, stdout=out, stderr=err)
    finally:
        sys.stdin = old
    return out.getvalue(), err.getvalue()


def test_create_from_a_file_then_list_and_get(tmp_path):
    path = tmp_path / "token.yaml"
    path.write_text(GUIDE_TOKEN)
    out, _ = run("tokens", "create", str(path))
    assert 'token "ec2-token" has been created' in out
    out, _ = run("tokens", "ls")
    assert "ec2-token" in out and "111111111111" in out
    listed = json.loads(run("tokens", "ls", "-o", "json")[0])
    assert [t["metadata"]["name"] for t in listed] == ["ec2-token"]
    one = json.loads(run("tokens", "get", "ec2-token", "-o", "json")[0])
    assert one["kind"] == "token" and one["version"] == "v2"
    assert one["spec"]["allow"][0]["aws_regions"] == ["us-west-1", "us-west-2"]
    as_yaml = yaml.safe_load(run("tokens", "get", "ec2-token")[0])
    assert as_yaml["metadata"]["name"] == "ec2-token"
    k8s = yaml.safe_load(run("tokens", "get", "ec2-token", "-o", "k8s")[0])
    assert k8s["kind"] == "TeleportProvisionToken"
    assert (
        'resource "teleport_provision_token"'
        in run("tokens", "get", "ec2-token", "-o", "terraform")[0]
    )
    assert AdminAction.objects.filter(action="token.import", via="cli").count() == 1


def test_create_from_stdin_refuses_a_duplicate_without_force():
    run("tokens", "create", "-", stdin=GUIDE_TOKEN)
    with pytest.raises(CommandError, match="already exists"):
        run("tokens", "create", "-", stdin=GUIDE_TOKEN.replace("5m", "7m"))
    run("tokens", "create", "-", "--force", stdin=GUIDE_TOKEN.replace("5m", "7m"))
    assert Token.objects.get().aws_iid_ttl == "7m"


def test_rm_deletes_and_an_unknown_name_is_an_error():
    run("tokens", "create", "-", stdin=GUIDE_TOKEN)
    assert "deleted" in run("tokens", "rm", "ec2-token")[0]
    with pytest.raises(CommandError, match="no token named"):
        run("tokens", "rm", "ec2-token")


def test_a_refused_input_names_the_field():
    with pytest.raises(CommandError, match=r"spec\.allow\[0\]\.aws_account"):
        run("tokens", "create", "-", stdin=GUIDE_TOKEN.replace('"111111111111"', '"123"'))
    assert Token.objects.count() == 0


def test_a_refused_input_exits_non_zero_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: token\nversion: v2\nmetadata: {name: x}\nspec: {roles: [Bot]}\n")
    env = {"JOINADMIN_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "tokens", "create", str(bad)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "spec.roles" in result.stderr


def test_apikeys_create_prints_the_key_once_and_revoke_disables_it(admin_user):
    out, err = run("apikeys", "create", "--user", admin_user.username)
    secret = out.strip()
    key = ApiKey.objects.get()
    assert secret.startswith(f"ja_{key.prefix}_") and secret not in key.secret_hash
    assert "not shown again" in err
    assert run("apikeys", "revoke", key.prefix)[0].strip() == f"revoked {key.prefix}"
    key.refresh_from_db()
    assert key.is_revoked
    with pytest.raises(CommandError, match="already revoked"):
        run("apikeys", "revoke", key.prefix)
    with pytest.raises(CommandError, match="no user"):
        run("apikeys", "create", "--user", "ghost")
    assert list(AdminAction.objects.values_list("action", flat=True).order_by("id")) == [
        "apikey.create",
        "apikey.revoke",
    ]
