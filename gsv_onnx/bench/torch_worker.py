"""The benchmark workload through the project's PyTorch reference modules, in a fresh process.

    python -m gsv_onnx.bench.torch_worker --gpt G.ckpt --sovits S.pth --hubert DIR --bert DIR --out run.json

This is upstream's naive CPU path on our own modules (`gsv_onnx.convert.gpt` / `sovits` /
`ssl_bert`): float32 weights, `torch.set_num_threads(2)` by default, the GPT prefill, then one
`decode_step` per token whose new K/V rows are appended with `torch.cat` (the cache is copied every
step, as upstream's `infer_panel_naive` does), upstream's torch sampler (`reference_sample`), the
SoVITS decode, and BERT/HuBERT through transformers. It reports the same keys as the ONNX worker.
The text frontend is the project's own (upstream's is another Python frontend of similar cost).
There is no streaming on this path: `first_audio_s` is the time to the whole utterance.

Needs the [convert] extra (torch, transformers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from gsv_onnx.bench import workload as wl


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000


class _TorchBertSession:
    """Duck-types the part of an ORT session that `BertFeaturizer` uses, on the torch BERT."""

    def __init__(self, module: Any) -> None:
        self.module = module

    def run(self, names, feeds):  # noqa: ARG002 - same signature as InferenceSession.run
        import torch

        with torch.inference_mode():
            hidden = self.module(
                torch.from_numpy(feeds["input_ids"]),
                torch.from_numpy(feeds["attention_mask"]),
                torch.from_numpy(feeds["token_type_ids"]),
            )
        return [hidden.numpy()]


class _Reference:
    """The loaded PyTorch modules and the decode loop of upstream's naive path."""

    def __init__(self, gpt, sovits, eos: int) -> None:
        self.gpt = gpt
        self.sovits = sovits
        self.eos = eos

    def decode(
        self,
        logits,
        k_cache,
        v_cache,
        prompt: list[int],
        tokens: int,
        step_ms=None,
        sample_ms=None,
        cpu_ms=None,
    ):
        """`tokens` tokens after a prefill (EOS masked); optional per-step wall/CPU/sampler ms."""
        cpu_ms = cpu_ms if cpu_ms is not None else []
        import torch

        from gsv_onnx.convert.gpt import reference_sample

        generator = torch.Generator().manual_seed(0)
        generated: list[int] = []
        for step in range(tokens):
            if step > 0:
                start, start_cpu = time.perf_counter(), time.process_time()
                token = torch.tensor([[generated[-1]]], dtype=torch.int64)
                position = torch.tensor([len(prompt) + step - 1], dtype=torch.int64)
                logits, k_new, v_new = self.gpt.decode_step(token, position, k_cache, v_cache)
                k_cache = torch.cat([k_cache, k_new], dim=2)
                v_cache = torch.cat([v_cache, v_new], dim=2)
                if step_ms is not None:
                    step_ms.append(_ms(start))
                    cpu_ms.append((time.process_time() - start_cpu) * 1000)
            start = time.perf_counter()
            logits[0, self.eos] = float("-inf")
            token_id, _ = reference_sample(
                logits[0], prompt + generated, step, generator=generator, eos=self.eos
            )
            if sample_ms is not None:
                sample_ms.append(_ms(start))
            generated.append(token_id)
        return generated

    def vocode(self, tokens, phone_ids, ge, noise):
        import torch

        return self.sovits.decode(
            torch.as_tensor(np.asarray(tokens, dtype=np.int64)[None]),
            torch.as_tensor(np.asarray(phone_ids, dtype=np.int64)[None]),
            ge,
            1.0,
            torch.from_numpy(noise),
        )


