"""Token-level streaming (issue 5) on the tiny bundle: equal length, close waveform, no clicks,
prompt cancelling, and first audio before decoding ends."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from test_tts import speak_env, tts, voice  # noqa: F401  (fixtures re-used)

from gsv_onnx.errors import OptionsError
from gsv_onnx.runtime import streaming as streaming_module
from gsv_onnx.runtime.options import StreamingOptions

TEXT = "今天天气不错，我们去公园散步吧。明天见！"
# greedy, no prior noise, and a token bound that keeps random-weight decoding short
EXACT = dict(seed=3, top_k=1, noise_scale=0.0, max_tokens_per_phone=3.0, min_max_tokens=40)
SNR_THRESHOLD_DB = 40.0


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    error = np.sum((reference - test) ** 2)
    return float("inf") if error == 0 else 10 * np.log10(np.sum(reference**2) / error)


def join_positions(chunks) -> list[int]:
    positions, total = [], 0
    for chunk in chunks[:-1]:
        total += chunk.samples.shape[0]
        positions.append(total)
    return positions


def clicks(samples: np.ndarray, joins: list[int], window: int = 640, factor: float = 1.0) -> list[int]:
    """Joins whose sample-to-sample step exceeds the signal's own largest step nearby (x factor).

    "Nearby" is `window` samples on each side of the join, the join's own step excluded.
    """
    steps = np.abs(np.diff(samples))
    found = []
    for j in joins:
        if not 0 < j < samples.shape[0]:
            continue
        around = np.concatenate([steps[max(0, j - 1 - window) : j - 1], steps[j : j + window]])
        if around.size and steps[j - 1] > factor * around.max():
            found.append(j)
    return found


def stream_and_whole(tts, voice, text=TEXT, streaming=None, **options):  # noqa: F811
    chunks = list(tts.stream(text, voice, streaming=streaming, **options))
    whole = tts.synthesize(text, voice, **options)
    return chunks, whole


def test_stream_matches_whole_output(tts, voice):  # noqa: F811
    chunks, whole = stream_and_whole(tts, voice, **EXACT)
    streamed = np.concatenate([c.samples for c in chunks])
    assert streamed.shape == whole.samples.shape  # same length, not just within a chunk
    assert snr_db(whole.samples, streamed) > SNR_THRESHOLD_DB
    finals = [c for c in chunks if c.final]
    assert [c.segments[0].n_tokens for c in finals] == whole.tokens_per_segment
    assert all(
        np.array_equal(a.segments[0].tokens, b.tokens) for a, b in zip(finals, whole.segments, strict=True)
    )
    assert len(chunks) > 2 * len(finals)  # really token-level: several chunks per piece


def test_stream_with_prior_noise_uses_the_same_noise(tts, voice):  # noqa: F811
    options = dict(EXACT, noise_scale=0.5, top_k=15)
    chunks, whole = stream_and_whole(tts, voice, **options)
    streamed = np.concatenate([c.samples for c in chunks])
    assert streamed.shape == whole.samples.shape
    assert snr_db(whole.samples, streamed) > SNR_THRESHOLD_DB


def test_multi_sentence_pieces_follow_without_gaps(tts, voice):  # noqa: F811
    text = "这是第一句话。这是第二句话。这是第三句话。"
    chunks, whole = stream_and_whole(
        tts, voice, text, **EXACT, text_split_method="cut5", fragment_interval=0.2
    )
    streamed = np.concatenate([c.samples for c in chunks])
    assert streamed.shape == whole.samples.shape
    assert snr_db(whole.samples, streamed) > SNR_THRESHOLD_DB
    assert [c.piece_index for c in chunks if c.final] == [0, 1, 2]
    # between pieces there is exactly fragment_interval of silence, as in the whole output
    assert sum(c.segments[0].samples for c in chunks if c.final) + 3 * 6400 == streamed.shape[0]


def test_no_clicks_at_joins(tts, voice, monkeypatch):  # noqa: F811
    chunks, whole = stream_and_whole(tts, voice, **EXACT)
    streamed = np.concatenate([c.samples for c in chunks])
    joins = join_positions(chunks)
    assert len(joins) >= 3 and not clicks(streamed, joins)
    # The detector does catch a discontinuity: a chunk rendered with a DC offset (a gain/offset
    # bug at the boundary) makes every join of that chunk a click.
    original = streaming_module.PartRenderer._render
    calls = {"n": 0}

    def offset_every_other_chunk(self, *args, **kwargs):
        calls["n"] += 1
        audio = original(self, *args, **kwargs)
        return audio + np.float32(0.5) if calls["n"] % 2 == 0 else audio

    monkeypatch.setattr(streaming_module.PartRenderer, "_render", offset_every_other_chunk)
    buggy_chunks = list(tts.stream(TEXT, voice, **EXACT))
    buggy = np.concatenate([c.samples for c in buggy_chunks])
    assert clicks(buggy, join_positions(buggy_chunks))


def test_snr_threshold_catches_a_boundary_offset_bug(tts, voice, monkeypatch):  # noqa: F811
    """Measured on the tiny bundle: ~75 dB normally; cutting each chunk 3 ms late gives ~31 dB."""
    whole = tts.synthesize(TEXT, voice, **EXACT)
    original = streaming_module.PartRenderer._position

    def shifted(self, token_index, window_start):
        return original(self, token_index, window_start) + 96

    monkeypatch.setattr(streaming_module.PartRenderer, "_position", shifted)
    buggy = np.concatenate([c.samples for c in tts.stream(TEXT, voice, **EXACT)])
    n = min(buggy.shape[0], whole.samples.shape[0])
    assert snr_db(whole.samples[:n], buggy[:n]) < SNR_THRESHOLD_DB


def test_no_context_is_worse_than_default(tts, voice):  # noqa: F811
    """Context and cross-fade are what make the joins match (measured, not assumed)."""
    bare = StreamingOptions(
        first_chunk_tokens=4, chunk_tokens=6, left_context_tokens=0, lookahead_tokens=0, crossfade_samples=0
    )
    chunks, whole = stream_and_whole(tts, voice, streaming=bare, **EXACT)
    bare_snr = snr_db(whole.samples, np.concatenate([c.samples for c in chunks]))
    chunks, _ = stream_and_whole(tts, voice, **EXACT)
    default_snr = snr_db(whole.samples, np.concatenate([c.samples for c in chunks]))
    assert default_snr > bare_snr


def test_first_audio_arrives_before_decoding_ends(tts, voice):  # noqa: F811
    started = time.perf_counter()
    stream = tts.stream(TEXT, voice, **EXACT)
    first = next(stream)
    first_seconds = time.perf_counter() - started
    rest = list(stream)
    total_seconds = time.perf_counter() - started
    assert first.samples.shape[0] > 0 and not first.final
    assert first_seconds < total_seconds / 2
    assert any(c.final for c in rest)


def test_cancel_by_closing_stops_within_a_step_and_leaves_no_thread(tts, voice):  # noqa: F811
    stream = tts.stream(TEXT * 5, voice, seed=1, max_tokens_per_phone=8.0)
    next(stream)
    began = time.perf_counter()
    stream.close()
    closed_in = time.perf_counter() - began
    assert closed_in < 1.0
    assert not [t for t in threading.enumerate() if t.name == "gsv-gpt-decode"]
    # the decoder is free again: a new synthesis works at once
    assert tts.synthesize("你好。", voice, **EXACT).samples.size


def test_cancel_callback_ends_the_stream(tts, voice):  # noqa: F811
    flag = threading.Event()
    chunks = []
    for chunk in tts.stream(TEXT * 5, voice, seed=1, cancel=flag.is_set):
        chunks.append(chunk)
        flag.set()
    assert len(chunks) <= 2
    assert not [t for t in threading.enumerate() if t.name == "gsv-gpt-decode"]


def test_errors_in_the_decode_thread_reach_the_caller(tts, voice, monkeypatch):  # noqa: F811
    def broken(*args, **kwargs):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(tts.decoder, "prefill", broken)
    with pytest.raises(RuntimeError, match="decoder exploded"):
        list(tts.stream(TEXT, voice, seed=1))
    assert not [t for t in threading.enumerate() if t.name == "gsv-gpt-decode"]


def test_streaming_options_are_validated(tts, voice):  # noqa: F811
    with pytest.raises(OptionsError):
        StreamingOptions(chunk_tokens=0)
    with pytest.raises(OptionsError):
        StreamingOptions(left_context_tokens=0, crossfade_samples=100)
    with pytest.raises(OptionsError):
        tts.stream(TEXT, voice, granularity="words")


def test_pause_markup_in_a_stream(tts, voice):  # noqa: F811
    text = "Hello there [pause:0.5] my friend."
    options = dict(EXACT, fragment_interval=0.0)
    chunks, whole = stream_and_whole(tts, voice, text, lang="en", **options)
    streamed = np.concatenate([c.samples for c in chunks])
    assert streamed.shape == whole.samples.shape
    assert snr_db(whole.samples, streamed) > SNR_THRESHOLD_DB


def test_very_long_text_streams_without_running_ahead(tts, voice):  # noqa: F811
    text = "今天天气不错，我们去公园散步吧。" * 6250  # 100,000 characters
    started = []
    original = tts._units_or_skip

    def counting(index, piece, lang):
        started.append(index)
        return original(index, piece, lang)

    tts._units_or_skip = counting
    try:
        stream = tts.stream(
            text, voice, seed=1, max_tokens_per_phone=1.0, min_max_tokens=12, text_split_method="cut5"
        )
        finals = 0
        for chunk in stream:
            finals += chunk.final
            if finals == 2:
                break
        time.sleep(0.3)  # give the decode thread time to run ahead if it could
        assert max(started) <= 1 + 2  # two pieces done, at most MAX_PIECES_AHEAD more started
        stream.close()
    finally:
        del tts._units_or_skip
    assert not [t for t in threading.enumerate() if t.name == "gsv-gpt-decode"]


@pytest.mark.parametrize("speed", [0.8, 1.25])
def test_stream_at_other_speeds_is_close_in_length_and_click_free(tts, voice, speed):  # noqa: F811
    """At speed != 1 each window is stretched on its own (the decoder's floor(2W/speed)+1 frames),
    so the stream is close to, not equal to, the whole output: same length within one frame."""
    options = dict(EXACT, speed_factor=speed, fragment_interval=0.0)
    chunks, whole = stream_and_whole(tts, voice, **options)
    streamed = np.concatenate([c.samples for c in chunks])
    assert abs(streamed.shape[0] - whole.samples.shape[0]) <= 640
    assert not clicks(streamed, join_positions(chunks))


def test_chunks_grow_from_the_first_to_the_largest():
    renderer = streaming_module.PartRenderer.__new__(streaming_module.PartRenderer)
    renderer.streaming = StreamingOptions()
    assert [renderer.chunk_size(k) for k in range(6)] == [6, 12, 24, 32, 32, 32]
    renderer.streaming = StreamingOptions(first_chunk_tokens=10, chunk_tokens=10, chunk_growth=1.0)
    assert [renderer.chunk_size(k) for k in range(3)] == [10, 10, 10]
    with pytest.raises(OptionsError):
        StreamingOptions(chunk_growth=0.5)
