"""`gsv voice`: prepare a voice from a reference clip once (`create`) and inspect one (`info`)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from gsv_onnx.commands.say import add_runtime_arguments, load_tts

EPILOG = """\
example:
  gsv voice create ref.wav --text "参考音频说的话。" --lang zh -o alice.voice --bundle my_voice.gsv
  gsv say "今天天气不错。" --bundle my_voice.gsv --voice alice.voice -o out.wav"""


def register(subparsers) -> None:
    """Add the `voice` subcommand with `create` and `info`."""
    parser = subparsers.add_parser(
        "voice",
        help="prepare a voice file from a reference clip",
        description="Prepare a reusable voice (prompt codes, timbre, transcript phones) from a reference clip.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="voice_command", metavar="ACTION")
    create = actions.add_parser(
        "create",
        help="make a .voice file from a 3-10 s reference clip and its transcript",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    create.add_argument(
        "reference", metavar="AUDIO", help="reference clip, 3-10 s (wav, flac, ogg, mp3; any rate)"
    )
    create.add_argument("--text", default="", help="what the clip says (empty: reference-free voice)")
    create.add_argument("--lang", default="zh", help="language of the transcript (default zh)")
    create.add_argument(
        "--aux-ref",
        action="append",
        default=[],
        metavar="AUDIO",
        help="extra clip for the timbre (repeatable)",
    )
    create.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="voice file to write (e.g. alice.voice)"
    )
    add_runtime_arguments(create)
    create.set_defaults(func=run_create)
    info = actions.add_parser("info", help="show what a .voice file holds")
    info.add_argument("voice", metavar="FILE")
    info.set_defaults(func=run_info)
    parser.set_defaults(func=lambda args: (parser.print_help(), 1)[1])


def run_create(args: argparse.Namespace) -> int:
    """Prepare the voice and save it atomically."""
    started = time.perf_counter()
    tts = load_tts(args)
    voice = tts.prepare_voice(args.reference, text=args.text, lang=args.lang, aux_refs=args.aux_ref)
    path = voice.save(args.output)
    print(
        f"wrote {path}: {voice.prompt_codes.shape[0]} prompt codes, {voice.prompt_phone_ids.shape[0]} prompt phones"
        f"{' (reference-free)' if voice.reference_free else ''}, in {time.perf_counter() - started:.2f} s",
        file=sys.stderr,
    )
    return 0


def run_info(args: argparse.Namespace) -> int:
    """Print the voice's header and array shapes as JSON."""
    from gsv_onnx.runtime.voice import Voice

    voice = Voice.load(args.voice)
    info = voice.header()
    info["prompt_codes"] = int(voice.prompt_codes.shape[0])
    info["prompt_phone_count"] = int(voice.prompt_phone_ids.shape[0])
    info["ge_channels"] = int(voice.ge.shape[1])
    print(json.dumps(info, ensure_ascii=False, indent=2))
    return 0
