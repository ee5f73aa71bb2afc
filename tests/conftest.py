"""Shared pytest fixtures.

Network: every test runs with outbound sockets blocked except loopback, so nothing can download.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
UPSTREAM_TINY = SHARED / "fixtures" / "upstream-tiny"

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_loopback(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self, address):
    if not _is_loopback(address):
        raise OSError(f"network access blocked in tests: {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_loopback(address):
        raise OSError(f"network access blocked in tests: {address!r}")
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True, scope="session")
def _block_network():
    socket.socket.connect = _guarded_connect
    socket.socket.connect_ex = _guarded_connect_ex
    yield
    socket.socket.connect = _real_connect
    socket.socket.connect_ex = _real_connect_ex


@pytest.fixture(scope="session")
def upstream_tiny() -> Path:
    """Checkpoints written by upstream's own code (present when ../shared is)."""
    if not UPSTREAM_TINY.is_dir():
        pytest.skip("../shared/fixtures/upstream-tiny is not present")
    return UPSTREAM_TINY


# --- converter fixtures (owner: convert) --------------------------------------------------------
#
# The tiny model set and its bundle are cached across sessions in .pytest_cache, keyed by the
# converter's source code and the torch/onnx/onnxruntime versions, so a change to any exporter
# rebuilds them while unchanged code reuses them (seconds instead of a minute). Set
# GSV_TEST_NO_CACHE=1 to build them fresh in a temporary directory.


_MODEL_SOURCES = ("gpt.py", "sovits.py", "ssl_bert.py", "testmodels.py", "__init__.py")


def _converter_cache_key(kind: str) -> str:
    """Digest of the sources that shape `kind` (models: their generators; bundle: the converter)."""
    import hashlib
    import importlib.metadata

    digest = hashlib.sha256()
    convert_dir = REPO / "gsv_onnx" / "convert"
    if kind == "tiny-models":
        sources = [convert_dir / name for name in _MODEL_SOURCES]
    else:
        sources = sorted(convert_dir.glob("*.py")) + [REPO / "gsv_onnx" / "bundle.py"]
    for path in sources:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for dist in ("torch", "onnx", "onnxruntime", "transformers"):
        try:
            digest.update(f"{dist}={importlib.metadata.version(dist)};".encode())
        except importlib.metadata.PackageNotFoundError:
            pass
    return digest.hexdigest()[:16]


def _cached_dir(request, tmp_path_factory, kind: str, build) -> Path:
    """Return a directory made by `build(path)`, from the cross-session cache when possible."""
    import os
    import shutil

    if os.environ.get("GSV_TEST_NO_CACHE"):
        target = tmp_path_factory.mktemp(kind) / kind
        build(target)
        return target
    cache_root = Path(request.config.cache.mkdir("gsv-convert"))
    key = _converter_cache_key(kind)
    target = cache_root / f"{kind}-{key}"
    if (target / ".complete").is_file():
        return target
    for stale in cache_root.glob(f"{kind}-*"):
        if stale != target and not stale.name.startswith("."):
            shutil.rmtree(stale, ignore_errors=True)
    staging = cache_root / f".{kind}-{key}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    build(staging)
    (staging / ".complete").write_text("ok")
    try:
        os.replace(staging, target)
    except OSError:  # another session finished first: use its copy
        shutil.rmtree(staging, ignore_errors=True)
    return target


@pytest.fixture(scope="session")
def tiny_models(request, tmp_path_factory):
    """A random tiny V2 model set in upstream's formats (gsv_onnx.convert.testmodels.TestModels):
    `.gpt` (.ckpt), `.sovits` (.pth), `.hubert` and `.bert` (directories)."""
    pytest.importorskip("torch")
    from gsv_onnx.convert.testmodels import make_test_models, test_model_paths

    root = _cached_dir(
        request, tmp_path_factory, "tiny-models", lambda d: make_test_models(d, size="tiny", seed=0)
    )
    return test_model_paths(root, size="tiny")


@pytest.fixture(scope="session")
def tiny_bundle(request, tiny_models, tmp_path_factory) -> Path:
    """`tiny_models` converted (fp32) into a bundle directory; returns its path.

    The graph-vs-PyTorch comparison is skipped here for speed (each exporter's own tests do it;
    tests/test_convert_cli.py runs a verified conversion)."""
    from gsv_onnx.convert.pipeline import convert

    def build(directory: Path) -> None:
        directory.mkdir(parents=True)
        convert(
            tiny_models.gpt,
            tiny_models.sovits,
            tiny_models.hubert,
            tiny_models.bert,
            directory / "tiny.gsv",
            verify=False,
        )

    return _cached_dir(request, tmp_path_factory, "tiny-bundle", build) / "tiny.gsv"
