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


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """A random tiny V2 model set in upstream's formats (gsv_onnx.convert.testmodels.TestModels):
    `.gpt` (.ckpt), `.sovits` (.pth), `.hubert` and `.bert` (directories). Written once per session."""
    pytest.importorskip("torch")
    from gsv_onnx.convert.testmodels import make_test_models

    return make_test_models(tmp_path_factory.mktemp("tiny-models"), size="tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_models, tmp_path_factory) -> Path:
    """`tiny_models` converted once per session (fp32) into a bundle directory; returns its path.

    The graph-vs-PyTorch comparison is skipped here for speed (each exporter's own tests do it;
    tests/test_convert_cli.py runs a verified conversion)."""
    from gsv_onnx.convert.pipeline import convert

    out_dir = tmp_path_factory.mktemp("tiny-bundle") / "tiny.gsv"
    convert(tiny_models.gpt, tiny_models.sovits, tiny_models.hubert, tiny_models.bert, out_dir, verify=False)
    return out_dir
