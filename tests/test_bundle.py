"""Bundle directory: manifest writing, loading and each validation failure's message.

The bundles here are built from small hand-made ONNX graphs that declare the contract's inputs and
outputs (no torch needed); the real converter's output is checked in test_convert_cli.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from gsv_onnx.bundle import (  # noqa: E402
    GRAPH_NAMES,
    MANIFEST_NAME,
    Bundle,
    describe_onnx,
    graph_contract,
    write_manifest,
)
from gsv_onnx.errors import BundleError  # noqa: E402

N_LAYER = 2
_DTYPES = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64}


def _make_graph(path: Path, inputs, outputs, external_data: str | None = None) -> Path:
    """A valid ONNX model with the given (name, dtype) inputs/outputs: each output casts input 0."""
    import numpy as np

    graph_inputs = [
        helper.make_tensor_value_info(name, _DTYPES[dtype], [1, f"T_{name}"]) for name, dtype in inputs
    ]
    graph_outputs = [
        helper.make_tensor_value_info(name, _DTYPES[dtype], [1, "T_out"]) for name, dtype in outputs
    ]
    nodes = [helper.make_node("Cast", [inputs[0][0]], [name], to=_DTYPES[dtype]) for name, dtype in outputs]
    weight = numpy_helper.from_array(np.arange(4096, dtype=np.float32), name="unused_weight")
    graph = helper.make_graph(nodes, path.stem, graph_inputs, graph_outputs, initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if external_data:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=external_data,
            size_threshold=0,
        )
    else:
        onnx.save_model(model, str(path))
    return path


HPARAMS = {
    "gpt": {
        "n_layer": N_LAYER,
        "hidden_dim": 64,
        "head": 4,
        "vocab_size": 1025,
        "phoneme_vocab_size": 732,
        "eos": 1024,
        "bert_dim": 1024,
        "max_sec": 54,
    },
    "sovits": {
        "sampling_rate": 32000,
        "filter_length": 2048,
        "hop_length": 640,
        "win_length": 2048,
        "inter_channels": 32,
        "gin_channels": 512,
        "ref_enc_bins": 704,
        "samples_per_token": 1280,
    },
    "hubert": {"sampling_rate": 16000},
    "bert": {"hidden_size": 1024},
}
SOURCES = {
    "gpt": {"file": "a.ckpt", "sha256": "0" * 64},
    "sovits": {"file": "b.pth", "sha256": "1" * 64},
    "hubert": {"file": "chinese-hubert-base", "sha256": "2" * 64},
    "bert": {"file": "chinese-roberta-wwm-ext-large", "sha256": "3" * 64},
}


def _write_bundle(directory: Path, rename_input: tuple[str, str, str] | None = None) -> dict:
    """Write contract graphs (GPT with shared external data), a tokenizer and the manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    graphs = {}
    for name in GRAPH_NAMES:
        contract = graph_contract(name, N_LAYER)
        inputs = list(contract["inputs"])
        if rename_input and rename_input[0] == name:
            inputs = [(rename_input[2] if n == rename_input[1] else n, d) for n, d in inputs]
        external = "gpt.onnx.data" if name == "gpt_decode" else None
        graphs[name] = _make_graph(directory / f"{name}.onnx", inputs, contract["outputs"], external)
    (directory / "tokenizer.json").write_text('{"model": {}}', encoding="utf-8")
    return write_manifest(
        directory,
        model_version="v2",
        precision="fp32",
        sources=SOURCES,
        hparams=HPARAMS,
        graphs=graphs,
        tokenizer="tokenizer.json",
    )


@pytest.fixture()
def bundle_dir(tmp_path) -> Path:
    directory = tmp_path / "voice.gsv"
    _write_bundle(directory)
    return directory


def _edit_manifest(directory: Path, edit) -> None:
    path = directory / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def test_valid_bundle_loads_and_exposes_its_parts(bundle_dir):
    bundle = Bundle.load(bundle_dir)
    assert bundle.model_version == "v2"
    assert bundle.precision == "fp32"
    assert bundle.hparams["gpt"]["n_layer"] == N_LAYER
    assert bundle.graph_path("sovits_decoder") == bundle_dir / "sovits_decoder.onnx"
    assert bundle.tokenizer_path == bundle_dir / "tokenizer.json"
    assert set(bundle.graph_names) == set(GRAPH_NAMES)
    decode_inputs = [io["name"] for io in bundle.graph_io("gpt_decode")["inputs"]]
    assert decode_inputs == ["token", "position", "k_cache_0", "v_cache_0", "k_cache_1", "v_cache_1"]
    assert bundle.manifest["graphs"]["gpt_decode"]["external_data"][0]["file"] == "gpt.onnx.data"
    assert bundle.manifest["sources"]["gpt"]["file"] == "a.ckpt"
    assert bundle.manifest["format"] == "gsv-onnx-bundle" and bundle.manifest["format_version"] == 1


