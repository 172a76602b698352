"""Building the OpenSSH key revocation list (KRL) of the host CA's SSH certificates.

No Django here: `joins.revocation` decides which SSH serials are revoked and calls `build_krl`.
The format is OpenSSH's own (PROTOCOL.krl in the OpenSSH sources), which `ssh` reads through
`RevokedHostKeys` and `ssh-keygen -Q` checks against: a header, then one certificates section
per CA key, each holding the revoked serial numbers of the certificates that CA signed.

Why a KRL and not only the X.509 CRL: an SSH client never reads a CRL. Without this list a
retired host's SSH host certificate stays trusted until it expires.

The list is not signed: OpenSSH does not check KRL signatures, so its integrity is that of the
channel it comes over (HTTPS from joinadmin, or configuration management). Each section names
its CA, so a serial revokes only certificates of that CA.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Iterable, Sequence
from datetime import datetime

from joins.sshcert import ssh_string

MAGIC = b"SSHKRL\n\x00"
FORMAT_VERSION = 1
SECTION_CERTIFICATES = 1
CERT_SECTION_SERIAL_LIST = 0x20
MAX_SERIAL = 2**64 - 1


def ca_key_blob(public_key_line: str) -> bytes:
    """The wire form of an SSH public key from its `authorized_keys` line ("type base64 [c]").

    Raises ValueError for a line that is not one: a KRL section naming a wrong CA would revoke
    nothing, silently.
    """
    parts = public_key_line.split()
    if len(parts) < 2:
        raise ValueError("an SSH public key line is 'type base64 [comment]'")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except binascii.Error:
        raise ValueError("the SSH public key is not valid base64") from None
    (name_length,) = struct.unpack(">I", blob[:4]) if len(blob) >= 4 else (-1,)
    if blob[4 : 4 + name_length] != parts[0].encode():
        raise ValueError(f"the SSH public key's blob does not start with its type {parts[0]!r}")
    return blob


def build_krl(
    sections: Sequence[tuple[bytes, Iterable[int]]],
    *,
    version: int,
    generated: datetime,
    comment: str = "",
) -> bytes:
    """A KRL revoking, for each `(ca_key_blob, serials)`, those serials under that CA.

    `version` is the list's own number (a client may keep the higher one); serials are 64-bit
    and not 0 (OpenSSH gives 0 no meaning as a serial). A CA with no serial gets no section.
    """
    if not 0 <= version <= MAX_SERIAL:
        raise ValueError("the KRL version is a 64-bit number")
    out = [
        MAGIC,
        struct.pack(">IQQQ", FORMAT_VERSION, version, max(0, int(generated.timestamp())), 0),
        ssh_string(b""),  # reserved
        ssh_string(comment.encode()),
    ]
    for ca_blob, serials in sections:
        ordered = sorted(set(serials))
        if not ordered:
            continue
        if ordered[0] < 1 or ordered[-1] > MAX_SERIAL:
            raise ValueError("SSH certificate serials are 64-bit numbers above 0")
        serial_list = b"".join(struct.pack(">Q", serial) for serial in ordered)
        body = (
            ssh_string(ca_blob)
            + ssh_string(b"")  # reserved
            + bytes([CERT_SECTION_SERIAL_LIST])
            + ssh_string(serial_list)
        )
        out.append(bytes([SECTION_CERTIFICATES]) + ssh_string(body))
    return b"".join(out)
