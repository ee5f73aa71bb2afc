"""The benchmark's fixed workload, shared by the ONNX and the PyTorch workers (numpy only).

A "10 s utterance" is 250 semantic tokens (25 tokens/s, 1280 samples of 32 kHz audio each). The
models have random weights, so EOS would come at a random step; every engine therefore decodes with
the EOS logit set to -inf, which makes each run decode exactly the requested number of tokens
(and never changes the cost of a step).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Target text: 45 Chinese characters, ~86 phones, about 10 s when spoken.
TARGET_TEXT = "在这个阳光明媚的早晨，我们一起去公园散步，看看湖边的柳树和刚刚开放的花朵，听听鸟儿的歌声。"
#: Pieces of TARGET_TEXT under cut5 (split at each comma and full stop).
TARGET_PIECES = 4
#: Transcript of the synthetic reference clip (its content does not matter to the timings).
PROMPT_TEXT = "这是一段用来测试速度的参考音频。"
LANG = "zh"
#: Length of the synthetic reference: 3.2 s -> (3.2 + 0.6) * 25 = 95 prompt codes, so that
#: prompt phones + prompt codes + target phones come to about 200 prefill positions.
REFERENCE_SECONDS = 3.2
REFERENCE_RATE = 32000

#: Tokens decoded per utterance (250 = 10 s of audio).
DEFAULT_TOKENS = 250
#: The micro-benchmark prefill: 120 text phones + 80 prompt codes = 200 positions.
PREFILL_PROMPT_CODES = 80
DEFAULT_PREFILL_POSITIONS = 200
#: Cache lengths at which single decode steps are timed.
DEFAULT_PROBE_POSITIONS = (200, 700, 1200)
#: Timed steps per probe position (after 3 untimed ones).
DEFAULT_PROBE_STEPS = 20
PROBE_WARMUP_STEPS = 3
#: Upstream's SoVITS prior noise scale.
NOISE_SCALE = 0.5
BERT_DIM = 1024
PHONE_VOCAB = 732
CODE_VOCAB = 1024


def reference_clip(
    seconds: float = REFERENCE_SECONDS, rate: int = REFERENCE_RATE, seed: int = 0
) -> np.ndarray:
    """A deterministic speech-like mono clip: a gliding harmonic tone in 4 Hz syllables plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 150 + 40 * np.sin(2 * math.pi * 0.7 * t)
    phase = 2 * math.pi * np.cumsum(pitch) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 9))
    syllables = 0.5 * (1 - np.cos(2 * math.pi * 4 * t)) ** 2
    wave = 0.25 * voiced * syllables + 0.01 * rng.standard_normal(t.shape[0])
    return wave.astype(np.float32)


