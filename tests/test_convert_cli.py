"""`gsv convert` end to end: the tiny random set, upstream's own fixture, and every bad input.

Bad inputs must end with exit status 2 and exactly one `gsv convert: error: ...` line on stderr,
never a Python traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from gsv_onnx.bundle import GRAPH_NAMES, Bundle  # noqa: E402
from gsv_onnx.cli import main  # noqa: E402
from gsv_onnx.convert.testmodels import write_sovits_checkpoint  # noqa: E402

OPTIONS = (
    "--gpt",
    "--sovits",
    "--hubert",
    "--bert",
    "-o",
    "--output",
    "--precision",
    "--force",
    "--no-verify",
)


def _args(models, out_dir, *extra) -> list[str]:
    return [
        "convert",
        "--gpt",
        str(models.gpt),
        "--sovits",
        str(models.sovits),
        "--hubert",
        str(models.hubert),
        "--bert",
        str(models.bert),
        "-o",
        str(out_dir),
        *extra,
    ]


def _load_all_in_ort(bundle: Bundle) -> None:
    import onnxruntime as ort

    for name in GRAPH_NAMES:
        session = ort.InferenceSession(str(bundle.graph_path(name)), providers=["CPUExecutionProvider"])
        declared = [io["name"] for io in bundle.graph_io(name)["inputs"]]
        assert [i.name for i in session.get_inputs()] == declared


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("[")]
    assert len(lines) == 1, err
    assert lines[0].startswith("gsv convert: error: ")
    assert "Traceback" not in err
    return lines[0]


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as info:
        main(["convert", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for option in OPTIONS:
        assert option in out
    for precision in ("fp32", "fp16", "int8", "int4"):
        assert precision in out
    assert "chinese-hubert-base" in out and "chinese-roberta-wwm-ext-large" in out


def test_tiny_bundle_is_valid(tiny_bundle, tiny_models):
    bundle = Bundle.load(tiny_bundle, verify=True)
    manifest = bundle.manifest
    assert manifest["model_version"] == "v2" and manifest["precision"] == "fp32"
    assert manifest["hparams"]["gpt"]["n_layer"] == 2 and manifest["hparams"]["gpt"]["hidden_dim"] == 64
    assert manifest["hparams"]["sovits"]["samples_per_token"] == 1280
    assert manifest["hparams"]["sovits"]["inter_channels"] == 32
    assert manifest["sources"]["gpt"]["file"] == tiny_models.gpt.name
    assert manifest["tokenizer"]["file"] == "tokenizer.json"
    assert not list(tiny_bundle.parent.glob(".*partial*"))
    _load_all_in_ort(bundle)


@pytest.mark.slow
def test_cli_converts_tiny_set_quantized_and_force_replaces(tiny_models, tmp_path, capsys):
    out_dir = tmp_path / "q.gsv"
    out_dir.mkdir()
    (out_dir / "old.txt").write_text("from an earlier run")
    assert main(_args(tiny_models, out_dir, "--precision", "int8", "--no-verify")) == 2
    assert "is not empty; pass --force" in _one_error_line(capsys.readouterr().err)
    assert (out_dir / "old.txt").exists()

    assert main(_args(tiny_models, out_dir, "--precision", "int8", "--no-verify", "--force")) == 0
    captured = capsys.readouterr()
    assert "total" in captured.out and "int8" in captured.out
    for stage in ("read", "build", "export", "verify"):
        assert f"] {stage}" in captured.err
    assert not (out_dir / "old.txt").exists()
    bundle = Bundle.load(out_dir)
    graphs = bundle.manifest["graphs"]
    assert graphs["gpt_decode"]["precision"] == "int8" and graphs["bert"]["precision"] == "int8"
    # int8 bundles quantize the SoVITS decoder's convolutions and HuBERT's MatMuls; ref_enc stays fp32
    assert graphs["sovits_decoder"]["precision"] == "int8" and graphs["ref_enc"]["precision"] == "fp32"
    assert graphs["reference_encoder"]["precision"] == "int8"
    # BERT and HuBERT keep their weights in external data (memory-mapped at load)
    for name in ("bert", "reference_encoder"):
        assert [d["file"] for d in graphs[name].get("external_data", [])] == [graphs[name]["file"] + ".data"]
    assert not any(
        p.name.endswith(".onnx") and p.name not in {g["file"] for g in graphs.values()}
        for p in out_dir.iterdir()
    )
    assert oct((out_dir / graphs["bert"]["file"]).stat().st_mode & 0o777) != oct(0o600)
    _load_all_in_ort(bundle)


def test_cli_converts_tiny_set_verified(tiny_models, tmp_path, capsys):
    out_dir = tmp_path / "tiny.gsv"
    assert main(_args(tiny_models, out_dir)) == 0
    captured = capsys.readouterr()
    assert "verify (ONNX Runtime vs PyTorch)" in captured.out and "warning" not in captured.out
    for stage in ("read", "build", "export", "verify"):
        assert f"] {stage}" in captured.err
    _load_all_in_ort(Bundle.load(out_dir))


@pytest.mark.parametrize(
    "verify_flag",
    [
        pytest.param(("--no-verify",), id="no-verify"),
        pytest.param((), id="verified", marks=pytest.mark.slow),
    ],
)
def test_cli_converts_upstream_fixture(upstream_tiny, tmp_path, capsys, verify_flag):
    class Models:
        gpt = next((upstream_tiny / "gpt").glob("*.ckpt"))
        sovits = next((upstream_tiny / "sovits").glob("*.pth"))
        hubert = upstream_tiny / "chinese-hubert-base"
        bert = upstream_tiny / "chinese-roberta-wwm-ext-large"

    out_dir = tmp_path / "upstream.gsv"
    assert main(_args(Models, out_dir, *verify_flag)) == 0
    captured = capsys.readouterr()
    assert "64-dimensional" in captured.out  # the fixture's tiny RoBERTa cannot feed the GPT
    if not verify_flag:
        assert "verify (ONNX Runtime vs PyTorch)" in captured.out
    bundle = Bundle.load(out_dir)
    assert bundle.hparams["bert"]["hidden_size"] == 64
    assert bundle.manifest["warnings"]
    _load_all_in_ort(bundle)


def test_failure_leaves_nothing_behind(tiny_models, tmp_path, monkeypatch):
    from gsv_onnx.convert import export_sovits
    from gsv_onnx.convert.pipeline import convert
    from gsv_onnx.errors import GsvError

    def broken_export(model, out_dir):
        (Path(out_dir) / "sovits_decoder.onnx").write_bytes(b"half-written")
        raise GsvError("simulated exporter failure")

    monkeypatch.setattr(export_sovits, "export_sovits", broken_export)
    out_dir = tmp_path / "never.gsv"
    with pytest.raises(GsvError, match="simulated"):
        convert(
            tiny_models.gpt, tiny_models.sovits, tiny_models.hubert, tiny_models.bert, out_dir, verify=False
        )
    assert list(tmp_path.iterdir()) == []


# -- bad inputs: exit 2, one line, no traceback ---------------------------------------------------------


def _bad_models(tiny_models, **replace):
    class Models:
        gpt = replace.get("gpt", tiny_models.gpt)
        sovits = replace.get("sovits", tiny_models.sovits)
        hubert = replace.get("hubert", tiny_models.hubert)
        bert = replace.get("bert", tiny_models.bert)

    return Models


def test_bad_inputs_exit_2_with_one_line(tiny_models, tmp_path, capsys):
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(tiny_models.sovits.read_bytes()[:10_000])
    text = tmp_path / "model.pth"
    text.write_text("hello")
    v4 = tmp_path / "v4.pth"
    data = bytearray(tiny_models.sovits.read_bytes())
    data[:2] = b"04"
    v4.write_bytes(bytes(data))
    cases = [
        (dict(gpt=tmp_path / "missing.ckpt"), "does not exist"),
        (dict(gpt=empty), "is empty"),
        (dict(sovits=truncated), "truncated or corrupted"),
        (dict(sovits=text), "not a PyTorch checkpoint"),
        (dict(sovits=tiny_models.gpt), "is a GPT checkpoint"),
        (dict(gpt=tiny_models.sovits), "is a SoVITS checkpoint"),
        (dict(sovits=v4), "GPT-SoVITS v4 LoRA model"),
        (dict(hubert=tmp_path / "no-hubert"), "does not exist"),
        (dict(bert=tiny_models.hubert), "model_type"),
    ]
    for replace, expected in cases:
        out_dir = tmp_path / "out.gsv"
        assert main(_args(_bad_models(tiny_models, **replace), out_dir)) == 2, replace
        line = _one_error_line(capsys.readouterr().err)
        assert expected in line, (replace, line)
        assert not out_dir.exists()
    assert not list(tmp_path.glob(".*partial*"))


def test_unsupported_version_from_plain_dict_pth(tiny_models, tmp_path, capsys):
    path = tmp_path / "pro.pth"
    write_sovits_checkpoint(path, size="tiny", header=b"05", config_format="dict")
    assert main(_args(_bad_models(tiny_models, sovits=path), tmp_path / "o.gsv")) == 2
    assert "GPT-SoVITS v2Pro model" in _one_error_line(capsys.readouterr().err)


def test_cli_error_in_a_real_process_has_no_traceback(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    result = subprocess.run(
        [sys.executable, "-m", "gsv_onnx.cli", "convert", "--gpt", str(bad), "--sovits", str(bad)]
        + ["--hubert", str(tmp_path), "--bert", str(tmp_path), "-o", str(tmp_path / "o.gsv")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    _one_error_line(result.stderr)
    assert "truncated or corrupted" in result.stderr


def test_manifest_is_plain_json(tiny_bundle):
    manifest = json.loads((Path(tiny_bundle) / "manifest.json").read_text())
    assert set(manifest["graphs"]) == set(GRAPH_NAMES)
    for entry in manifest["graphs"].values():
        assert len(entry["sha256"]) == 64
        for io in entry["inputs"] + entry["outputs"]:
            assert set(io) == {"name", "dtype", "shape"}


def test_make_test_models_cli(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    assert main(["make-test-models", "--size", "tiny", "-o", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert "gsv make-test-models: error: cannot write test models" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as info:
        main(["make-test-models", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--size", "tiny", "full", "-o", "--seed"):
        assert option in out
