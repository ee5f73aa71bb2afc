"""The `gsv` command line.

Each subcommand lives in `gsv_onnx/commands/<name>.py` and exposes `register(subparsers)`, which adds
its parser and sets `func`. Errors the project raises on purpose (`GsvError`) print as one line and
exit with status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from gsv_onnx import __version__
from gsv_onnx.errors import GsvError

# Imported lazily so that `gsv say` never pays for (or needs) the converter's torch import.
COMMAND_MODULES = ("convert", "voice", "say", "demo", "serve", "bench", "make_test_models")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="gsv", description="GPT-SoVITS V2 voices on CPU through ONNX Runtime."
    )
    parser.add_argument("--version", action="version", version=f"gsv-onnx {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"gsv_onnx.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"gsv_onnx.commands.{name}":
                continue  # command not part of this build yet
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `gsv` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except GsvError as exc:
        print(f"gsv {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gsv {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
