"""The torch-free synthesis runtime end to end on the tiny random-weight bundle.

Random weights make noise, so these tests compare numbers: lengths, reproducibility, the PyTorch
modules' tokens and waveform, guards, and every bad input the API must reject cleanly.
"""

from __future__ import annotations

import importlib.util
import io
import math
import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from gsv_onnx.errors import AudioError, BundleError, OptionsError, TextError, VoiceError
from gsv_onnx.runtime.options import SynthesisOptions
from gsv_onnx.runtime.synthesis import seed_generators, vocoder_frames
from gsv_onnx.runtime.tts import TTS
from gsv_onnx.runtime.voice import Voice

REF_TEXT = "参考音频说的话"
HAS_TORCH = importlib.util.find_spec("torch") is not None


def write_reference(path: Path, seconds: float = 4.0, rate: int = 44100, channels: int = 1) -> Path:
    """A voiced-like test clip: a harmonic tone with vibrato and a little noise."""
    rng = np.random.default_rng(11)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 180 + 20 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    wave = sum(0.25 / k * np.sin(k * phase) for k in range(1, 6)) + 0.01 * rng.standard_normal(t.size)
    data = np.stack([wave] * channels, axis=1) if channels > 1 else wave
    sf.write(path, data.astype(np.float32), rate)
    return path


def _build_tiny_bundle(root: Path) -> SimpleNamespace:
    """Make the tiny checkpoints and convert them (about a minute); GSV_TEST_CACHE=DIR reuses a build."""
    cache = os.environ.get("GSV_TEST_CACHE")
    if cache and (Path(cache) / "tiny.gsv" / "manifest.json").is_file():
        models = Path(cache) / "models"
        return SimpleNamespace(
            bundle=Path(cache) / "tiny.gsv",
            gpt=next((models / "gpt").glob("*.ckpt")),
            sovits=next((models / "sovits").glob("*.pth")),
        )
    if cache:
        root = Path(cache)
        root.mkdir(parents=True, exist_ok=True)
    pytest.importorskip("torch")
    from gsv_onnx.convert.pipeline import convert
    from gsv_onnx.convert.testmodels import make_test_models

    models = make_test_models(root / "models", size="tiny", seed=0)
    convert(models.gpt, models.sovits, models.hubert, models.bert, root / "tiny.gsv", verify=False)
    return SimpleNamespace(bundle=root / "tiny.gsv", gpt=models.gpt, sovits=models.sovits)


@pytest.fixture(scope="session")
def speak_env(request, tmp_path_factory) -> SimpleNamespace:
    """The tiny bundle (conftest's `tiny_bundle`), its checkpoints (`tiny_models`) and a reference.

    With GSV_TEST_CACHE=DIR set, a bundle built once into DIR is reused across sessions instead.
    """
    root = tmp_path_factory.mktemp("speak")
    if os.environ.get("GSV_TEST_CACHE"):
        env = _build_tiny_bundle(root)
    else:
        models = request.getfixturevalue("tiny_models")
        env = SimpleNamespace(
            bundle=request.getfixturevalue("tiny_bundle"), gpt=models.gpt, sovits=models.sovits
        )
    env.ref = write_reference(root / "ref.wav")
    env.root = root
    return env


@pytest.fixture(scope="session")
def tts(speak_env) -> TTS:
    return TTS.load(speak_env.bundle)


@pytest.fixture(scope="session")
def voice(tts, speak_env) -> Voice:
    return tts.prepare_voice(speak_env.ref, text=REF_TEXT, lang="zh")


# -- end to end ------------------------------------------------------------------------------------


def test_end_to_end_mixed_text(tts, voice):
    result = tts.synthesize("今天天气不错。Let's go!", voice, lang="auto", seed=7)
    assert result.sample_rate == 32000 and result.samples.dtype == np.float32
    assert np.isfinite(result.samples).all() and np.abs(result.samples).max() <= 1.0
    assert result.seed == 7 and len(result.segments) == 1
    segment = result.segments[0]
    assert segment.n_tokens >= 11 and segment.languages == ["zh", "en"]
    # 1280 samples per token, then 0.3 s of silence after the fragment
    assert segment.samples == 1280 * segment.n_tokens
    assert result.samples.shape[0] == segment.samples + 9600
    assert np.all(result.samples[-9600:] == 0)
    assert set(result.timings) >= {"text", "gpt", "vocoder", "total"}


