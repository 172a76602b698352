"""Careful file access for the agent's data dir: atomic writes and guarded reads.

The data dir holds private keys that prove this host's identity, so a half-written file after a
crash, a symlink planted by someone else, or a key readable by other users would each be a way
to lose or leak that identity.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

MAX_READ_BYTES = 1024 * 1024


class UnsafeFileError(Exception):
    """A file the agent relies on is not what it should be (type, owner or mode)."""


def atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new content, never a mix.

    The temp file is created in the same directory (rename is atomic only within one file
    system), gets its final mode before any byte is written, and is flushed to disk before the
    rename so a power loss cannot leave an empty file under the final name.
    """
    directory = path.parent
    tmp = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def read_file(path: Path, *, private: bool = False) -> bytes | None:
    """Return the content of a regular file, or None when it does not exist.

    Symlinks are not followed: a link in the data dir could point the agent at another
    host's key. With ``private`` the file must belong to us and be closed to group and others;
    a private key that others could read has to be treated as exposed, so it is refused.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if os.path.islink(path):
            raise UnsafeFileError(f"{path} is a symbolic link; refusing to follow it") from None
        raise UnsafeFileError(f"cannot open {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFileError(f"{path} is not a regular file")
        if private:
            if info.st_uid != os.geteuid():
                raise UnsafeFileError(
                    f"{path} belongs to uid {info.st_uid}, not to the user running the agent"
                )
            if info.st_mode & 0o077:
                raise UnsafeFileError(
                    f"{path} has mode {stat.S_IMODE(info.st_mode):04o}: other users could read "
                    "this private key, so it must be treated as exposed"
                )
        data = handle.read(MAX_READ_BYTES + 1)
    if len(data) > MAX_READ_BYTES:
        raise UnsafeFileError(f"{path} is larger than {MAX_READ_BYTES} bytes")
    return data


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; some file systems refuse fsync on directories.
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
