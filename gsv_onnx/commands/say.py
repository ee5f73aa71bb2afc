"""`gsv say`: speak text with a bundle and a voice (or a reference clip) into an audio file."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from gsv_onnx.errors import AudioError, GsvError, OptionsError, TextError

EPILOG = """\
examples:
  gsv say "今天天气不错。" --bundle my_voice.gsv --voice alice.voice -o out.wav
  gsv say "Hello there!" --bundle my_voice.gsv --ref ref.wav --ref-text "参考音频说的话。" --ref-lang zh
  cat story.txt | gsv say - --bundle my_voice.gsv --voice alice.voice -o story.flac --split cut5

The bundle can also come from the GSV_BUNDLE environment variable."""


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """--bundle, --threads, --provider, --verify (shared by say, voice and serve-like commands)."""
    parser.add_argument(
        "--bundle",
        default=os.environ.get("GSV_BUNDLE"),
        metavar="DIR",
        help="bundle directory written by gsv convert (default: $GSV_BUNDLE)",
    )
    parser.add_argument(
        "--threads", type=int, metavar="N", help="ONNX Runtime threads per session (default: CPUs, at most 4)"
    )
    parser.add_argument(
        "--provider",
        action="append",
        metavar="NAME",
        help="execution provider: cpu (default), xnnpack, coreml, cuda, directml; repeat for a preference order",
    )
    parser.add_argument("--verify", action="store_true", help="check the bundle's sha256 checksums first")
    group = parser.add_argument_group("pronunciation (docs/frontend.md)")
    group.add_argument(
        "--user-dict",
        metavar="FILE",
        help="user pronunciation dictionary: .tsv (word<TAB>pinyin/ARPAbet/jyutping per line) or .json",
    )
    group.add_argument(
        "--g2pw",
        metavar="DIR",
        help="G2PWModel directory: Mandarin polyphones by the g2pW model (needs gsv-onnx[g2pw])",
    )


def add_synthesis_arguments(parser: argparse.ArgumentParser) -> None:
    """Sampling and output-shaping options; defaults are upstream's (see SynthesisOptions)."""
    group = parser.add_argument_group("synthesis options (defaults as upstream)")
    group.add_argument(
        "--lang", default="auto", help="text language: auto, zh, en, ja, ko, yue, all_zh, ... (default auto)"
    )
    group.add_argument(
        "--seed", type=int, help="random seed for a reproducible result (default: random, printed)"
    )
    group.add_argument("--top-k", type=int, help="top-k sampling (default 15; 1 = greedy)")
    group.add_argument("--top-p", type=float, help="top-p sampling (default 1 = off)")
    group.add_argument("--temperature", type=float, help="sampling temperature (default 1)")
    group.add_argument("--repetition-penalty", type=float, help="repetition penalty (default 1.35)")
    group.add_argument("--speed", type=float, dest="speed_factor", help="speech speed factor (default 1.0)")
    group.add_argument("--noise-scale", type=float, help="SoVITS prior noise scale (default 0.5)")
    group.add_argument(
        "--fragment-interval", type=float, help="seconds of silence after each piece of text (default 0.3)"
    )
    group.add_argument(
        "--split",
        dest="text_split_method",
        choices=("cut0", "cut1", "cut2", "cut3", "cut4", "cut5"),
        help="text splitting method (default cut1: four sentences per piece)",
    )
    group.add_argument(
        "--max-tokens-per-phone",
        type=float,
        help="guard: at most max(--min-max-tokens, this x phones) tokens per piece (default 8)",
    )
    group.add_argument(
        "--min-max-tokens", type=int, help="guard: the token bound is never below this (default 75)"
    )


_SYNTHESIS_FIELDS = (
    "top_k",
    "top_p",
    "temperature",
    "repetition_penalty",
    "speed_factor",
    "noise_scale",
    "fragment_interval",
    "text_split_method",
    "seed",
    "max_tokens_per_phone",
    "min_max_tokens",
)


def synthesis_options(args: argparse.Namespace) -> Any:
    """`SynthesisOptions` from the parsed arguments (unset ones keep upstream's defaults)."""
    from gsv_onnx.runtime.options import SynthesisOptions

    changes = {
        name: getattr(args, name) for name in _SYNTHESIS_FIELDS if getattr(args, name, None) is not None
    }
    return SynthesisOptions(**changes)


