"""Atomic file output: write beside the target, then rename, so a failure leaves nothing partial.

Torch-free; used by the runtime (audio, voices) and the converter (checkpoints, graphs, tokenizers).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _read_umask() -> int:
    # Read once at import: os.umask can only be queried by setting it, which would race with other
    # threads creating files (the server writes from worker threads).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()


@contextmanager
def atomic_output(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path in `path`'s directory to write to.

    When the block ends normally the file gets the usual permissions (0666 minus the umask;
    mkstemp makes it 0600) and is renamed onto `path`; on any exception it is removed. Errors from
    creating the temporary file (missing or read-only directory) propagate as OSError.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (flushed to disk before the rename); returns the path."""
    with atomic_output(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(path)
