"""`gsv make-test-models`: write random-weight V2 checkpoints in upstream's formats."""

from __future__ import annotations

import argparse
import sys

from gsv_onnx.errors import GsvError


def register(subparsers) -> None:
    """Add the `make-test-models` subcommand."""
    parser = subparsers.add_parser(
        "make-test-models",
        help="write random-weight GPT/SoVITS/HuBERT/RoBERTa files in upstream's formats",
        description=(
            "Write a complete random-weight GPT-SoVITS V2 model set in upstream's exact file formats: "
            "DIR/gpt/*.ckpt, DIR/sovits/*.pth, DIR/chinese-hubert-base/, DIR/chinese-roberta-wwm-ext-large/. "
            "tiny converts in seconds (tests); full has the real V2 sizes (benchmarks). The audio such "
            "models make is noise. Needs the [convert] extra."
        ),
    )
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny", help="model size (default tiny)")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="directory to write into")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the model set and print the paths to pass to `gsv convert`."""
    from gsv_onnx.convert import require_torch

    require_torch()
    from gsv_onnx.convert.testmodels import make_test_models

    print(f"writing {args.size} random models into {args.output} ...", file=sys.stderr)
    try:
        models = make_test_models(args.output, size=args.size, seed=args.seed)
    except OSError as exc:  # not writable, a file in the way, disk full
        raise GsvError(
            f"cannot write test models into {args.output}: {exc.strerror or exc}; choose a writable directory"
        ) from exc
    print(
        f"gsv convert --gpt {models.gpt} --sovits {models.sovits} "
        f"--hubert {models.hubert} --bert {models.bert} -o OUT.gsv"
    )
    return 0