def measure(
    gpt_path: str | Path,
    sovits_path: str | Path,
    hubert_dir: str | Path,
    bert_dir: str | Path,
    threads: int = 2,
    tokens: int = wl.DEFAULT_TOKENS,
    prefill_positions: int = wl.DEFAULT_PREFILL_POSITIONS,
    probe_positions=wl.DEFAULT_PROBE_POSITIONS,
    probe_steps: int = wl.DEFAULT_PROBE_STEPS,
) -> dict[str, Any]:
    """Run the workload once through the PyTorch modules; returns the ONNX worker's keys."""
    result: dict[str, Any] = {"engine": "pytorch", "first_audio_mode": "none (whole utterance)"}
    result["rss_start_mb"] = wl.current_rss_mb()
    result["load_average_start"] = list(os.getloadavg())
    start = time.perf_counter()
    import torch

    torch.set_num_threads(threads)
    from gsv_onnx import audio as audio_io
    from gsv_onnx.convert.checkpoints import load_gpt_checkpoint, load_sovits_checkpoint
    from gsv_onnx.convert.gpt import build_gpt
    from gsv_onnx.convert.sovits import build_sovits
    from gsv_onnx.convert.ssl_bert import bert_tokenizer_file, load_bert, load_hubert
    from gsv_onnx.runtime.bert import BertFeaturizer, load_tokenizer
    from gsv_onnx.runtime.reference import REF_ENC_BINS
    from gsv_onnx.runtime.split import prepare_prompt_text
    from gsv_onnx.text import phonemize

    torch.set_grad_enabled(False)
    # 1. load: checkpoints -> modules (torch import included, as a user's process pays it)
    gpt_ckpt = load_gpt_checkpoint(gpt_path)
    gpt = build_gpt(gpt_ckpt.model_config, gpt_ckpt.state_dict, str(gpt_path))
    sovits_ckpt = load_sovits_checkpoint(sovits_path)
    sovits = build_sovits(sovits_ckpt.config, sovits_ckpt.state_dict, str(sovits_path)).eval()
    del gpt_ckpt, sovits_ckpt
    result["load_core_s"] = time.perf_counter() - start
    bert_module = load_bert(bert_dir)
    hubert = load_hubert(hubert_dir)
    featurizer = BertFeaturizer(_TorchBertSession(bert_module), load_tokenizer(bert_tokenizer_file(bert_dir)))
    result["load_s"] = time.perf_counter() - start
    result["rss_after_load_mb"] = wl.current_rss_mb()
    result["peak_rss_load_mb"] = wl.peak_rss_mb()
    result["threads"] = threads
    result["precision"] = "fp32"
    reference = _Reference(gpt, sovits, gpt.eos)

    # 2. frontend, BERT, HuBERT, voice
    target = wl.measure_text_stage(result, featurizer.features)
    wav16k_padded, wav32k = audio_io.prepare_reference(wl.reference_clip(), wl.REFERENCE_RATE)
    hubert_ms = []
    for _ in range(3):
        start = time.perf_counter()
        sovits.extract_latent(hubert(torch.from_numpy(wav16k_padded)[None]))
        hubert_ms.append(_ms(start))
    result["hubert_first_ms"], result["hubert_ms"] = hubert_ms[0], wl.summarize(hubert_ms[1:])["median"]
    start = time.perf_counter()
    prompt_result = phonemize(prepare_prompt_text(wl.PROMPT_TEXT, wl.LANG), wl.LANG)
    prompt_phones = np.asarray(prompt_result.phone_ids, dtype=np.int64)
    prompt_bert = featurizer.features(prompt_result.segments)
    prompt = [
        int(t) for t in sovits.extract_latent(hubert(torch.from_numpy(wav16k_padded)[None])).reshape(-1)
    ]
    spec = audio_io.spectrogram(wav32k)[:REF_ENC_BINS]
    ge = sovits.compute_ge(torch.from_numpy(np.ascontiguousarray(spec[None], dtype=np.float32)))
    result["voice_s"] = time.perf_counter() - start
    result["e2e_prefill_positions"] = int(len(prompt_phones) + len(prompt) + len(target.phone_ids))
    inter_channels = sovits.cfg.inter_channels
    hop = sovits.samples_per_frame
    rate = sovits.cfg.sampling_rate

    def utterance() -> tuple[float, dict[str, float], int]:
        started = time.perf_counter()
        units = phonemize(wl.TARGET_TEXT, wl.LANG)
        target_phones = np.asarray(units.phone_ids, dtype=np.int64)
        target_bert = featurizer.features(units.segments)
        text_s = time.perf_counter() - started
        phone_ids = torch.from_numpy(np.concatenate([prompt_phones, target_phones])[None])
        bert = torch.from_numpy(np.concatenate([prompt_bert, target_bert], axis=1)[None])
        codes = torch.tensor([prompt], dtype=torch.int64)
        gpt_start = time.perf_counter()
        logits, k_cache, v_cache = gpt.prefill(phone_ids, bert, codes)
        generated = reference.decode(logits, k_cache, v_cache, prompt, tokens)
        gpt_s = time.perf_counter() - gpt_start
        vocoder_start = time.perf_counter()
        wave = reference.vocode(
            generated, target_phones, ge, wl.prior_noise(inter_channels, 2 * len(generated))
        )
        vocoder_s = time.perf_counter() - vocoder_start
        total = time.perf_counter() - started
        return total, {"text": text_s, "gpt": gpt_s, "vocoder": vocoder_s}, int(wave.shape[-1])

    # 3. the utterance (load + voice + this = what a user process holds at its peak)
    start_cpu = time.process_time()
    total, stages, samples = utterance()
    result["e2e_cpu_rtf"] = (time.process_time() - start_cpu) / (samples / rate)
    if samples != tokens * 2 * hop:
        raise RuntimeError(f"the reference utterance gave {samples} samples instead of {tokens * 2 * hop}")
    result["e2e_s"] = total
    result["e2e_tokens"] = tokens
    result["e2e_audio_s"] = samples / rate
    result["e2e_rtf"] = total / (samples / rate)
    for stage, seconds in stages.items():
        result[f"e2e_{stage}_s"] = seconds
    result["first_audio_s"] = total  # no streaming on upstream's naive path
    result["peak_rss_mb"] = wl.peak_rss_mb()

    # 4. GPT
    phone_ids, bert, codes = (torch.from_numpy(a) for a in wl.gpt_inputs(prefill_positions))
    gpt.prefill(phone_ids, bert, codes)
    start = time.perf_counter()
    logits, k_cache, v_cache = gpt.prefill(phone_ids, bert, codes)
    result["prefill_ms"] = _ms(start)
    result["prefill_positions"] = int(phone_ids.shape[1] + codes.shape[1])
    step_ms: list[float] = []
    sample_ms: list[float] = []
    cpu_ms: list[float] = []
    # tokens + 1 sampling steps give `tokens` timed decode steps, as in the ONNX worker
    generated = reference.decode(
        logits, k_cache, v_cache, [int(c) for c in codes[0]], tokens + 1, step_ms, sample_ms, cpu_ms
    )[:tokens]
    wl.record_decode_stats(result, step_ms, cpu_ms, sample_ms)
    at: dict[str, float] = {}
    for positions in probe_positions:
        phone_ids, bert, codes = (torch.from_numpy(a) for a in wl.gpt_inputs(positions))
        logits, k_cache, v_cache = gpt.prefill(phone_ids, bert, codes)
        probe: list[float] = []
        token_id = int(torch.argmax(logits[0, : gpt.eos]))
        for index in range(wl.PROBE_WARMUP_STEPS + probe_steps):
            start = time.perf_counter()
            token = torch.tensor([[token_id]], dtype=torch.int64)
            position = torch.tensor([codes.shape[1] + index], dtype=torch.int64)
            logits, k_new, v_new = gpt.decode_step(token, position, k_cache, v_cache)
            k_cache = torch.cat([k_cache, k_new], dim=2)
            v_cache = torch.cat([v_cache, v_new], dim=2)
            if index >= wl.PROBE_WARMUP_STEPS:
                probe.append(_ms(start))
            token_id = int(torch.argmax(logits[0, : gpt.eos]))
        at[str(positions)] = wl.summarize(probe)["median"]
    result["decode_ms_per_token_at"] = at

    # 5. vocoder
    noise = wl.prior_noise(inter_channels, 2 * len(generated))
    start, start_cpu = time.perf_counter(), time.process_time()
    wave = reference.vocode(generated, target.phone_ids, ge, noise)
    result["vocoder_s"] = time.perf_counter() - start
    result["vocoder_rtf"] = result["vocoder_s"] / (wave.shape[-1] / rate)
    result["vocoder_cpu_rtf"] = (time.process_time() - start_cpu) / (wave.shape[-1] / rate)

    # peak of the whole process (the 700/1200-position probes included)
    result["peak_rss_process_mb"] = wl.peak_rss_mb()
    result["load_average_end"] = list(os.getloadavg())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="One gsv bench measurement of the PyTorch reference (internal)."
    )
    for name in ("gpt", "sovits", "hubert", "bert", "out"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=wl.DEFAULT_TOKENS)
    parser.add_argument("--prefill-positions", type=int, default=wl.DEFAULT_PREFILL_POSITIONS)
    parser.add_argument("--probe-positions", default=",".join(map(str, wl.DEFAULT_PROBE_POSITIONS)))
    parser.add_argument("--probe-steps", type=int, default=wl.DEFAULT_PROBE_STEPS)
    args = parser.parse_args(argv)
    result = measure(
        args.gpt,
        args.sovits,
        args.hubert,
        args.bert,
        threads=args.threads,
        tokens=args.tokens,
        prefill_positions=args.prefill_positions,
        probe_positions=[int(p) for p in args.probe_positions.split(",") if p],
        probe_steps=args.probe_steps,
    )
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