def test_bundle_id_is_stable_and_follows_content(bundle_dir, tmp_path):
    first = Bundle.load(bundle_dir).bundle_id
    assert Bundle.load(bundle_dir, verify=False).bundle_id == first
    assert len(first) == 32
    other = tmp_path / "other.gsv"
    _write_bundle(other)
    assert Bundle.load(other).bundle_id == first  # same files, same id
    with open(other / "tokenizer.json", "a") as handle:
        handle.write(" ")
    _write_bundle_manifest_only(other)
    assert Bundle.load(other).bundle_id != first


def _write_bundle_manifest_only(directory: Path) -> None:
    graphs = {name: directory / f"{name}.onnx" for name in GRAPH_NAMES}
    write_manifest(
        directory,
        model_version="v2",
        precision="fp32",
        sources=SOURCES,
        hparams=HPARAMS,
        graphs=graphs,
        tokenizer="tokenizer.json",
    )


def test_describe_onnx_reports_names_dtypes_symbolic_shapes(tmp_path):
    path = _make_graph(tmp_path / "g.onnx", [("wav16k", "float32")], [("prompt_codes", "int64")])
    described = describe_onnx(path)
    assert described["inputs"] == [{"name": "wav16k", "dtype": "float32", "shape": [1, "T_wav16k"]}]
    assert described["outputs"] == [{"name": "prompt_codes", "dtype": "int64", "shape": [1, "T_out"]}]
    assert described["external_data"] == []


def test_missing_directory(tmp_path):
    with pytest.raises(BundleError, match="does not exist.*gsv convert"):
        Bundle.load(tmp_path / "nowhere.gsv")


def test_path_is_a_file(tmp_path):
    path = tmp_path / "file.gsv"
    path.write_text("x")
    with pytest.raises(BundleError, match="is not a directory"):
        Bundle.load(path)


def test_missing_manifest(bundle_dir):
    (bundle_dir / MANIFEST_NAME).unlink()
    with pytest.raises(BundleError, match="has no manifest.json"):
        Bundle.load(bundle_dir)


def test_bad_json(bundle_dir):
    (bundle_dir / MANIFEST_NAME).write_text('{"format": "gsv-onnx-bundle",')
    with pytest.raises(BundleError, match=r"not valid JSON \(line 1"):
        Bundle.load(bundle_dir)


def test_manifest_not_an_object(bundle_dir):
    (bundle_dir / MANIFEST_NAME).write_text("[1, 2]")
    with pytest.raises(BundleError, match="not a JSON object"):
        Bundle.load(bundle_dir)


def test_unknown_format(bundle_dir):
    _edit_manifest(bundle_dir, lambda m: m.update(format="something-else"))
    with pytest.raises(BundleError, match="unknown format 'something-else'"):
        Bundle.load(bundle_dir)


def test_newer_format_version(bundle_dir):
    _edit_manifest(bundle_dir, lambda m: m.update(format_version=2))
    with pytest.raises(BundleError, match="unknown format_version 2.*upgrade gsv-onnx"):
        Bundle.load(bundle_dir)


def test_older_format_version(bundle_dir):
    _edit_manifest(bundle_dir, lambda m: m.update(format_version=0))
    with pytest.raises(BundleError, match="unknown format_version 0.*convert the model again"):
        Bundle.load(bundle_dir)


def test_format_version_not_integer(bundle_dir):
    _edit_manifest(bundle_dir, lambda m: m.update(format_version="1"))
    with pytest.raises(BundleError, match="format_version '1' is not an integer"):
        Bundle.load(bundle_dir)


def test_missing_graph_file(bundle_dir):
    (bundle_dir / "sovits_decoder.onnx").unlink()
    with pytest.raises(BundleError, match="is missing sovits_decoder.onnx"):
        Bundle.load(bundle_dir)


def test_missing_external_data_file(bundle_dir):
    (bundle_dir / "gpt.onnx.data").unlink()
    with pytest.raises(BundleError, match="is missing gpt.onnx.data"):
        Bundle.load(bundle_dir, verify=False)


