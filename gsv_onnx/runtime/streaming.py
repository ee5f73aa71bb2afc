"""Token-level streaming: first audio while the GPT is still decoding (docs/streaming.md).

Two threads per stream:

- the *decode thread* runs the frontend and the GPT loop piece after piece and publishes every
  sampled token on a queue the moment it is drawn (it never waits for the vocoder);
- the *consumer* (the generator the caller iterates) collects tokens and, whenever a chunk is
  ready, runs the SoVITS decoder on a window of tokens and yields its audio.

A chunk emits the audio of tokens [a, b). The vocoder renders the window [a - left, b + ahead)
(clamped to what exists), so the decoder's attention and convolutions see context on both sides,
and the chunk's samples are cut out of the window at 1280 samples per token (speed 1). The last
`crossfade_samples` of every chunk are held back and cross-faded (raised cosine, the two weights
sum to one) with the next window's rendering of the same samples. The total length equals the
whole-utterance output's. The prior noise is drawn frame by frame from the vocoder's random
stream and indexed by absolute frame, so overlapping windows use the same noise for the same
frames, and a seeded stream uses the same noise as `synthesize` (speed 1).

Cancelling: the decode thread polls a stop flag before every step; closing the generator (or the
caller's `cancel()` returning True) sets it and joins the thread, which returns within one step.

Differences from piece-level synthesis: no short-decode retry (its audio is already out), the
1500-step cap keeps every token, and samples are clipped to [-1, 1] instead of dividing a
fragment by its peak (the vocoder ends in tanh, so the peak never exceeds 1 anyway).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gsv_onnx.errors import TextError
from gsv_onnx.runtime.options import StreamingOptions, SynthesisOptions
from gsv_onnx.runtime.sampler import exponential_noise, iter_decode
from gsv_onnx.runtime.synthesis import (
    SegmentReport,
    SynthesisResult,
    TextUnits,
    seed_generators,
    vocoder_frames,
)
from gsv_onnx.runtime.voice import Voice

if TYPE_CHECKING:
    from gsv_onnx.runtime.tts import TTS

SAMPLES_PER_TOKEN = 1280
_POLL_SECONDS = 0.05
#: Pieces the decode thread may run ahead of the audio the consumer has finished.
MAX_PIECES_AHEAD = 2


class NoiseBank:
    """Prior noise ε·noise_scale by absolute frame, drawn frame-major on demand from `rng`."""

    def __init__(self, rng: np.random.Generator, channels: int, noise_scale: float) -> None:
        self.rng = rng
        self.channels = channels
        self.noise_scale = np.float32(noise_scale)
        self.frames = np.zeros((0, channels), dtype=np.float32)

    def draw_until(self, frames: int) -> None:
        missing = frames - self.frames.shape[0]
        if missing > 0:
            fresh = self.rng.standard_normal((missing, self.channels), dtype=np.float32)
            self.frames = np.concatenate([self.frames, fresh], axis=0)

    def window(self, start: int, count: int) -> np.ndarray:
        """[1, channels, count] noise for frames start..start+count-1."""
        self.draw_until(start + count)
        return np.ascontiguousarray(self.frames[start : start + count].T[None] * self.noise_scale)


def fade_curves(length: int) -> tuple[np.ndarray, np.ndarray]:
    """Raised-cosine fade-out and fade-in of `length` samples; they sum to one."""
    x = (np.arange(length, dtype=np.float32) + 0.5) / max(length, 1)
    fade_in = np.sin(0.5 * np.pi * x) ** 2
    return (1.0 - fade_in).astype(np.float32), fade_in.astype(np.float32)


class PartRenderer:
    """Turns the tokens of one run of phones into audio chunks as they arrive."""

    def __init__(
        self,
        tts: TTS,
        units: TextUnits,
        voice: Voice,
        options: SynthesisOptions,
        streaming: StreamingOptions,
        vocoder_rng: np.random.Generator,
    ) -> None:
        self.tts = tts
        self.units = units
        self.voice = voice
        self.speed = float(options.speed_factor)
        self.streaming = streaming
        self.samples_per_token = SAMPLES_PER_TOKEN / self.speed
        self.crossfade = min(
            streaming.crossfade_samples, int(streaming.left_context_tokens * self.samples_per_token)
        )
        self.noise = NoiseBank(vocoder_rng, tts.inter_channels, options.noise_scale)
        self.tokens: list[int] = []
        self.emitted = 0  # tokens whose audio went out (except the held-back tail)
        self.held: np.ndarray | None = None
        self.vocoder_seconds = 0.0
        self.samples = 0
        self.chunks = 0

    def _position(self, token_index: int, window_start: int) -> int:
        return int(round((token_index - window_start) * self.samples_per_token))

    def _render(self, start: int, stop: int, ahead_stop: int, final: bool) -> np.ndarray:
        """Audio of tokens [start, stop) rendered on the window with context; handles the held tail."""
        window_start = max(0, start - self.streaming.left_context_tokens)
        window_tokens = np.asarray(self.tokens[window_start:ahead_stop], dtype=np.int64)
        frames = vocoder_frames(window_tokens.shape[0], self.speed)
        first_frame = int(round(2 * window_start / self.speed))
        began = time.perf_counter()
        wave = self.tts.vocode(
            window_tokens,
            self.units.phone_ids,
            self.voice.ge,
            self.speed,
            self.noise.window(first_frame, frames),
        )
        self.vocoder_seconds += time.perf_counter() - began
        held = self.held if self.held is not None else np.zeros(0, dtype=np.float32)
        begin = self._position(start, window_start) - held.shape[0]
        end = wave.shape[0] if final else self._position(stop, window_start)
        piece = wave[max(begin, 0) : end]
        if held.shape[0]:
            fade_out, fade_in = fade_curves(held.shape[0])
            head = piece[: held.shape[0]]
            piece = np.concatenate([held * fade_out + head * fade_in, piece[held.shape[0] :]])
        if final:
            self.held = None
        else:
            keep = min(self.crossfade, piece.shape[0])
            self.held = piece[piece.shape[0] - keep :].copy()
            piece = piece[: piece.shape[0] - keep]
        self.emitted = stop
        return np.clip(piece, -1.0, 1.0).astype(np.float32, copy=False)

    def feed(self, token: int) -> np.ndarray | None:
        """Add a token; returns a chunk of audio when one is ready."""
        self.tokens.append(token)
        size = self.chunk_size(self.chunks)
        stop = self.emitted + size
        if len(self.tokens) < stop + self.streaming.lookahead_tokens:
            return None
        chunk = self._render(self.emitted, stop, len(self.tokens), final=False)
        self.samples += chunk.shape[0]
        self.chunks += 1
        return chunk

    def chunk_size(self, index: int) -> int:
        """Tokens emitted by chunk `index`: the first chunk's size, growing up to chunk_tokens."""
        options = self.streaming
        grown = options.first_chunk_tokens * options.chunk_growth**index
        return int(min(options.chunk_tokens, max(options.first_chunk_tokens, round(grown))))

    def finish(self) -> np.ndarray:
        """The rest of the audio once every token is known."""
        total = len(self.tokens)
        if total > self.emitted or self.emitted == 0:
            chunk = self._render(self.emitted, total, total, final=True)
        else:
            chunk = self.held if self.held is not None else np.zeros(0, dtype=np.float32)
            self.held = None
        # keep the vocoder's random stream where a whole-utterance run leaves it
        self.noise.draw_until(vocoder_frames(total, self.speed))
        self.samples += chunk.shape[0]
        return chunk


