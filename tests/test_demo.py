"""The embedded demo assets (gsv_onnx/data/demo/) and `gsv demo` without torch.

The assets are made by scripts/make_demo_bundle.py and ship in the wheel; these tests use the
files as installed, so a stale, damaged or oversized demo bundle fails here.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from gsv_onnx.bundle import Bundle
from gsv_onnx.commands.demo import DEMO_DIR, find_demo_assets

REPO = Path(__file__).resolve().parents[1]
# The whole demo directory must stay small enough to commit and to ship in the wheel.
DEMO_SIZE_LIMIT = 15 * 2**20

# Runs `gsv demo` with every torch import failing, as on a machine without torch.
NO_TORCH_DEMO = """
import sys

class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"torch is blocked in this test ({name})")
        return None

sys.meta_path.insert(0, BlockTorch())
from gsv_onnx.cli import main

sys.exit(main(sys.argv[1:]))
"""


def test_demo_bundle_validates_and_is_small():
    assets = find_demo_assets()
    bundle = Bundle.load(assets.bundle, verify=True)  # every sha256 and graph contract
    assert bundle.model_version == "v2"
    # V2's fixed sizes survive the shrinking (the graphs keep the real contracts).
    assert bundle.hparams["gpt"]["phoneme_vocab_size"] == 732
    assert bundle.hparams["gpt"]["bert_dim"] == 1024
    assert bundle.hparams["sovits"]["gin_channels"] == 512
    assert bundle.hparams["bert"]["hidden_size"] == 1024
    assert assets.reference.is_file()
    config = json.loads((DEMO_DIR / "demo.json").read_text(encoding="utf-8"))
    assert (DEMO_DIR / config["bundle"]).resolve() == assets.bundle.resolve()
    total = sum(p.stat().st_size for p in DEMO_DIR.rglob("*") if p.is_file())
    assert total < DEMO_SIZE_LIMIT, f"demo assets are {total / 2**20:.1f} MiB"


def test_gsv_demo_runs_without_torch(tmp_path):
    out = tmp_path / "demo.wav"
    proc = subprocess.run(
        [sys.executable, "-c", NO_TORCH_DEMO, "demo", "-o", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for stage in ("load", "voice", "text", "gpt", "vocoder", "write", "total"):
        assert any(line.split()[:1] == [stage] for line in proc.stderr.splitlines()), stage
    assert "noise, not speech" in proc.stderr
    samples, rate = soundfile.read(out, dtype="float32")
    assert rate == 32000
    assert samples.size > rate  # a sentence is more than a second long
    assert np.all(np.isfinite(samples)) and np.abs(samples).max() > 0


def _demo_script():
    spec = importlib.util.spec_from_file_location(
        "make_demo_bundle", REPO / "scripts" / "make_demo_bundle.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("shape", [(24, 16, 5), (33, 129)])  # a Conv weight; a MatMul weight, odd size
def test_lowbit_weights_rebuild_in_onnx_runtime(bits, shape):
    pytest.importorskip("onnx")
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    script = _demo_script()
    rng = np.random.default_rng(bits)
    weights = rng.standard_normal(shape).astype(np.float32)
    # y = x + W: the output is the rebuilt weight itself.
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "W"], ["y"])],
        "lowbit",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))],
        [numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    assert script.store_weights_lowbit(model, bits, min_elements=1) == 1
    stored = {t.name: t for t in model.graph.initializer}
    assert "W" not in stored
    # only the per-channel scales (and the constant 8) stay float32
    assert max(int(np.prod(t.dims)) for t in stored.values() if t.data_type == TensorProto.FLOAT) == shape[0]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rebuilt = session.run(None, {"x": np.zeros(shape, np.float32)})[0]

    codes, scales = script.quantize_rows(weights, bits)
    np.testing.assert_allclose(rebuilt, codes.astype(np.float32) * scales, rtol=1e-6, atol=1e-7)
    limit = 2 ** (bits - 1) - 1
    assert np.abs(codes).max() == limit  # each row's peak maps to the top code
    assert np.max(np.abs(rebuilt - weights)) <= scales.max() / 2 + 1e-6
    if bits == 4:
        packed = script.pack_nibbles(codes)
        assert packed.dtype == np.uint8 and packed.size == (codes.size + 1) // 2
        np.testing.assert_array_equal(script.unpack_nibbles(packed, codes.size), codes.reshape(-1))
