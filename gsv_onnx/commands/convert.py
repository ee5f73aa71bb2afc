"""`gsv convert`: upstream GPT-SoVITS V2 checkpoints -> a gsv-onnx bundle directory."""

from __future__ import annotations

import argparse
import sys

from gsv_onnx.bundle import PRECISIONS

DESCRIPTION = """\
Convert a GPT-SoVITS V2 model (the GPT .ckpt and SoVITS .pth of a fine-tune or the pretrained
ones) plus chinese-hubert-base and chinese-roberta-wwm-ext-large into a bundle directory that
`gsv say`, `gsv serve` and the Python API load with ONNX Runtime alone. Stages: read, build,
export, verify. Needs the [convert] extra (torch, transformers, onnx)."""

EPILOG = """\
example:
  gsv convert --gpt my_voice-e15.ckpt --sovits my_voice_e8_s400.pth \\
              --hubert chinese-hubert-base/ --bert chinese-roberta-wwm-ext-large/ -o my_voice.gsv"""


def register(subparsers) -> None:
    """Add the `convert` subcommand."""
    parser = subparsers.add_parser(
        "convert",
        help="convert GPT-SoVITS V2 checkpoints into a gsv-onnx bundle",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--gpt",
        required=True,
        metavar="CKPT",
        help="GPT checkpoint (*.ckpt, e.g. GPT_weights_v2/name-e15.ckpt)",
    )
    parser.add_argument(
        "--sovits",
        required=True,
        metavar="PTH",
        help="SoVITS checkpoint (*.pth, e.g. SoVITS_weights_v2/name_e8_s400.pth); must be V2",
    )
    parser.add_argument(
        "--hubert",
        required=True,
        metavar="DIR",
        help="chinese-hubert-base directory (config.json + pytorch_model.bin)",
    )
    parser.add_argument(
        "--bert",
        required=True,
        metavar="DIR",
        help="chinese-roberta-wwm-ext-large directory (config.json + pytorch_model.bin + tokenizer.json or vocab.txt)",
    )
    parser.add_argument("-o", "--output", required=True, metavar="OUT.gsv", help="bundle directory to create")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="weight precision (default fp32). fp16: every graph stores fp16 weights (half the size). "
        "int8: GPT and BERT use int8 matrix products (fastest on CPUs with VNNI), the other graphs "
        "fp16. int4: as int8 but BERT weights in 4-bit blocks. Inputs and outputs stay float32",
    )
    parser.add_argument("--force", action="store_true", help="replace OUT.gsv if it exists and is not empty")
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="skip comparing every graph's ONNX Runtime output with PyTorch (faster; the bundle is "
        "still validated and loaded once)",
    )
    parser.set_defaults(func=run)


def _progress(stage: str, message: str, elapsed: float) -> None:
    print(f"[{elapsed:7.1f}s] {stage:<6} {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Run the conversion and print the summary."""
    from gsv_onnx.convert import require_torch

    require_torch()
    from gsv_onnx.convert.pipeline import ConvertError, convert

    try:
        summary = convert(
            args.gpt,
            args.sovits,
            args.hubert,
            args.bert,
            args.output,
            precision=args.precision,
            progress=_progress,
            force=args.force,
            verify=not args.no_verify,
        )
    except OSError as exc:  # disk full, permissions: the user's to fix, not a converter bug
        where = f" ({exc.filename})" if exc.filename else ""
        raise ConvertError(
            f"cannot read or write a file{where}: {exc.strerror or exc}; check free disk space and permissions"
        ) from exc
    print(summary.format())
    return 0
