"""`TTS`: the public Python API of the runtime (no torch).

    from gsv_onnx import TTS, Voice
    tts = TTS.load("my_voice.gsv")
    voice = tts.prepare_voice("ref.wav", text="参考音频说的话。", lang="zh")
    voice.save("alice.voice")
    audio = tts.synthesize("今天天气不错。Let's go!", voice, lang="auto", seed=7)
    audio.save("out.wav")
    for chunk in tts.stream(long_text, voice): ...

ONNX Runtime sessions are created once per `TTS` (one bundle) and shared by every voice; the BERT
and reference-encoder sessions are created on first use, so speaking English with a saved voice
never loads them. The HuBERT reference encoder (the largest session after BERT) is released again
when `prepare_voice` returns unless `RuntimeOptions.keep_reference_encoder` is set. The lower
layers are public: `text_to_phones`, `phones_to_tokens`, `tokens_to_audio`.

Threads: a `TTS` may be used from several threads at once. GPT decodes borrow a decoder from a
pool of `RuntimeOptions.decoder_pool_size` decoders (default 1: one decode at a time) that share
the GPT sessions; everything else runs concurrently.

The frontend's user controls (`FrontendOptions`: user dictionary, markup, g2pW) are fixed at load:
`TTS.load(path, user_dict="words.tsv", g2pw_dir="G2PWModel")`.

Per piece of text (spec §7): prompt phones + piece phones and prompt BERT + piece BERT go through
the GPT prefill, then the numpy sampler and one cached decode step per token; the piece's tokens,
its phones only, the voice's `ge`, the speed and the prior noise go through the SoVITS decoder;
the fragment is divided by its peak if that exceeds 1 and followed by `fragment_interval` seconds
of silence. Pieces are processed in text order (upstream sorts them by length when batching; with
batch_size 1 the audio is the same, only the random stream differs).

Empty or punctuation-only text raises `TextError` (upstream returns one second of silence).
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from gsv_onnx.audio import AudioSource
from gsv_onnx.bundle import Bundle
from gsv_onnx.errors import OptionsError, TextError
from gsv_onnx.runtime.bert import BertFeaturizer, load_tokenizer
from gsv_onnx.runtime.decoder import DecoderPool, GptDecoder
from gsv_onnx.runtime.frontend import Frontend
from gsv_onnx.runtime.options import (
    MAX_DECODE_STEPS,
    FrontendOptions,
    RuntimeOptions,
    StreamingOptions,
    SynthesisOptions,
)
from gsv_onnx.runtime.reference import REF_ENC_BINS, encode_reference
from gsv_onnx.runtime.sampler import DecodeResult, SamplingParams, decode, exponential_noise
from gsv_onnx.runtime.sessions import create_session, release_free_heap
from gsv_onnx.runtime.split import prepare_prompt_text, split_text
from gsv_onnx.runtime.synthesis import (
    SegmentReport,
    SynthesisResult,
    TextUnits,
    finish_fragment,
    prior_noise,
    seed_generators,
    vocoder_frames,
)
from gsv_onnx.runtime.voice import Voice

log = logging.getLogger(__name__)


def _languages() -> tuple[str, ...]:
    from gsv_onnx.text import LANGUAGES

    return tuple(LANGUAGES)


def split_at_pauses(units: TextUnits) -> list[tuple[TextUnits | None, float]]:
    """Runs of phones between pause marks, each with the pause (seconds) before it.

    Without pauses: [(units, 0.0)]. A trailing pause gives a (None, seconds) entry.
    """
    if not units.pauses:
        return [(units, 0.0)]
    parts: list[tuple[TextUnits | None, float]] = []
    start = 0
    pending = 0.0
    for phone_index, seconds in sorted(units.pauses):
        phone_index = min(max(phone_index, start), units.n_phones)
        if phone_index > start:
            parts.append((_slice_units(units, start, phone_index), pending))
            pending = 0.0
            start = phone_index
        pending += seconds
    if start < units.n_phones:
        parts.append((_slice_units(units, start, units.n_phones), pending))
    elif pending > 0:
        parts.append((None, pending))
    return parts


def _slice_units(units: TextUnits, start: int, end: int) -> TextUnits:
    return TextUnits(
        text=units.text,
        norm_text=units.norm_text,
        phones=units.phones[start:end],
        phone_ids=units.phone_ids[start:end],
        bert=units.bert[:, start:end],
        languages=units.languages,
    )


def resolve_seed(seed: int | None) -> int:
    """The seed to use: `seed` itself, or a random 32-bit one for None / -1."""
    if seed is None or seed == -1:
        return secrets.randbits(32)
    return int(seed)


@dataclass
class _DecodedPiece:
    """One piece after the text and GPT stages: what its vocoder stage needs."""

    index: int
    text: str
    units: TextUnits
    #: (pause before, phones of the part or None for a bare pause, its decode result)
    parts: list[tuple[float, TextUnits | None, DecodeResult | None]] = field(default_factory=list)
    text_seconds: float = 0.0
    gpt_seconds: float = 0.0
    attempts: int = 0
    guards: list[str] = field(default_factory=list)
    stop_reason: str = "eos"


class TTS:
    """A loaded bundle ready to speak. Create with `TTS.load(path)`."""

    def __init__(
        self,
        bundle: Bundle,
        runtime_options: RuntimeOptions | None = None,
        frontend: FrontendOptions | None = None,
    ) -> None:
        self.bundle = bundle
        self.runtime_options = runtime_options or RuntimeOptions()
        # first: a bad user dictionary or g2pW directory fails before any session is created
        self.frontend = Frontend.load(
            frontend, fallback_vocab=bundle.tokenizer_path, threads=self.runtime_options.threads
        )
        gpt = bundle.hparams["gpt"]
        sovits = bundle.hparams["sovits"]
        self.sample_rate = int(sovits.get("sampling_rate", 32000))
        self.inter_channels = int(sovits.get("inter_channels", 192))
        self.ref_enc_bins = int(sovits.get("ref_enc_bins", REF_ENC_BINS))
        self.bert_dim = int(gpt.get("bert_dim", 1024))
        self.eos_token = int(gpt.get("eos", 1024))
        started = time.perf_counter()
        first_decoder = GptDecoder(
            bundle.graph_path("gpt_prefill"),
            bundle.graph_path("gpt_decode"),
            self.runtime_options,
            max_new_tokens=MAX_DECODE_STEPS,
        )
        # More decoders (same sessions, own KV buffers) are made when decodes overlap.
        self.decoders = DecoderPool(first_decoder, self.runtime_options.decoder_pool_size)
        self.sovits = create_session(bundle.graph_path("sovits_decoder"), self.runtime_options)
        self.load_seconds = time.perf_counter() - started
        self._ref_enc = None
        self._reference_encoder = None
        self._bert: BertFeaturizer | None = None
        self._session_lock = threading.Lock()
        self._voices_in_progress = 0  # prepare_voice calls running now (guarded by _session_lock)

    @classmethod
    def load(
        cls,
        bundle_path: str | os.PathLike,
        runtime_options: RuntimeOptions | None = None,
        verify: bool = False,
        *,
        frontend: FrontendOptions | None = None,
        user_dict: Any = None,
        g2pw_dir: str | os.PathLike | None = None,
    ) -> TTS:
        """Load the bundle directory at `bundle_path` and create its ONNX Runtime sessions.

        `verify=True` also checks every file's sha256 (slow for full-size bundles; `gsv convert`
        already verified them). `frontend` sets the text frontend's controls; `user_dict` (a
        .tsv/.json path or a `UserDictionary`) and `g2pw_dir` (a G2PWModel directory) are
        shortcuts that override its fields. Raises `BundleError` for a missing or invalid bundle,
        `TextError` for a bad dictionary file or g2pW directory.
        """
        frontend = frontend or FrontendOptions()
        if user_dict is not None:
            frontend = replace(frontend, user_dict=user_dict)
        if g2pw_dir is not None:
            frontend = replace(frontend, g2pw_dir=g2pw_dir)
        return cls(Bundle.load(bundle_path, verify=verify), runtime_options, frontend)

    @property
    def frontend_options(self) -> FrontendOptions:
        """The text frontend's controls this TTS was loaded with."""
        return self.frontend.options

    @property
    def decoder(self) -> GptDecoder:
        """The first GPT decoder of the pool (the only one with `decoder_pool_size=1`).

        Assigning a decoder (e.g. a wrapper of this one, for benchmarks) puts it in its place.
        """
        return self.decoders.first

    @decoder.setter
    def decoder(self, decoder: GptDecoder) -> None:
        self.decoders.replace_first(decoder)

    @property
    def bundle_id(self) -> str:
        return self.bundle.bundle_id

    # -- lazily created sessions ------------------------------------------------------------------

    def _session(self, attribute: str, graph: str):
        with self._session_lock:
            session = getattr(self, attribute)
            if session is None:
                session = create_session(self.bundle.graph_path(graph), self.runtime_options)
                setattr(self, attribute, session)
            return session

    @property
    def ref_enc(self):
        """Session of ref_enc.onnx (created on first use)."""
        return self._session("_ref_enc", "ref_enc")

    @property
    def reference_encoder(self):
        """Session of reference_encoder.onnx (created on first use; see `release_reference_encoder`)."""
        return self._session("_reference_encoder", "reference_encoder")

    def release_reference_encoder(self) -> bool:
        """Drop the HuBERT reference-encoder session and its memory; the next use creates it again.

        `prepare_voice` calls this when it returns unless `RuntimeOptions.keep_reference_encoder`
        is set (the session holds 130-340 MB of the full-size model, by precision, and voices are
        prepared rarely). A call made while another thread prepares a voice waits for
        none: that thread keeps its own reference to the session until it is done. Returns whether
        a session was released.
        """
        with self._session_lock:
            session, self._reference_encoder = self._reference_encoder, None
        if session is None:
            return False
        del session  # the last reference: ORT frees the weights and the arena here
        release_free_heap()
        return True

    @property
    def bert(self) -> BertFeaturizer:
        """The BERT featurizer (bert.onnx + tokenizer, created on first Chinese text)."""
        with self._session_lock:
            if self._bert is None:
                session = create_session(self.bundle.graph_path("bert"), self.runtime_options)
                self._bert = BertFeaturizer(
                    session, load_tokenizer(self.bundle.tokenizer_path), self.bert_dim
                )
            return self._bert

    # -- voices -----------------------------------------------------------------------------------

    def prepare_voice(
        self,
        reference: AudioSource,
        text: str = "",
        lang: str = "zh",
        aux_refs: Sequence[AudioSource] = (),
    ) -> Voice:
        """Prepare a voice from a 3-10 s reference clip (path, bytes or file object) and its transcript.

        `text` empty gives a reference-free voice (the GPT gets no prompt, spec §7.4). `aux_refs`
        are extra clips averaged into the timbre vector only. Raises `AudioError` for a bad
        reference and `TextError` for an unknown language or a transcript without phones.
        """
        if not isinstance(text, str):
            raise TextError(f"the reference text must be a string, got {type(text).__name__}")
        if lang not in _languages():
            raise TextError(
                f"unknown language {lang!r} for the reference text; use one of: {', '.join(_languages())}"
            )
        prompt_text = prepare_prompt_text(text, lang) if text.strip() else ""
        units = self.text_to_phones(prompt_text, lang) if prompt_text else None
        with self._session_lock:
            self._voices_in_progress += 1
        try:
            features = encode_reference(
                reference, self.reference_encoder, self.ref_enc, aux_refs, bins=self.ref_enc_bins
            )
        finally:
            with self._session_lock:
                self._voices_in_progress -= 1
                release = self._voices_in_progress == 0 and not self.runtime_options.keep_reference_encoder
            if release:  # the last voice in progress: the session is not needed until the next one
                self.release_reference_encoder()
        metadata = {
            "reference": str(reference) if isinstance(reference, (str, os.PathLike)) else "<bytes>",
            "reference_seconds": round(features.duration, 3),
            "reference_sample_rate": features.sample_rate,
            "n_references": features.n_references,
            "bundle_path": str(self.bundle.path),
        }
        return Voice(
            prompt_codes=features.prompt_codes,
            ge=features.ge,
            prompt_phone_ids=units.phone_ids if units else np.zeros(0, np.int64),
            prompt_bert=units.bert if units else np.zeros((self.bert_dim, 0), np.float32),
            prompt_phones=units.phones if units else [],
            prompt_text=prompt_text,
            prompt_lang=lang,
            prompt_norm_text=units.norm_text if units else "",
            bundle_id=self.bundle_id,
            languages=units.languages if units else [],
            metadata=metadata,
        )

    def _voice(self, voice: Voice | str | os.PathLike) -> Voice:
        if not isinstance(voice, Voice):
            voice = Voice.load(voice)
        voice.check_bundle(self.bundle_id, self.bundle.path)
        return voice

    # -- lower layers -----------------------------------------------------------------------------

    def text_to_phones(self, text: str, lang: str = "auto") -> TextUnits:
        """Phones and per-phone BERT features of one piece of text (no splitting).

        The frontend applies upstream's rules (a text under 6 phones is redone with "." in front)
        and the markup (`{word|pron}`, `[pause:0.5]`; pauses land in `units.pauses`), the user
        dictionary and g2pW of `frontend_options`. Raises `TextError` for an unknown language or
        a text with nothing to pronounce.
        """
        result = self.frontend.phonemize(text, lang)
        segments = list(result.segments)
        phone_ids = np.asarray(result.phone_ids, dtype=np.int64)
        if any(s.lang == "zh" and s.word2ph is not None and s.phone_ids for s in segments):
            bert = self.bert.features(segments)
        else:
            bert = np.zeros((self.bert_dim, phone_ids.shape[0]), dtype=np.float32)
        return TextUnits(
            text=text,
            norm_text=result.norm_text,
            phones=list(result.phones),
            phone_ids=phone_ids,
            bert=bert,
            languages=[s.lang for s in segments],
            pauses=[(int(p.phone_index), float(p.seconds)) for p in getattr(result, "pauses", [])],
        )

    def gpt_inputs(self, units: TextUnits, voice: Voice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(phone_ids, bert, prompt_codes) for the GPT: the voice's prompt followed by the piece."""
        if voice.reference_free:
            return units.phone_ids, units.bert, np.zeros(0, dtype=np.int64)
        phone_ids = np.concatenate([voice.prompt_phone_ids, units.phone_ids])
        bert = np.concatenate([voice.prompt_bert, units.bert], axis=1)
        return phone_ids, bert, voice.prompt_codes

    def phones_to_tokens(
        self,
        units: TextUnits,
        voice: Voice,
        options: SynthesisOptions | None = None,
        rng: np.random.Generator | None = None,
        max_tokens: int | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> DecodeResult:
        """Semantic tokens for one piece: GPT prefill on [prompt ; piece], then the sampler loop.

        `rng` supplies the Exp(1) draws (a generator seeded from `options.seed` when None).
        """
        options = options or SynthesisOptions()
        rng = rng if rng is not None else seed_generators(resolve_seed(options.seed))[0]
        phone_ids, bert, prompt = self.gpt_inputs(units, voice)
        with self.decoders.acquire() as decoder:

            def step(token: int, position: int) -> np.ndarray:
                return decoder.step(token)

            logits = decoder.prefill(phone_ids, bert, prompt)
            return decode(
                logits,
                step,
                prompt,
                sampling_params(options),
                exponential_noise(rng),
                max_steps=options.max_decode_steps,
                max_tokens=max_tokens,
                cancel=cancel,
            )

    def tokens_to_audio(
        self,
        tokens: np.ndarray | Sequence[int],
        phone_ids: np.ndarray | Sequence[int],
        voice: Voice,
        speed: float = 1.0,
        noise_scale: float = 0.5,
        rng: np.random.Generator | None = None,
        noise: np.ndarray | None = None,
    ) -> np.ndarray:
        """The SoVITS waveform (float32 [samples], not peak-normalized) of tokens for target phones.

        `noise`: ε·noise_scale of shape [1, inter_channels, frames] to inject; by default drawn
        from `rng` (a fresh random generator when None) with `prior_noise`.
        """
        tokens = np.asarray(tokens, dtype=np.int64).reshape(1, -1)
        frames = vocoder_frames(tokens.shape[1], float(speed))
        if noise is None:
            rng = rng if rng is not None else np.random.default_rng()
            noise = prior_noise(rng, self.inter_channels, frames, noise_scale)
        noise = np.ascontiguousarray(noise, dtype=np.float32)
        if noise.shape != (1, self.inter_channels, frames):
            raise ValueError(f"noise must have shape [1, {self.inter_channels}, {frames}], got {noise.shape}")
        return self.vocode(tokens, phone_ids, voice.ge, speed, noise)

    def vocode(
        self, tokens: np.ndarray, phone_ids: np.ndarray, ge: np.ndarray, speed: float, noise: np.ndarray
    ) -> np.ndarray:
        """One run of sovits_decoder.onnx; returns float32 [samples]."""
        (audio,) = self.sovits.run(
            ["audio"],
            {
                "semantic_codes": np.asarray(tokens, dtype=np.int64).reshape(1, -1),
                "phone_ids": np.asarray(phone_ids, dtype=np.int64).reshape(1, -1),
                "ge": np.ascontiguousarray(ge, dtype=np.float32),
                "speed": np.asarray([speed], dtype=np.float32),
                "noise": np.ascontiguousarray(noise, dtype=np.float32),
            },
        )
        return np.asarray(audio, dtype=np.float32).reshape(-1)

    # -- synthesis --------------------------------------------------------------------------------

    def _options(
        self, options: SynthesisOptions | None, seed: int | None, overrides: dict
    ) -> SynthesisOptions:
        options = options or SynthesisOptions()
        if overrides:
            options = options.with_changes(**overrides)
        if seed is not None:
            options = options.with_changes(seed=seed)
        return options

    def token_bound(self, n_phones: int, options: SynthesisOptions) -> int:
        """The guard's bound on tokens for a piece of `n_phones` phones."""
        bound = max(options.min_max_tokens, math.ceil(options.max_tokens_per_phone * n_phones))
        return min(bound, options.max_decode_steps)

    def _decode_part(
        self,
        units: TextUnits,
        voice: Voice,
        options: SynthesisOptions,
        rng: np.random.Generator,
        cancel: Callable[[], bool] | None,
    ) -> tuple[DecodeResult, int, list[str]]:
        """Tokens for one run of phones, with the token bound and the short-decode retry."""
        max_tokens = self.token_bound(units.n_phones, options)
        min_tokens = options.min_tokens_per_phone * units.n_phones
        result = self.phones_to_tokens(units, voice, options, rng, max_tokens=max_tokens, cancel=cancel)
        attempts = 1
        # A decoder that gives up at once (EOS right after the 11 forced steps) on a long piece:
        # try again with fresh noise; greedy decoding would only repeat itself.
        while (
            len(result.tokens) < min_tokens
            and attempts <= options.short_decode_retries
            and options.top_k > 1
            and result.stop_reason != "cancelled"
        ):
            retry = self.phones_to_tokens(units, voice, options, rng, max_tokens=max_tokens, cancel=cancel)
            attempts += 1
            if len(retry.tokens) > len(result.tokens):
                result = retry
        return result, attempts, decode_guards(result, min_tokens)

    def _units_or_skip(self, index: int, piece: str, lang: str) -> TextUnits | None:
        """The piece's phones, or None (logged) when the frontend finds nothing to say in it."""
        try:
            units = self.text_to_phones(piece, lang)
        except TextError as exc:
            if lang not in _languages():
                raise
            log.warning("segment %d (%r) skipped: %s", index, piece[:40], exc)
            return None
        if units.n_phones == 0 and not units.pauses:
            return None
        return units

    def _decode_segment(
        self,
        index: int,
        piece: str,
        lang: str,
        voice: Voice,
        options: SynthesisOptions,
        gpt_rng: np.random.Generator,
        cancel: Callable[[], bool] | None = None,
    ) -> _DecodedPiece | None:
        """Text and GPT stages of one piece; None when skipped (nothing to say) or cancelled."""
        started = time.perf_counter()
        units = self._units_or_skip(index, piece, lang)
        if units is None:
            return None
        decoded = _DecodedPiece(index=index, text=piece, units=units)
        decoded.text_seconds = time.perf_counter() - started
        for part, pause_before in split_at_pauses(units):
            if part is None:
                decoded.parts.append((pause_before, None, None))
                continue
            started = time.perf_counter()
            result, part_attempts, part_guards = self._decode_part(part, voice, options, gpt_rng, cancel)
            decoded.gpt_seconds += time.perf_counter() - started
            if result.stop_reason == "cancelled":
                return None
            decoded.attempts += part_attempts
            decoded.guards.extend(g for g in part_guards if g not in decoded.guards)
            if result.stop_reason != "eos":
                decoded.stop_reason = result.stop_reason
            decoded.parts.append((pause_before, part, result))
        return decoded

    def _vocode_segment(
        self,
        decoded: _DecodedPiece,
        voice: Voice,
        options: SynthesisOptions,
        vocoder_rng: np.random.Generator,
    ) -> tuple[np.ndarray, SegmentReport]:
        """Vocoder stage of one decoded piece: its audio (with pauses and trailing silence) and report.

        Uses nothing of the GPT stage's state but `decoded`, and draws its noise from
        `vocoder_rng` alone, so it may run in another thread while the next piece decodes.
        """
        vocoder_seconds = 0.0
        waves: list[np.ndarray] = []
        tokens: list[np.ndarray] = []
        for pause_before, part, result in decoded.parts:
            if pause_before > 0:
                waves.append(np.zeros(int(round(self.sample_rate * pause_before)), dtype=np.float32))
            if part is None:
                continue
            tokens.append(result.tokens)
            started = time.perf_counter()
            wave = self.tokens_to_audio(
                result.tokens, part.phone_ids, voice, options.speed_factor, options.noise_scale, vocoder_rng
            )
            vocoder_seconds += time.perf_counter() - started
            waves.append(wave)
        wave = np.concatenate(waves) if waves else np.zeros(0, dtype=np.float32)
        n_samples = wave.shape[0]
        wave = finish_fragment(wave, self.sample_rate, options.fragment_interval)
        units = decoded.units
        report = SegmentReport(
            index=decoded.index,
            text=decoded.text,
            norm_text=units.norm_text,
            languages=units.languages,
            n_phones=units.n_phones,
            tokens=np.concatenate(tokens) if tokens else np.zeros(0, dtype=np.int64),
            stop_reason=decoded.stop_reason,
            samples=n_samples,
            attempts=decoded.attempts,
            guards=decoded.guards,
            seconds={"text": decoded.text_seconds, "gpt": decoded.gpt_seconds, "vocoder": vocoder_seconds},
        )
        for guard in decoded.guards:
            log.warning("%s", guard_message(guard, report, self.token_bound(units.n_phones, options)))
        return wave, report

    def _pieces(self, text: str, lang: str, options: SynthesisOptions) -> list[str]:
        if not isinstance(text, str):
            raise TextError(f"text must be a string, got {type(text).__name__}")
        if not text.strip():
            raise TextError("the text is empty; give something to say")
        if lang not in _languages():
            raise TextError(f"unknown language {lang!r}; use one of: {', '.join(_languages())}")
        pieces = split_text(text, options.text_split_method, lang, protect=self.frontend.markup_pattern())
        if not pieces:
            raise TextError("the text has nothing to say (only punctuation or blank lines); give some words")
        return pieces

    def stream(
        self,
        text: str,
        voice: Voice | str | os.PathLike,
        lang: str = "auto",
        seed: int | None = None,
        options: SynthesisOptions | None = None,
        *,
        granularity: str = "tokens",
        streaming: StreamingOptions | None = None,
        cancel: Callable[[], bool] | None = None,
        **overrides: Any,
    ) -> Iterator[SynthesisResult]:
        """Yield the audio of `text` in chunks while it is being made.

        `granularity="tokens"` (default, see runtime/streaming.py): the vocoder runs on chunks of
        newly decoded tokens while the GPT keeps decoding in a second thread, so the first audio
        comes after a few tokens; chunk sizes are in `streaming` (`StreamingOptions`).
        `granularity="pieces"`: one chunk per piece of text, exactly as `synthesize` makes it.

        Each chunk is a `SynthesisResult`; the last chunk of each piece has `final=True` and that
        piece's report in `segments`. Memory stays bounded whatever the text length. Argument
        errors (options, voice, empty text, language) raise before the first chunk; a `TextError`
        is raised at the end when no piece had anything to say. `cancel()` returning True, or
        closing the generator, stops decoding within one step.
        """
        options = self._options(options, seed, overrides)
        voice = self._voice(voice)
        pieces = self._pieces(text, lang, options)
        used_seed = resolve_seed(options.seed)
        if granularity == "pieces":
            return self._stream_pieces(pieces, lang, voice, options, used_seed, cancel)
        if granularity != "tokens":
            raise OptionsError(f"granularity must be 'tokens' or 'pieces', got {granularity!r}")
        from gsv_onnx.runtime.streaming import stream_tokens

        return stream_tokens(
            self, pieces, lang, voice, options, used_seed, streaming or StreamingOptions(), cancel
        )

    def _stream_pieces(
        self,
        pieces: list[str],
        lang: str,
        voice: Voice,
        options: SynthesisOptions,
        used_seed: int,
        cancel: Callable[[], bool] | None,
    ) -> Iterator[SynthesisResult]:
        gpt_rng, vocoder_rng = seed_generators(used_seed)
        produced = 0
        for index, piece in enumerate(pieces):
            if cancel is not None and cancel():
                return
            started = time.perf_counter()
            decoded = self._decode_segment(index, piece, lang, voice, options, gpt_rng, cancel)
            if decoded is None:
                if cancel is not None and cancel():
                    return
                continue
            wave, report = self._vocode_segment(decoded, voice, options, vocoder_rng)
            produced += 1
            timings = dict(report.seconds)
            timings["total"] = time.perf_counter() - started
            yield SynthesisResult(
                samples=wave,
                sample_rate=self.sample_rate,
                seed=used_seed,
                segments=[report],
                guards=[guard_message(g, report, None) for g in report.guards],
                timings=timings,
                piece_index=index,
                final=True,
            )
        if not produced:
            raise TextError("the text has nothing to say after normalization; give some words")

    def synthesize(
        self,
        text: str,
        voice: Voice | str | os.PathLike,
        lang: str = "auto",
        seed: int | None = None,
        options: SynthesisOptions | None = None,
        *,
        cancel: Callable[[], bool] | None = None,
        **overrides: Any,
    ) -> SynthesisResult:
        """Speak `text` with `voice`; returns the whole audio with per-piece reports.

        `lang`: "auto", "zh", "en", "ja", "ko", "yue", "all_zh", ... (upstream's codes). `seed`:
        None/-1 draws one (reported as `result.seed`). `overrides`: any `SynthesisOptions` field,
        e.g. `top_k=1, noise_scale=0`. Raises `TextError` for empty/punctuation-only text or an
        unknown language, `VoiceError` for a voice of another bundle, `OptionsError` for bad options.
        """
        started = time.perf_counter()
        options = self._options(options, seed, overrides)
        voice = self._voice(voice)
        pieces = self._pieces(text, lang, options)
        used_seed = resolve_seed(options.seed)
        if self.runtime_options.pipeline_vocoder and len(pieces) > 1:
            produced = self._pipelined_pieces(pieces, lang, voice, options, used_seed, cancel)
        else:
            produced = [
                (chunk.samples, chunk.segments[0])
                for chunk in self._stream_pieces(pieces, lang, voice, options, used_seed, cancel)
            ]
        timings = {"text": 0.0, "gpt": 0.0, "vocoder": 0.0}
        guards: list[str] = []
        for _, report in produced:
            guards.extend(guard_message(g, report, None) for g in report.guards)
            for stage in timings:
                timings[stage] += report.seconds.get(stage, 0.0)
        timings["total"] = time.perf_counter() - started
        return SynthesisResult(
            samples=np.concatenate([wave for wave, _ in produced])
            if produced
            else np.zeros(0, dtype=np.float32),
            sample_rate=self.sample_rate,
            seed=used_seed,
            segments=[report for _, report in produced],
            guards=guards,
            timings=timings,
        )

    def _pipelined_pieces(
        self,
        pieces: list[str],
        lang: str,
        voice: Voice,
        options: SynthesisOptions,
        used_seed: int,
        cancel: Callable[[], bool] | None,
    ) -> list[tuple[np.ndarray, SegmentReport]]:
        """`synthesize`'s pieces with piece i's vocoder running while piece i + 1 decodes.

        Same audio as one piece after the other: the GPT and vocoder stages draw from separate
        random streams, each in piece order (one vocoder worker, pieces submitted in order). The
        overlap pays where the decode step, bound by memory bandwidth, leaves CPU time unused.
        """
        gpt_rng, vocoder_rng = seed_generators(used_seed)
        futures: list[Future] = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gsv-vocoder") as vocoder:
            try:
                for index, piece in enumerate(pieces):
                    if cancel is not None and cancel():
                        break
                    decoded = self._decode_segment(index, piece, lang, voice, options, gpt_rng, cancel)
                    if decoded is not None:
                        futures.append(
                            vocoder.submit(self._vocode_segment, decoded, voice, options, vocoder_rng)
                        )
                produced = [future.result() for future in futures]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        if not produced and not (cancel is not None and cancel()):
            raise TextError("the text has nothing to say after normalization; give some words")
        return produced


def sampling_params(options: SynthesisOptions) -> SamplingParams:
    """The sampler's four knobs from the options."""
    return SamplingParams(
        top_k=options.top_k,
        top_p=options.top_p,
        temperature=options.temperature,
        repetition_penalty=options.repetition_penalty,
    )


def decode_guards(result: DecodeResult, min_tokens: float) -> list[str]:
    """Names of the guards a decode result trips."""
    guards = []
    if len(result.tokens) < min_tokens:
        guards.append("short_decode")
    if result.stop_reason == "max_tokens":
        guards.append("token_limit")
    if result.bad_zero_prediction:
        guards.append("bad_zero_prediction")
    return guards


def guard_message(guard: str, report: SegmentReport, max_tokens: int | None) -> str:
    where = f"segment {report.index} ({report.n_phones} phones)"
    if guard == "token_limit":
        bound = f" ({max_tokens})" if max_tokens else ""
        return f"{where}: token_limit: decoding stopped at the token bound{bound} without EOS; audio cut"
    if guard == "short_decode":
        return (
            f"{where}: short_decode: only {report.n_tokens} tokens after {report.attempts} attempt(s); "
            "the audio is likely cut short"
        )
    if guard == "bad_zero_prediction":
        return f"{where}: bad_zero_prediction: the GPT produced no token; one silent token used"
    return f"{where}: {guard}"
