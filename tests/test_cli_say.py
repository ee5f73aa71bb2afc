"""`gsv voice create` and `gsv say` on the tiny bundle: outputs, formats and every bad input.

Bad input must end with exit status 2, one line on stderr, no traceback and no output file.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_tts import speak_env, write_reference  # noqa: F401  (fixture re-used)

from gsv_onnx.cli import main
from gsv_onnx.runtime.voice import Voice


@pytest.fixture(scope="module")
def voice_file(speak_env, tmp_path_factory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("cli") / "alice.voice"
    code = main(
        [
            "voice",
            "create",
            str(speak_env.ref),
            "--text",
            "参考音频说的话",
            "--lang",
            "zh",
            "-o",
            str(out),
            "--bundle",
            str(speak_env.bundle),
        ]
    )
    assert code == 0 and out.is_file()
    return out


def say(speak_env, *args: str) -> int:  # noqa: F811
    return main(["say", *args, "--bundle", str(speak_env.bundle)])


def assert_one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gsv ") and "error:" in lines[0], err
    for needle in needles:
        assert needle in lines[0], err
    return lines[0]


def test_voice_create_then_say(speak_env, voice_file, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out.wav"
    assert (
        say(speak_env, "今天天气不错。Let's go!", "--voice", str(voice_file), "-o", str(out), "--seed", "7")
        == 0
    )
    data, rate = sf.read(out, dtype="float32")
    assert rate == 32000 and data.size > 9600
    err = capsys.readouterr().err
    for stage in ("load", "voice", "text", "gpt", "vocoder", "total", "seed 7"):
        assert stage in err
    info = Voice.load(voice_file)
    assert info.prompt_text == "参考音频说的话。"


def test_say_is_reproducible_and_matches_the_api(speak_env, voice_file, tmp_path):  # noqa: F811
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    for out in (a, b):
        assert (
            say(
                speak_env,
                "你好，世界。",
                "--voice",
                str(voice_file),
                "-o",
                str(out),
                "--seed",
                "3",
                "--quiet",
            )
            == 0
        )
    assert a.read_bytes() == b.read_bytes()
    from gsv_onnx.audio import to_int16
    from gsv_onnx.runtime.tts import TTS

    expected = TTS.load(speak_env.bundle).synthesize("你好，世界。", Voice.load(voice_file), seed=3)
    data, _ = sf.read(a, dtype="int16")
    assert np.array_equal(data, to_int16(expected.samples))


def test_say_with_reference_directly_and_sampling_options(speak_env, tmp_path):  # noqa: F811
    out = tmp_path / "direct.wav"
    code = say(
        speak_env,
        "Hello there!",
        "--ref", str(speak_env.ref), "--ref-text", "参考音频说的话", "--ref-lang", "zh",
        "--lang", "en", "-o", str(out), "--top-k", "1", "--noise-scale", "0", "--speed", "1.25",
        "--fragment-interval", "0", "--split", "cut5", "--threads", "1", "--quiet",
    )  # fmt: skip
    assert code == 0
    data, rate = sf.read(out)
    assert rate == 32000 and data.size % 640 == 0


def test_say_reads_stdin(speak_env, voice_file, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("标准输入的文字。".encode())))
    out = tmp_path / "stdin.wav"
    assert say(speak_env, "-", "--voice", str(voice_file), "-o", str(out), "--quiet") == 0
    assert sf.info(out).frames > 0


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3", "pcm"])
def test_output_formats(speak_env, voice_file, tmp_path, fmt):  # noqa: F811
    out = tmp_path / f"out.{fmt}"
    assert (
        say(speak_env, "格式测试。", "--voice", str(voice_file), "-o", str(out), "--seed", "1", "--quiet")
        == 0
    )
    data = out.read_bytes()
    if fmt == "pcm":
        assert len(data) % 2 == 0 and len(data) > 0
    else:
        info = sf.info(out)
        assert info.samplerate == 32000 and info.frames > 0
    explicit = tmp_path / "explicit.bin"
    assert (
        say(
            speak_env,
            "格式测试。",
            "--voice",
            str(voice_file),
            "-o",
            str(explicit),
            "--format",
            fmt,
            "--quiet",
        )
        == 0
    )
    assert explicit.stat().st_size > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


# -- bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needle"),
    [("", "empty"), ("。。。！！", "nothing to say"), ("   ", "empty")],
)
def test_empty_text(speak_env, voice_file, tmp_path, capsys, text, needle):  # noqa: F811
    out = tmp_path / "never.wav"
    assert say(speak_env, text, "--voice", str(voice_file), "-o", str(out)) == 2
    assert_one_line_error(capsys, needle)
    assert not out.exists()


def test_unknown_language(speak_env, voice_file, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "never.wav"
    assert say(speak_env, "你好。", "--voice", str(voice_file), "--lang", "xx", "-o", str(out)) == 2
    assert_one_line_error(capsys, "unknown language")
    assert not out.exists()


@pytest.mark.parametrize("case", ["short", "long", "silent", "nan", "not-audio", "missing"])
def test_bad_references(speak_env, tmp_path, capsys, case):  # noqa: F811
    rate = 32000
    ref = tmp_path / f"{case}.wav"
    if case == "short":
        sf.write(ref, np.full(rate, 0.1, np.float32), rate)
    elif case == "long":
        sf.write(ref, np.full(rate * 11, 0.1, np.float32), rate)
    elif case == "silent":
        sf.write(ref, np.zeros(rate * 4, np.float32), rate)
    elif case == "nan":
        samples = np.full(rate * 4, 0.1, np.float32)
        samples[5] = np.nan
        sf.write(ref, samples, rate, subtype="FLOAT")
    elif case == "not-audio":
        ref.write_text("hello")
    out = tmp_path / "never.voice"
    code = main(
        ["voice", "create", str(ref), "--text", "你好", "-o", str(out), "--bundle", str(speak_env.bundle)]
    )
    assert code == 2
    assert_one_line_error(capsys)
    assert not out.exists()
    wav = tmp_path / "never.wav"
    assert say(speak_env, "你好。", "--ref", str(ref), "--ref-text", "你好", "-o", str(wav)) == 2
    assert_one_line_error(capsys)
    assert not wav.exists()


def test_wrong_bundle_path(voice_file, tmp_path, capsys):
    out = tmp_path / "never.wav"
    code = main(
        ["say", "你好。", "--voice", str(voice_file), "--bundle", str(tmp_path / "nope.gsv"), "-o", str(out)]
    )
    assert code == 2
    assert_one_line_error(capsys, "does not exist")
    assert not out.exists()


def test_missing_bundle_and_voice(voice_file, tmp_path, capsys, monkeypatch, speak_env):  # noqa: F811
    monkeypatch.delenv("GSV_BUNDLE", raising=False)
    assert main(["say", "你好。", "--voice", str(voice_file), "-o", str(tmp_path / "x.wav")]) == 2
    assert_one_line_error(capsys, "--bundle")
    assert say(speak_env, "你好。", "-o", str(tmp_path / "x.wav")) == 2
    assert_one_line_error(capsys, "--voice")


def test_voice_from_another_bundle(speak_env, voice_file, tmp_path, capsys):  # noqa: F811
    foreign = Voice.load(voice_file)
    foreign.bundle_id = "f" * 32
    path = foreign.save(tmp_path / "foreign.voice")
    out = tmp_path / "never.wav"
    assert say(speak_env, "你好。", "--voice", str(path), "-o", str(out)) == 2
    assert_one_line_error(capsys, "f" * 32, "gsv voice create")
    assert not out.exists()


def test_damaged_voice_file(speak_env, tmp_path, capsys):  # noqa: F811
    bad = tmp_path / "bad.voice"
    bad.write_bytes(b"garbage")
    assert say(speak_env, "你好。", "--voice", str(bad), "-o", str(tmp_path / "x.wav")) == 2
    assert_one_line_error(capsys, "not a gsv-onnx voice")


def test_unwritable_output_directory(speak_env, voice_file, tmp_path, capsys):  # noqa: F811
    if os.geteuid() == 0:  # root ignores permission bits; /proc refuses new files to everyone
        target = Path("/proc/gsv-test-output.wav")
        assert say(speak_env, "你好。", "--voice", str(voice_file), "-o", str(target)) == 2
        assert_one_line_error(capsys, "cannot write audio")
        assert not target.exists()
        return
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert say(speak_env, "你好。", "--voice", str(voice_file), "-o", str(locked / "x.wav")) == 2
        assert_one_line_error(capsys, "not writable")
        assert not list(locked.iterdir())
    finally:
        locked.chmod(0o700)


def test_output_in_missing_directory_or_a_directory(speak_env, voice_file, tmp_path, capsys):  # noqa: F811
    assert say(speak_env, "你好。", "--voice", str(voice_file), "-o", str(tmp_path / "no" / "x.wav")) == 2
    assert_one_line_error(capsys, "does not exist")
    assert say(speak_env, "你好。", "--voice", str(voice_file), "-o", str(tmp_path)) == 2
    assert_one_line_error(capsys, "directory")


def test_failure_midway_leaves_nothing_behind(speak_env, voice_file, tmp_path, capsys, monkeypatch):  # noqa: F811
    """A long text that fails after some pieces were written: no partial output, no temp file."""
    from gsv_onnx.errors import AudioError
    from gsv_onnx.runtime import tts as tts_module

    original = tts_module.TTS._decode_segment
    calls = {"n": 0}

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise AudioError("simulated failure in the third piece")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(tts_module.TTS, "_decode_segment", failing)
    text = "这是一个很长的文本。" * 10_000  # 100,000 characters
    out = tmp_path / "long.wav"
    assert (
        say(
            speak_env,
            text,
            "--voice",
            str(voice_file),
            "-o",
            str(out),
            "--split",
            "cut5",
            "--min-max-tokens",
            "12",
            "--max-tokens-per-phone",
            "0.5",
        )
        == 2
    )
    assert_one_line_error(capsys, "simulated failure")
    assert calls["n"] == 3
    assert not list(tmp_path.glob("*long*")) and not list(tmp_path.glob(".*"))


def test_cli_subprocess_error_has_no_traceback(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gsv_onnx.cli",
            "say",
            "你好",
            "--bundle",
            str(tmp_path / "missing.gsv"),
            "--voice",
            "x.voice",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_voice_info(voice_file, capsys):
    assert main(["voice", "info", str(voice_file)]) == 0
    out = capsys.readouterr().out
    assert '"format": "gsv-onnx-voice"' in out and '"prompt_codes"' in out


def test_stereo_mp3_reference(speak_env, tmp_path, capsys):  # noqa: F811
    ref = write_reference(tmp_path / "ref.flac", seconds=5.0, rate=48000, channels=2)
    mp3 = tmp_path / "ref.mp3"
    data, rate = sf.read(ref)
    sf.write(mp3, data, rate, format="MP3")
    out = tmp_path / "mp3.voice"
    code = main(
        ["voice", "create", str(mp3), "--text", "你好世界", "-o", str(out), "--bundle", str(speak_env.bundle)]
    )
    assert code == 0 and Voice.load(out).prompt_codes.size > 0


# -- gsv demo ---------------------------------------------------------------------------------------


def test_demo_runs_and_explains(speak_env, tmp_path, capsys, monkeypatch):  # noqa: F811
    from gsv_onnx.commands import demo

    demo_dir = tmp_path / "demo"
    demo_dir.mkdir()
    (demo_dir / "demo.gsv").symlink_to(Path(speak_env.bundle).resolve(), target_is_directory=True)
    write_reference(demo_dir / "reference.wav")
    monkeypatch.setattr(demo, "DEMO_DIR", demo_dir)
    out = tmp_path / "demo.wav"
    assert main(["demo", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "noise, not speech" in err and "gsv convert" in err
    for stage in ("load", "voice", "text", "gpt", "vocoder", "total"):
        assert stage in err
    assert sf.info(out).samplerate == 32000


def test_demo_without_assets_is_one_clear_line(tmp_path, capsys, monkeypatch):
    from gsv_onnx.commands import demo

    monkeypatch.setattr(demo, "DEMO_DIR", tmp_path / "missing")
    assert main(["demo", "-o", str(tmp_path / "demo.wav")]) == 2
    assert_one_line_error(capsys, "make_demo_bundle")
    assert not (tmp_path / "demo.wav").exists()


def test_shipped_demo_runs_without_torch(tmp_path):
    from gsv_onnx.commands.demo import DEMO_DIR

    if not DEMO_DIR.is_dir():
        pytest.skip("gsv_onnx/data/demo is not built in this checkout (scripts/make_demo_bundle.py)")
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith(('torch.', 'gsv_onnx.convert')):\n"
        "            raise ImportError(name + ' blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from gsv_onnx.cli import main\n"
        "code = main(['demo'])\n"
        "assert 'torch' not in sys.modules\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "demo.wav").is_file() and "noise, not speech" in done.stderr


# -- gsv say --stream ---------------------------------------------------------------------------------


def test_say_stream_to_file_has_the_whole_length(speak_env, voice_file, tmp_path):  # noqa: F811
    common = ["--voice", str(voice_file), "--seed", "2", "--top-k", "1", "--noise-scale", "0", "--quiet"]
    assert say(speak_env, "流式输出测试。", *common, "-o", str(tmp_path / "whole.wav")) == 0
    assert say(speak_env, "流式输出测试。", *common, "--stream", "-o", str(tmp_path / "stream.wav")) == 0
    whole, _ = sf.read(tmp_path / "whole.wav", dtype="float32")
    streamed, _ = sf.read(tmp_path / "stream.wav", dtype="float32")
    assert whole.shape == streamed.shape
    error = np.sum((whole - streamed) ** 2)
    assert error == 0 or 10 * np.log10(np.sum(whole**2) / error) > 40


def test_say_stream_to_stdout_writes_a_streaming_wav(speak_env, voice_file, capsysbinary):  # noqa: F811
    assert say(speak_env, "标准输出。", "--voice", str(voice_file), "--stream", "-o", "-", "--quiet") == 0
    data = capsysbinary.readouterr().out
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt "
    assert len(data) > 44 and (len(data) - 44) % 2 == 0
    samples, rate = sf.read(io.BytesIO(data[:44] + data[44:]), dtype="int16", frames=(len(data) - 44) // 2)
    assert rate == 32000 and samples.size == (len(data) - 44) // 2


def test_say_pcm_to_stdout(speak_env, voice_file, capsysbinary):  # noqa: F811
    assert (
        say(speak_env, "原始数据。", "--voice", str(voice_file), "-o", "-", "--format", "pcm", "--quiet") == 0
    )
    data = capsysbinary.readouterr().out
    assert len(data) > 0 and len(data) % 2 == 0
