"""`gsv bench`: speed and memory of gsv-onnx bundles per precision, against the PyTorch reference."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DESCRIPTION = """\
Measure gsv-onnx on full-size random-weight GPT-SoVITS V2 models (the real sizes; the audio is
noise, the timings are real): load time, frontend, BERT and HuBERT, GPT prefill, decode ms/token
(median, p90, and with the cache at several positions), vocoder and end-to-end real-time factors
for a 10 s utterance (250 tokens, EOS masked so every run decodes the same amount), time to first
audio and peak RSS, per precision, each in a fresh process. The same workload runs through the
project's PyTorch modules (upstream's naive decode path, 2 threads) in the same run, with the
ratios, when torch is installed ([convert] extra); without torch that part is skipped.

The random checkpoints and bundles are built under --bundle-dir the first time (this needs the
[convert] extra and several minutes) and reused afterwards; --bundle measures existing bundles
(no torch needed)."""

EPILOG = """\
examples:
  gsv bench --precision int8,fp32
  gsv bench --precision int8 --runs 3 --no-reference --json bench.json
  gsv bench --bundle my_voice.gsv --runs 3   # an existing bundle; no torch needed
  gsv bench --from-json bench.json          # print the table of an earlier run"""


def _precisions(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _positions(text: str) -> list[int]:
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def register(subparsers) -> None:
    """Add the `bench` subcommand."""
    parser = subparsers.add_parser(
        "bench",
        help="benchmark bundles per precision against the PyTorch reference",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--precision",
        type=_precisions,
        default=["int8", "fp32"],
        metavar="LIST",
        help="comma-separated bundle precisions: fp32, fp16, int8, int4 (default int8,fp32)",
    )
    parser.add_argument(
        "--runs", type=int, default=5, help="runs per engine; medians are reported (default 5)"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the full results as JSON")
    parser.add_argument(
        "--bundle-dir",
        type=Path,
        default=Path("models"),
        metavar="DIR",
        help="where the random models and bundles are built or reused (default models/)",
    )
    parser.add_argument(
        "--bundle",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="measure this existing bundle (e.g. a real voice) instead of the random ones; repeatable; "
        "needs no torch, and the PyTorch reference is skipped",
    )
    parser.add_argument(
        "--no-reference", action="store_true", help="skip the PyTorch reference (it needs torch)"
    )
    parser.add_argument(
        "--threads", type=int, metavar="N", help="ONNX Runtime threads per session (default: CPUs, at most 4)"
    )
    parser.add_argument(
        "--reference-threads",
        type=int,
        default=2,
        metavar="N",
        help="torch threads of the reference (default 2)",
    )
    parser.add_argument(
        "--size",
        choices=("full", "tiny"),
        default="full",
        help="model size (default full; tiny for a smoke test)",
    )
    parser.add_argument("--tokens", type=int, default=250, help="tokens per utterance (default 250 = 10 s)")
    parser.add_argument(
        "--prefill-positions", type=int, default=200, help="positions of the timed prefill (default 200)"
    )
    parser.add_argument(
        "--positions",
        type=_positions,
        default=[200, 700, 1200],
        metavar="LIST",
        help="cache lengths at which single decode steps are timed (default 200,700,1200)",
    )
    parser.add_argument("--probe-steps", type=int, default=20, help="timed steps per position (default 20)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile one decode step and one vocoder call per precision (ORT per-op times)",
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild the random models and bundles")
    parser.add_argument(
        "--from-json", type=Path, metavar="FILE", help="print the table of a saved --json file"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark (or re-print a saved one) and print the table."""
    from gsv_onnx.bench.runner import BenchConfig, BenchError, format_report, run_bench

    if args.from_json is not None:
        try:
            report = json.loads(args.from_json.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BenchError(
                f"cannot read {args.from_json}: {exc}; pass a file written by gsv bench --json"
            ) from exc
        print(format_report(report))
        return 0
    config = BenchConfig(
        precisions=args.precision,
        runs=args.runs,
        bundle_dir=args.bundle_dir,
        size=args.size,
        threads=args.threads,
        reference=not args.no_reference,
        reference_threads=args.reference_threads,
        tokens=args.tokens,
        prefill_positions=args.prefill_positions,
        probe_positions=args.positions,
        probe_steps=args.probe_steps,
        rebuild=args.rebuild,
        profile=args.profile,
        bundles=args.bundle,
    )
    report = run_bench(config)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False))
        print(f"bench: wrote {args.json}", file=sys.stderr)
    print(format_report(report))
    return 0
