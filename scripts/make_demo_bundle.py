#!/usr/bin/env python3
"""Build the demo assets of `gsv demo`: the smallest V2-architecture random bundle + a reference clip.

Writes into gsv_onnx/data/demo/ (or --out):

    demo.gsv/        a bundle converted from random-weight checkpoints in upstream's formats
    reference.wav    3.5 s of a synthetic voiced signal (harmonics, vibrato, syllable envelope,
                     breath noise), 32 kHz mono 16-bit
    demo.json        names both, with the reference transcript and the default demo sentence

The models keep every size V2 hard-codes (so the graphs have the real contracts: 732 phones,
1024-dim BERT input, 768-dim HuBERT, 1024 x 768 codebook, 704 ref_enc bins, MRTE 512, flow and
text-encoder hidden 192) and shrink everything the configs choose: a 1-layer 32-wide GPT, a small
SoVITS (filter 64, 2 layers, HiFi-GAN 32 channels), a 1-layer HuBERT and a 1,000-token RoBERTa
whose graph runs one layer. The weights are random, so the demo speaks noise. The floor is the
SoVITS flow: 4 couplings of a 192-wide, kernel-5 WaveNet (about 10 M weights) that V2 fixes. Needs the [convert] extra (torch, transformers, onnx).

    python scripts/make_demo_bundle.py [--out DIR] [--precision int4|int8|fp16|fp32] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "gsv_onnx" / "data" / "demo"
DEMO_HUBERT_LAYERS = 1  # of the tiny HuBERT's 2 (hidden size 768 stays: SoVITS needs it)
DEMO_BERT_VOCAB = 1000  # tokens kept of the tiny RoBERTa's 3,000 (hidden size 1024 stays: the GPT needs it)
REFERENCE_RATE = 32000
REFERENCE_SECONDS = 3.5
REFERENCE_TEXT = "这是一段用来演示的参考音频。"
DEMO_TEXT = "你好，欢迎使用 gsv-onnx。This is a demo of the full pipeline."


def demo_gpt_config() -> dict:
    """The tiny test GPT config shrunk further: 1 layer, 32 wide, 2 heads (vocabularies stay V2)."""
    from gsv_onnx.convert.testmodels import gpt_config

    config = gpt_config("tiny", name="gsv-demo")
    config["model"].update(embedding_dim=32, hidden_dim=32, head=2, linear_units=128, n_layer=1)
    return config


def demo_sovits_config() -> dict:
    """The tiny test SoVITS config shrunk further where V2 lets the config choose."""
    from gsv_onnx.convert.testmodels import sovits_config

    config = sovits_config("tiny", name="gsv-demo")
    config["model"].update(inter_channels=16, filter_channels=64, n_layers=2, upsample_initial_channel=32)
    return config


def write_demo_models(directory: Path, seed: int):
    """Random demo checkpoints in upstream's formats + tiny HuBERT/RoBERTa directories."""
    from collections import OrderedDict

    from gsv_onnx.convert import gpt, sovits
    from gsv_onnx.convert.ssl_bert import make_random_bert_dir, make_random_hubert_dir
    from gsv_onnx.convert.testmodels import _atomic_save, test_model_paths, write_sovits_checkpoint

    paths = test_model_paths(directory, size="tiny", name="gsv-demo")
    gpt_cfg = demo_gpt_config()
    gpt_model = gpt.random_init_(gpt.Text2SemanticDecoder.from_config(gpt_cfg["model"]), seed=seed)
    weight = OrderedDict(
        (gpt.CHECKPOINT_PREFIX + k, v.detach().half()) for k, v in gpt_model.state_dict().items()
    )
    _atomic_save({"weight": weight, "config": gpt_cfg, "info": "GPT-e15"}, paths.gpt)

    sovits_cfg = demo_sovits_config()
    sovits_model = sovits.random_init_(sovits.create_sovits(sovits_cfg), seed=seed + 1)
    sovits_weight = {k: v.detach().half() for k, v in sovits_model.state_dict().items()}
    write_sovits_checkpoint(paths.sovits, weight=sovits_weight, config=sovits_cfg)
    make_random_hubert_dir(paths.hubert, size="tiny", seed=seed + 2)
    keep_hubert_layers(paths.hubert, DEMO_HUBERT_LAYERS)
    make_random_bert_dir(paths.bert, size="tiny", seed=seed + 3)
    keep_bert_vocabulary(paths.bert, DEMO_BERT_VOCAB, DEMO_TEXT + REFERENCE_TEXT)
    return paths