def test_same_seed_same_samples_other_seed_differs(tts, voice):
    first = tts.synthesize("你好，世界。", voice, seed=123)
    again = tts.synthesize("你好，世界。", voice, seed=123)
    other = tts.synthesize("你好，世界。", voice, seed=124)
    assert np.array_equal(first.samples, again.samples)
    assert not np.array_equal(first.samples, other.samples)


def test_random_seed_is_reported_and_reproduces(tts, voice):
    first = tts.synthesize("Hello there, my friend.", voice, lang="en")
    again = tts.synthesize("Hello there, my friend.", voice, lang="en", seed=first.seed)
    assert np.array_equal(first.samples, again.samples)


def test_segments_fragment_interval_and_cut_methods(tts, voice):
    text = "第一句话。第二句话。第三句话。第四句话。第五句话。第六句话。第七句话。第八句话。第九句话。"
    result = tts.synthesize(text, voice, seed=1, text_split_method="cut1", fragment_interval=0.1)
    assert len(result.segments) == 2  # 9 sentences -> 4 + 5
    assert result.samples.shape[0] == sum(s.samples for s in result.segments) + 2 * 3200
    result5 = tts.synthesize(text, voice, seed=1, text_split_method="cut5", fragment_interval=0.0)
    assert len(result5.segments) == 9
    assert result5.samples.shape[0] == sum(s.samples for s in result5.segments)


def test_lower_layers_compose_to_synthesize(tts, voice):
    options = SynthesisOptions(seed=5, fragment_interval=0.0)
    result = tts.synthesize("Good morning, everyone.", voice, lang="en", options=options)
    units = tts.text_to_phones(result.segments[0].text, "en")
    assert units.bert.shape == (1024, units.n_phones) and not units.bert.any()  # zeros for English
    gpt_rng, vocoder_rng = seed_generators(5)
    bound = tts.token_bound(units.n_phones, options)
    decoded = tts.phones_to_tokens(units, voice, options, gpt_rng, max_tokens=bound)
    wave = tts.tokens_to_audio(decoded.tokens, units.phone_ids, voice, 1.0, 0.5, vocoder_rng)
    peak = np.abs(wave).max()
    expected = wave / peak if peak > 1 else wave
    assert np.array_equal(decoded.tokens, result.segments[0].tokens)
    assert np.array_equal(expected, result.samples)


def test_chinese_text_gets_bert_features(tts):
    units = tts.text_to_phones("你好世界", "zh")
    assert units.bert.shape == (1024, units.n_phones)
    assert np.abs(units.bert).sum() > 0


def test_speed_factor_changes_length(tts, voice):
    normal = tts.synthesize("Speed test sentence.", voice, lang="en", seed=3, top_k=1, fragment_interval=0)
    fast = tts.synthesize(
        "Speed test sentence.", voice, lang="en", seed=3, top_k=1, fragment_interval=0, speed_factor=1.25
    )
    tokens = normal.segments[0].n_tokens
    assert fast.segments[0].n_tokens == tokens  # greedy: same tokens, only the vocoder stretches
    assert fast.samples.shape[0] == vocoder_frames(tokens, 1.25) * 640
    assert vocoder_frames(50, 1.25) == 81 and vocoder_frames(50, 0.8) == 126  # spec §3.3 checks


def test_noise_scale_zero_is_deterministic_whatever_the_seed(tts, voice):
    a = tts.synthesize("Quiet noise.", voice, lang="en", seed=1, top_k=1, noise_scale=0.0)
    b = tts.synthesize("Quiet noise.", voice, lang="en", seed=2, top_k=1, noise_scale=0.0)
    assert np.array_equal(a.samples, b.samples)


