"""One measurement of one bundle through the torch-free runtime; meant to run in a fresh process.

    python -m gsv_onnx.bench.onnx_worker --bundle models/random-full-int8.gsv --out run.json

Order (each stage reuses what the previous ones loaded, as a user's process would):

1. `TTS.load` (GPT prefill/decode + SoVITS sessions) -> `load_core_s`; then the lazily created BERT,
   ref_enc and reference-encoder (HuBERT) sessions -> `load_s` (the whole bundle);
2. frontend (`phonemize` of the target text; the first call loads dictionaries), BERT features,
   the reference encoder on the 3.2 s reference clip, `prepare_voice`;
3. the whole 10 s utterance once, cold (`e2e_first_rtf`);
4. GPT: prefill of 200 positions, then 250 cached steps with the numpy sampler (step and sampler
   timed apart), then single steps with the cache at each probe position;
5. the vocoder on those 250 tokens;
6. the utterance again through `TTS.synthesize` (`e2e_rtf`), split at its commas into 4 pieces
   (cut5) with and without the vocoder overlapping the next piece's decode (`e2e_pieces_rtf`,
   `e2e_pieces_sequential_rtf`), and through `TTS.stream` up to its first chunk (`first_audio_s`).

The process never imports torch, so `peak_rss_mb` (taken after load, voice and the first utterance)
is what a user of the runtime pays.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from gsv_onnx.bench import workload as wl


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def _first_audio_mode() -> str:
    if importlib.util.find_spec("gsv_onnx.runtime.streaming") is not None:
        return "token-level streaming (TTS.stream)"
    return "sentence-level (TTS.stream yields whole pieces)"


def _utterance_options(tokens: int) -> dict[str, Any]:
    """SynthesisOptions overrides that make one piece of exactly `tokens` tokens (EOS masked)."""
    return {
        "seed": 0,
        "text_split_method": "cut0",  # one piece: the whole text
        "fragment_interval": 0.0,  # no trailing silence in the audio length
        "min_max_tokens": tokens,  # the token bound is max(min_max_tokens, tiny * n_phones) = tokens
        "max_tokens_per_phone": 1e-6,
    }


def time_gpt(decoder: Any, eos: int, tokens: int, prefill_positions: int, probe_positions, probe_steps: int):
    """Prefill, the decode loop with the sampler, and the probe positions on a `GptDecoder`.

    Returns (metrics, the generated tokens).
    """
    from gsv_onnx.runtime.sampler import SamplingParams, TokenSampler, exponential_noise

    metrics: dict[str, Any] = {}
    phone_ids, bert, codes = wl.gpt_inputs(prefill_positions)
    decoder.prefill(phone_ids, bert, codes)  # warm-up at this shape
    start = time.perf_counter()
    logits = decoder.prefill(phone_ids, bert, codes)
    metrics["prefill_ms"] = _ms(start)
    metrics["prefill_positions"] = int(phone_ids.shape[1] + codes.shape[1])

    sampler = TokenSampler(
        codes,
        SamplingParams(),
        exponential_noise(np.random.default_rng(0)),
        vocab_size=logits.shape[-1],
        eos_token=eos,
    )
    step_ms, cpu_ms, sample_ms, generated = [], [], [], []
    for _ in range(tokens):
        start = time.perf_counter()
        token = sampler.step(wl.mask_eos(logits, eos)).token
        sample_ms.append(_ms(start))
        generated.append(token)
        start, start_cpu = time.perf_counter(), time.process_time()
        logits = decoder.step(token)
        step_ms.append(_ms(start))
        cpu_ms.append((time.process_time() - start_cpu) * 1000)
    wl.record_decode_stats(metrics, step_ms, cpu_ms, sample_ms)

    at: dict[str, float] = {}
    for positions in probe_positions:
        phone_ids, bert, codes = wl.gpt_inputs(positions)
        logits = decoder.prefill(phone_ids, bert, codes)
        probe = []
        for index in range(wl.PROBE_WARMUP_STEPS + probe_steps):
            token = int(np.argmax(wl.mask_eos(logits, eos)))
            start = time.perf_counter()
            logits = decoder.step(token)
            if index >= wl.PROBE_WARMUP_STEPS:
                probe.append(_ms(start))
        at[str(positions)] = wl.summarize(probe)["median"]
    metrics["decode_ms_per_token_at"] = at
    return metrics, np.asarray(generated, dtype=np.int64)


def measure(
    bundle_path: str | Path,
    threads: int | None = None,
    tokens: int = wl.DEFAULT_TOKENS,
    prefill_positions: int = wl.DEFAULT_PREFILL_POSITIONS,
    probe_positions=wl.DEFAULT_PROBE_POSITIONS,
    probe_steps: int = wl.DEFAULT_PROBE_STEPS,
) -> dict[str, Any]:
    """Run the workload once on the bundle at `bundle_path`; returns the metrics (see module doc)."""
    from gsv_onnx import audio as audio_io
    from gsv_onnx.runtime.options import RuntimeOptions
    from gsv_onnx.runtime.reference import prompt_codes
    from gsv_onnx.runtime.tts import TTS

    # The forced token bound fires the "token_limit" guard on purpose; its warning is noise here.
    logging.getLogger("gsv_onnx").setLevel(logging.ERROR)
    result: dict[str, Any] = {"engine": "onnxruntime", "first_audio_mode": _first_audio_mode()}
    result["rss_start_mb"] = wl.current_rss_mb()
    result["load_average_start"] = list(os.getloadavg())

    # 1. load
    start = time.perf_counter()
    tts = TTS.load(bundle_path, RuntimeOptions(intra_op_threads=threads), verify=False)
    result["load_core_s"] = time.perf_counter() - start
    tts.bert, tts.ref_enc, tts.reference_encoder  # noqa: B018 - create the lazy sessions now
    result["load_s"] = time.perf_counter() - start
    result["rss_after_load_mb"] = wl.current_rss_mb()
    result["peak_rss_load_mb"] = wl.peak_rss_mb()
    result["threads"] = tts.runtime_options.threads
    result["precision"] = tts.bundle.precision
    result["graph_precisions"] = {
        name: entry.get("precision") for name, entry in tts.bundle.manifest["graphs"].items()
    }
    result["bundle_mb"] = tts.bundle.total_size() / 1e6
    eos = tts.eos_token

    # 2. frontend, BERT, HuBERT, voice
    target = wl.measure_text_stage(result, tts.bert.features)
    wav16k_padded, _ = audio_io.prepare_reference(wl.reference_clip(), wl.REFERENCE_RATE)
    hubert_ms = []
    for _ in range(3):
        start = time.perf_counter()
        prompt_codes(tts.reference_encoder, wav16k_padded)
        hubert_ms.append(_ms(start))
    result["hubert_first_ms"], result["hubert_ms"] = hubert_ms[0], wl.summarize(hubert_ms[1:])["median"]
    start = time.perf_counter()
    voice = tts.prepare_voice(wl.reference_wav_bytes(), text=wl.PROMPT_TEXT, lang=wl.LANG)
    result["voice_s"] = time.perf_counter() - start
    result["rss_after_voice_mb"] = wl.current_rss_mb()
    result["e2e_prefill_positions"] = int(
        len(voice.prompt_phone_ids) + len(voice.prompt_codes) + len(target.phone_ids)
    )

    gpt_decoder = tts.decoder
    tts.decoder = wl.NoEosDecoder(gpt_decoder, eos)
    options = _utterance_options(tokens)

    # 3. cold utterance
    start = time.perf_counter()
    audio = tts.synthesize(wl.TARGET_TEXT, voice, lang=wl.LANG, **options)
    result["e2e_first_rtf"] = (time.perf_counter() - start) / audio.duration
    # load + voice + one 10 s utterance: what a user's process holds at its peak
    result["peak_rss_mb"] = wl.peak_rss_mb()

    # 4. GPT
    gpt_metrics, generated = time_gpt(
        gpt_decoder, eos, tokens, prefill_positions, probe_positions, probe_steps
    )
    result.update(gpt_metrics)

    # 5. vocoder on the generated tokens and the target phones (same shapes as the utterance)
    frames = 2 * len(generated)
    noise = wl.prior_noise(tts.inter_channels, frames)
    start, start_cpu = time.perf_counter(), time.process_time()
    wave = tts.tokens_to_audio(generated, target.phone_ids, voice, 1.0, noise=noise)
    result["vocoder_s"] = time.perf_counter() - start
    result["vocoder_rtf"] = result["vocoder_s"] / (wave.shape[0] / tts.sample_rate)
    result["vocoder_cpu_rtf"] = (time.process_time() - start_cpu) / (wave.shape[0] / tts.sample_rate)

    # 6. the utterance, warm, whole and streamed
    start, start_cpu = time.perf_counter(), time.process_time()
    audio = tts.synthesize(wl.TARGET_TEXT, voice, lang=wl.LANG, **options)
    result["e2e_s"] = time.perf_counter() - start
    result["e2e_cpu_rtf"] = (time.process_time() - start_cpu) / audio.duration
    n_tokens = sum(segment.n_tokens for segment in audio.segments)
    if n_tokens != tokens:
        raise RuntimeError(f"the utterance decoded {n_tokens} tokens instead of {tokens}")
    result["e2e_tokens"] = n_tokens
    result["e2e_audio_s"] = audio.duration
    result["e2e_rtf"] = result["e2e_s"] / audio.duration
    for stage in ("text", "gpt", "vocoder"):
        result[f"e2e_{stage}_s"] = float(audio.timings.get(stage, float("nan")))
    # The same text split at its commas (cut5, upstream's API default: 4 pieces of tokens // 4),
    # with the vocoder of each piece overlapping the next piece's decode (the default) and without.
    pieces = {"text_split_method": "cut5", "min_max_tokens": max(1, tokens // wl.TARGET_PIECES)}
    loaded_options = tts.runtime_options
    for key, pipelined in (("e2e_pieces_rtf", True), ("e2e_pieces_sequential_rtf", False)):
        tts.runtime_options = replace(loaded_options, pipeline_vocoder=pipelined)  # read per call
        start = time.perf_counter()
        audio = tts.synthesize(wl.TARGET_TEXT, voice, lang=wl.LANG, **{**options, **pieces})
        result[key] = (time.perf_counter() - start) / audio.duration
        if len(audio.segments) != wl.TARGET_PIECES:
            raise RuntimeError(f"cut5 made {len(audio.segments)} pieces instead of {wl.TARGET_PIECES}")
    tts.runtime_options = loaded_options
    # Time to the first chunk only: closing the stream cancels the rest (the stream's own real-time
    # factor is the streaming benchmark's business).
    start = time.perf_counter()
    stream = tts.stream(wl.TARGET_TEXT, voice, lang=wl.LANG, **options)
    try:
        next(iter(stream))
        result["first_audio_s"] = time.perf_counter() - start
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    # the whole process, the 700/1200-position probes included (their prefills grow ORT's arenas)
    result["peak_rss_process_mb"] = wl.peak_rss_mb()
    result["load_average_end"] = list(os.getloadavg())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="One gsv bench measurement of one bundle (internal).")
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--tokens", type=int, default=wl.DEFAULT_TOKENS)
    parser.add_argument("--prefill-positions", type=int, default=wl.DEFAULT_PREFILL_POSITIONS)
    parser.add_argument("--probe-positions", default=",".join(map(str, wl.DEFAULT_PROBE_POSITIONS)))
    parser.add_argument("--probe-steps", type=int, default=wl.DEFAULT_PROBE_STEPS)
    args = parser.parse_args(argv)
    result = measure(
        args.bundle,
        threads=args.threads,
        tokens=args.tokens,
        prefill_positions=args.prefill_positions,
        probe_positions=[int(p) for p in args.probe_positions.split(",") if p],
        probe_steps=args.probe_steps,
    )
    if "torch" in sys.modules:  # the RSS figure would include torch: fail loudly rather than mislead
        raise RuntimeError("the ONNX worker imported torch; its peak RSS is not the runtime's")
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
