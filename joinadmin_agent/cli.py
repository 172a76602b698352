"""Command line of the agent: ``join`` and ``install systemd``.

Exit codes: 0 success, 1 refused or failed, 2 usage (bad arguments, config file, server URL or
CA file). Errors go to stderr as one readable message, never as a traceback: the operator
reading them is often looking at cloud-init output, not at Python.
"""

from __future__ import annotations

import argparse
import socket
import sys
import unicodedata
from pathlib import Path
from typing import Any

from joinadmin_agent.client import (
    JoinError,
    JoinRefused,
    Rejoin,
    ServerUrlError,
    join_url,
    post_join,
    tls_context,
)
from joinadmin_agent.config import ConfigError, load_config
from joinadmin_agent.identity import (
    DEFAULT_DATA_DIR,
    HostKeys,
    IdentityError,
    has_identity,
    open_identity,
    store_credentials,
)
from joinadmin_agent.imds import ImdsClient, ImdsError, InstanceIdentity
from joinadmin_agent.rejoin import proof_signer
from joinadmin_agent.systemd import DEFAULT_CONFIG, UnitError, render_unit, write_unit

PROG = "joinadmin-agent"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_HINTS = {
    "token_invalid": "check the token name; the token may also have expired",
    "role_not_allowed": "request only roles the token lists (--roles)",
    "iid_expired": "the instance was launched longer ago than the token's aws_iid_ttl allows",
    "no_matching_rule": "the token has no allow rule for this instance's account and region",
    "instance_already_joined": (
        "this instance has joined before; an administrator must forget its host "
        "(`manage.py hosts forget HOST_ID` or the console) before it can join again, or allow "
        "re-joins on the token (spec.allow_rejoin: true) so that the agent re-joins by itself "
        "with the key in its data dir"
    ),
    "rejoin_proof_invalid": (
        "the server does not accept this data dir's key as the host's key (the data dir was "
        "replaced, or the host was re-keyed elsewhere); an administrator must forget the host, "
        "then move the data dir aside and join again"
    ),
    "rejoin_challenge_invalid": (
        "the server's challenge expired or was already used; run join again (if it keeps "
        "happening, check the join servers' clocks)"
    ),
    "iid_replayed": (
        "the identity document is older than the one this host last joined with; check that "
        "AWS_EC2_METADATA_SERVICE_ENDPOINT points at this instance's metadata service"
    ),
}


class UsageError(Exception):
    """The command line or config cannot be used as given."""


