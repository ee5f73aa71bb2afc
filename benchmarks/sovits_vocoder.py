"""SoVITS vocoder benchmark on the full-size random V2 SoVITS: real-time factor and fidelity per variant.

Builds (or reuses, in --work-dir) a random-weight SoVITS with V2's real s2.json sizes, exports
`sovits_decoder.onnx` + `ref_enc.onnx`, makes the precision variants with
`gsv_onnx.convert.quantize.quantize_sovits_graph`, then decodes `--tokens` semantic tokens
(250 = 10 s of audio at 32 kHz) and reports for each variant and thread count:

* wall seconds (median / min over `--runs`) and the real-time factor = median wall / audio seconds,
* process CPU seconds (median): on a shared machine this is the steadier figure; with one thread it
  is what the wall time would be on an idle core,
* session load seconds,
* waveform SNR against the fp32 graph (and fp32 against our PyTorch module),

plus the same decode through our PyTorch `SovitsV2.decode` at the same thread counts.

    python benchmarks/sovits_vocoder.py --precisions fp32,fp16,int8 --threads 1,2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def build_graphs(work_dir: Path, precisions: list[str], seed: int = 0) -> dict[str, Path]:
    """Full-size random SoVITS -> fp32 graphs (cached) -> the requested variants (cached)."""
    from gsv_onnx.convert.quantize import quantize_sovits_graph, variant_path

    fp32_dir = work_dir / "fp32"
    decoder = fp32_dir / "sovits_decoder.onnx"
    if not decoder.is_file() or not (fp32_dir / "ref_enc.onnx").is_file():
        from gsv_onnx.convert.export_sovits import export_sovits

        model = load_model(work_dir, seed)
        export_sovits(model, fp32_dir)
    paths = {}
    for precision in precisions:
        target = variant_path(decoder, precision)
        if precision != "fp32" and not target.is_file():
            start = time.perf_counter()
            quantize_sovits_graph(decoder, precision)
            print(f"made {precision} variant in {time.perf_counter() - start:.1f} s")
        paths[precision] = target
    return paths


def load_model(work_dir: Path, seed: int = 0):
    """The full-size random SovitsV2 (weights cached in work_dir/full_state.pt)."""
    import torch

    from gsv_onnx.convert.sovits import create_sovits, random_init_
    from gsv_onnx.convert.testmodels import sovits_config

    model = create_sovits(sovits_config("full"))
    state_path = work_dir / "full_state.pt"
    if state_path.is_file():
        model.load_state_dict(torch.load(state_path, map_location="cpu"))
    else:
        random_init_(model, seed=seed)
        work_dir.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), state_path)
    return model.eval()


def make_inputs(ref_enc_path: Path, tokens: int, phones: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Decoder feeds: random tokens/phones, ge from ref_enc on a random spectrogram, noise 0.5·ε."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    ref_enc = ort.InferenceSession(str(ref_enc_path), providers=["CPUExecutionProvider"])
    spec = np.abs(rng.standard_normal((1, 704, 300))).astype(np.float32)
    ge = ref_enc.run(None, {"ref_spec": spec})[0]
    return {
        "semantic_codes": rng.integers(0, 1024, (1, tokens), dtype=np.int64),
        "phone_ids": rng.integers(0, 732, (1, phones), dtype=np.int64),
        "ge": ge,
        "speed": np.array([1.0], dtype=np.float32),
        "noise": (0.5 * rng.standard_normal((1, 192, 2 * tokens))).astype(np.float32),
    }


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Spinning threads steal the other core from everything else on a small machine.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def timed(run, runs: int) -> tuple[list[float], list[float], object]:
    out = run()  # warm-up
    walls, cpus = [], []
    for _ in range(runs):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        out = run()
        walls.append(time.perf_counter() - wall0)
        cpus.append(time.process_time() - cpu0)
    return walls, cpus, out


def snr_db(got: np.ndarray, ref: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    noise = float(np.sum((got.astype(np.float64) - ref) ** 2))
    return float("inf") if noise == 0 else 10 * float(np.log10(np.sum(ref**2) / noise))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "gsv-bench-sovits")
    parser.add_argument("--precisions", default="fp32,fp16,int8")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--tokens", type=int, default=250, help="semantic tokens (25 per second of audio)")
    parser.add_argument("--phones", type=int, default=120)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    threads_list = [int(t) for t in args.threads.split(",")]
    if "fp32" not in precisions:
        precisions.insert(0, "fp32")
    paths = build_graphs(args.work_dir, precisions)
    feeds = make_inputs(args.work_dir / "fp32" / "ref_enc.onnx", args.tokens, args.phones)
    audio_s = args.tokens * 1280 / 32000
    load_avg = os.getloadavg()
    print(
        f"# SoVITS vocoder, full-size random V2, {args.tokens} tokens = {audio_s:.1f} s of audio; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load_avg[0]:.1f} at start"
    )
    print(
        f"{'variant':<10}{'thr':>4}{'load s':>8}{'wall med':>10}{'wall min':>10}{'RTF':>8}{'cpu s':>8}{'SNR dB':>9}"
    )
    results: dict = {"machine": {"cpus": os.cpu_count(), "load_avg_start": load_avg}, "results": {}}
    reference = None
    for precision in precisions:
        for threads in threads_list:
            start = time.perf_counter()
            sess = session(paths[precision], threads)
            load_s = time.perf_counter() - start
            walls, cpus, (audio,) = timed(lambda s=sess: s.run(["audio"], feeds), args.runs)
            if reference is None:
                reference = audio
            row = {
                "load_s": load_s,
                "wall_s_median": statistics.median(walls),
                "wall_s_min": min(walls),
                "vocoder_rtf": statistics.median(walls) / audio_s,
                "cpu_s_median": statistics.median(cpus),
                "snr_db_vs_fp32": snr_db(audio, reference),
                "file_mb": paths[precision].stat().st_size / 1e6,
            }
            results["results"].setdefault(precision, {})[str(threads)] = row
            print(
                f"{precision:<10}{threads:>4}{load_s:>8.2f}{row['wall_s_median']:>10.3f}{row['wall_s_min']:>10.3f}"
                f"{row['vocoder_rtf']:>8.3f}{row['cpu_s_median']:>8.2f}{row['snr_db_vs_fp32']:>9.1f}"
            )
    if not args.no_torch:
        import torch

        model = load_model(args.work_dir)
        inputs = {k: torch.from_numpy(v) for k, v in feeds.items()}
        for threads in threads_list:
            torch.set_num_threads(threads)
            with torch.no_grad():
                walls, cpus, audio = timed(
                    lambda: model.decode(
                        inputs["semantic_codes"], inputs["phone_ids"], inputs["ge"], 1.0, inputs["noise"]
                    ),
                    args.runs,
                )
            row = {
                "wall_s_median": statistics.median(walls),
                "wall_s_min": min(walls),
                "vocoder_rtf": statistics.median(walls) / audio_s,
                "cpu_s_median": statistics.median(cpus),
                "snr_db_fp32_graph_vs_torch": snr_db(reference, audio.numpy()),
            }
            results.setdefault("reference", {})[str(threads)] = row
            print(
                f"{'torch':<10}{threads:>4}{'':>8}{row['wall_s_median']:>10.3f}{row['wall_s_min']:>10.3f}"
                f"{row['vocoder_rtf']:>8.3f}{row['cpu_s_median']:>8.2f}"
                f"{row['snr_db_fp32_graph_vs_torch']:>9.1f}  (SNR: fp32 graph vs torch)"
            )
    results["machine"]["load_avg_end"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