def test_stream_yields_one_chunk_per_piece_equal_to_synthesize(tts, voice):
    text = "这是第一句。这是第二句。这是第三句。"
    chunks = list(tts.stream(text, voice, seed=9, text_split_method="cut5", granularity="pieces"))
    whole = tts.synthesize(text, voice, seed=9, text_split_method="cut5")
    assert len(chunks) == 3
    assert np.array_equal(np.concatenate([c.samples for c in chunks]), whole.samples)


def test_pipelined_vocoder_gives_the_same_audio_and_overlaps(speak_env, tts, voice, monkeypatch):
    """synthesize() vocodes piece i in a worker while piece i + 1 decodes; the audio is unchanged."""
    import threading

    from gsv_onnx.runtime.options import RuntimeOptions

    text = "这是第一句。Hello there [pause:0.2] my friend. 这是第三句。这是第四句。"
    options = dict(seed=11, text_split_method="cut5", top_k=5, noise_scale=0.5)
    sequential_tts = TTS.load(speak_env.bundle, runtime_options=RuntimeOptions(pipeline_vocoder=False))
    sequential = sequential_tts.synthesize(text, voice, **options)
    events = []
    real_vocode, real_decode = TTS._vocode_segment, TTS._decode_segment

    def vocode(self, decoded, *args):
        events.append(("vocode", decoded.index, threading.current_thread().name))
        return real_vocode(self, decoded, *args)

    def decode(self, index, *args):
        events.append(("decode", index, threading.current_thread().name))
        return real_decode(self, index, *args)

    monkeypatch.setattr(TTS, "_vocode_segment", vocode)
    monkeypatch.setattr(TTS, "_decode_segment", decode)
    pipelined = tts.synthesize(text, voice, **options)
    assert len(pipelined.segments) == len(sequential.segments) == 4
    assert np.array_equal(pipelined.samples, sequential.samples)
    assert [s.tokens.tolist() for s in pipelined.segments] == [s.tokens.tolist() for s in sequential.segments]
    # decodes in the caller's thread, vocoding in the worker, each in piece order
    assert [i for kind, i, _ in events if kind == "decode"] == [0, 1, 2, 3]
    assert [i for kind, i, _ in events if kind == "vocode"] == [0, 1, 2, 3]
    assert all(name.startswith("gsv-vocoder") for kind, _, name in events if kind == "vocode")
    assert all(not name.startswith("gsv-vocoder") for kind, _, name in events if kind == "decode")


def test_pipelined_vocoder_errors_and_cancel(tts, voice, monkeypatch):
    text = "这是第一句。这是第二句。这是第三句。"

    def broken(*args, **kwargs):
        raise RuntimeError("vocoder exploded")

    with monkeypatch.context() as patch:
        patch.setattr(TTS, "tokens_to_audio", broken)
        with pytest.raises(RuntimeError, match="vocoder exploded"):
            tts.synthesize(text, voice, seed=3, text_split_method="cut5")
    decoded = []
    real_decode = TTS._decode_segment

    def decode(self, index, *args):
        result = real_decode(self, index, *args)
        decoded.append(index)
        return result

    # cancelled once two pieces have decoded: their audio comes back, the third is never started
    monkeypatch.setattr(TTS, "_decode_segment", decode)
    partial = tts.synthesize(text, voice, seed=3, text_split_method="cut5", cancel=lambda: len(decoded) >= 2)
    assert decoded == [0, 1] and len(partial.segments) == 2


def test_pause_markup_inserts_silence(tts, voice):
    result = tts.synthesize(
        "Hello there [pause:0.5] my friend.", voice, lang="en", seed=2, fragment_interval=0
    )
    segment = result.segments[0]
    assert segment.samples == 1280 * segment.n_tokens + 16000


def test_reference_free_voice(tts, speak_env):
    free = tts.prepare_voice(speak_env.ref, text="", lang="zh")
    assert free.reference_free and free.prompt_codes.size > 0
    result = tts.synthesize("Hello without a prompt.", free, lang="en", seed=4)
    assert result.segments[0].n_tokens > 0