def runtime_options(args: argparse.Namespace) -> Any:
    """`RuntimeOptions` from --threads / --provider."""
    from gsv_onnx.runtime.options import RuntimeOptions

    kwargs: dict[str, Any] = {}
    if args.threads is not None:
        kwargs["intra_op_threads"] = args.threads
    if args.provider:
        kwargs["providers"] = tuple(args.provider)
    return RuntimeOptions(**kwargs)


def frontend_options(args: argparse.Namespace) -> Any:
    """`FrontendOptions` from --user-dict / --g2pw."""
    from gsv_onnx.runtime.options import FrontendOptions

    return FrontendOptions(user_dict=getattr(args, "user_dict", None), g2pw_dir=getattr(args, "g2pw", None))


def load_tts(args: argparse.Namespace) -> Any:
    """`TTS.load` for --bundle with the runtime and frontend options."""
    if not args.bundle:
        raise OptionsError(
            "no bundle given: pass --bundle DIR (a directory written by gsv convert) or set GSV_BUNDLE"
        )
    from gsv_onnx.runtime.tts import TTS

    return TTS.load(args.bundle, runtime_options(args), verify=args.verify, frontend=frontend_options(args))


def register(subparsers) -> None:
    """Add the `say` subcommand."""
    parser = subparsers.add_parser(
        "say",
        help="speak text into an audio file",
        description="Speak TEXT with a bundle and a prepared voice (or a reference clip) into an audio file.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("text", metavar="TEXT", help='text to speak; "-" reads it from standard input')
    add_runtime_arguments(parser)
    voice = parser.add_argument_group("voice (give --voice, or --ref with its transcript)")
    voice.add_argument("--voice", metavar="FILE", help="voice file written by gsv voice create")
    voice.add_argument("--ref", metavar="AUDIO", help="reference clip (3-10 s; wav, flac, ogg, mp3)")
    voice.add_argument(
        "--ref-text", default="", help="transcript of the reference clip (empty: reference-free)"
    )
    voice.add_argument("--ref-lang", default="zh", help="language of the transcript (default zh)")
    voice.add_argument(
        "--aux-ref",
        action="append",
        default=[],
        metavar="AUDIO",
        help="extra clip for the timbre (repeatable)",
    )
    parser.add_argument(
        "-o",
        "--output",
        default="out.wav",
        metavar="FILE",
        help='output file (default out.wav; "-" writes to stdout)',
    )
    parser.add_argument(
        "--format",
        choices=("wav", "flac", "ogg", "mp3", "pcm"),
        help="output format (default: from the file suffix, else wav)",
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument(
        "--stream",
        action="store_true",
        help="token-level streaming: audio is written while the GPT is still decoding "
        '(with -o - and wav/pcm it reaches stdout chunk by chunk, e.g. "| aplay")',
    )
    add_synthesis_arguments(parser)
    parser.set_defaults(func=run)


def read_text(text: str) -> str:
    """The TEXT argument, or standard input for "-"."""
    if text == "-":
        data = sys.stdin.buffer.read()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TextError(
                f"standard input is not UTF-8 text (byte {exc.start}); convert it to UTF-8"
            ) from exc
    return text


def output_format(output: str, fmt: str | None) -> str:
    """--format, else the output file's suffix, else wav."""
    if fmt:
        return fmt
    if output == "-":
        return "wav"
    from gsv_onnx.audio import format_from_path

    try:
        return format_from_path(output)
    except AudioError:
        return "wav"


class AudioFileWriter:
    """Write audio chunks to a file as they come, through a temporary file renamed at the end.

    Nothing is left at the target path (and no temporary file) when writing fails or is aborted.
    """

    def __init__(self, path: str | os.PathLike, fmt: str, sample_rate: int) -> None:
        import soundfile as sf

        from gsv_onnx.audio import FORMATS, available_formats

        self.path = Path(path)
        self.fmt = fmt
        self.sample_rate = sample_rate
        self.samples = 0
        if fmt not in available_formats():
            raise AudioError(f"this soundfile/libsndfile cannot write {fmt}; choose wav, flac or ogg")
        if self.path.is_dir():
            raise AudioError(f"cannot write audio to {self.path}: it is a directory; give a file name")
        directory = self.path.parent if str(self.path.parent) else Path(".")
        if not directory.is_dir():
            raise AudioError(f"cannot write audio to {self.path}: directory {directory} does not exist")
        try:
            handle, self.temp_name = tempfile.mkstemp(
                prefix=f".{self.path.name}.", suffix=".tmp", dir=directory
            )
        except OSError as exc:
            raise AudioError(
                f"cannot write audio to {self.path}: {exc.strerror or exc}; choose a writable path"
            ) from exc
        os.close(handle)
        self._file = None
        self._raw = None
        try:
            if fmt == "pcm":
                self._raw = open(self.temp_name, "wb")  # noqa: SIM115 - closed in close()/abort()
            else:
                container, subtype = FORMATS[fmt]
                self._file = sf.SoundFile(
                    self.temp_name, "w", samplerate=sample_rate, channels=1, format=container, subtype=subtype
                )
        except Exception as exc:
            self.abort()
            raise AudioError(f"cannot write {fmt} audio to {self.path}: {exc}") from exc

    def write(self, samples) -> None:
        import numpy as np

        from gsv_onnx.audio import to_int16

        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        try:
            if self._raw is not None:
                self._raw.write(to_int16(samples).astype("<i2").tobytes())
            elif self.fmt in ("wav", "flac"):
                self._file.write(to_int16(samples))  # exact bits, clipped (no int16 wrap-around)
            else:
                self._file.write(np.clip(samples, -1.0, 1.0))
        except OSError as exc:
            self.abort()
            raise AudioError(f"cannot write audio to {self.path}: {exc.strerror or exc}") from exc
        self.samples += samples.shape[0]

    def close(self) -> Path:
        try:
            if self._raw is not None:
                self._raw.close()
            if self._file is not None:
                self._file.close()
            os.chmod(self.temp_name, 0o644)
            os.replace(self.temp_name, self.path)
        except Exception as exc:
            self.abort()
            raise AudioError(f"cannot write audio to {self.path}: {exc}") from exc
        return self.path

    def abort(self) -> None:
        for handle in (self._raw, self._file):
            try:
                if handle is not None:
                    handle.close()
            except Exception:
                pass
        self._raw = self._file = None
        Path(self.temp_name).unlink(missing_ok=True)


def wav_stream_header(sample_rate: int) -> bytes:
    """A 44-byte 16-bit mono WAV header for a stream of unknown length (sizes set to the maximum)."""
    import struct

    byte_rate = sample_rate * 2
    return (
        b"RIFF"
        + struct.pack("<I", 0xFFFFFFFF)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, byte_rate, 2, 16)
        + b"data"
        + struct.pack("<I", 0xFFFFFFFF)
    )


def write_chunks(
    chunks: Iterable[Any], output: str, fmt: str, sample_rate: int, stream: bool = False
) -> list[Any]:
    """Write synthesis chunks to `output` ("-" = stdout) as they arrive; returns the chunks' reports
    (audio dropped so memory stays bounded). With `stream`, wav and pcm reach stdout chunk by chunk."""
    reports = []
    if output == "-":
        import numpy as np

        from gsv_onnx.audio import encode, to_int16

        if fmt == "pcm" or (fmt == "wav" and stream):
            out = sys.stdout.buffer
            if fmt == "wav":
                out.write(wav_stream_header(sample_rate))
            for chunk in chunks:
                out.write(to_int16(chunk.samples).astype("<i2").tobytes())
                out.flush()
                reports.append(_report(chunk))
            return reports
        collected = []
        for chunk in chunks:
            collected.append(chunk.samples)
            reports.append(_report(chunk))
        sys.stdout.buffer.write(encode(np.concatenate(collected), sample_rate, fmt))
        sys.stdout.buffer.flush()
        return reports
    writer = AudioFileWriter(output, fmt, sample_rate)
    try:
        for chunk in chunks:
            writer.write(chunk.samples)
            reports.append(_report(chunk))
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return reports


class _FirstChunkClock:
    """Wraps a chunk iterator and notes when the first non-empty chunk arrived."""

    def __init__(self, chunks: Iterable[Any], started: float) -> None:
        self.chunks = chunks
        self.started = started
        self.first: float | None = None

    def __iter__(self) -> Iterator[Any]:
        for chunk in self.chunks:
            if self.first is None and chunk.samples.size:
                self.first = time.perf_counter() - self.started
            yield chunk


def check_output(output: str) -> None:
    """Fail before any work when the output path cannot be written."""
    if output == "-":
        return
    path = Path(output)
    directory = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise AudioError(f"cannot write audio to {path}: it is a directory; give a file name")
    if not directory.is_dir():
        raise AudioError(f"cannot write audio to {path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise AudioError(f"cannot write audio to {path}: directory {directory} is not writable")


def _report(chunk: Any) -> Any:
    chunk.samples = chunk.samples[:0]
    return chunk


def _voice(tts: Any, args: argparse.Namespace) -> Any:
    if args.voice and args.ref:
        raise OptionsError("give either --voice or --ref, not both")
    if args.voice:
        from gsv_onnx.runtime.voice import Voice

        return Voice.load(args.voice)
    if args.ref:
        return tts.prepare_voice(args.ref, text=args.ref_text, lang=args.ref_lang, aux_refs=args.aux_ref)
    raise OptionsError(
        "no voice given: pass --voice FILE (from gsv voice create) or --ref AUDIO --ref-text TEXT"
    )


def _may_need_bert(text: str, lang: str, args: argparse.Namespace) -> bool:
    """Whether this run will create the BERT session: Chinese text, or a Chinese reference transcript."""
    has_han = any("\u4e00" <= c <= "\u9fff" for c in text[:10_000])
    text_zh = has_han and lang in ("auto", "zh", "all_zh")
    prompt_zh = bool(args.ref and args.ref_text.strip() and args.ref_lang in ("auto", "zh", "all_zh"))
    return text_zh or prompt_zh


def stage_line(name: str, seconds: float) -> str:
    return f"  {name:<10} {seconds:7.3f} s"


def run(args: argparse.Namespace) -> int:
    """Speak the text and write the output file; prints timings per stage to stderr."""
    started = time.perf_counter()
    text = read_text(args.text)
    fmt = output_format(args.output, args.format)
    check_output(args.output)
    options = synthesis_options(args)
    t0 = time.perf_counter()
    tts = load_tts(args)
    if _may_need_bert(text, args.lang, args):
        tts.bert  # noqa: B018 - created now so that its load time counts as "load", not "text"
    load_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    voice = _voice(tts, args)
    voice_seconds = time.perf_counter() - t0
    synthesis_started = time.perf_counter()
    chunks = _FirstChunkClock(
        tts.stream(
            text, voice, lang=args.lang, options=options, granularity="tokens" if args.stream else "pieces"
        ),
        synthesis_started,
    )
    reports = write_chunks(chunks, args.output, fmt, tts.sample_rate, stream=args.stream)
    total = time.perf_counter() - started
    if not args.quiet:
        seconds = time.perf_counter() - synthesis_started
        audio_seconds = sum(s.samples for r in reports for s in r.segments) / tts.sample_rate
        finals = [r for r in reports if r.segments]
        stages = {k: sum(r.timings.get(k, 0.0) for r in finals) for k in ("text", "gpt", "vocoder")}
        tokens = sum(s.n_tokens for r in reports for s in r.segments)
        where = "stdout" if args.output == "-" else args.output
        print(
            f"wrote {where} ({fmt}, {audio_seconds:.2f} s of speech in {len(finals)} piece(s), "
            f"{tokens} tokens, seed {reports[0].seed if reports else '-'})",
            file=sys.stderr,
        )
        print(stage_line("load", load_seconds), file=sys.stderr)
        print(stage_line("voice", voice_seconds), file=sys.stderr)
        for name, value in stages.items():
            print(stage_line(name, value), file=sys.stderr)
        print(stage_line("total", total), file=sys.stderr)
        if chunks.first is not None:
            print(f"  first audio after {chunks.first:.3f} s of synthesis", file=sys.stderr)
        if audio_seconds > 0:
            print(f"  real-time factor {seconds / audio_seconds:.3f} (synthesis only)", file=sys.stderr)
        for report in reports:
            for message in report.guards:
                print(f"warning: {message}", file=sys.stderr)
    return 0


__all__ = ["register", "run", "GsvError"]
