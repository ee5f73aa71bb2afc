"""`gsv demo`: speak one sentence with the embedded random-weight demo bundle (no torch needed)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from gsv_onnx.errors import BundleError

DEMO_DIR = Path(__file__).resolve().parents[1] / "data" / "demo"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
DEFAULT_TEXT = "你好，欢迎使用 gsv-onnx。This is a demo of the full pipeline."
DEFAULT_REF_TEXT = "这是一段用来演示的参考音频。"

NOISE_NOTE = """\
Note: the demo bundle has RANDOM weights, so demo.wav is noise, not speech. It shows that every
stage (text frontend, BERT, HuBERT prompt, GPT decoding, SoVITS vocoder) runs on this machine."""

REAL_MODEL_HOWTO = """\
To speak with a real voice, convert a GPT-SoVITS V2 model once (needs the [convert] extra):
  pip install "gsv-onnx[convert]" torch==2.13.0
  gsv convert --gpt my_voice-e15.ckpt --sovits my_voice_e8_s400.pth \\
              --hubert chinese-hubert-base/ --bert chinese-roberta-wwm-ext-large/ -o my_voice.gsv
  gsv voice create ref.wav --text "参考音频说的话。" --lang zh -o alice.voice --bundle my_voice.gsv
  gsv say "今天天气不错。" --bundle my_voice.gsv --voice alice.voice -o out.wav"""


@dataclass
class DemoAssets:
    """Where the demo bundle, its reference clip and texts are."""

    bundle: Path
    reference: Path
    reference_text: str
    reference_lang: str
    text: str
    lang: str


def find_demo_assets(demo_dir: Path | None = None) -> DemoAssets:
    """Locate the demo bundle and reference clip shipped in gsv_onnx/data/demo/.

    An optional demo.json may name them ({"bundle", "reference", "reference_text",
    "reference_lang", "text", "lang"}); otherwise the first directory holding a manifest.json (or
    the demo directory itself) and the first audio file are used.
    """
    demo_dir = Path(demo_dir) if demo_dir is not None else DEMO_DIR
    missing = (
        f"the demo bundle is not installed ({demo_dir} is missing or incomplete); in a source "
        "checkout build it with: python scripts/make_demo_bundle.py"
    )
    if not demo_dir.is_dir():
        raise BundleError(missing)
    config: dict = {}
    config_path = demo_dir / "demo.json"
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise BundleError(f"{config_path} is damaged ({exc}); reinstall gsv-onnx") from exc
    if config.get("bundle"):
        bundle = demo_dir / config["bundle"]
    elif (demo_dir / "manifest.json").is_file():
        bundle = demo_dir
    else:
        candidates = sorted(p.parent for p in demo_dir.glob("*/manifest.json"))
        if not candidates:
            raise BundleError(missing)
        bundle = candidates[0]
    if config.get("reference"):
        reference = demo_dir / config["reference"]
    else:
        clips = sorted(p for p in demo_dir.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        if not clips:
            raise BundleError(missing)
        reference = clips[0]
    return DemoAssets(
        bundle=bundle,
        reference=reference,
        reference_text=config.get("reference_text", DEFAULT_REF_TEXT),
        reference_lang=config.get("reference_lang", "zh"),
        text=config.get("text", DEFAULT_TEXT),
        lang=config.get("lang", "auto"),
    )


def register(subparsers) -> None:
    """Add the `demo` subcommand."""
    parser = subparsers.add_parser(
        "demo",
        help="speak a sentence with the embedded demo bundle (random weights: noise, not speech)",
        description=(
            "Run the whole pipeline with the tiny random-weight demo bundle shipped in the wheel and "
            "write demo.wav, printing each stage's time. No torch and no download needed. The weights "
            "are random, so the audio is noise; see the end of the output for converting a real model."
        ),
    )
    parser.add_argument(
        "-o", "--output", default="demo.wav", metavar="FILE", help="output file (default demo.wav)"
    )
    parser.add_argument("--text", help="sentence to speak (default: a short Chinese + English sentence)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the demo bundle, prepare its voice, synthesize, write the file, print timings."""
    from gsv_onnx.commands.say import check_output, stage_line

    def say(line: str = "") -> None:
        print(line, file=sys.stderr)

    check_output(args.output)
    assets = find_demo_assets()
    text = args.text or assets.text
    say("gsv demo: random-weight demo bundle (it makes noise, not speech)")
    started = time.perf_counter()
    from gsv_onnx.runtime.tts import TTS

    tts = TTS.load(assets.bundle)
    load_seconds = time.perf_counter() - started
    t0 = time.perf_counter()
    voice = tts.prepare_voice(assets.reference, text=assets.reference_text, lang=assets.reference_lang)
    voice_seconds = time.perf_counter() - t0
    # A random-weight GPT never says EOS: bound each piece to about natural speech length (the
    # token guard), and keep its expected warning out of the demo's output.
    logging.getLogger("gsv_onnx.runtime.tts").setLevel(logging.ERROR)
    result = tts.synthesize(text, voice, lang=assets.lang, seed=args.seed, max_tokens_per_phone=3.0)
    t0 = time.perf_counter()
    result.save(args.output)
    write_seconds = time.perf_counter() - t0
    total = time.perf_counter() - started
    say(f"text: {text}")
    say(
        f"wrote {args.output}: {result.duration:.2f} s at {result.sample_rate} Hz, {sum(result.tokens_per_segment)} tokens"
    )
    say("stage times:")
    say(stage_line("load", load_seconds))
    say(stage_line("voice", voice_seconds))
    for stage in ("text", "gpt", "vocoder"):
        say(stage_line(stage, result.timings.get(stage, 0.0)))
    say(stage_line("write", write_seconds))
    say(stage_line("total", total))
    say()
    say(NOISE_NOTE)
    say()
    say(REAL_MODEL_HOWTO)
    return 0