def main(argv: list[str] | None = None) -> int:
    """Run the agent; returns the process exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return int(args.handler(args))
    except UsageError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_FAILED
    except Exception as exc:  # the promise is "no traceback", even for a bug
        _error(f"unexpected {type(exc).__name__}: {exc}")
        return EXIT_FAILED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Join this EC2 instance to the cluster with its AWS identity."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    join = commands.add_parser("join", help="join the cluster with this instance's identity")
    join.add_argument("--server", help="join server URL, e.g. https://joinadmin.example.com")
    join.add_argument("--token", help="name of the ec2 join token")
    join.add_argument(
        "--data-dir", help=f"where keys and credentials are kept (default {DEFAULT_DATA_DIR})"
    )
    join.add_argument("--roles", help="comma-separated roles, e.g. Node,App (default: the token's)")
    join.add_argument("--ca-file", help="PEM CA bundle to trust instead of the system store")
    join.add_argument("--node-name", help="node name (default: this machine's hostname)")
    join.add_argument(
        "--dns-name",
        action="append",
        default=[],
        dest="dns_names",
        metavar="NAME",
        help="DNS name for the host certificate (repeatable)",
    )
    join.add_argument(
        "--config", help="teleport.yaml-shaped file with join_params and proxy_server"
    )
    join.set_defaults(handler=_join)

    install = commands.add_parser("install", help="install helpers")
    targets = install.add_subparsers(dest="target", metavar="TARGET", required=True)
    unit = targets.add_parser("systemd", help="print or write a systemd unit")
    unit.add_argument("-o", "--output", help="write the unit to this path instead of stdout")
    unit.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        help=f"config the unit passes (default {DEFAULT_CONFIG})",
    )
    unit.add_argument(
        "--data-dir",
        default=str(DEFAULT_DATA_DIR),
        help=f"data dir the unit uses (default {DEFAULT_DATA_DIR})",
    )
    unit.set_defaults(handler=_install_systemd)
    return parser


def _join(args: argparse.Namespace) -> int:
    token, server, node_name = args.token, args.server, args.node_name
    if args.config:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        token = token or config.token_name
        server = server or config.proxy_server
        node_name = node_name or config.node_name
    if not server:
        raise UsageError("--server is required (or teleport.proxy_server in --config)")
    if not token:
        raise UsageError("--token is required (or teleport.join_params.token_name in --config)")
    roles = _roles(args.roles)
    data_dir = Path(args.data_dir) if args.data_dir else DEFAULT_DATA_DIR
    try:
        # Checked before IMDS so that a typo is reported as such, not after a network wait.
        join_url(server)
        tls_context(args.ca_file)
    except ServerUrlError as exc:
        raise UsageError(str(exc)) from None

    try:
        identity = ImdsClient().fetch_identity()
        # Looked at before open_identity creates anything: keys from an earlier run mean this
        # host may be registered, and then only a proof of its key lets it join again.
        rejoining = has_identity(data_dir)
        keys = open_identity(data_dir, identity.host_id)
        payload = _join_request(
            token=token,
            identity=identity,
            keys=keys,
            roles=roles,
            node_name=node_name or socket.gethostname(),
            dns_names=args.dns_names,
        )
        result = post_join(
            server,
            payload,
            ca_file=args.ca_file,
            on_retry=_report_retry,
            rejoin=_rejoin(identity, keys) if rejoining else None,
            on_notice=_report_notice,
        )
        store_credentials(data_dir, identity.host_id, keys, result, server)
    except JoinRefused as exc:
        _report_refusal(exc)
        return EXIT_FAILED
    except (ImdsError, IdentityError, JoinError) as exc:
        _error(str(exc))
        if isinstance(exc, JoinError) and exc.server_error is not None:
            _report_server_fields(exc)
        return EXIT_FAILED
    except OSError as exc:
        _error(f"{exc.filename or 'I/O'}: {exc.strerror or exc}")
        return EXIT_FAILED
    print(
        f"{'re-joined' if result.rejoined else 'joined'} as {result.host_id} with roles "
        f"{_clean(', '.join(result.roles)) or '-'}; "
        f"credentials in {data_dir} valid until {_clean(result.expires)} "
        f"(join attempt {_clean(result.join_attempt_id)})"
    )
    return EXIT_OK


def _join_request(
    *,
    token: str,
    identity: InstanceIdentity,
    keys: HostKeys,
    roles: list[str] | None,
    node_name: str,
    dns_names: list[str],
) -> dict[str, Any]:
    """The request body of CONTRACT §4."""
    payload: dict[str, Any] = {
        "token": token,
        "join_method": "ec2",
        "host_id": identity.host_id,
        "node_name": node_name,
        "ec2_identity_document": identity.rsa2048,
        "public_tls_key": keys.public_tls_pem,
        "public_ssh_key": keys.public_ssh_line,
        "dns_names": dns_names,
        "additional_principals": [identity.private_ip] if identity.private_ip else [],
    }
    if roles:
        payload["roles"] = roles
    return payload


def _rejoin(identity: InstanceIdentity, keys: HostKeys) -> Rejoin:
    """The proof of a re-join: signed with the TLS key the server last certified.

    The agent keeps its key pairs, so the keys to certify are the same ones; the server would
    also accept new keys signed for by the old one.
    """
    return Rejoin(
        host_id=identity.host_id,
        sign=proof_signer(
            host_id=identity.host_id,
            document=identity.rsa2048,
            signing_key=keys.tls_key,
            tls_public_key=keys.tls_key.public_key(),
            ssh_public_key=keys.ssh_key.public_key(),
        ),
    )


def _install_systemd(args: argparse.Namespace) -> int:
    try:
        text = render_unit(data_dir=args.data_dir, config=args.config)
    except UnitError as exc:
        raise UsageError(str(exc)) from None
    if not args.output:
        sys.stdout.write(text)
        return EXIT_OK
    path = Path(args.output)
    try:
        write_unit(path, text)
    except OSError as exc:
        _error(f"cannot write {path}: {exc.strerror or exc}")
        return EXIT_FAILED
    enable = f"systemctl daemon-reload && systemctl enable --now {path.name}"
    print(f"wrote {path}; enable it with: {enable}")
    return EXIT_OK


def _roles(value: str | None) -> list[str] | None:
    if value is None:
        return None
    roles = [role.strip() for role in value.split(",")]
    if not all(roles):
        raise UsageError(f"--roles {value!r} has an empty role name")
    return roles


def _report_retry(reason: str, wait: float) -> None:
    _error(f"{_clean(reason)}; retrying in {wait:.1f}s")


def _report_notice(text: str) -> None:
    _error(_clean(text))


def _report_refusal(exc: JoinRefused) -> None:
    if exc.server_error is None:
        _error(str(exc))
        return
    _error(f"the server refused the join (HTTP {exc.server_error.status})")
    _report_server_fields(exc)
    hint = _HINTS.get(exc.server_error.code or "")
    if hint:
        print(f"  hint: {hint}", file=sys.stderr)


def _report_server_fields(exc: JoinError) -> None:
    error = exc.server_error
    assert error is not None
    for name, value in (
        ("error", error.code),
        ("message", error.message),
        ("join_attempt_id", error.join_attempt_id),
    ):
        print(f"  {name}: {_clean(value) if value else '-'}", file=sys.stderr)


def _clean(text: str, limit: int = 500) -> str:
    """Server text without control characters, so it cannot drive the operator's terminal."""
    cleaned = "".join("?" if unicodedata.category(char) == "Cc" else char for char in text)
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "..."


def _error(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)
