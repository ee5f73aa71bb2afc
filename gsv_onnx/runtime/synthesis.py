"""Result types and the small numeric steps of synthesis (spec §3.3c, §7.3).

- `TextUnits`: one piece of text as the GPT sees it (phones + BERT features).
- `SegmentReport`: what happened to one piece (tokens, stop reason, guards, timings).
- `SynthesisResult`: an `Audio` with the reports, the seed used and the guards that fired.
- `vocoder_frames`, `prior_noise`, `finish_fragment`: the SoVITS frame count for a speed, the prior
  noise ε·noise_scale, and upstream's per-fragment peak guard plus trailing silence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gsv_onnx.audio import Audio


@dataclass
class TextUnits:
    """One piece of text after the frontend: phones and per-phone BERT features.

    phone_ids: int64 [n]; bert: float32 [bert_dim, n]; languages: the segment languages in order.
    """

    text: str
    norm_text: str
    phones: list[str]
    phone_ids: np.ndarray
    bert: np.ndarray
    languages: list[str] = field(default_factory=list)
    pauses: list[tuple[int, float]] = field(default_factory=list)  # (phone index, seconds) from markup

    @property
    def n_phones(self) -> int:
        return int(self.phone_ids.shape[0])


@dataclass
class SegmentReport:
    """What happened to one piece of text.

    stop_reason: "eos", "max_steps" (1500-step cap), "max_tokens" (the per-segment bound guard).
    guards: names of the guards that fired ("token_limit", "short_decode", "bad_zero_prediction").
    samples: audio samples of this piece, before its trailing silence.
    seconds: time spent per stage ("text", "gpt", "vocoder").
    """

    index: int
    text: str
    norm_text: str
    languages: list[str]
    n_phones: int
    tokens: np.ndarray
    stop_reason: str
    samples: int
    attempts: int = 1
    guards: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])


@dataclass
class SynthesisResult(Audio):
    """Synthesized audio (float32 mono, `sample_rate` Hz) with how it was made.

    seed: the seed actually used (drawn when none was given); pass it back to reproduce the run.
    segments: one `SegmentReport` per piece of text, in order.
    guards: human-readable messages of the guards that fired (empty in a normal run).
    timings: seconds per stage summed over segments ("text", "gpt", "vocoder", "total").
    """

    seed: int = 0
    segments: list[SegmentReport] = field(default_factory=list)
    guards: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    piece_index: int = -1  # for stream chunks: the piece of text this chunk belongs to
    final: bool = True  # for stream chunks: the last chunk of its piece (carries the report)

    @property
    def tokens_per_segment(self) -> list[int]:
        """Semantic tokens generated for each piece of text."""
        return [segment.n_tokens for segment in self.segments]

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly summary (no arrays)."""
        return {
            "duration": round(self.duration, 3),
            "sample_rate": self.sample_rate,
            "seed": self.seed,
            "segments": [
                {
                    "text": s.text,
                    "n_phones": s.n_phones,
                    "n_tokens": s.n_tokens,
                    "stop_reason": s.stop_reason,
                    "guards": s.guards,
                }
                for s in self.segments
            ],
            "guards": self.guards,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }


def vocoder_frames(n_tokens: int, speed: float) -> int:
    """Latent frames the SoVITS decoder produces: 2 per token, or floor(2T/speed)+1 when speed != 1."""
    # The graph receives speed as float32 and rounds it to 6 decimals before dividing in float64
    # (so float32(0.8) gives upstream's frame count); do the same here so the noise fits exactly.
    speed = round(float(np.float32(speed)), 6)
    if speed == 1.0:
        return 2 * n_tokens
    return int(math.floor(2 * n_tokens / speed)) + 1


def prior_noise(rng: np.random.Generator, channels: int, frames: int, noise_scale: float) -> np.ndarray:
    """ε·noise_scale, ε ~ N(0, 1) of shape [1, channels, frames].

    Drawn frame by frame (frame-major), so drawing the frames of an utterance in several pieces
    (token-level streaming) gives the same numbers as one draw; always drawn, so the stream of
    random numbers does not depend on noise_scale.
    """
    epsilon = rng.standard_normal((frames, channels), dtype=np.float32).T[None]
    return np.ascontiguousarray(epsilon * np.float32(noise_scale))


def seed_generators(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """The two random streams of a run (design.md "Randomness"): the GPT's Exp(1) draws and the
    SoVITS prior noise, independent so that decoding and vocoding can run in separate threads."""
    gpt_seq, vocoder_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(gpt_seq), np.random.default_rng(vocoder_seq)


def finish_fragment(samples: np.ndarray, sample_rate: int, fragment_interval: float) -> np.ndarray:
    """Upstream's per-fragment post-processing: divide by the peak only if it exceeds 1, then append
    int(sample_rate * fragment_interval) zeros."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak > 1.0:
        samples = samples / np.float32(peak)
    silence = int(sample_rate * fragment_interval)
    if silence <= 0:
        return samples
    return np.concatenate([samples, np.zeros(silence, dtype=np.float32)])
