"""Stored voices of the server (`<voices>/<name>.voice`) and safe resolution of reference paths."""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from pathlib import Path

from gsv_onnx.errors import GsvError

VOICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class VoiceNotFound(GsvError):
    """No stored voice of that name."""


class PathNotAllowed(GsvError):
    """A reference path outside the directories the server may read."""


class ReferenceTooLarge(GsvError):
    """A reference file on the server is larger than the upload limit."""


def check_voice_name(name: str) -> str:
    """Return `name` if it is a safe voice name, else raise `GsvError` saying what is allowed."""
    if not isinstance(name, str) or not VOICE_NAME.match(name) or name.endswith(".voice"):
        raise GsvError(
            f"bad voice name {name!r}: use 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit"
        )
    return name


class VoiceStore:
    """A directory of `.voice` files made for one bundle, with an in-memory cache."""

    def __init__(self, directory: str | os.PathLike, cache_size: int = 32) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._cache: OrderedDict[tuple, object] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def path(self, name: str) -> Path:
        return self.directory / f"{check_voice_name(name)}.voice"

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.directory.glob("*.voice") if VOICE_NAME.match(p.stem))

    def load(self, name: str):
        """The stored voice `name` (cached; reloaded when the file changes)."""
        from gsv_onnx.runtime.voice import Voice

        path = self.path(name)
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise VoiceNotFound(f"no voice named {name!r}; GET /v1/voices lists them") from None
        return self.cached(("stored", str(path), stat.st_mtime_ns, stat.st_size), lambda: Voice.load(path))

    def save(self, name: str, voice) -> Path:
        return voice.save(self.path(name))

    def delete(self, name: str) -> None:
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            raise VoiceNotFound(f"no voice named {name!r}; GET /v1/voices lists them") from None

    def cached(self, key: tuple, make):
        """Return the cached value for `key`, computing it with `make()` on a miss (LRU)."""
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        value = make()
        with self._lock:
            self._cache[key] = value
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return value


def resolve_ref_path(raw: str, allowed_dirs: list[Path]) -> Path:
    """Resolve a client-given reference path, refusing anything outside `allowed_dirs`.

    Relative paths are taken inside the first allowed directory. The real path (symlinks
    followed) must lie inside one of the allowed directories' real paths.
    """
    if not isinstance(raw, str) or not raw or "\x00" in raw:
        raise PathNotAllowed("ref_audio_path is empty or malformed")
    if not allowed_dirs:
        raise PathNotAllowed("this server reads no reference paths; upload a voice to POST /v1/voices")
    candidate = Path(raw)
    if not candidate.is_absolute():
        candidate = allowed_dirs[0] / candidate
    real = Path(os.path.realpath(candidate))
    if _inside(real, allowed_dirs):
        if not real.is_file():
            raise VoiceNotFound(f"ref_audio_path {raw!r} does not exist on the server")
        return real
    raise PathNotAllowed(
        f"ref_audio_path {raw!r} is outside the directories this server may read; "
        "put the file in a configured reference directory (--ref-dir)"
    )


def _inside(real: Path, allowed_dirs: list[Path]) -> bool:
    for directory in allowed_dirs:
        root = Path(os.path.realpath(directory))
        if real == root or root in real.parents:
            return True
    return False


def read_confined(path: Path, allowed_dirs: list[Path], max_bytes: int) -> bytes:
    """Read a file already resolved by `resolve_ref_path`, re-checking what was actually opened.

    The file is opened without following a final symlink, and (on Linux) the opened descriptor's
    real path must still lie inside `allowed_dirs`: a path component swapped for a symlink between
    the check and the read cannot make the server read elsewhere. Files over `max_bytes` are refused.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise PathNotAllowed(f"cannot open reference {path.name!r}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as handle:
        proc_link = Path(f"/proc/self/fd/{fd}")
        if proc_link.exists() and not _inside(Path(os.path.realpath(proc_link)), allowed_dirs):
            raise PathNotAllowed("the reference path changed while it was being read; refused")
        size = os.fstat(fd).st_size
        if size > max_bytes:
            raise ReferenceTooLarge(
                f"reference {path.name!r} is {size} bytes, over this server's limit of {max_bytes}; "
                "use a 3-10 s clip"
            )
        return handle.read(max_bytes + 1)
