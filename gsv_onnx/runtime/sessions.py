"""Creating ONNX Runtime sessions with the project's runtime options."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import mmap
import sys
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort

from gsv_onnx.errors import BundleError, OptionsError
from gsv_onnx.runtime.options import PROVIDER_ALIASES, RuntimeOptions

log = logging.getLogger(__name__)

_OPT_LEVELS = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}

_warned_providers: set[str] = set()


def resolve_providers(requested: tuple[str, ...] | list[str]) -> list[str]:
    """Map friendly provider names to ORT names, keep the available ones, end with CPU.

    A provider that the installed onnxruntime lacks is dropped with one warning per process;
    a name that is no provider at all raises `OptionsError`.
    """
    available = set(ort.get_available_providers())
    known_ort_names = set(PROVIDER_ALIASES.values()) | available
    resolved: list[str] = []
    for name in requested:
        ort_name = PROVIDER_ALIASES.get(name.lower(), name) if isinstance(name, str) else name
        if ort_name not in known_ort_names and not str(ort_name).endswith("ExecutionProvider"):
            raise OptionsError(
                f"unknown execution provider {name!r}; use one of {', '.join(sorted(PROVIDER_ALIASES))}"
            )
        if ort_name not in available:
            if ort_name not in _warned_providers:
                _warned_providers.add(ort_name)
                log.warning(
                    "execution provider %s is not available in this onnxruntime build (%s); falling back to CPU",
                    ort_name,
                    ", ".join(sorted(available)),
                )
            continue
        if ort_name not in resolved:
            resolved.append(ort_name)
    if "CPUExecutionProvider" in resolved:
        resolved.remove("CPUExecutionProvider")
    resolved.append("CPUExecutionProvider")
    return resolved


def session_options(runtime_options: RuntimeOptions) -> ort.SessionOptions:
    """`SessionOptions` for one graph: threads, no spin-waiting (unless asked), optimization level."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = runtime_options.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = _OPT_LEVELS[runtime_options.graph_optimization]
    options.enable_mem_pattern = runtime_options.memory_pattern
    if (
        runtime_options.shared_arena
        and "CPUExecutionProvider" in resolve_providers(runtime_options.providers)[:1]
    ):
        if register_shared_arena():
            options.add_session_config_entry("session.use_env_allocators", "1")
    spin = "1" if runtime_options.allow_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    for key, value in runtime_options.session_config.items():
        options.add_session_config_entry(str(key), str(value))
    options.log_severity_level = 3  # errors only: ORT's shape-inference warnings are noise to users
    return options


def create_session(path: str | Path, runtime_options: RuntimeOptions | None = None) -> ort.InferenceSession:
    """One `InferenceSession` for the graph at `path` with the given runtime options.

    Raises `BundleError` when the file is missing or ONNX Runtime cannot load it.
    """
    runtime_options = runtime_options or RuntimeOptions()
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"ONNX graph {path} does not exist; re-run `gsv convert` to rebuild the bundle")
    providers = resolve_providers(runtime_options.providers)
    try:
        session = ort.InferenceSession(
            str(path), sess_options=session_options(runtime_options), providers=providers
        )
    except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
        raise BundleError(
            f"ONNX Runtime cannot load {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "
            "the file may be corrupt or from a newer converter, re-run `gsv convert`"
        ) from exc
    release_free_heap()
    return session


_shared_arena_registered: bool | None = None
_shared_arena_lock = threading.Lock()


def register_shared_arena() -> bool:
    """Register the process-wide CPU arena that sessions with `shared_arena` allocate from (once).

    The arena grows by what each allocation asks (`arena_extend_strategy` 1, kSameAsRequested)
    rather than doubling, and is shared: memory one session freed (BERT, the HuBERT reference
    encoder, the GPT prefill) serves the next (the vocoder) instead of staying in a per-session
    arena. Returns False (sessions then keep their own arenas) where this onnxruntime cannot
    register one.
    """
    global _shared_arena_registered
    with _shared_arena_lock:
        if _shared_arena_registered is not None:
            return _shared_arena_registered
        try:
            arena = ort.OrtArenaCfg(0, 1, -1, -1)  # max_mem unlimited, kSameAsRequested, defaults
            memory_info = ort.OrtMemoryInfo(
                "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
            )
            ort.create_and_register_allocator(memory_info, arena)
            _shared_arena_registered = True
        except Exception as exc:  # noqa: BLE001 - an older or minimal build: per-session arenas
            log.debug("no shared ONNX Runtime arena: %s", exc)
            _shared_arena_registered = False
        return _shared_arena_registered


_libc_trim = None


def release_free_heap() -> bool:
    """Give the C heap's free pages back to the operating system (glibc `malloc_trim`).

    Creating a session parses the whole model file and copies its weights; the parsed copy is
    freed afterwards, but glibc keeps freed heap pages mapped, so without this a loaded bundle
    holds ~100-240 MB per large graph that it no longer uses (full-size int8 bundle: BERT +485 MB
    -> +371 MB after the trim). Called after each session is created and after one is released;
    a no-op returning False where the C library is not glibc.
    """
    global _libc_trim
    if _libc_trim is None:
        _libc_trim = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                _libc_trim = libc.malloc_trim
                _libc_trim.argtypes = [ctypes.c_size_t]
                _libc_trim.restype = ctypes.c_int
            except (OSError, AttributeError):  # musl and others have no malloc_trim
                _libc_trim = False
    if not _libc_trim:
        return False
    _libc_trim(0)
    return True


def lazy_zeros(shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """A zero-filled array whose pages become resident only where it is written, 4 KiB at a time.

    `np.zeros` gives the same lazy zero pages, but numpy asks Linux for transparent huge pages on
    large arrays, so writing one row of a 2 MiB region makes the whole region resident. A KV cache
    laid out [layer, head, position, dim] is written a few rows per head: with huge pages the
    full-size GPT's 167 MB of buffers were all resident after one prefill, with 4 KiB pages only
    the rows in use (~45 MB for 450 positions). Falls back to `np.zeros` where anonymous
    mappings or `madvise` are unavailable.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes == 0 or not hasattr(mmap, "MADV_NOHUGEPAGE"):
        return np.zeros(shape, dtype=dtype)
    try:
        mapping = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        mapping.madvise(mmap.MADV_NOHUGEPAGE)
    except (OSError, ValueError, AttributeError, TypeError):  # TypeError: no `flags` (Windows)
        return np.zeros(shape, dtype=dtype)
    # the array keeps the mapping alive (it is the buffer's owner); it is unmapped with the array
    return np.frombuffer(mapping, dtype=dtype).reshape(shape)