@dataclass
class _PieceState:
    index: int
    text: str
    units: TextUnits
    text_seconds: float
    started: float
    tokens: list[np.ndarray] = field(default_factory=list)
    stop_reason: str = "eos"
    guards: list[str] = field(default_factory=list)
    gpt_seconds: float = 0.0
    vocoder_seconds: float = 0.0
    samples: int = 0


def _decode_worker(
    tts: TTS,
    pieces: list[str],
    lang: str,
    voice: Voice,
    options: SynthesisOptions,
    gpt_rng: np.random.Generator,
    events: queue.Queue,
    cancelled: Callable[[], bool],
    pieces_ahead: threading.Semaphore,
) -> None:
    """The decode thread: frontend + GPT for every piece, tokens published as they are drawn.

    It runs at most `MAX_PIECES_AHEAD` pieces ahead of the consumer (`pieces_ahead` is released
    when the consumer finishes a piece), so a very long text never piles up decoded tokens.
    """
    from gsv_onnx.runtime.tts import sampling_params, split_at_pauses

    try:
        params = sampling_params(options)
        for index, piece in enumerate(pieces):
            while not pieces_ahead.acquire(timeout=_POLL_SECONDS):
                if cancelled():
                    return
            if cancelled():
                return
            began = time.perf_counter()
            units = tts._units_or_skip(index, piece, lang)
            if units is None:
                pieces_ahead.release()
                continue
            events.put(("piece", index, piece, units, time.perf_counter() - began))
            for part, pause_before in split_at_pauses(units):
                events.put(("part", part, pause_before))
                if part is None:
                    continue
                began = time.perf_counter()
                outcome: dict[str, Any] = {}
                phone_ids, bert, prompt = tts.gpt_inputs(part, voice)
                max_tokens = tts.token_bound(part.n_phones, options)
                # One pool decoder per part, held while its tokens are drawn (as `synthesize`).
                with tts.decoders.acquire() as decoder:

                    def step(token: int, position: int, decoder=decoder) -> np.ndarray:
                        return decoder.step(token)

                    logits = decoder.prefill(phone_ids, bert, prompt)
                    generated = 0
                    for token in iter_decode(
                        logits,
                        step,
                        prompt,
                        params,
                        exponential_noise(gpt_rng),
                        max_steps=options.max_decode_steps,
                        max_tokens=max_tokens,
                        outcome=outcome,
                        cancel=cancelled,
                    ):
                        generated += 1
                        events.put(("token", token))
                    if generated == 0 and outcome.get("stop_reason") != "cancelled":
                        events.put(("token", 0))  # upstream's "bad zero prediction"
                        outcome["bad_zero_prediction"] = True
                events.put(("part_end", outcome, part.n_phones, time.perf_counter() - began, max_tokens))
                if outcome.get("stop_reason") == "cancelled":
                    return
            events.put(("piece_end",))
    except BaseException as exc:  # handed to the consumer, which re-raises it
        events.put(("error", exc))
    finally:
        events.put(("done",))


