"""`gsv bench` orchestration: build or reuse models and bundles, run the workers, aggregate, report.

Every measurement runs in a fresh subprocess (one per engine and run, engines interleaved within a
run so that drifting machine load hits them alike), so load time is a cold start of the process's
sessions, peak RSS belongs to one engine alone, and the ONNX worker never has torch in memory.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gsv_onnx.bench import workload as wl
from gsv_onnx.bench.machine import describe_machine, machine_line
from gsv_onnx.errors import GsvError

PRECISIONS = ("fp32", "fp16", "int8", "int4")
REFERENCE = "reference"

#: The issue's targets: (label, which precision, metric key, upper limit). Which precision: a name,
#: "each" (every measured one) or "fastest" (the one with the lowest value among those measured).
TARGETS: tuple[tuple[str, str, str, float], ...] = (
    ("decode int8 <= 3.5 ms/token", "int8", "decode_ms_per_token", 3.5),
    ("decode fp32 <= 10 ms/token", "fp32", "decode_ms_per_token", 10.0),
    ("step at 1200 <= 1.7x step at 200", "each", "decode_growth", 1.7),
    ("vocoder RTF <= 0.15 (fastest precision)", "fastest", "vocoder_rtf", 0.15),
    ("vocoder RTF <= 0.27 fp32", "fp32", "vocoder_rtf", 0.27),
    ("end-to-end RTF <= 0.25 int8 (10 s utterance)", "int8", "e2e_rtf", 0.25),
    ("peak RSS <= 1.0 GB int8 (with BERT and HuBERT)", "int8", "peak_rss_mb", 1000.0),
    ("bundle load <= 2 s (all six graphs)", "each", "load_s", 2.0),
)

#: Table rows: (label, key, format). Keys with "@" read decode_ms_per_token_at[position].
ROWS: tuple[tuple[str, str, str], ...] = (
    ("load, whole bundle (s)", "load_s", "{:.2f}"),
    ("load, GPT + SoVITS only (s)", "load_core_s", "{:.2f}"),
    ("frontend, 45 zh chars (ms)", "frontend_ms", "{:.1f}"),
    ("frontend, first call (ms)", "frontend_first_ms", "{:.0f}"),
    ("BERT, 45 chars (ms)", "bert_ms", "{:.0f}"),
    ("HuBERT ref. encoder, 3.2 s (ms)", "hubert_ms", "{:.0f}"),
    ("GPT prefill, {prefill} positions (ms)", "prefill_ms", "{:.0f}"),
    ("decode median (ms/token)", "decode_ms_per_token", "{:.2f}"),
    ("decode p90 (ms/token)", "decode_ms_p90", "{:.2f}"),
    ("decode p10, least disturbed (ms/token)", "decode_ms_p10", "{:.2f}"),
    ("decode CPU time, all threads (ms/token)", "decode_cpu_ms_per_token", "{:.2f}"),
    ("decode step at {position} (ms)", "@", "{:.2f}"),
    ("step growth {last} / {first} (x)", "decode_growth", "{:.2f}"),
    ("sampler (ms/token)", "sampler_ms_per_token", "{:.3f}"),
    ("vocoder RTF, {tokens} tokens", "vocoder_rtf", "{:.3f}"),
    ("vocoder CPU s / audio s", "vocoder_cpu_rtf", "{:.3f}"),
    ("end-to-end RTF, {seconds} s utterance", "e2e_rtf", "{:.3f}"),
    ("end-to-end CPU s / audio s", "e2e_cpu_rtf", "{:.3f}"),
    ("end-to-end RTF, first call", "e2e_first_rtf", "{:.3f}"),
    ("end-to-end RTF, same text as 4 pieces (cut5)", "e2e_pieces_rtf", "{:.3f}"),
    ("  the same, vocoder not overlapped", "e2e_pieces_sequential_rtf", "{:.3f}"),
    ("time to first audio (s)", "first_audio_s", "{:.2f}"),
    ("peak RSS, load + voice + utterance (MB)", "peak_rss_mb", "{:.0f}"),
    ("peak RSS, whole bench process (MB)", "peak_rss_process_mb", "{:.0f}"),
    ("peak RSS after load (MB)", "peak_rss_load_mb", "{:.0f}"),
    ("RSS after load (MB)", "rss_after_load_mb", "{:.0f}"),
)

#: Metrics where the PyTorch/ONNX ratio is reported (a ratio > 1 means gsv-onnx is better).
RATIO_KEYS = (
    "load_s",
    "prefill_ms",
    "decode_ms_per_token",
    "vocoder_rtf",
    "e2e_rtf",
    "first_audio_s",
    "peak_rss_mb",
)


class BenchError(GsvError):
    """The benchmark cannot run (missing extra, failed worker, bad option)."""


@dataclass
class BenchConfig:
    """What `gsv bench` measures and where it keeps the models.

    bundle_dir: holds `random-<size>/` (random checkpoints) and `random-<size>-<precision>.gsv`
    (bundles); both are built when missing (needs the [convert] extra) and reused otherwise.
    threads: ONNX Runtime threads per session (None = the runtime's default).
    """

    precisions: Sequence[str] = ("int8", "fp32")
    runs: int = 5
    bundle_dir: Path = Path("models")
    size: str = "full"
    threads: int | None = None
    reference: bool = True
    reference_threads: int = 2
    tokens: int = wl.DEFAULT_TOKENS
    prefill_positions: int = wl.DEFAULT_PREFILL_POSITIONS
    probe_positions: Sequence[int] = wl.DEFAULT_PROBE_POSITIONS
    probe_steps: int = wl.DEFAULT_PROBE_STEPS
    rebuild: bool = False
    profile: bool = False
    #: existing bundles to measure instead of the random ones (e.g. a real voice); no reference then
    bundles: Sequence[Path] = ()
    worker_timeout_s: float = 3600.0
    log: Callable[[str], None] = field(default=lambda message: print(message, file=sys.stderr, flush=True))

    def validate(self) -> None:
        unknown = [] if self.bundles else [p for p in self.precisions if p not in PRECISIONS]
        if unknown or not self.precisions:
            raise BenchError(
                f"unknown precision(s) {', '.join(unknown) or '(none)'}; use {', '.join(PRECISIONS)}"
            )
        if len(set(self.precisions)) != len(self.precisions):
            raise BenchError("a precision is listed twice in --precision")
        if self.runs < 1:
            raise BenchError(f"--runs must be at least 1, got {self.runs}")
        if self.size not in ("tiny", "full"):
            raise BenchError(f"--size must be tiny or full, got {self.size!r}")
        if self.tokens < 2 or self.probe_steps < 1 or not self.probe_positions:
            raise BenchError(
                "--tokens must be >= 2, --probe-steps >= 1 and at least one probe position given"
            )
        if min(self.probe_positions) < 2 or self.prefill_positions < 2:
            raise BenchError("prefill and probe positions must be at least 2")
        if self.threads is not None and self.threads < 1:
            raise BenchError(f"--threads must be >= 1, got {self.threads}")

    @property
    def models_root(self) -> Path:
        return Path(self.bundle_dir) / f"random-{self.size}"

    def bundle_path(self, precision: str) -> Path:
        return Path(self.bundle_dir) / f"random-{self.size}-{precision}.gsv"


# --------------------------------------------------------------------------------------------------
# Models and bundles


def torch_available() -> bool:
    """Whether the converter's libraries (torch, transformers) can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers"))


def _model_paths(config: BenchConfig):
    """The checkpoint paths `make_test_models` writes under the models root (needs torch to import)."""
    from gsv_onnx.convert.testmodels import test_model_paths

    return test_model_paths(config.models_root, size=config.size)


def _models_complete(models) -> bool:
    return (
        models.gpt.is_file()
        and models.sovits.is_file()
        and (models.hubert / "config.json").is_file()
        and (models.bert / "config.json").is_file()
    )


def ensure_models(config: BenchConfig):
    """Random V2 checkpoints under `bundle_dir/random-<size>/`, written by `make_test_models` if absent."""
    if not torch_available():
        raise BenchError(
            "building the random test models needs the [convert] extra (pip install torch==2.13.0 "
            "'gsv-onnx[convert]'); or run once where it is installed and reuse --bundle-dir"
        )
    from gsv_onnx.convert.testmodels import make_test_models

    models = _model_paths(config)
    if config.rebuild or not _models_complete(models):
        config.log(f"bench: writing {config.size} random models into {config.models_root} ...")
        started = time.perf_counter()
        models = make_test_models(config.models_root, size=config.size, seed=0)
        config.log(f"bench: models written in {time.perf_counter() - started:.0f} s")
    return models


def _bundle_ok(path: Path, precision: str) -> bool:
    from gsv_onnx.bundle import Bundle

    try:
        bundle = Bundle.load(path, verify=False)
    except GsvError:
        return False
    return bundle.precision == precision


def ensure_bundles(config: BenchConfig) -> dict[str, Path]:
    """One bundle per precision: reused when present and valid, else converted with `gsv convert`'s code."""
    bundles: dict[str, Path] = {}
    missing = [p for p in config.precisions if config.rebuild or not _bundle_ok(config.bundle_path(p), p)]
    if missing:
        models = ensure_models(config)
        from gsv_onnx.convert.pipeline import convert

        for precision in missing:
            path = config.bundle_path(precision)
            config.log(f"bench: converting the {config.size} models to {path} ({precision}) ...")

            def progress(stage: str, message: str, elapsed: float) -> None:
                config.log(f"  [{elapsed:7.1f}s] {stage:<6} {message}")

            convert(
                models.gpt,
                models.sovits,
                models.hubert,
                models.bert,
                path,
                precision=precision,
                progress=progress,
                force=True,
                verify=False,
            )
    for precision in config.precisions:
        bundles[precision] = config.bundle_path(precision)
    return bundles


def given_bundles(config: BenchConfig) -> dict[str, Path]:
    """The --bundle paths, validated, labelled by their precision (int8, int8#2, ...)."""
    from gsv_onnx.bundle import Bundle

    labelled: dict[str, Path] = {}
    for path in config.bundles:
        precision = Bundle.load(path, verify=False).precision  # BundleError names a bad path
        label, index = precision, 2
        while label in labelled:
            label, index = f"{precision}#{index}", index + 1
        labelled[label] = Path(path)
    return labelled


def _bundle_info(path: Path) -> dict[str, Any]:
    from gsv_onnx.bundle import Bundle

    bundle = Bundle.load(path, verify=False)
    return {
        "path": str(path),
        "created": bundle.manifest.get("created"),
        "converter_version": bundle.manifest.get("converter_version"),
        "size_mb": round(bundle.total_size() / 1e6, 1),
        "graph_precisions": {
            name: entry.get("precision") for name, entry in bundle.manifest["graphs"].items()
        },
    }


# --------------------------------------------------------------------------------------------------
# Workers


def _workload_args(config: BenchConfig) -> list[str]:
    return [
        "--tokens",
        str(config.tokens),
        "--prefill-positions",
        str(config.prefill_positions),
        "--probe-positions",
        ",".join(str(p) for p in config.probe_positions),
        "--probe-steps",
        str(config.probe_steps),
    ]


def _run_worker(
    module: str, args: list[str], config: BenchConfig, what: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run `python -m module args --out FILE` in a fresh process (extra `env`); returns its JSON result."""
    with tempfile.TemporaryDirectory(prefix="gsv-bench-") as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, "-m", module, *args, "--out", str(out)]
        try:
            completed = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=config.worker_timeout_s,
                check=False,
                env={**os.environ, **(env or {})},
            )
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"{what} did not finish within {config.worker_timeout_s:.0f} s") from exc
        if completed.returncode != 0 or not out.is_file():
            tail = "\n".join((completed.stderr or completed.stdout or "").strip().splitlines()[-15:])
            raise BenchError(f"{what} failed (exit {completed.returncode}):\n{tail}")
        return json.loads(out.read_text())


def run_onnx(bundle: Path, config: BenchConfig) -> dict[str, Any]:
    """One measurement of `bundle` in a fresh process."""
    args = ["--bundle", str(bundle), *_workload_args(config)]
    if config.threads is not None:
        args += ["--threads", str(config.threads)]
    return _run_worker("gsv_onnx.bench.onnx_worker", args, config, f"the measurement of {bundle}")


def run_profile(bundle: Path, config: BenchConfig) -> dict[str, Any]:
    """ONNX Runtime's per-op profile of a decode step and a vocoder call, in a fresh process."""
    args = [
        "--bundle",
        str(bundle),
        "--positions",
        str(config.prefill_positions),
        "--tokens",
        str(config.tokens),
    ]
    if config.threads is not None:
        args += ["--threads", str(config.threads)]
    return _run_worker("gsv_onnx.bench.profile", args, config, f"the profile of {bundle}")


def run_reference(models, config: BenchConfig) -> dict[str, Any]:
    """One measurement of the PyTorch reference modules in a fresh process."""
    args = [
        "--gpt",
        str(models.gpt),
        "--sovits",
        str(models.sovits),
        "--hubert",
        str(models.hubert),
        "--bert",
        str(models.bert),
        "--threads",
        str(config.reference_threads),
        *_workload_args(config),
    ]
    # torch's OpenMP threads spin at barriers; on a shared machine a descheduled spinner makes each
    # small op wait a time slice (measured here: 0.47 vs 49 ms for a tiny decode step). Passive
    # waiting only helps torch, so the ratios stay conservative; an explicit setting is kept.
    env = {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    return _run_worker("gsv_onnx.bench.torch_worker", args, config, "the PyTorch reference measurement", env)


# --------------------------------------------------------------------------------------------------
# Aggregation


def _with_growth(run: dict[str, Any], positions: Sequence[int]) -> dict[str, Any]:
    at = run.get("decode_ms_per_token_at") or {}
    first, last = str(min(positions)), str(max(positions))
    if first in at and last in at and at[first] > 0:
        run["decode_growth"] = at[last] / at[first]
    return run


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of every numeric key over runs, `spread` {key: {median, min, max}}, the raw runs."""
    import numpy as np

    result: dict[str, Any] = {}
    spread: dict[str, dict[str, float]] = {}

    def stats(values: list[float]) -> dict[str, float]:
        array = np.asarray(values, dtype=np.float64)
        return {"median": float(np.median(array)), "min": float(array.min()), "max": float(array.max())}

    keys = [k for k in runs[0] if all(_is_number(run.get(k)) for run in runs)]
    for key in keys:
        spread[key] = stats([float(run[key]) for run in runs])
        result[key] = spread[key]["median"]
    positions = runs[0].get("decode_ms_per_token_at") or {}
    result["decode_ms_per_token_at"] = {}
    for position in positions:
        values = [float(run["decode_ms_per_token_at"][position]) for run in runs]
        spread[f"decode_ms_per_token_at.{position}"] = stats(values)
        result["decode_ms_per_token_at"][position] = spread[f"decode_ms_per_token_at.{position}"]["median"]
    for key, value in runs[0].items():  # descriptive keys (strings, dicts) from the first run
        if key not in result and not _is_number(value) and key != "decode_ms_per_token_at":
            result[key] = value
    result["runs"] = len(runs)
    result["spread"] = spread
    result["per_run"] = runs
    return result


def ratios(reference: dict[str, Any], result: dict[str, Any]) -> dict[str, float]:
    """reference / gsv-onnx for the RATIO_KEYS and each probe position (> 1: gsv-onnx is better)."""
    out: dict[str, float] = {}
    for key in RATIO_KEYS:
        ref, ours = reference.get(key), result.get(key)
        if _is_number(ref) and _is_number(ours) and ours > 0:
            out[key] = ref / ours
    for position, ours in (result.get("decode_ms_per_token_at") or {}).items():
        ref = (reference.get("decode_ms_per_token_at") or {}).get(position)
        if _is_number(ref) and ours > 0:
            out[f"decode_ms_per_token_at.{position}"] = ref / ours
    return out


def check_targets(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target of the issue against the measured medians: value, limit, met, excess in percent."""
    checks: list[dict[str, Any]] = []
    for label, which, key, limit in TARGETS:
        if which == "each":
            candidates = list(results)
        elif which == "fastest":
            measured = [p for p in results if _is_number(results[p].get(key))]
            candidates = [min(measured, key=lambda p: results[p][key])] if measured else []
        else:
            candidates = [which] if which in results else []
        for precision in candidates:
            value = results[precision].get(key)
            if not _is_number(value):
                continue
            checks.append(
                {
                    "target": label,
                    "precision": precision,
                    "metric": key,
                    "value": value,
                    "limit": limit,
                    "met": bool(value <= limit),
                    "excess_percent": max(0.0, (value / limit - 1) * 100),
                }
            )
    return checks


# --------------------------------------------------------------------------------------------------
# Report


def _cell(result: dict[str, Any], key: str, fmt: str, position: str | None = None) -> str:
    if position is not None:
        value = (result.get("decode_ms_per_token_at") or {}).get(position)
        spread = result.get("spread", {}).get(f"decode_ms_per_token_at.{position}")
    else:
        value = result.get(key)
        spread = result.get("spread", {}).get(key)
    if not _is_number(value) or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = fmt.format(value)
    if spread and result.get("runs", 1) > 1:
        text += f" ({fmt.format(spread['min'])}-{fmt.format(spread['max'])})"
    return text


def format_report(report: dict[str, Any]) -> str:
    """The human-readable table of a `run_bench` report."""
    config = report["config"]
    results = report["results"]
    reference = report.get("reference") or {}
    have_reference = bool(reference) and "skipped" not in reference
    columns = list(results)
    headers = [f"gsv-onnx {p}" for p in columns]
    if have_reference:
        headers.append(f"PyTorch ref ({config['reference_threads']}t)")
        headers += [f"ref/{p}" for p in columns]
    positions = [str(p) for p in config["probe_positions"]]
    seconds = config["tokens"] * 0.04
    labels: list[tuple[str, str, str, str | None]] = []
    for label, key, fmt in ROWS:
        if key == "@":
            for position in positions:
                labels.append((label.format(position=position), "decode_ms_per_token_at", fmt, position))
            continue
        label = label.format(
            prefill=config["prefill_positions"],
            tokens=config["tokens"],
            seconds=f"{seconds:g}",
            first=positions[0],
            last=positions[-1],
        )
        labels.append((label, key, fmt, None))
    rows = []
    for label, key, fmt, position in labels:
        cells = [_cell(results[p], key, fmt, position) for p in columns]
        if have_reference:
            cells.append(_cell(reference, key, fmt, position))
            for p in columns:
                ratio_key = f"decode_ms_per_token_at.{position}" if position else key
                value = report.get("ratios", {}).get(p, {}).get(ratio_key)
                cells.append(f"{value:.1f}x" if _is_number(value) else "")
        rows.append([label, *cells])
    widths = [
        max(len(row[i]) for row in [["metric (median, min-max)", *headers], *rows])
        for i in range(len(headers) + 1)
    ]
    lines = []
    machine = report["machine"]
    lines.append(
        f"gsv bench: {config['size']}-size random V2 models, {config['tokens']} tokens "
        f"({seconds:g} s of audio) after a {config['prefill_positions']}-position prefill, "
        f"{config['runs']} run(s), each engine in a fresh process"
    )
    lines.append(machine_line(machine))
    during = machine.get("load_average_during")
    if during:
        lines.append(
            f"1-min load average while measuring: median {during['median']:.1f} "
            f"({during['min']:.1f}-{during['max']:.1f}) on {machine['usable_cpus']} CPUs"
        )
    threads = next((r.get("threads") for r in results.values() if "threads" in r), None)
    threads = int(threads) if _is_number(threads) else threads
    lines.append(
        f"ONNX Runtime threads per session: {threads}; first audio: {next((r.get('first_audio_mode') for r in results.values() if 'first_audio_mode' in r), '-')}"
    )
    if have_reference:
        lines.append(
            f"PyTorch reference: the project's gsv_onnx.convert modules in fp32, {config['reference_threads']} "
            "torch threads (OMP_WAIT_POLICY=PASSIVE), K/V cache grown by torch.cat every step (upstream's naive path)"
        )
    lines.append("")
    header = ["metric (median, min-max)", *headers]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    for name, entry in [*results.items(), ("reference", reference)]:
        for message in entry.get("failed", []):
            lines.append(f"FAILED run ({name}): {message.splitlines()[0]}")
    if not have_reference:
        lines.append("")
        lines.append(f"PyTorch reference: skipped ({reference.get('skipped', 'not requested')})")
    lines.append("")
    lines.append("targets (issue 7):")
    for check in report.get("targets", []):
        status = "met" if check["met"] else f"MISSED by {check['excess_percent']:.0f}%"
        lines.append(
            f"  {check['target']:<48} {check['precision']:<5} {check['value']:.3g} (limit {check['limit']:g}): {status}"
        )
    if report.get("profiles"):
        from gsv_onnx.bench.profile import format_profile

        lines.append("")
        for precision, profile in report["profiles"].items():
            lines.append(format_profile(precision, profile))
    bundles = report.get("bundles", {})
    if bundles:
        lines.append("")
        lines.append(
            "bundles: "
            + "; ".join(f"{p} {info['size_mb']:.0f} MB ({info['path']})" for p, info in bundles.items())
        )
    return "\n".join(lines)


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Build or reuse the bundles, measure each precision (and the PyTorch reference) `runs` times.

    Returns the report: {"machine", "config", "bundles", "results": {precision: medians...},
    "reference": medians... (or {"skipped": reason}), "ratios", "targets"}.
    """
    config.validate()
    machine = describe_machine()
    reference_models = None
    skipped = None
    if config.bundles:
        bundles = given_bundles(config)
        config.precisions = list(bundles)
    else:
        bundles = ensure_bundles(config)
    if config.reference and config.bundles:
        skipped = "--bundle given: the reference runs on the random checkpoints of the default bundles"
        config.log(f"bench: PyTorch reference skipped: {skipped}")
    elif config.reference:
        if torch_available():
            reference_models = ensure_models(config)
        else:
            skipped = "torch is not installed: pip install torch==2.13.0 'gsv-onnx[convert]' to compare"
            config.log(f"bench: PyTorch reference skipped: {skipped}")
    else:
        skipped = "--no-reference"
    engines = list(config.precisions) + ([REFERENCE] if reference_models is not None else [])
    collected: dict[str, list[dict[str, Any]]] = {engine: [] for engine in engines}
    failures: dict[str, list[str]] = {}
    started = time.perf_counter()
    for run in range(config.runs):
        for engine in engines:
            config.log(f"bench: run {run + 1}/{config.runs}: {engine} ...")
            engine_start = time.perf_counter()
            try:
                if engine == REFERENCE:
                    measured = run_reference(reference_models, config)
                else:
                    measured = run_onnx(bundles[engine], config)
            except BenchError as exc:  # one failed run must not throw away the others
                config.log(f"bench:   {engine}: run failed: {exc}")
                failures.setdefault(engine, []).append(str(exc))
                continue
            collected[engine].append(_with_growth(measured, config.probe_positions))
            config.log(
                f"bench:   {engine}: decode {measured['decode_ms_per_token']:.2f} ms/token, "
                f"e2e RTF {measured['e2e_rtf']:.3f}, peak RSS {measured['peak_rss_mb']:.0f} MB "
                f"({time.perf_counter() - engine_start:.0f} s)"
            )
    if not any(collected[p] for p in config.precisions):
        raise BenchError("every measurement failed:\n" + "\n".join(m for ms in failures.values() for m in ms))
    results = {
        p: aggregate(collected[p]) if collected[p] else {"failed": failures[p]} for p in config.precisions
    }
    if reference_models is None:
        reference = {"skipped": skipped}
    elif collected[REFERENCE]:
        reference = aggregate(collected[REFERENCE])
    else:
        reference = {"skipped": "every run failed", "failed": failures[REFERENCE]}
    for engine, messages in failures.items():
        target = reference if engine == REFERENCE else results[engine]
        target.setdefault("failed", messages)
    machine["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    during = [
        run[key][0]
        for runs in collected.values()
        for run in runs
        for key in ("load_average_start", "load_average_end")
        if isinstance(run.get(key), list)
    ]
    if during:
        machine["load_average_during"] = {
            "median": sorted(during)[len(during) // 2],
            "min": min(during),
            "max": max(during),
        }
    report: dict[str, Any] = {
        "machine": machine,
        "config": {
            "precisions": list(config.precisions),
            "runs": config.runs,
            "size": config.size,
            "threads": config.threads,
            "reference_threads": config.reference_threads,
            "tokens": config.tokens,
            "prefill_positions": config.prefill_positions,
            "probe_positions": list(config.probe_positions),
            "probe_steps": config.probe_steps,
            "target_text": wl.TARGET_TEXT,
            "prompt_text": wl.PROMPT_TEXT,
            "reference_seconds": wl.REFERENCE_SECONDS,
            "wall_s": time.perf_counter() - started,
        },
        "bundles": {p: _bundle_info(path) for p, path in bundles.items()},
        "results": results,
        "reference": reference,
    }
    if reference_models is not None:
        report["ratios"] = {p: ratios(reference, results[p]) for p in config.precisions}
        for p in config.precisions:
            results[p]["vs_reference"] = report["ratios"][p]
    report["targets"] = check_targets(results)
    if config.profile:
        report["profiles"] = {}
        for precision in config.precisions:
            config.log(f"bench: profiling {precision} ...")
            report["profiles"][precision] = run_profile(bundles[precision], config)
    return report