def test_aux_references_average_the_timbre(tts, speak_env, voice):
    other = write_reference(speak_env.root / "aux.wav", seconds=2.0, rate=22050, channels=2)
    mixed = tts.prepare_voice(speak_env.ref, text=REF_TEXT, lang="zh", aux_refs=[other])
    assert np.array_equal(mixed.prompt_codes, voice.prompt_codes)
    assert not np.allclose(mixed.ge, voice.ge)
    assert mixed.metadata["n_references"] == 2


# -- guards ----------------------------------------------------------------------------------------


def test_token_bound_guard_fires_and_is_reported(tts, voice):
    options = SynthesisOptions(seed=1, max_tokens_per_phone=1.0, min_max_tokens=20)
    result = tts.synthesize(
        "A somewhat longer English sentence for the bound.", voice, lang="en", options=options
    )
    segment = result.segments[0]
    assert segment.n_tokens <= max(20, math.ceil(segment.n_phones))
    if segment.stop_reason == "max_tokens":
        assert "token_limit" in segment.guards and any("token_limit" in g for g in result.guards)


def test_short_decode_guard_retries_and_reports(tts, voice):
    options = SynthesisOptions(
        seed=1, min_tokens_per_phone=1000.0, short_decode_retries=2, max_tokens_per_phone=2.0
    )
    result = tts.synthesize("Short decode check.", voice, lang="en", options=options)
    segment = result.segments[0]
    assert segment.attempts == 3 and "short_decode" in segment.guards
    assert any("short_decode" in g for g in result.guards)


def test_output_never_contains_the_prompt_tokens(tts, voice, monkeypatch):
    # Force an immediate stop: the GPT's logits say EOS from step 11 on.
    original_step = tts.decoder.step

    def eos_step(token):
        logits = original_step(token)
        logits[:] = -10.0
        logits[1024] = 10.0
        return logits

    monkeypatch.setattr(tts.decoder, "step", eos_step)
    result = tts.synthesize("Hello there, this stops at once.", voice, lang="en", seed=1)
    segment = result.segments[0]
    assert segment.n_tokens == 11 and segment.stop_reason == "eos"
    assert "short_decode" in segment.guards
    assert segment.samples == 11 * 1280  # never the reference's codes replayed


def test_peak_guard_and_no_int16_overflow(tts, voice):
    from gsv_onnx.audio import to_int16
    from gsv_onnx.runtime.synthesis import finish_fragment

    loud = np.array([0.5, -2.0, 1.0], dtype=np.float32)
    out = finish_fragment(loud, 32000, 0.0)
    assert out.tolist() == [0.25, -1.0, 0.5]
    assert finish_fragment(np.array([1.0], np.float32), 32000, 0.0)[0] == 1.0  # exactly 1 is kept
    assert to_int16(np.array([1.0], np.float32))[0] == 32767  # clipped, no wrap to -32768


# -- voices ----------------------------------------------------------------------------------------


def test_voice_roundtrip(tmp_path, tts, voice):
    path = voice.save(tmp_path / "alice.voice")
    loaded = Voice.load(path)
    assert loaded.bundle_id == tts.bundle_id and loaded.prompt_text == REF_TEXT + "。"
    for name in ("prompt_codes", "ge", "prompt_phone_ids", "prompt_bert"):
        assert np.array_equal(getattr(loaded, name), getattr(voice, name))
    assert loaded.languages == ["zh"] and loaded.prompt_phones == voice.prompt_phones
    a = tts.synthesize("一样的声音。", voice, seed=2)
    b = tts.synthesize("一样的声音。", loaded, seed=2)
    assert np.array_equal(a.samples, b.samples)
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left


def test_voice_from_another_bundle_is_refused(tmp_path, tts, voice):
    foreign = Voice.from_bytes(voice.to_bytes())
    foreign.bundle_id = "0123456789abcdef0123456789abcdef"
    with pytest.raises(VoiceError, match=r"0123456789abcdef.*" + tts.bundle_id):
        tts.synthesize("你好。", foreign)
    foreign.save(tmp_path / "foreign.voice")
    with pytest.raises(VoiceError, match="prepared with bundle"):
        tts.synthesize("你好。", tmp_path / "foreign.voice")


