#!/usr/bin/env python3
"""Build the demo assets of `gsv demo`: the smallest V2-architecture random bundle + a reference clip.

Writes into gsv_onnx/data/demo/ (or --out):

    demo.gsv/        a bundle converted from random-weight checkpoints in upstream's formats
    reference.flac   3.5 s of a synthetic voiced signal (harmonics, vibrato, syllable envelope,
                     breath noise), 32 kHz mono 16-bit
    demo.json        names both, with the reference transcript and the default demo sentence

The models keep every size V2 hard-codes, so the graphs have the real contracts and the real
computation: 732 phones, 1024-dim BERT input, 768-dim HuBERT, 1024 x 768 codebook, 704 ref_enc
bins, MRTE 512, gin 512, flow and text-encoder hidden 192 (MRTE's content channels). Everything
the configs choose shrinks: a 1-layer 32-wide GPT, a small SoVITS (filter 64, 2 layers, HiFi-GAN
32 channels), a 1-layer HuBERT (FFN 32, conv_dim 16, positional conv kernel 2) and a 2-layer
RoBERTa with a ~110-token vocabulary, whose hidden_states[-3] is the embedding output (no layer
runs). The weights are random, so the demo speaks noise.

The bundle goes through the converter (`convert`, fp32, verified against PyTorch), then:
the GPT graphs get the project's int8 quantization (`quantize_gpt`), and the other four graphs
store their large weights in 4 bits (`--weight-bits 4`, default) or 8 bits, per output channel,
unpacked by plain ONNX ops that ONNX Runtime constant-folds when the session loads (see
`store_weights_lowbit`; compute stays fp32). This is a size choice for random weights only: a
real model keeps the converter's precisions.

The floor (about 11.5 MiB in 4 bits, 19.9 M stored weights) is what V2 fixes: the SoVITS flow,
4 couplings of a 192-wide, kernel-5, 4-layer WaveNet with 512-dim conditioning (10.1 M weights),
MRTE (1.3 M), the 1024 x 768 codebook (in the decoder, and twice in the reference encoder: the
exported distance product stores its transpose too), HuBERT's one 768-wide attention layer
(2.4 M) and ssl_proj (768 x 768 x 2, 1.2 M). Needs the [convert] extra.

    python scripts/make_demo_bundle.py [--out DIR] [--weight-bits 4|8] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "gsv_onnx" / "data" / "demo"
# HuBERT sizes the V2 contract leaves free (hidden_size 768 and 12 heads stay).
DEMO_HUBERT_SHAPE = {
    "conv_dim": [16] * 7,
    "num_hidden_layers": 1,
    "intermediate_size": 32,
    "num_conv_pos_embeddings": 2,
}
# RoBERTa: 2 layers, so hidden_states[-3] is the embedding output and the graph runs no layer.
DEMO_BERT_SHAPE = {"num_hidden_layers": 2, "intermediate_size": 32}
REFERENCE_RATE = 32000
REFERENCE_SECONDS = 3.5
REFERENCE_FILE = "reference.flac"
REFERENCE_TEXT = "这是一段用来演示的参考音频。"
DEMO_TEXT = "你好，欢迎使用 gsv-onnx。This is a demo of the full pipeline."
#: Float initializers with fewer elements keep float32 (biases, norms, scalars, shape constants).
LOWBIT_MIN_ELEMENTS = 4096
#: The graphs whose weights `store_weights_lowbit` packs; the GPT pair gets quantize_gpt's int8.
LOWBIT_GRAPHS = ("sovits_decoder", "ref_enc", "reference_encoder", "bert")


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

    from gsv_onnx.convert import gpt, sovits, ssl_bert
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
    # The random-directory writers take their shapes from the "tiny" tables; the demo narrows them.
    with mock.patch.dict(ssl_bert._HUBERT_TINY, DEMO_HUBERT_SHAPE):
        ssl_bert.make_random_hubert_dir(paths.hubert, size="tiny", seed=seed + 2)
    with mock.patch.dict(ssl_bert._BERT_TINY, DEMO_BERT_SHAPE):
        ssl_bert.make_random_bert_dir(paths.bert, size="tiny", seed=seed + 3)
    keep_bert_vocabulary(paths.bert, DEMO_TEXT + REFERENCE_TEXT)
    return paths


def _load_weights(directory: Path):
    import torch

    return torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)


def _save_weights(directory: Path, state: dict, config: dict) -> None:
    import torch

    torch.save(state, directory / "pytorch_model.bin")
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def keep_bert_vocabulary(directory: Path, must_have: str) -> None:
    """Keep the BERT vocabulary's non-CJK tokens (specials, punctuation, ASCII) plus the characters
    of `must_have`; other characters become [UNK]. The non-CJK tokens come first in the tiny
    vocabulary, so their ids (and the tokenizer's special-token ids) do not change."""
    tokenizer_path = directory / "tokenizer.json"
    tokenizer = json.loads(tokenizer_path.read_text(encoding="utf-8"))
    vocab: dict[str, int] = tokenizer["model"]["vocab"]
    first_cjk = min(i for t, i in vocab.items() if len(t) == 1 and "\u4e00" <= t <= "\u9fff")
    kept_ids = sorted(i for i in vocab.values() if i < first_cjk)
    kept_ids += sorted({vocab[c] for c in must_have if vocab.get(c, -1) >= first_cjk})
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


# ---------------------------------------------------------------------------------------------
# Low-bit weight storage for the demo graphs (a size trick for random weights; not a converter
# precision). Kept here rather than in gsv_onnx/convert/quantize.py: the project's quantizers
# target speed on real models (int8 MatMul kernels, QDQ convs) and keep the SoVITS flow fp16/fp32.


def quantize_rows(weights: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel (axis 0) quantization: integer codes in [-(2^(b-1)-1), 2^(b-1)-1]
    (int8 array) and float32 scales shaped to broadcast against `weights` ([C0, 1, ...])."""
    limit = 2 ** (bits - 1) - 1
    rows = (
        weights.reshape(weights.shape[0], -1).astype(np.float32)
        if weights.ndim > 1
        else weights.reshape(1, -1)
    )
    peak = np.abs(rows).max(axis=1, keepdims=True)
    scales = np.where(peak > 0, peak / limit, 1.0).astype(np.float32)
    codes = np.clip(np.rint(rows / scales), -limit, limit).astype(np.int8).reshape(weights.shape)
    scale_shape = (weights.shape[0],) + (1,) * (weights.ndim - 1) if weights.ndim > 1 else (1,)
    return codes, scales.reshape(scale_shape)


def pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """4-bit codes in [-7, 7] -> uint8 [ceil(n/2)]: byte i holds code i + 8 (low nibble) and code
    i + ceil(n/2) + 8 (high nibble), so unpacking is two shifts and one Concat."""
    flat = codes.reshape(-1).astype(np.int16) + 8
    if flat.size % 2:
        flat = np.concatenate([flat, np.full(1, 8, np.int16)])
    half = flat.size // 2
    return (flat[:half] | (flat[half:] << 4)).astype(np.uint8)


def unpack_nibbles(packed: np.ndarray, size: int) -> np.ndarray:
    """Inverse of `pack_nibbles` in numpy (the graph does the same with BitShift): int8 codes [size]."""
    low = (packed & 0x0F).astype(np.int16) - 8
    high = (packed >> 4).astype(np.int16) - 8
    return np.concatenate([low, high])[:size].astype(np.int8)


def store_weights_lowbit(model, bits: int = 4, min_elements: int = LOWBIT_MIN_ELEMENTS) -> int:
    """Replace every float32 initializer of the main graph with at least `min_elements` values by
    `bits`-bit integer codes + per-channel float32 scales and the ONNX nodes that rebuild the
    float32 tensor under its old name. Returns how many initializers were replaced.

    8 bits: int8 codes -> Cast -> Mul(scale). 4 bits: uint8 bytes of two codes -> BitShift
    (high nibble; low nibble by a left then right shift) -> Concat -> [Slice] -> Reshape -> Cast
    -> Sub(8) -> Mul(scale). The inputs are constants, so ONNX Runtime folds the whole
    reconstruction into a float32 initializer when the session loads; the graph boundary and
    compute stay float32.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, not {bits}")
    graph = model.graph
    graph_inputs = {value.name for value in graph.input}
    new_nodes, new_initializers, kept = [], [], []
    replaced = 0
    if bits == 4:
        new_initializers += [
            numpy_helper.from_array(np.array(4, np.uint8), "demo_lowbit__four"),
            numpy_helper.from_array(np.array(8.0, np.float32), "demo_lowbit__eight"),
        ]
    for tensor in graph.initializer:
        count = int(np.prod(tensor.dims)) if tensor.dims else 1
        if tensor.data_type != TensorProto.FLOAT or count < min_elements or tensor.name in graph_inputs:
            kept.append(tensor)
            continue
        weights = numpy_helper.to_array(tensor)
        codes, scales = quantize_rows(weights, bits)
        name = tensor.name
        prefix = f"{name}__q{bits}"
        new_initializers.append(numpy_helper.from_array(scales, f"{prefix}_scale"))
        if bits == 8:
            new_initializers.append(numpy_helper.from_array(codes, f"{prefix}_codes"))
            new_nodes += [
                helper.make_node("Cast", [f"{prefix}_codes"], [f"{prefix}_float"], to=TensorProto.FLOAT),
                helper.make_node("Mul", [f"{prefix}_float", f"{prefix}_scale"], [name]),
            ]
        else:
            packed = pack_nibbles(codes)
            new_initializers += [
                numpy_helper.from_array(packed, f"{prefix}_packed"),
                numpy_helper.from_array(np.array(weights.shape, np.int64), f"{prefix}_shape"),
            ]
            two_halves = f"{prefix}_nibbles"
            new_nodes += [
                helper.make_node(
                    "BitShift",
                    [f"{prefix}_packed", "demo_lowbit__four"],
                    [f"{prefix}_high"],
                    direction="RIGHT",
                ),
                helper.make_node(
                    "BitShift",
                    [f"{prefix}_packed", "demo_lowbit__four"],
                    [f"{prefix}_shifted"],
                    direction="LEFT",
                ),
                helper.make_node(
                    "BitShift",
                    [f"{prefix}_shifted", "demo_lowbit__four"],
                    [f"{prefix}_low"],
                    direction="RIGHT",
                ),
                helper.make_node("Concat", [f"{prefix}_low", f"{prefix}_high"], [two_halves], axis=0),
            ]
            if 2 * packed.size != weights.size:  # odd element count: drop the padding code
                new_initializers += [
                    numpy_helper.from_array(np.array([0], np.int64), f"{prefix}_start"),
                    numpy_helper.from_array(np.array([weights.size], np.int64), f"{prefix}_end"),
                ]
                new_nodes.append(
                    helper.make_node(
                        "Slice", [two_halves, f"{prefix}_start", f"{prefix}_end"], [f"{prefix}_trimmed"]
                    )
                )
                two_halves = f"{prefix}_trimmed"
            new_nodes += [
                helper.make_node("Reshape", [two_halves, f"{prefix}_shape"], [f"{prefix}_u4"]),
                helper.make_node("Cast", [f"{prefix}_u4"], [f"{prefix}_biased"], to=TensorProto.FLOAT),
                helper.make_node("Sub", [f"{prefix}_biased", "demo_lowbit__eight"], [f"{prefix}_float"]),
                helper.make_node("Mul", [f"{prefix}_float", f"{prefix}_scale"], [name]),
            ]
        replaced += 1
    del graph.initializer[:]
    graph.initializer.extend(kept + new_initializers)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(new_nodes + nodes)  # producers first: the graph stays topologically sorted
    onnx.checker.check_model(model)
    return replaced


def shrink_bundle(bundle_dir: Path, weight_bits: int) -> None:
    """Turn the fp32 bundle at `bundle_dir` into the demo's precisions in place: GPT int8 through the
    project's quantizer, the other graphs' weights in `weight_bits` bits; rewrite the manifest
    (checksums, precisions) and remove the fp32 files."""
    import onnx

    from gsv_onnx.bundle import MANIFEST_NAME, Bundle, write_manifest
    from gsv_onnx.convert.quantize import quantize_gpt, variant_path

    bundle = Bundle.load(bundle_dir, verify=True)
    manifest = bundle.manifest
    before = {p.name for p in bundle_dir.iterdir()}
    graphs = {name: bundle.graph_path(name) for name in bundle.graph_names}
    root_logger = logging.getLogger()  # onnxruntime.quantization warns through the root logger
    root_level = root_logger.level
    root_logger.setLevel(logging.ERROR)
    try:
        gpt = quantize_gpt({name: graphs[name] for name in ("gpt_prefill", "gpt_decode")}, "int8")
    finally:
        root_logger.setLevel(root_level)
    graphs.update(gpt_prefill=gpt["gpt_prefill"], gpt_decode=gpt["gpt_decode"])
    precision = f"int{weight_bits}"
    for name in LOWBIT_GRAPHS:
        model = onnx.load(str(graphs[name]))
        store_weights_lowbit(model, weight_bits)
        out = variant_path(graphs[name], precision)
        onnx.save_model(model, str(out))
        graphs[name] = out
    graph_precisions = {name: "int8" if name.startswith("gpt") else precision for name in graphs}
    write_manifest(
        bundle_dir,
        model_version=manifest["model_version"],
        symbol_version=manifest.get("symbol_version", "v2"),
        precision=precision,
        sources=manifest["sources"],
        hparams=manifest["hparams"],
        graphs=graphs,
        tokenizer=bundle.tokenizer_path,
        graph_precisions=graph_precisions,
        warnings=manifest.get("warnings"),
        created=manifest["created"],
    )
    shrunk = Bundle.load(bundle_dir, verify=True)
    referenced = {MANIFEST_NAME, *(entry["file"] for entry in shrunk._file_entries())}
    for stale in before - referenced:
        (bundle_dir / stale).unlink()


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
        "--weight-bits",
        type=int,
        choices=(4, 8),
        default=4,
        help="bits per stored weight of the SoVITS, ref_enc, reference-encoder and BERT graphs (default 4)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)

    import soundfile

    from gsv_onnx.bundle import Bundle
    from gsv_onnx.convert.pipeline import convert

    started = time.perf_counter()
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    bundle_dir = out_dir / "demo.gsv"
    with tempfile.TemporaryDirectory(prefix="gsv-demo-models-") as tmp:
        models = write_demo_models(Path(tmp), args.seed)
        summary = convert(
            models.gpt,
            models.sovits,
            models.hubert,
            models.bert,
            bundle_dir,
            precision="fp32",
            force=True,
            progress=lambda stage, message, elapsed: print(
                f"[{elapsed:6.1f}s] {stage:<6} {message}", file=sys.stderr
            ),
        )
    print(summary.format())
    shrink_bundle(bundle_dir, args.weight_bits)
    for old in ("reference.wav", "reference.flac"):
        (out_dir / old).unlink(missing_ok=True)
    reference = out_dir / REFERENCE_FILE
    soundfile.write(reference, synthetic_reference(seed=args.seed), REFERENCE_RATE, subtype="PCM_16")
    demo = {
        "bundle": bundle_dir.name,
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
    Bundle.load(bundle_dir, verify=True)
    files = sorted(p for p in out_dir.rglob("*") if p.is_file())
    for path in files:
        print(f"{path.stat().st_size / 2**20:8.3f} MiB  {path.relative_to(out_dir)}")
    total = sum(p.stat().st_size for p in files)
    print(f"demo assets in {out_dir}: {total / 2**20:.2f} MiB in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