def reference_wav_bytes(seconds: float = REFERENCE_SECONDS, rate: int = REFERENCE_RATE) -> bytes:
    """`reference_clip` encoded as a 16-bit WAV file in memory."""
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, reference_clip(seconds, rate), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def gpt_inputs(
    positions: int, prompt_codes: int = PREFILL_PROMPT_CODES, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic GPT prefill inputs of `positions` rows: (phone_ids [1, T], bert [1, 1024, T], codes [1, P]).

    T = positions - P text phones (at least 1); P prompt codes.
    """
    prompt_codes = min(prompt_codes, positions - 1)
    text_len = positions - prompt_codes
    rng = np.random.default_rng(seed + positions)
    return (
        rng.integers(0, PHONE_VOCAB, (1, text_len), dtype=np.int64),
        (rng.standard_normal((1, BERT_DIM, text_len)) * 0.5).astype(np.float32),
        rng.integers(0, CODE_VOCAB, (1, prompt_codes), dtype=np.int64),
    )


def prior_noise(channels: int, frames: int, seed: int = 0) -> np.ndarray:
    """ε·noise_scale for the SoVITS prior, float32 [1, channels, frames]."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((1, channels, frames)) * NOISE_SCALE).astype(np.float32)


def mask_eos(logits: np.ndarray, eos: int) -> np.ndarray:
    """Set the EOS logit to -inf in place (any shape whose last axis is the vocabulary); returns it."""
    if logits.shape[-1] > eos:
        logits[..., eos] = -np.inf
    return logits


class NoEosDecoder:
    """Wraps a `GptDecoder` so that EOS can never be drawn nor be the argmax.

    `TTS` calls `decoder.prefill(...)` and `decoder.step(token)`; with this wrapper in place of
    `tts.decoder` every utterance decodes exactly the token bound it is given. Everything else is
    passed through to the wrapped decoder.
    """

    def __init__(self, decoder: Any, eos: int) -> None:
        self._decoder = decoder
        self._eos = int(eos)

    def prefill(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return mask_eos(self._decoder.prefill(*args, **kwargs), self._eos)

    def step(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return mask_eos(self._decoder.step(*args, **kwargs), self._eos)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._decoder, name)


def measure_text_stage(result: dict[str, Any], bert_features) -> Any:
    """Time the frontend and BERT on the target text into `result`; returns the phonemized text.

    The frontend's first call (dictionary loads) and BERT's first call (session warm-up) are
    reported apart from the medians of the following calls. Shared by both engines' workers so
    they measure exactly the same thing.
    """
    import time

    from gsv_onnx.text import phonemize

    def timed(call) -> tuple[Any, float]:
        start = time.perf_counter()
        value = call()
        return value, (time.perf_counter() - start) * 1000.0

    target, result["frontend_first_ms"] = timed(lambda: phonemize(TARGET_TEXT, LANG))
    frontend_ms = []
    for _ in range(3):
        target, elapsed = timed(lambda: phonemize(TARGET_TEXT, LANG))
        frontend_ms.append(elapsed)
    result["frontend_ms"] = summarize(frontend_ms)["median"]
    result["target_phones"] = len(target.phone_ids)
    bert_ms = [timed(lambda: bert_features(target.segments))[1] for _ in range(3)]
    result["bert_first_ms"], result["bert_ms"] = bert_ms[0], summarize(bert_ms[1:])["median"]
    return target


def record_decode_stats(
    result: dict[str, Any], step_ms: Sequence[float], cpu_ms: Sequence[float], sample_ms: Sequence[float]
) -> None:
    """Store the per-token decode statistics both engines report (wall, CPU of all threads, sampler).

    CPU time matters on a shared machine, where wall time also counts waiting for a core.
    """
    stats = summarize(step_ms)
    result["decode_cpu_ms_per_token"] = summarize(cpu_ms)["median"]
    result["decode_ms_per_token"] = stats["median"]
    result["decode_ms_p90"] = stats["p90"]
    result["decode_ms_p10"] = stats["p10"]
    result["decode_ms_mean"] = stats["mean"]
    result["sampler_ms_per_token"] = summarize(sample_ms)["median"]


def summarize(values: Sequence[float]) -> dict[str, float]:
    """median, p10, p90, mean, min, max of a list of numbers (all NaN when empty)."""
    array = np.asarray(list(values), dtype=np.float64)
    if array.size == 0:
        nan = float("nan")
        return {"median": nan, "p10": nan, "p90": nan, "mean": nan, "min": nan, "max": nan}
    return {
        "median": float(np.median(array)),
        "p10": float(np.percentile(array, 10)),
        "p90": float(np.percentile(array, 90)),
        "mean": float(np.mean(array)),
        "min": float(np.min(array)),
        "max": float(np.max(array)),
    }


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB (10^6 bytes).

    Linux: VmHWM of /proc/self/status, the peak of this program image. Not `ru_maxrss`, which
    Linux carries across exec: a worker started by a bench that had just converted bundles in
    the same process reported the conversion's 6.7 GB as its own peak.
    """
    import resource
    import sys

    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6


def current_rss_mb() -> float | None:
    """This process's resident set size now, in MB (Linux; None elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