@pytest.mark.parametrize(
    "content",
    [b"", b"not a voice file", b"PK\x03\x04broken zip"],
    ids=["empty", "text", "broken-zip"],
)
def test_damaged_voice_files(tmp_path, content):
    path = tmp_path / "bad.voice"
    path.write_bytes(content)
    with pytest.raises(VoiceError):
        Voice.load(path)
    with pytest.raises(VoiceError, match="does not exist"):
        Voice.load(tmp_path / "missing.voice")


def test_voice_save_into_missing_directory_leaves_nothing(tmp_path, voice):
    with pytest.raises(VoiceError):
        voice.save(tmp_path / "nope" / "a.voice")
    assert not (tmp_path / "nope").exists()


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "\n\n", "。。。！！", "……", "!!!"])
def test_empty_or_punctuation_only_text(tts, voice, text):
    with pytest.raises(TextError):
        tts.synthesize(text, voice)


def test_unknown_language_and_non_string_text(tts, voice):
    with pytest.raises(TextError, match="unknown language"):
        tts.synthesize("你好。", voice, lang="xx")
    with pytest.raises(TextError):
        tts.synthesize(None, voice)  # type: ignore[arg-type]
    with pytest.raises(TextError, match="unknown language"):
        tts.prepare_voice("unused.wav", text="你好", lang="klingon")


@pytest.mark.parametrize(
    "changes",
    [
        {"top_k": 0},
        {"top_p": 0},
        {"temperature": -1},
        {"speed_factor": 0},
        {"text_split_method": "cut9"},
        {"nope": 1},
    ],
)
def test_bad_options(tts, voice, changes):
    with pytest.raises(OptionsError):
        tts.synthesize("你好。", voice, **changes)


def _reference_cases(tmp_path: Path) -> dict[str, object]:
    rate = 32000
    cases: dict[str, object] = {}
    sf.write(tmp_path / "short.wav", np.full(rate * 1, 0.1, np.float32), rate)
    cases["short"] = tmp_path / "short.wav"
    sf.write(tmp_path / "long.wav", np.full(rate * 12, 0.1, np.float32), rate)
    cases["long"] = tmp_path / "long.wav"
    sf.write(tmp_path / "silent.wav", np.zeros(rate * 4, np.float32), rate)
    cases["silent"] = tmp_path / "silent.wav"
    nan = np.full(rate * 4, 0.1, np.float32)
    nan[1000] = np.nan
    sf.write(tmp_path / "nan.wav", nan, rate, subtype="FLOAT")
    cases["nan"] = tmp_path / "nan.wav"
    (tmp_path / "text.wav").write_text("this is not audio")
    cases["not-audio"] = tmp_path / "text.wav"
    good = io.BytesIO()
    sf.write(good, np.full(rate * 4, 0.1, np.float32), rate, format="WAV")
    cases["corrupt"] = good.getvalue()[:60] + b"\xff" * 10  # a header and garbage
    cases["missing"] = tmp_path / "missing.wav"
    cases["directory"] = tmp_path
    cases["empty-bytes"] = b""
    return cases


@pytest.mark.parametrize(
    "case", ["short", "long", "silent", "nan", "not-audio", "corrupt", "missing", "directory", "empty-bytes"]
)
def test_bad_references(tmp_path, tts, case):
    reference = _reference_cases(tmp_path)[case]
    with pytest.raises(AudioError):
        tts.prepare_voice(reference, text=REF_TEXT, lang="zh")


def test_reference_from_bytes_and_other_formats(tmp_path, tts, speak_env, voice):
    data = Path(speak_env.ref).read_bytes()
    from_bytes = tts.prepare_voice(data, text=REF_TEXT, lang="zh")
    assert np.array_equal(from_bytes.prompt_codes, voice.prompt_codes)
    samples, rate = sf.read(speak_env.ref, dtype="float32")
    sf.write(tmp_path / "ref.flac", np.stack([samples, samples], axis=1), rate)
    stereo = tts.prepare_voice(tmp_path / "ref.flac", text=REF_TEXT, lang="zh")
    assert stereo.prompt_codes.shape == voice.prompt_codes.shape