def _load_weights(directory: Path):
    import torch

    return torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)


def _save_weights(directory: Path, state: dict, config: dict) -> None:
    import torch

    torch.save(state, directory / "pytorch_model.bin")
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def keep_hubert_layers(directory: Path, layers: int) -> None:
    """Drop the HuBERT transformer layers past `layers` (config and weights stay consistent)."""
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    state = _load_weights(directory)
    dropped = tuple(f"encoder.layers.{i}." for i in range(layers, int(config["num_hidden_layers"])))
    state = {k: v for k, v in state.items() if not k.startswith(dropped)}
    config["num_hidden_layers"] = layers
    _save_weights(directory, state, config)


def keep_bert_vocabulary(directory: Path, size: int, must_have: str) -> None:
    """Keep the first `size` tokens of the BERT vocabulary (specials, punctuation, ASCII, then
    the most frequent characters), plus the characters of `must_have`; token ids below `size`
    keep their rows, so the tokenizer's special-token ids do not change."""
    tokenizer_path = directory / "tokenizer.json"
    tokenizer = json.loads(tokenizer_path.read_text(encoding="utf-8"))
    vocab: dict[str, int] = tokenizer["model"]["vocab"]
    kept_ids = sorted(i for i in vocab.values() if i < size)
    kept_ids += sorted({vocab[c] for c in must_have if vocab.get(c, -1) >= size})
    new_id = {old: new for new, old in enumerate(kept_ids)}
    tokenizer["model"]["vocab"] = {
        t: new_id[i] for t, i in sorted(vocab.items(), key=lambda x: x[1]) if i in new_id
    }
    for added in tokenizer.get("added_tokens", []):
        added["id"] = new_id[added["id"]]
    tokenizer_path.write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")

    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    state = _load_weights(directory)
    rows = list(kept_ids)
    for key in ("bert.embeddings.word_embeddings.weight", "cls.predictions.bias"):
        state[key] = state[key][rows].clone()
    # the MLM decoder is tied to the word embeddings, as transformers saves it
    state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]
    state["cls.predictions.decoder.bias"] = state["cls.predictions.bias"]
    config["vocab_size"] = len(rows)
    _save_weights(directory, state, config)


def synthetic_reference(
    seconds: float = REFERENCE_SECONDS, rate: int = REFERENCE_RATE, seed: int = 0
) -> np.ndarray:
    """A voice-like test signal in [-1, 1]: a gliding harmonic tone with vibrato, shaped into
    syllables, plus a little breath noise. Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 140 + 25 * np.sin(2 * np.pi * 0.4 * t) + 3 * np.sin(2 * np.pi * 5.5 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = sum((0.6 / k) * np.sin(k * phase) for k in range(1, 12))
    syllables = np.clip(np.sin(2 * np.pi * 2.2 * t), 0, None) ** 0.6  # ~4.4 syllables per second
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.05)
    noise = rng.normal(0, 0.02, t.shape)
    wave = (voiced * syllables + noise) * fade
    return (0.5 * wave / np.max(np.abs(wave))).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8", "int4"),
        default="int4",
        help="bundle precision (default int4)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)

    import soundfile

    from gsv_onnx.bundle import Bundle
    from gsv_onnx.convert.pipeline import convert

    started = time.perf_counter()
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gsv-demo-models-") as tmp:
        models = write_demo_models(Path(tmp), args.seed)
        summary = convert(
            models.gpt,
            models.sovits,
            models.hubert,
            models.bert,
            out_dir / "demo.gsv",
            precision=args.precision,
            force=True,
            progress=lambda stage, message, elapsed: print(
                f"[{elapsed:6.1f}s] {stage:<6} {message}", file=sys.stderr
            ),
        )
    print(summary.format())
    reference = out_dir / "reference.wav"
    soundfile.write(reference, synthetic_reference(seed=args.seed), REFERENCE_RATE, subtype="PCM_16")
    demo = {
        "bundle": "demo.gsv",
        "reference": reference.name,
        "reference_text": REFERENCE_TEXT,
        "reference_lang": "zh",
        "text": DEMO_TEXT,
        "lang": "auto",
        "note": "random weights: the demo bundle speaks noise; it shows that every stage runs",
    }
    (out_dir / "demo.json").write_text(
        json.dumps(demo, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    for stray in out_dir.glob(".demo.gsv*"):
        shutil.rmtree(stray, ignore_errors=True)
    Bundle.load(out_dir / "demo.gsv")
    total = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    print(f"demo assets in {out_dir}: {total / 2**20:.1f} MiB in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
