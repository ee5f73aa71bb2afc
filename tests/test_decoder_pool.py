"""A pool of GPT decoders lets several threads decode on one `TTS` at the same time.

Decoders share the two GPT sessions and own their KV buffers; a thread borrows one per decode.
These tests check the pool itself, that two threads synthesizing (and streaming) different voices
at once really are inside decodes at the same moment, and that each gets the very samples it
gets alone.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from test_tts import speak_env, write_reference  # noqa: F401  (fixture re-used)

from gsv_onnx.errors import OptionsError
from gsv_onnx.runtime.decoder import DecoderPool, GptDecoder
from gsv_onnx.runtime.options import RuntimeOptions
from gsv_onnx.runtime.tts import TTS

TEXTS = ("第一个声音说的一句话。", "The second voice says something else.")
LANGS = ("zh", "en")


@pytest.fixture(scope="module")
def pooled(speak_env):  # noqa: F811
    return TTS.load(speak_env.bundle, RuntimeOptions(decoder_pool_size=2))


@pytest.fixture(scope="module")
def voices(pooled, speak_env):  # noqa: F811
    other_ref = write_reference(speak_env.root / "pool_other.wav", seconds=3.0, rate=22050)
    return (
        pooled.prepare_voice(speak_env.ref, text="参考音频说的话", lang="zh"),
        pooled.prepare_voice(other_ref, text="Another reference speaks here.", lang="en"),
    )


class _Overlap:
    """Wraps `GptDecoder.prefill` and `step` to record when each decoder decodes.

    The first prefill of each of two threads waits for the other at a barrier, so the two decodes
    must be running at the same time (with a single decoder the second thread could not get one
    and the barrier would time out). `max_in_prefill` counts decoders inside prefill at once;
    `spans` holds each decoder's [first prefill start, last step end] times.
    """

    def __init__(self) -> None:
        self.barrier = threading.Barrier(2, timeout=60)
        self.met = threading.Event()
        self.lock = threading.Lock()
        self.in_prefill = 0
        self.max_in_prefill = 0
        self.spans: dict[int, list[float]] = {}
        self.threads: set[int] = set()

    def install(self, monkeypatch) -> None:
        prefill, step = GptDecoder.prefill, GptDecoder.step
        overlap = self

        def wrapped_prefill(decoder, *args, **kwargs):
            with overlap.lock:
                now = time.perf_counter()
                overlap.spans.setdefault(id(decoder), [now, now])
                overlap.threads.add(threading.get_ident())
                overlap.in_prefill += 1
                overlap.max_in_prefill = max(overlap.max_in_prefill, overlap.in_prefill)
            try:
                if not overlap.met.is_set():
                    overlap.barrier.wait()
                    overlap.met.set()
                return prefill(decoder, *args, **kwargs)
            finally:
                with overlap.lock:
                    overlap.in_prefill -= 1

        def wrapped_step(decoder, token):
            logits = step(decoder, token)
            with overlap.lock:
                overlap.spans[id(decoder)][1] = time.perf_counter()
            return logits

        monkeypatch.setattr(GptDecoder, "prefill", wrapped_prefill)
        monkeypatch.setattr(GptDecoder, "step", wrapped_step)

    def check(self) -> None:
        """Two decoders, two threads, both inside a decode at the same time."""
        assert self.met.is_set() and self.max_in_prefill == 2
        assert len(self.spans) == 2 and len(self.threads) == 2
        (a_start, a_end), (b_start, b_end) = self.spans.values()
        assert max(a_start, b_start) < min(a_end, b_end)


def _run_together(jobs):
    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def run(index, job):
        try:
            results[index] = job()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]
    assert sorted(results) == list(range(len(jobs)))
    return [results[i] for i in range(len(jobs))]


def test_pool_option_is_validated():
    with pytest.raises(OptionsError, match="decoder_pool_size"):
        RuntimeOptions(decoder_pool_size=0)
    with pytest.raises(OptionsError, match="decoder_pool_size"):
        RuntimeOptions(decoder_pool_size=True)


def test_pool_creates_lazily_and_blocks_when_full():
    made = []

    def factory():
        made.append(object())
        return made[-1]

    first = object()
    pool = DecoderPool(first, size=2, factory=factory)
    with pool.acquire() as a:
        assert a is first and pool.created == 1
        with pool.acquire() as b:
            assert b is made[0] and pool.created == 2
            got = []
            waiter = threading.Thread(target=lambda: got.append(pool.acquire().__enter__()))
            waiter.start()
            waiter.join(timeout=0.3)
            assert waiter.is_alive() and not got  # both decoders busy: the third borrower waits
        waiter.join(timeout=10)
        assert got == [made[0]] and pool.created == 2
    with pool.acquire() as again:
        assert again is first  # sequential use never creates more
    pool.grow(3)
    assert pool.size == 3
    replacement = object()
    pool.replace_first(replacement)
    assert pool.first is replacement


def test_default_tts_has_one_decoder(pooled, speak_env):  # noqa: F811
    tts = TTS.load(speak_env.bundle)
    assert tts.decoders.size == 1 and tts.decoder is tts.decoders.first
    assert pooled.decoders.size == 2


def test_two_threads_synthesize_different_voices_at_once(pooled, voices, monkeypatch):
    alone = [
        pooled.synthesize(text, voice, lang=lang, seed=5 + i).samples
        for i, (text, voice, lang) in enumerate(zip(TEXTS, voices, LANGS, strict=True))
    ]
    overlap = _Overlap()
    overlap.install(monkeypatch)
    together = _run_together(
        [
            lambda i=i, text=text, voice=voice, lang=lang: (
                pooled.synthesize(text, voice, lang=lang, seed=5 + i).samples
            )
            for i, (text, voice, lang) in enumerate(zip(TEXTS, voices, LANGS, strict=True))
        ]
    )
    overlap.check()
    assert pooled.decoders.created == 2
    first, second = pooled.decoders._decoders
    assert first.decode_session is second.decode_session and first.k_buffer is not second.k_buffer
    for got, want in zip(together, alone, strict=True):
        assert np.array_equal(got, want)
    assert not np.array_equal(alone[0][: alone[1].size], alone[1][: alone[0].size])


def test_streams_and_synthesis_share_the_pool(pooled, voices, monkeypatch):
    def streamed(voice, text, lang, seed):
        return np.concatenate([c.samples for c in pooled.stream(text, voice, lang=lang, seed=seed)])

    alone_stream = streamed(voices[0], TEXTS[0], LANGS[0], 9)
    alone_whole = pooled.synthesize(TEXTS[1], voices[1], lang=LANGS[1], seed=4).samples
    overlap = _Overlap()
    overlap.install(monkeypatch)
    got_stream, got_whole = _run_together(
        [
            lambda: streamed(voices[0], TEXTS[0], LANGS[0], 9),
            lambda: pooled.synthesize(TEXTS[1], voices[1], lang=LANGS[1], seed=4).samples,
        ]
    )
    overlap.check()
    assert np.array_equal(got_stream, alone_stream)
    assert np.array_equal(got_whole, alone_whole)