def test_wrong_bundle_paths(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        TTS.load(tmp_path / "nowhere.gsv")
    (tmp_path / "empty.gsv").mkdir()
    with pytest.raises(BundleError):
        TTS.load(tmp_path / "empty.gsv")
    (tmp_path / "file.gsv").write_text("x")
    with pytest.raises(BundleError):
        TTS.load(tmp_path / "file.gsv")


def test_very_long_text_streams_with_bounded_memory(tts, voice):
    text = "今天天气不错，我们去公园散步吧。" * 6250  # 100,000 characters
    assert len(text) == 100_000
    tracemalloc.start()
    try:
        stream = tts.stream(
            text, voice, seed=1, max_tokens_per_phone=1.0, min_max_tokens=12, granularity="pieces"
        )
        first = next(stream)
        second = next(stream)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    stream.close()
    assert first.samples.size and second.samples.size
    # The text itself is 0.4 MB as UTF-8 / ~0.4 MB as a str; splitting and two pieces stay far
    # below what the whole text's audio would take (hours of float32 samples).
    assert peak < 64 * 1024 * 1024


# -- no torch ----------------------------------------------------------------------------------------


def test_synthesis_runs_with_torch_unimportable(speak_env, tmp_path):
    script = textwrap.dedent(
        """
        import sys

        class BlockTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch.") or name.startswith("gsv_onnx.convert"):
                    raise ImportError(f"{name} is blocked in this test")
                return None

        sys.meta_path.insert(0, BlockTorch())
        from gsv_onnx import TTS, Voice
        tts = TTS.load(sys.argv[1])
        voice = tts.prepare_voice(sys.argv[2], text="参考音频说的话", lang="zh")
        voice.save(sys.argv[3])
        audio = tts.synthesize("今天天气不错。Let's go!", Voice.load(sys.argv[3]), seed=3)
        audio.save(sys.argv[4])
        bad = [m for m in sys.modules if m == "torch" or m.startswith(("torch.", "gsv_onnx.convert"))]
        assert not bad, bad
        print("ok", round(audio.duration, 2))
        """
    )
    out = tmp_path / "out.wav"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(speak_env.bundle),
            str(speak_env.ref),
            str(tmp_path / "v.voice"),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok")
    data, rate = sf.read(out)
    assert rate == 32000 and data.size > 0


# -- parity with the PyTorch modules ----------------------------------------------------------------


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_greedy_noise_free_matches_torch_modules(speak_env, tts, voice):
    if speak_env.gpt is None or speak_env.sovits is None:
        pytest.skip("the tiny bundle fixture does not expose its checkpoints")
    import torch

    from gsv_onnx.convert.checkpoints import load_gpt_checkpoint, load_sovits_checkpoint
    from gsv_onnx.convert.gpt import build_gpt, reference_generate
    from gsv_onnx.convert.sovits import build_sovits

    gpt_ckpt = load_gpt_checkpoint(speak_env.gpt)
    gpt = build_gpt(gpt_ckpt.model_config, gpt_ckpt.state_dict, str(speak_env.gpt))
    sovits_ckpt = load_sovits_checkpoint(speak_env.sovits)
    sovits = build_sovits(sovits_ckpt.config, sovits_ckpt.state_dict, str(speak_env.sovits))

    # few tokens keep the PyTorch loop short; the bound applies to both sides the same way
    options = SynthesisOptions(
        top_k=1, noise_scale=0.0, fragment_interval=0.0, seed=0, max_tokens_per_phone=1.5, min_max_tokens=30
    )
    for text, lang in (("今天天气不错。", "zh"), ("Hello there!", "en")):
        result = tts.synthesize(text, voice, lang=lang, options=options)
        segment = result.segments[0]
        units = tts.text_to_phones(segment.text, lang)
        phone_ids = np.concatenate([voice.prompt_phone_ids, units.phone_ids])
        bert = np.concatenate([voice.prompt_bert, units.bert], axis=1)
        bound = tts.token_bound(units.n_phones, options)
        expected = reference_generate(
            gpt,
            torch.from_numpy(phone_ids)[None],
            torch.from_numpy(bert)[None],
            torch.from_numpy(voice.prompt_codes)[None],
            top_k=1,
            max_steps=bound,
        ).numpy()
        ours = segment.tokens
        if segment.stop_reason == "max_tokens":
            # upstream's caller drops the first token at the step cap: the rest must agree
            assert np.array_equal(ours[1:], expected), (ours[:20], expected[:20])
        else:
            assert np.array_equal(ours, expected), (ours[:20], expected[:20])
        with torch.no_grad():
            frames = vocoder_frames(len(ours), 1.0)
            wave = (
                sovits.decode(
                    torch.from_numpy(ours)[None],
                    torch.from_numpy(units.phone_ids)[None],
                    torch.from_numpy(voice.ge),
                    1.0,
                    torch.zeros(1, tts.inter_channels, frames),
                )
                .numpy()
                .reshape(-1)
            )
        peak = np.abs(wave).max()
        wave = wave / peak if peak > 1 else wave
        assert wave.shape == result.samples.shape
        assert np.max(np.abs(wave - result.samples)) < 1e-3


# -- options and sessions ------------------------------------------------------------------------------


def test_synthesis_option_defaults_are_upstreams():
    options = SynthesisOptions()
    assert (options.top_k, options.top_p, options.temperature, options.repetition_penalty) == (
        15,
        1.0,
        1.0,
        1.35,
    )
    assert (options.text_split_method, options.speed_factor, options.fragment_interval) == ("cut1", 1.0, 0.3)
    assert (options.seed, options.noise_scale, options.batch_size, options.max_decode_steps) == (
        None,
        0.5,
        1,
        1500,
    )
    assert options.with_changes(top_k=1).top_k == 1
    assert SynthesisOptions(seed=-1).seed == -1
    with pytest.raises(OptionsError):
        SynthesisOptions(seed=2**32)


def test_runtime_options_and_provider_fallback(speak_env, caplog):
    import logging

    from gsv_onnx.runtime.options import RuntimeOptions, default_intra_op_threads
    from gsv_onnx.runtime.sessions import create_session, resolve_providers

    assert 1 <= default_intra_op_threads() <= 4
    assert RuntimeOptions().threads == default_intra_op_threads()
    with caplog.at_level(logging.WARNING):
        providers = resolve_providers(("coreml", "directml", "cpu"))
    assert providers[-1] == "CPUExecutionProvider"
    with pytest.raises(OptionsError, match="unknown execution provider"):
        resolve_providers(("warp-drive",))
    with pytest.raises(OptionsError):
        RuntimeOptions(intra_op_threads=0)
    session = create_session(
        Path(speak_env.bundle) / "ref_enc.onnx", RuntimeOptions(intra_op_threads=1, providers=("xnnpack",))
    )
    assert session.get_providers()[-1] == "CPUExecutionProvider"
    assert session.get_session_options().intra_op_num_threads == 1
    with pytest.raises(BundleError, match="does not exist"):
        create_session(Path(speak_env.bundle) / "missing.onnx")
    broken = speak_env.root / "broken.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(BundleError, match="cannot load"):
        create_session(broken)


def test_sessions_are_shared_by_voices(tts, voice, speak_env):
    decoder, sovits = tts.decoder, tts.sovits
    other = tts.prepare_voice(speak_env.ref, text="另一个声音", lang="zh")
    tts.synthesize("共享会话。", other, seed=1)
    tts.synthesize("共享会话。", voice, seed=1)
    assert tts.decoder is decoder and tts.sovits is sovits
    assert tts.ref_enc is tts.ref_enc and tts.bert is tts.bert


def test_concurrent_synthesis_on_one_tts_is_safe(tts, voice):
    from concurrent.futures import ThreadPoolExecutor

    texts = ["第一个线程的句子。", "Second thread sentence.", "第三个线程的句子。"]
    expected = [tts.synthesize(t, voice, seed=11).samples for t in texts]
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda t: tts.synthesize(t, voice, seed=11).samples, texts))
    for got, want in zip(results, expected, strict=True):
        assert np.array_equal(got, want)
