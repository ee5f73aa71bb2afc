"""Where a decode step and a vocoder call spend their time: ONNX Runtime's per-node profile by op type.

    python -m gsv_onnx.bench.profile --bundle models/random-full-int8.gsv --out profile.json

Runs in its own process (profiling slows every node a little, so it is kept apart from the timed
runs). Sessions are created with the runtime's own options plus `enable_profiling`; the profile's
node events are summed per op type and divided by the number of calls. `wall_ms` is the Python
call, `run_ms` ONNX Runtime's whole `Run`, `kernels_ms` the sum of the node kernels; the gaps are
Python/binding overhead and ORT's scheduling between nodes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from gsv_onnx.bench import workload as wl


def _summarize_profile(path: str, skip_runs: int = 0) -> dict[str, Any]:
    """Per-op-type kernel ms per call and the Run time, medians over the profiled calls.

    Medians, because on a shared machine single calls are sometimes descheduled for milliseconds.
    """
    events = json.loads(Path(path).read_text())
    runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
        key=lambda e: e["ts"],
    )[skip_runs:]
    if not runs:
        return {"calls": 0}
    nodes = [e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")]
    per_run: list[dict[str, float]] = []
    for run in runs:
        begin, finish = run["ts"], run["ts"] + run["dur"]
        totals: dict[str, float] = defaultdict(float)
        for event in nodes:
            if begin <= event["ts"] <= finish:
                totals[event.get("args", {}).get("op_name", "?")] += event["dur"] / 1000
        per_run.append(totals)
    ops = {op for totals in per_run for op in totals}
    op_ms = {op: float(np.median([totals.get(op, 0.0) for totals in per_run])) for op in ops}
    op_ms = dict(sorted(op_ms.items(), key=lambda item: -item[1]))
    return {
        "calls": len(runs),
        "run_ms": float(np.median([run["dur"] / 1000 for run in runs])),
        "kernels_ms": float(np.median([sum(totals.values()) for totals in per_run])),
        "op_ms": op_ms,
    }


def profile(bundle_path: str | Path, threads: int | None, positions: int, steps: int, tokens: int) -> dict:
    """Profile `steps` decode steps after a `positions`-long prefill and one vocoder call of `tokens`."""
    import onnxruntime as ort

    from gsv_onnx.runtime import sessions
    from gsv_onnx.runtime.decoder import GptDecoder
    from gsv_onnx.runtime.options import RuntimeOptions
    from gsv_onnx.runtime.tts import TTS

    profile_dir = Path(tempfile.mkdtemp(prefix="gsv-profile-"))
    plain_options = sessions.session_options

    def profiling_options(runtime_options: RuntimeOptions) -> ort.SessionOptions:
        options = plain_options(runtime_options)
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_dir / "ort")
        return options

    sessions.session_options = profiling_options  # only this process, only for this profile
    try:
        tts = TTS.load(bundle_path, RuntimeOptions(intra_op_threads=threads), verify=False)
    finally:
        sessions.session_options = plain_options
    decoder: GptDecoder = tts.decoder
    eos = tts.eos_token
    phone_ids, bert, codes = wl.gpt_inputs(positions)
    logits = decoder.prefill(phone_ids, bert, codes)
    warmup = 5
    wall = []
    for index in range(warmup + steps):
        token = int(np.argmax(wl.mask_eos(logits, eos)))
        start = time.perf_counter()
        logits = decoder.step(token)
        if index >= warmup:
            wall.append((time.perf_counter() - start) * 1000)
    decode = _summarize_profile(decoder.decode_session.end_profiling(), skip_runs=warmup)
    decode["wall_ms"] = float(np.median(wall))
    decode["positions"] = positions
    decoder.prefill_session.end_profiling()

    rng = np.random.default_rng(0)
    semantic = rng.integers(0, 1024, (1, tokens), dtype=np.int64)
    phones = rng.integers(0, 300, (1, 86), dtype=np.int64)
    feeds = {
        "semantic_codes": semantic,
        "phone_ids": phones,
        "ge": (
            rng.standard_normal((1, int(tts.bundle.hparams["sovits"].get("gin_channels", 512)), 1)) * 0.1
        ).astype(np.float32),
        "speed": np.asarray([1.0], dtype=np.float32),
        "noise": wl.prior_noise(tts.inter_channels, 2 * tokens),
    }
    tts.sovits.run(["audio"], feeds)  # warm-up
    start = time.perf_counter()
    tts.sovits.run(["audio"], feeds)
    vocoder_wall = (time.perf_counter() - start) * 1000
    vocoder = _summarize_profile(tts.sovits.end_profiling(), skip_runs=1)
    vocoder["wall_ms"] = vocoder_wall
    vocoder["tokens"] = tokens
    shutil.rmtree(profile_dir, ignore_errors=True)
    return {
        "precision": tts.bundle.precision,
        "threads": tts.runtime_options.threads,
        "decode": decode,
        "vocoder": vocoder,
    }


def format_profile(name: str, result: dict[str, Any], top: int = 8) -> str:
    """A few lines: wall / run / kernels and the top op types, for the decode step and the vocoder."""
    lines = [f"profile {name} ({result['threads']} threads):"]
    for part, label in (("decode", "decode step"), ("vocoder", "vocoder call")):
        data = result[part]
        if not data.get("calls"):
            continue
        where = f" at {data['positions']} positions" if part == "decode" else f" ({data['tokens']} tokens)"
        ops = ", ".join(f"{op} {ms:.2f}" for op, ms in list(data["op_ms"].items())[:top])
        lines.append(
            f"  {label}{where}: wall {data['wall_ms']:.2f} ms, ORT run {data['run_ms']:.2f} ms, "
            f"kernels {data['kernels_ms']:.2f} ms; by op type (ms): {ops}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Profile a bundle's decode step and vocoder (internal).")
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--positions", type=int, default=wl.DEFAULT_PREFILL_POSITIONS)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=wl.DEFAULT_TOKENS)
    args = parser.parse_args(argv)
    result = profile(args.bundle, args.threads, args.positions, args.steps, args.tokens)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
