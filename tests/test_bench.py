"""`gsv bench` machinery on the tiny bundle: one run, short workload, JSON keys with finite numbers.

The full-size benchmark itself is not part of the test run (`gsv bench --precision int8,fp32`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("torch")

from gsv_onnx.bench.runner import BenchConfig, BenchError, check_targets, format_report  # noqa: E402
from gsv_onnx.cli import main  # noqa: E402

REQUIRED_KEYS = (
    "load_s",
    "prefill_ms",
    "decode_ms_per_token",
    "decode_ms_per_token_at",
    "vocoder_rtf",
    "e2e_rtf",
    "first_audio_s",
    "peak_rss_mb",
)
POSITIONS = ("30", "60")


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory, tiny_models, tiny_bundle) -> Path:
    """A --bundle-dir holding the cached tiny models and bundle under the names gsv bench uses."""
    directory = tmp_path_factory.mktemp("bench")
    (directory / "random-tiny").symlink_to(Path(tiny_models.root).resolve(), target_is_directory=True)
    (directory / "random-tiny-fp32.gsv").symlink_to(Path(tiny_bundle).resolve(), target_is_directory=True)
    return directory


def _check_metrics(metrics: dict) -> None:
    for key in REQUIRED_KEYS:
        assert key in metrics, key
    assert set(metrics["decode_ms_per_token_at"]) == set(POSITIONS)
    values = [metrics[k] for k in REQUIRED_KEYS if k != "decode_ms_per_token_at"]
    values += list(metrics["decode_ms_per_token_at"].values())
    for value in values:
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, metrics


def test_bench_json_has_the_contract_keys(bench_dir, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "--size",
            "tiny",
            "--bundle-dir",
            str(bench_dir),
            "--precision",
            "fp32",
            "--runs",
            "1",
            "--tokens",
            "12",
            "--prefill-positions",
            "30",
            "--positions",
            ",".join(POSITIONS),
            "--probe-steps",
            "2",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report) >= {"machine", "results", "reference"}
    assert report["machine"]["usable_cpus"] >= 1 and report["machine"]["onnxruntime"]
    assert list(report["results"]) == ["fp32"]
    fp32 = report["results"]["fp32"]
    _check_metrics(fp32)
    _check_metrics(report["reference"])
    # every run decoded exactly the forced number of tokens, through both engines
    assert fp32["e2e_tokens"] == 12 and report["reference"]["e2e_tokens"] == 12
    assert fp32["e2e_audio_s"] == pytest.approx(12 * 0.04)
    for key in ("e2e_pieces_rtf", "e2e_pieces_sequential_rtf"):  # the 4-piece (cut5) utterance
        assert math.isfinite(fp32[key]) and fp32[key] > 0
    assert report["ratios"]["fp32"]["decode_ms_per_token"] > 0
    table = capsys.readouterr().out
    assert "decode median (ms/token)" in table and "PyTorch ref" in table and "targets" in table
    assert "as 4 pieces (cut5)" in table
    # the saved JSON prints the same table again
    assert main(["bench", "--from-json", str(out)]) == 0
    assert capsys.readouterr().out.strip() == table.strip()


def test_bench_of_a_given_bundle_needs_no_reference(tiny_bundle, tmp_path, capsys):
    out = tmp_path / "given.json"
    args = [
        "bench",
        "--bundle",
        str(tiny_bundle),
        "--runs",
        "1",
        "--tokens",
        "8",
        "--prefill-positions",
        "20",
    ]
    args += ["--positions", "20", "--probe-steps", "1", "--json", str(out)]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert list(report["results"]) == ["fp32"]
    assert report["results"]["fp32"]["e2e_tokens"] == 8
    assert "skipped" in report["reference"]
    assert "PyTorch reference: skipped (--bundle given" in capsys.readouterr().out


def test_targets_report_misses_with_their_excess():
    results = {
        "int8": {"decode_ms_per_token": 7.0, "vocoder_rtf": 0.1, "load_s": 1.0, "decode_growth": 1.2},
        "fp32": {"decode_ms_per_token": 9.0, "vocoder_rtf": 0.3, "load_s": 3.0, "decode_growth": 2.0},
    }
    checks = {(c["target"], c["precision"]): c for c in check_targets(results)}
    assert checks[("decode int8 <= 3.5 ms/token", "int8")]["excess_percent"] == pytest.approx(100.0)
    assert checks[("decode fp32 <= 10 ms/token", "fp32")]["met"]
    assert not checks[("step at 1200 <= 1.7x step at 200", "fp32")]["met"]
    assert checks[("vocoder RTF <= 0.15 (fastest precision)", "int8")]["met"]
    assert ("vocoder RTF <= 0.15 (fastest precision)", "fp32") not in checks
    assert not checks[("bundle load <= 2 s (all six graphs)", "fp32")]["met"]


def test_bad_options_raise_bench_errors(tmp_path):
    with pytest.raises(BenchError, match="unknown precision"):
        BenchConfig(precisions=["int3"], bundle_dir=tmp_path).validate()
    with pytest.raises(BenchError, match="runs"):
        BenchConfig(runs=0, bundle_dir=tmp_path).validate()


def test_report_without_reference_says_why():
    metrics = {key: 1.0 for key in REQUIRED_KEYS if key != "decode_ms_per_token_at"}
    metrics["decode_ms_per_token_at"] = {"200": 1.0}
    report = {
        "machine": {
            "cpu": "x",
            "usable_cpus": 2,
            "logical_cpus": 2,
            "os": "Linux",
            "python": "3",
            "flags": [],
        },
        "config": {
            "size": "full",
            "tokens": 250,
            "runs": 1,
            "prefill_positions": 200,
            "probe_positions": [200],
            "reference_threads": 2,
        },
        "results": {"int8": metrics},
        "reference": {"skipped": "torch is not installed"},
        "targets": check_targets({"int8": metrics}),
    }
    table = format_report(report)
    assert "PyTorch reference: skipped (torch is not installed)" in table
    assert "gsv-onnx int8" in table


def test_worker_peak_rss_is_its_own_not_the_parents():
    """A worker started after the parent peaked (e.g. converting bundles) reports its own peak."""
    import subprocess
    import sys

    import numpy as np

    from gsv_onnx.bench import workload as wl

    ballast = np.ones(400 * 1024 * 1024 // 8)  # 400 MiB resident in this process
    assert wl.peak_rss_mb() > 400
    child = subprocess.run(
        [sys.executable, "-c", "from gsv_onnx.bench import workload as wl; print(wl.peak_rss_mb())"],
        capture_output=True,
        text=True,
        check=True,
    )
    del ballast
    assert float(child.stdout) < 300, child.stdout
