"""Atomic file writing, shared by every module that writes files (a leaf: imports nothing of
ldpk)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)
#: permissions of a written file: what open() would give (0666 less the umask); mkstemp's
#: temporary files are 0600, so outputs were unreadable to a colleague sharing the folder.
FILE_MODE = 0o666 & ~_UMASK
#: permissions of a created folder: what mkdir would give (0777 less the umask).
DIR_MODE = 0o777 & ~_UMASK


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path`` (with
    the permissions open() would give it), on failure removed, so a half-written file never
    appears under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
