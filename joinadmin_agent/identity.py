"""The agent's data dir: this host's id, its key pairs and the credentials issued for them.

A data dir belongs to exactly one host. Machine images and snapshots often carry a data dir
from the machine they were made on; reusing it would present another host's keys, so a data
dir whose ``host_id`` differs from this instance's is refused, never overwritten.

Layout (directory 0700, private keys 0600, everything else 0644)::

    host_id                  <accountId>-<instanceId>, written before any key
    tls.key / tls.pub        ECDSA P-256, PKCS#8 / SubjectPublicKeyInfo PEM
    ssh_host_key(.pub)       Ed25519, OpenSSH formats
    tls.crt, tls-ca.crt      host certificate, all cluster CA certificates
    ssh_host_key-cert.pub    SSH host certificate
    ssh_ca.pub               SSH CA public keys
    join.json                summary of the join; written last, so it marks a complete join
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from joinadmin_agent.client import JoinResult
from joinadmin_agent.files import UnsafeFileError, atomic_write, read_file

DEFAULT_DATA_DIR = Path("/var/lib/joinadmin-agent")

HOST_ID_FILE = "host_id"
TLS_KEY_FILE = "tls.key"
TLS_PUB_FILE = "tls.pub"
SSH_KEY_FILE = "ssh_host_key"
SSH_PUB_FILE = "ssh_host_key.pub"
TLS_CERT_FILE = "tls.crt"
TLS_CA_FILE = "tls-ca.crt"
SSH_CERT_FILE = "ssh_host_key-cert.pub"
SSH_CA_FILE = "ssh_ca.pub"
JOIN_FILE = "join.json"

_IDENTITY_FILES = (
    TLS_KEY_FILE,
    TLS_PUB_FILE,
    SSH_KEY_FILE,
    SSH_PUB_FILE,
    TLS_CERT_FILE,
    TLS_CA_FILE,
    SSH_CERT_FILE,
    SSH_CA_FILE,
    JOIN_FILE,
)


_PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


class IdentityError(Exception):
    """The data dir cannot be used for this host; the message says what to do."""


@dataclass(frozen=True)
class HostKeys:
    """This host's two key pairs: TLS (ECDSA P-256) and SSH (Ed25519)."""

    tls_key: ec.EllipticCurvePrivateKey
    ssh_key: ed25519.Ed25519PrivateKey

    @property
    def public_tls_pem(self) -> str:
        """PEM SubjectPublicKeyInfo, as the join request carries it."""
        return (
            self.tls_key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    @property
    def public_ssh_line(self) -> str:
        """``ssh-ed25519 AAAA...`` without a comment."""
        return (
            self.ssh_key.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )


def has_identity(data_dir: Path) -> bool:
    """Whether the data dir already holds a host id and a TLS key, before this run touches it.

    Such a host may have joined before, so the agent proves its key and re-joins instead of
    sending a plain join that the server would refuse as already joined. Whether the identity
    is this instance's and usable is for ``open_identity`` to decide.
    """
    return os.path.lexists(data_dir / HOST_ID_FILE) and os.path.lexists(data_dir / TLS_KEY_FILE)


def open_identity(data_dir: Path, host_id: str) -> HostKeys:
    """Prepare ``data_dir`` for ``host_id`` and return its key pairs, created once.

    Raises IdentityError when the directory is unsafe or holds another host's identity.
    """
    try:
        prepare_data_dir(data_dir)
        claim_host_id(data_dir, host_id)
        return load_or_create_keys(data_dir)
    except UnsafeFileError as exc:
        raise IdentityError(str(exc)) from None


def prepare_data_dir(data_dir: Path) -> None:
    """Create the data dir with mode 0700, or check an existing one.

    An existing directory must belong to the agent's user and not be writable by anyone
    else: whoever can write there can swap keys or plant a host id.
    """
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.stat(data_dir)
    except OSError as exc:
        raise IdentityError(f"cannot create data dir {data_dir}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise IdentityError(f"data dir {data_dir} exists but is not a directory")
    if info.st_uid != os.geteuid():
        raise IdentityError(
            f"data dir {data_dir} belongs to uid {info.st_uid}, not to the user running the "
            "agent; run the agent as its owner or choose another --data-dir"
        )
    if info.st_mode & 0o022:
        raise IdentityError(
            f"data dir {data_dir} is writable by group or others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}), so its content cannot be trusted; check it, "
            f"then `chmod 700 {data_dir}` or remove it"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(data_dir, 0o700)


def claim_host_id(data_dir: Path, host_id: str) -> None:
    """Record ``host_id`` in a fresh data dir, or check that the data dir is this host's.

    The host id is written before any key so that keys without a host id can only mean a
    tampered or foreign directory, which is refused as well.
    """
    path = data_dir / HOST_ID_FILE
    raw = read_file(path)
    if raw is None:
        leftovers = [name for name in _IDENTITY_FILES if os.path.lexists(data_dir / name)]
        if leftovers:
            raise IdentityError(
                f"data dir {data_dir} holds {', '.join(leftovers)} but no {HOST_ID_FILE} file, "
                f"so there is no telling which host they belong to; move {data_dir} aside (or "
                "remove it) and run join again"
            )
        atomic_write(path, f"{host_id}\n".encode(), 0o644)
        return
    recorded = raw.decode("utf-8", errors="replace").strip()
    if recorded != host_id:
        raise IdentityError(
            f"data dir {data_dir} holds the identity of another host ({recorded[:80]!r}), but "
            f"this instance is {host_id!r}. It was probably copied from another machine (for "
            "example baked into a machine image) and its keys must not be reused here. Move it "
            f"aside (mv {data_dir} {data_dir}.old) or remove it, then run join again."
        )


def load_or_create_keys(data_dir: Path) -> HostKeys:
    """Load the key pairs, generating each the first time; public halves are rewritten."""
    tls_key = _load_or_create(
        data_dir / TLS_KEY_FILE,
        lambda: ec.generate_private_key(ec.SECP256R1()),
        serialization.PrivateFormat.PKCS8,
    )
    if not isinstance(tls_key, ec.EllipticCurvePrivateKey) or not isinstance(
        tls_key.curve, ec.SECP256R1
    ):
        raise IdentityError(f"{data_dir / TLS_KEY_FILE} is not an ECDSA P-256 key")
    ssh_key = _load_or_create(
        data_dir / SSH_KEY_FILE,
        ed25519.Ed25519PrivateKey.generate,
        serialization.PrivateFormat.OpenSSH,
    )
    if not isinstance(ssh_key, ed25519.Ed25519PrivateKey):
        raise IdentityError(f"{data_dir / SSH_KEY_FILE} is not an Ed25519 key")
    keys = HostKeys(tls_key=tls_key, ssh_key=ssh_key)
    _write_if_changed(data_dir / TLS_PUB_FILE, keys.public_tls_pem.encode())
    _write_if_changed(data_dir / SSH_PUB_FILE, f"{keys.public_ssh_line}\n".encode())
    return keys


def store_credentials(
    data_dir: Path, host_id: str, keys: HostKeys, result: JoinResult, server: str
) -> None:
    """Write the issued credentials, after checking they belong to this host and its keys.

    A certificate for another host id or another key would be useless at best and a sign
    of a confused or hostile server at worst, so nothing is written in that case.
    """
    if result.host_id != host_id:
        raise IdentityError(
            f"the server issued credentials for host {result.host_id!r}, but this instance is "
            f"{host_id!r}; not storing them"
        )
    leaf = x509.load_pem_x509_certificates(result.tls_cert.encode())[0]
    if _spki(leaf.public_key()) != _spki(keys.tls_key.public_key()):
        raise IdentityError("the server's TLS certificate is not for this host's TLS key")
    if result.ssh_cert is not None:
        _check_ssh_cert(result.ssh_cert, keys)
    # join.json marks a complete set; drop the old one until the new set is fully written.
    if os.path.lexists(data_dir / JOIN_FILE):
        os.unlink(data_dir / JOIN_FILE)
    atomic_write(data_dir / TLS_CERT_FILE, _pem_block(result.tls_cert), 0o644)
    atomic_write(
        data_dir / TLS_CA_FILE, b"".join(_pem_block(pem) for pem in result.tls_ca_certs), 0o644
    )
    if result.ssh_cert is not None:
        atomic_write(data_dir / SSH_CERT_FILE, f"{result.ssh_cert.strip()}\n".encode(), 0o644)
    elif os.path.lexists(data_dir / SSH_CERT_FILE):
        # A certificate from an earlier join would no longer match what the server issued.
        os.unlink(data_dir / SSH_CERT_FILE)
    atomic_write(
        data_dir / SSH_CA_FILE,
        "".join(f"{key.strip()}\n" for key in result.ssh_ca_keys).encode(),
        0o644,
    )
    summary = {
        "host_id": result.host_id,
        "roles": result.roles,
        "expires": result.expires,
        "join_attempt_id": result.join_attempt_id,
        "server": server,
    }
    atomic_write(data_dir / JOIN_FILE, (json.dumps(summary, indent=2) + "\n").encode(), 0o644)


def _load_or_create(
    path: Path, generate: Callable[[], _PrivateKey], private_format: serialization.PrivateFormat
) -> object:
    raw = read_file(path, private=True)
    if raw is None:
        key = generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, private_format, serialization.NoEncryption()
        )
        atomic_write(path, pem, 0o600)
        return key
    try:
        if private_format is serialization.PrivateFormat.OpenSSH:
            return serialization.load_ssh_private_key(raw, password=None)
        return serialization.load_pem_private_key(raw, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise IdentityError(f"cannot load private key {path}: {exc}") from None


def _write_if_changed(path: Path, data: bytes) -> None:
    if read_file(path) != data:
        atomic_write(path, data, 0o644)


def _pem_block(pem: str) -> bytes:
    return f"{pem.strip()}\n".encode()


def _spki(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _check_ssh_cert(line: str, keys: HostKeys) -> None:
    try:
        cert = serialization.load_ssh_public_identity(line.strip().encode())
    except (ValueError, UnsupportedAlgorithm):
        raise IdentityError("the server's ssh_cert is not an OpenSSH certificate") from None
    if not isinstance(cert, serialization.SSHCertificate):
        raise IdentityError("the server's ssh_cert is a plain key, not a certificate")
    if cert.type is not serialization.SSHCertificateType.HOST:
        raise IdentityError("the server's ssh_cert is not a host certificate")
    issued_for = cert.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    if issued_for.decode() != keys.public_ssh_line:
        raise IdentityError("the server's SSH certificate is not for this host's SSH key")
