"""Option dataclasses of the runtime, with upstream GPT-SoVITS' defaults.

`SynthesisOptions` holds what one synthesis call may change (sampling, splitting, speed, silence,
noise); its defaults are upstream's `TTS.run` defaults (spec §7.6), so the Python API splits with
`cut1` like upstream's API class while the HTTP server passes `cut5` like upstream's api_v2.

`RuntimeOptions` holds what is fixed when a bundle is loaded: ONNX Runtime threads, execution
providers and how many GPT decodes may run at once. `FrontendOptions` holds the text frontend's
user controls (user dictionary, markup, optional g2pW model), also fixed at load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any

from gsv_onnx.errors import OptionsError

#: Text split methods of upstream's `text_segmentation_method.py` (spec §7.1).
SPLIT_METHODS = ("cut0", "cut1", "cut2", "cut3", "cut4", "cut5")

#: Upstream's EOS token of the V2 GPT (vocabulary 1025, last id).
EOS_TOKEN = 1024

#: Upstream's hard cap on decode steps (60 s of speech at 25 tokens/s, spec §2.6).
MAX_DECODE_STEPS = 1500

#: Steps 0..10 never end: EOS is removed from the logits (spec §2.5 step 0).
EOS_MASKED_STEPS = 11


@dataclass(frozen=True)
class SynthesisOptions:
    """Per-call synthesis options (upstream `TTS.run` defaults, spec §7.6).

    Sampling (spec §2.5): `top_k` (1 = greedy), `top_p` (1 = off; note upstream removes the token
    that crosses the threshold), `temperature`, `repetition_penalty` (applied over prompt and
    generated tokens).

    `seed`: None or -1 draws a random seed (reported on the result); any other value in
    0..2**32-1 makes the GPT draw and the SoVITS prior noise reproducible.

    `noise_scale`: scale of the SoVITS prior noise (upstream hard-codes 0.5); 0 makes the vocoder
    deterministic.

    Guards that upstream lacks (they never change a normal result; when one fires the result says
    so in `guards`):
    - `max_tokens_per_phone` / `min_max_tokens`: a segment may produce at most
      `max(min_max_tokens, max_tokens_per_phone * n_phones)` tokens (and never more than
      `max_decode_steps`), so a decoder that never says EOS cannot babble for a minute.
    - `min_tokens_per_phone` / `short_decode_retries`: a segment that stops with fewer than
      `min_tokens_per_phone * n_phones` tokens (the decoder gave up at once) is decoded again with
      fresh noise up to `short_decode_retries` times; the longest attempt is kept. The output never
      contains the prompt (reference) tokens, so a failed decode cannot replay the reference.
    """

    top_k: int = 15
    top_p: float = 1.0
    temperature: float = 1.0
    repetition_penalty: float = 1.35
    text_split_method: str = "cut1"
    speed_factor: float = 1.0
    fragment_interval: float = 0.3
    seed: int | None = None
    noise_scale: float = 0.5
    batch_size: int = 1
    max_decode_steps: int = MAX_DECODE_STEPS
    max_tokens_per_phone: float = 8.0
    min_max_tokens: int = 75
    min_tokens_per_phone: float = 0.5
    short_decode_retries: int = 1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `OptionsError` naming the first option out of range."""
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
            raise OptionsError(f"top_k must be an integer >= 1 (1 = greedy), got {self.top_k!r}")
        if not 0.0 < float(self.top_p) <= 1.0:
            raise OptionsError(f"top_p must be in (0, 1] (1 = off), got {self.top_p!r}")
        if not float(self.temperature) >= 0.0:
            raise OptionsError(f"temperature must be >= 0, got {self.temperature!r}")
        if not float(self.repetition_penalty) > 0.0:
            raise OptionsError(f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty!r}")
        if self.text_split_method not in SPLIT_METHODS:
            raise OptionsError(
                f"text_split_method must be one of {', '.join(SPLIT_METHODS)}, got {self.text_split_method!r}"
            )
        if not 0.25 <= float(self.speed_factor) <= 4.0:
            raise OptionsError(f"speed_factor must be between 0.25 and 4, got {self.speed_factor!r}")
        if not 0.0 <= float(self.fragment_interval) <= 10.0:
            raise OptionsError(f"fragment_interval must be 0..10 seconds, got {self.fragment_interval!r}")
        if self.seed is not None and (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int)
            or not (self.seed == -1 or 0 <= self.seed < 2**32)
        ):
            raise OptionsError(f"seed must be None, -1 (random) or an integer 0..2**32-1, got {self.seed!r}")
        if not 0.0 <= float(self.noise_scale) <= 10.0:
            raise OptionsError(f"noise_scale must be 0..10, got {self.noise_scale!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise OptionsError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not isinstance(self.max_decode_steps, int) or not 1 <= self.max_decode_steps <= MAX_DECODE_STEPS:
            raise OptionsError(
                f"max_decode_steps must be 1..{MAX_DECODE_STEPS}, got {self.max_decode_steps!r}"
            )
        if not float(self.max_tokens_per_phone) > 0 or self.min_max_tokens < 1:
            raise OptionsError("max_tokens_per_phone must be > 0 and min_max_tokens >= 1")
        if not float(self.min_tokens_per_phone) >= 0 or self.short_decode_retries < 0:
            raise OptionsError("min_tokens_per_phone and short_decode_retries must be >= 0")

    def with_changes(self, **changes: Any) -> SynthesisOptions:
        """A copy with some options changed; unknown names raise `OptionsError`."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise OptionsError(
                f"unknown synthesis option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return replace(self, **changes)


#: Friendly provider names -> ONNX Runtime execution provider names.
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "directml": "DmlExecutionProvider",
    "dml": "DmlExecutionProvider",
}


def default_intra_op_threads() -> int:
    """Threads per session when none are given: all CPUs this process may use, at most 4.

    Measured on 2 cores (full-size int8 bundle, token streaming, loaded machine): 2 threads gave
    first audio 0.97 s vs 1.37 s with 1 thread and a lower real-time factor (1.65 vs 1.92), so
    both cores are used. The cap of 4 is a judgement, not a measurement (no 8-core machine was
    available): one GPT step is a single query row whose matmuls are memory-bound and stop
    scaling after a few threads; pass `intra_op_threads` to tune on a larger machine.
    """
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(4, available))


@dataclass(frozen=True)
class RuntimeOptions:
    """How ONNX Runtime sessions are created (fixed once a bundle is loaded).

    `intra_op_threads`: threads per session; None = `default_intra_op_threads()` (all CPUs up to 4).
    `providers`: execution providers in order of preference, friendly names ("cpu", "xnnpack",
    "coreml", "cuda", "directml") or ONNX Runtime names. Providers that the installed onnxruntime
    lacks are skipped with a warning; CPU is always appended as the fallback.
    `allow_spinning`: let idle ORT threads spin-wait. Off by default: on a small shared machine
    spinning threads steal the cores the other session needs.
    `graph_optimization`: "all" (default), "extended", "basic" or "disabled".
    `session_config`: extra `SessionOptions.add_session_config_entry` pairs.
    `decoder_pool_size`: GPT decoders a `TTS` may use at once, so that up to this many pieces of
    text (from different threads) decode concurrently. They share the two GPT sessions; each has
    its own KV-cache buffers and is created on first need. 1 (default) = one decode at a time.
    `pipeline_vocoder`: in `TTS.synthesize` of several pieces, run piece i's vocoder in a worker
    thread while piece i + 1 decodes (same audio; the decode step is bound by memory bandwidth
    and leaves CPU time for it). On by default; off runs the stages one after the other.

    Memory (figures measured on the full-size int8 bundle):
    `memory_pattern`: ORT's per-input-shape memory plan. Off by default: every new text length is
    a new shape, and the plan's one big block comes on top of the arena's free chunks (the 10 s
    vocoder held 323 MB of activations with it, 189 MB without, at the same speed).
    `shared_arena`: all sessions take their activations from one process-wide ONNX Runtime arena
    that grows only by what is asked (no power-of-two rounding), instead of one arena per session
    that each keep their high-water mark: BERT's, HuBERT's and the prefill's memory is reused by the
    vocoder (peak of load + voice + 10 s utterance 1239 -> 1159 MiB). On by default.
    `keep_reference_encoder`: keep the HuBERT reference-encoder session after `prepare_voice`
    (int8: ~130 MB; fp32: ~340 MB). Off by default: voices are prepared rarely, so the session is
    released when `prepare_voice` returns (peak 1281 -> 1159 MiB with the int8 encoder: its
    weights and activations are gone before the utterance) and created again by the next one
    (~0.2 s int8, ~0.5 s fp32).
    """

    intra_op_threads: int | None = None
    providers: tuple[str, ...] = ("cpu",)
    allow_spinning: bool = False
    graph_optimization: str = "all"
    session_config: dict[str, str] = field(default_factory=dict)
    decoder_pool_size: int = 1
    pipeline_vocoder: bool = True
    memory_pattern: bool = False
    shared_arena: bool = True
    keep_reference_encoder: bool = False

    def __post_init__(self) -> None:
        for name in (
            "allow_spinning",
            "memory_pattern",
            "shared_arena",
            "keep_reference_encoder",
            "pipeline_vocoder",
        ):
            if not isinstance(getattr(self, name), bool):
                raise OptionsError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.intra_op_threads is not None and (
            not isinstance(self.intra_op_threads, int) or self.intra_op_threads < 1
        ):
            raise OptionsError(f"intra_op_threads must be an integer >= 1, got {self.intra_op_threads!r}")
        if (
            isinstance(self.decoder_pool_size, bool)
            or not isinstance(self.decoder_pool_size, int)
            or self.decoder_pool_size < 1
        ):
            raise OptionsError(f"decoder_pool_size must be an integer >= 1, got {self.decoder_pool_size!r}")
        if isinstance(self.providers, str):
            object.__setattr__(self, "providers", (self.providers,))
        if self.graph_optimization not in ("all", "extended", "basic", "disabled"):
            raise OptionsError(
                f"graph_optimization must be all, extended, basic or disabled, got {self.graph_optimization!r}"
            )

    @property
    def threads(self) -> int:
        """The effective intra-op thread count."""
        return self.intra_op_threads or default_intra_op_threads()


@dataclass(frozen=True)
class FrontendOptions:
    """User control over the text frontend (docs/frontend.md), fixed once a bundle is loaded.

    `user_dict`: a user pronunciation dictionary, as a path to a `.tsv` (word<TAB>pronunciation)
    or `.json` ({word: pronunciation}) file or a loaded `gsv_onnx.text.UserDictionary`; its words
    are read as if written `{word|pronunciation}`. None = no dictionary.
    `g2pw_dir`: an unpacked G2PWModel directory for Mandarin polyphones (needs the `g2pw` extra);
    None = pypinyin's readings (upstream with g2pW off).
    `g2pw_vocab`: the chinese-roberta vocabulary g2pW tokenizes with (`vocab.txt` or
    `tokenizer.json`); None = the model directory's own, else the bundle's BERT tokenizer.
    `markup`: read inline `{word|pron}` overrides and `[pause:0.5]` marks (default) or take
    braces and brackets literally.
    """

    user_dict: Any = None
    g2pw_dir: str | os.PathLike | None = None
    g2pw_vocab: str | os.PathLike | None = None
    markup: bool = True

    def __post_init__(self) -> None:
        if self.user_dict is not None and not isinstance(self.user_dict, (str, os.PathLike)):
            from gsv_onnx.text.markup import UserDictionary

            if not isinstance(self.user_dict, UserDictionary):
                raise OptionsError(
                    "user_dict must be a path to a .tsv/.json dictionary file or a UserDictionary, "
                    f"got {type(self.user_dict).__name__}"
                )
        for name in ("g2pw_dir", "g2pw_vocab"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise OptionsError(f"{name} must be a directory/file path, got {type(value).__name__}")
        if not isinstance(self.markup, bool):
            raise OptionsError(f"markup must be True or False, got {self.markup!r}")


@dataclass(frozen=True)
class StreamingOptions:
    """Chunking of token-level streaming (`tts.stream`, docs/streaming.md).

    The vocoder runs on windows of tokens: each chunk emits the audio of `first_chunk_tokens`
    (first chunk), then chunks growing by `chunk_growth` up to `chunk_tokens` new tokens, rendered with up to
    `left_context_tokens` already-emitted tokens before them and `lookahead_tokens` decoded tokens
    after them, so the SoVITS decoder sees the context it sees in a whole-utterance run. Joins are
    cross-faded over `crossfade_samples` samples (equal-power sine window). One token is 1280
    samples (40 ms) at 32 kHz.
    """

    # Measured on the full-size random bundle (greedy, noise 0, 72 tokens): streamed vs whole SNR
    # 58-61 dB with 4-24 tokens of left context, 38 dB with none; context costs vocoder time
    # ((left + chunk + lookahead) / chunk of the whole-utterance work), so it is kept small.
    first_chunk_tokens: int = 6
    chunk_tokens: int = 32
    left_context_tokens: int = 8
    lookahead_tokens: int = 3
    crossfade_samples: int = 1280
    # Chunk k (k >= 1) emits min(chunk_tokens, first_chunk_tokens * chunk_growth**k) tokens: a
    # small first chunk for latency, then growing ones so that each chunk has the playing time of
    # the audio before it to be made.
    chunk_growth: float = 2.0

    def __post_init__(self) -> None:
        for name in ("first_chunk_tokens", "chunk_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise OptionsError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("left_context_tokens", "lookahead_tokens", "crossfade_samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise OptionsError(f"{name} must be an integer >= 0, got {value!r}")
        if not float(self.chunk_growth) >= 1.0:
            raise OptionsError(f"chunk_growth must be >= 1, got {self.chunk_growth!r}")
        if self.crossfade_samples > 1280 * self.left_context_tokens:
            raise OptionsError(
                "crossfade_samples needs that much left context: at most 1280 x left_context_tokens "
                f"({1280 * self.left_context_tokens}), got {self.crossfade_samples}"
            )