def test_missing_tokenizer(bundle_dir):
    (bundle_dir / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="is missing tokenizer.json"):
        Bundle.load(bundle_dir)


def test_graph_not_listed(bundle_dir):
    _edit_manifest(bundle_dir, lambda m: m["graphs"].pop("bert"))
    with pytest.raises(BundleError, match="graph 'bert' is not listed"):
        Bundle.load(bundle_dir)


def test_checksum_mismatch_and_verify_false(bundle_dir):
    with open(bundle_dir / "ref_enc.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match=r"checksum mismatch for .*ref_enc\.onnx"):
        Bundle.load(bundle_dir)
    Bundle.load(bundle_dir, verify=False)  # skipping checksums is the caller's choice


def test_checksum_mismatch_in_external_data(bundle_dir):
    with open(bundle_dir / "gpt.onnx.data", "r+b") as handle:
        handle.write(b"\1\2\3\4")
    with pytest.raises(BundleError, match=r"checksum mismatch for .*gpt\.onnx\.data"):
        Bundle.load(bundle_dir)


def test_manifest_io_not_matching_contract(bundle_dir):
    def drop_noise(manifest):
        manifest["graphs"]["sovits_decoder"]["inputs"] = [
            io for io in manifest["graphs"]["sovits_decoder"]["inputs"] if io["name"] != "noise"
        ]

    _edit_manifest(bundle_dir, drop_noise)
    with pytest.raises(BundleError, match=r"'sovits_decoder'.*graph contract: missing inputs \['noise'\]"):
        Bundle.load(bundle_dir)


def test_manifest_wrong_dtype(bundle_dir):
    def float_codes(manifest):
        manifest["graphs"]["reference_encoder"]["outputs"][0]["dtype"] = "float32"

    _edit_manifest(bundle_dir, float_codes)
    with pytest.raises(BundleError, match="prompt_codes is float32, not int64"):
        Bundle.load(bundle_dir)


def test_decode_cache_inputs_follow_n_layer(bundle_dir):
    _edit_manifest(bundle_dir, lambda m: m["hparams"]["gpt"].update(n_layer=3))
    with pytest.raises(BundleError, match=r"'gpt_decode'.*missing inputs \['k_cache_2', 'v_cache_2'\]"):
        Bundle.load(bundle_dir)


def test_optional_decode_input_is_accepted_with_its_dtype(tmp_path):
    directory = tmp_path / "gqa.gsv"
    _write_bundle(directory)
    contract = graph_contract("gpt_decode", N_LAYER)
    _make_graph(
        directory / "gpt_decode.onnx",
        [*contract["inputs"], ("cache_len", "int64")],
        contract["outputs"],
        "gpt.onnx.data",
    )
    _write_bundle_manifest_only(directory)
    bundle = Bundle.load(directory)
    assert "cache_len" in [io["name"] for io in bundle.graph_io("gpt_decode")["inputs"]]

    def float_len(manifest):
        for io in manifest["graphs"]["gpt_decode"]["inputs"]:
            if io["name"] == "cache_len":
                io["dtype"] = "float32"

    _edit_manifest(directory, float_len)
    with pytest.raises(BundleError, match="cache_len is float32, not int64"):
        Bundle.load(directory)


def test_unsupported_model_version(bundle_dir):
    _edit_manifest(bundle_dir, lambda m: m.update(model_version="v4"))
    with pytest.raises(BundleError, match="model_version 'v4' is not supported"):
        Bundle.load(bundle_dir)


def test_write_manifest_refuses_graph_off_contract(tmp_path):
    with pytest.raises(BundleError, match=r"'bert'.*unexpected inputs \['ids'\]"):
        _write_bundle(tmp_path / "bad.gsv", rename_input=("bert", "input_ids", "ids"))
    assert not (tmp_path / "bad.gsv" / MANIFEST_NAME).exists()


def test_write_manifest_refuses_unknown_precision(bundle_dir):
    graphs = {name: bundle_dir / f"{name}.onnx" for name in GRAPH_NAMES}
    with pytest.raises(BundleError, match="unknown precision 'fp8'"):
        write_manifest(
            bundle_dir,
            model_version="v2",
            precision="fp8",
            sources=SOURCES,
            hparams=HPARAMS,
            graphs=graphs,
            tokenizer="tokenizer.json",
        )


def test_bundle_module_does_not_import_torch():
    code = "import sys, gsv_onnx.bundle; sys.exit(1 if 'torch' in sys.modules or 'gsv_onnx.convert' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