def stream_tokens(
    tts: TTS,
    pieces: list[str],
    lang: str,
    voice: Voice,
    options: SynthesisOptions,
    seed: int,
    streaming: StreamingOptions,
    cancel: Callable[[], bool] | None = None,
) -> Iterator[SynthesisResult]:
    """Yield audio chunks of `pieces` as tokens are decoded (see the module docstring)."""
    from gsv_onnx.runtime.tts import guard_message

    gpt_rng, vocoder_rng = seed_generators(seed)
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    pieces_ahead = threading.Semaphore(MAX_PIECES_AHEAD)

    def cancelled() -> bool:
        return stop.is_set() or (cancel is not None and bool(cancel()))

    worker = threading.Thread(
        target=_decode_worker,
        args=(tts, pieces, lang, voice, options, gpt_rng, events, cancelled, pieces_ahead),
        name="gsv-gpt-decode",
        daemon=True,
    )

    def chunk(samples: np.ndarray, state: _PieceState, final: bool, **extra: Any) -> SynthesisResult:
        return SynthesisResult(
            samples=samples,
            sample_rate=tts.sample_rate,
            seed=seed,
            piece_index=state.index,
            final=final,
            **extra,
        )

    def generate() -> Iterator[SynthesisResult]:
        worker.start()
        produced = 0
        state: _PieceState | None = None
        renderer: PartRenderer | None = None
        pending_silence = 0
        try:
            while True:
                if cancel is not None and cancel():
                    return
                try:
                    event = events.get(timeout=_POLL_SECONDS)
                except queue.Empty:
                    continue
                kind = event[0]
                if kind == "token":
                    audio = renderer.feed(event[1])
                    if audio is not None:
                        if pending_silence:
                            audio = np.concatenate([np.zeros(pending_silence, np.float32), audio])
                            state.samples += pending_silence
                            pending_silence = 0
                        state.samples += audio.shape[0]
                        yield chunk(audio, state, False, timings={"vocoder": renderer.vocoder_seconds})
                elif kind == "piece":
                    _, index, text, units, text_seconds = event
                    state = _PieceState(index, text, units, text_seconds, time.perf_counter())
                elif kind == "part":
                    _, part, pause_before = event
                    pending_silence += int(round(tts.sample_rate * pause_before))
                    renderer = (
                        PartRenderer(tts, part, voice, options, streaming, vocoder_rng)
                        if part is not None
                        else None
                    )
                elif kind == "part_end":
                    _, outcome, n_phones, gpt_seconds, max_tokens = event
                    if outcome.get("stop_reason") == "cancelled":
                        return
                    tail = renderer.finish()
                    state.tokens.append(np.asarray(renderer.tokens, dtype=np.int64))
                    state.gpt_seconds += gpt_seconds
                    state.vocoder_seconds += renderer.vocoder_seconds
                    if outcome.get("stop_reason") != "eos":
                        state.stop_reason = outcome.get("stop_reason", "eos")
                    guards = []
                    if len(renderer.tokens) < options.min_tokens_per_phone * n_phones:
                        guards.append("short_decode")
                    if outcome.get("stop_reason") == "max_tokens":
                        guards.append("token_limit")
                    if outcome.get("bad_zero_prediction"):
                        guards.append("bad_zero_prediction")
                    state.guards.extend(g for g in guards if g not in state.guards)
                    if pending_silence:
                        tail = np.concatenate([np.zeros(pending_silence, np.float32), tail])
                        pending_silence = 0
                    state.samples += tail.shape[0]
                    if tail.shape[0]:
                        yield chunk(tail, state, False, timings={"vocoder": renderer.vocoder_seconds})
                    renderer = None
                elif kind == "piece_end":
                    silence = np.zeros(pending_silence, np.float32)
                    state.samples += pending_silence
                    pending_silence = 0
                    tokens = np.concatenate(state.tokens) if state.tokens else np.zeros(0, np.int64)
                    report = SegmentReport(
                        index=state.index,
                        text=state.text,
                        norm_text=state.units.norm_text,
                        languages=state.units.languages,
                        n_phones=state.units.n_phones,
                        tokens=tokens,
                        stop_reason=state.stop_reason,
                        samples=state.samples,
                        attempts=1,
                        guards=state.guards,
                        seconds={
                            "text": state.text_seconds,
                            "gpt": state.gpt_seconds,
                            "vocoder": state.vocoder_seconds,
                        },
                    )
                    trailing = np.concatenate(
                        [silence, np.zeros(int(tts.sample_rate * options.fragment_interval), np.float32)]
                    )
                    timings = dict(report.seconds)
                    timings["total"] = time.perf_counter() - state.started
                    produced += 1
                    yield chunk(
                        trailing,
                        state,
                        True,
                        segments=[report],
                        guards=[guard_message(g, report, None) for g in report.guards],
                        timings=timings,
                    )
                    state = None
                    pieces_ahead.release()
                elif kind == "error":
                    raise event[1]
                elif kind == "done":
                    break
            if not produced and not cancelled():
                raise TextError("the text has nothing to say after normalization; give some words")
        finally:
            stop.set()
            worker.join()

    return generate()
