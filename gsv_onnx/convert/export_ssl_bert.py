"""ONNX export and verification of graphs (d) ``reference_encoder`` and (e) ``bert`` (design.md).

(d) wav16k float32 [1, N] -> HuBERT -> [1, 768, T50] -> SoVITS top-level ``ssl_proj`` + nearest
    codebook entry (``sovits_model.extract_latent``) -> ``prompt_codes`` int64 [1, T_codes].
(e) input_ids, attention_mask, token_type_ids int64 [1, T_tok] -> ``hidden`` float32
    [1, T_tok, bert_hidden] = hidden_states[-3].

Verification runs the exported file in ONNX Runtime and the PyTorch module on the same inputs (two
lengths, so the symbolic dimensions are exercised) and returns the errors by name.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gsv_onnx.convert import export_torchscript, require_torch
from gsv_onnx.convert.ssl_bert import bert_tokenizer_file, copy_file_atomic
from gsv_onnx.errors import CheckpointError, GraphMismatchError
from gsv_onnx.fileio import atomic_output

torch = require_torch()
nn = torch.nn

REFERENCE_ENCODER_FILE = "reference_encoder.onnx"
BERT_FILE = "bert.onnx"
HUBERT_RATE = 16000
REFERENCE_PAD_SAMPLES = 9600  # 0.3 s at 32 kHz, appended to the 16 kHz signal (spec §4.1)

# Tolerance for BERT parity on fp32 graphs: LayerNorm/GELU reorderings in ORT stay far below this.
BERT_TOLERANCE = 1e-3
# Prompt codes come from an argmin: on a real model a near-tie may flip under float reordering, so the
# verify stage accepts up to this fraction of differing codes (the tiny test model must match exactly).
CODES_MISMATCH_TOLERANCE = 0.02


class ReferenceEncoder(nn.Module):
    """wav16k [1, N] -> prompt_codes int64 [1, T_codes]: HuBERT then the SoVITS prompt extractor."""

    def __init__(self, hubert: nn.Module, sovits_model: nn.Module) -> None:
        super().__init__()
        self.hubert = hubert
        self.sovits_model = sovits_model

    def forward(self, wav16k):
        """Codes of the reference: ``extract_latent(hubert(wav16k))[0]`` as int64 (spec §3.5, §4.1)."""
        ssl_features = self.hubert(wav16k)
        codes = self.sovits_model.extract_latent(ssl_features)  # [1, 1, T_codes]
        return codes[0].to(torch.int64)


def _test_wave(num_samples: int, seed: int) -> np.ndarray:
    """A deterministic speech-like test signal (harmonics + noise, amplitude < 1) plus the zero pad."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / HUBERT_RATE
    f0 = 120.0 + 30.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / HUBERT_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    wave = 0.3 * voiced * (0.6 + 0.4 * np.sin(2 * np.pi * 3.0 * t)) + 0.02 * rng.standard_normal(num_samples)
    wave = np.concatenate([wave, np.zeros(REFERENCE_PAD_SAMPLES)])
    return wave.astype(np.float32)[None, :]


# --------------------------------------------------------------------------------------------------
# (d) reference_encoder


def export_reference_encoder(hubert: nn.Module, sovits_model: nn.Module, out_dir: str | os.PathLike) -> Path:
    """Write ``reference_encoder.onnx`` into ``out_dir``; returns its path.

    ``hubert`` is ``load_hubert(...)``; ``sovits_model`` provides ``extract_latent(ssl_features)
    -> codes [1, 1, T]`` (SoVITS top-level ssl_proj + nearest codebook entry).
    """
    module = ReferenceEncoder(hubert, sovits_model).eval()
    example = torch.from_numpy(_test_wave(HUBERT_RATE, seed=0))
    return export_torchscript(
        module,
        (example,),
        Path(out_dir) / REFERENCE_ENCODER_FILE,
        input_names=["wav16k"],
        output_names=["prompt_codes"],
        dynamic_axes={"wav16k": {1: "N"}, "prompt_codes": {1: "T_codes"}},
    )


def verify_reference_encoder(
    hubert: nn.Module,
    sovits_model: nn.Module,
    onnx_path: str | os.PathLike,
    seconds: tuple[float, ...] = (3.0, 4.3),
    seed: int = 0,
    check: bool = True,
) -> dict[str, float]:
    """Run the exported reference encoder in ONNX Runtime and in PyTorch on test waves; compare.

    Returns ``{"prompt_codes_mismatch": n, "prompt_codes_total": m, "prompt_codes_max_abs_diff": d}``
    summed over the test lengths (``seconds`` of signal, each followed by the 9,600-sample pad).
    Codes come from an argmin, so parity means ``prompt_codes_mismatch == 0``. A shape mismatch
    counts every code as mismatched. With ``check`` (default), more than
    ``CODES_MISMATCH_TOLERANCE`` of the codes differing raises GraphMismatchError.
    """
    session = _session(onnx_path)
    module = ReferenceEncoder(hubert, sovits_model).eval()
    mismatch = total = 0
    max_diff = 0.0
    for i, secs in enumerate(seconds):
        wave = _test_wave(int(round(secs * HUBERT_RATE)), seed=seed + i)
        with torch.no_grad():
            expected = module(torch.from_numpy(wave)).numpy()
        got = session.run(["prompt_codes"], {"wav16k": wave})[0]
        total += expected.size
        if got.shape != expected.shape or got.dtype != np.int64:
            mismatch += expected.size
            max_diff = float("inf")
            continue
        mismatch += int(np.count_nonzero(got != expected))
        max_diff = max(max_diff, float(np.abs(got - expected).max(initial=0)))
    if check and mismatch > CODES_MISMATCH_TOLERANCE * total:
        raise GraphMismatchError(
            f"{onnx_path}: {mismatch} of {total} prompt codes differ between ONNX Runtime and PyTorch "
            f"(allowed {CODES_MISMATCH_TOLERANCE:.0%}); this is a converter bug, please report it"
        )
    return {
        "prompt_codes_mismatch": float(mismatch),
        "prompt_codes_total": float(total),
        "prompt_codes_max_abs_diff": max_diff,
    }


# --------------------------------------------------------------------------------------------------
# (e) bert


def _bert_vocab_size(bert: nn.Module) -> int:
    return int(bert.bert.embeddings.word_embeddings.num_embeddings)


def _bert_inputs(vocab_size: int, num_chars: int, seed: int) -> dict[str, np.ndarray]:
    """Random token ids (any id of the vocabulary: parity does not depend on which), mask of ones."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab_size, size=(1, num_chars + 2)).astype(np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def export_bert(bert: nn.Module, out_dir: str | os.PathLike) -> Path:
    """Write ``bert.onnx`` (graph (e): hidden_states[-3] per token) into ``out_dir``; returns its path."""
    example = _bert_inputs(_bert_vocab_size(bert), num_chars=6, seed=0)
    args = tuple(
        torch.from_numpy(example[name]) for name in ("input_ids", "attention_mask", "token_type_ids")
    )
    path = export_torchscript(
        bert.eval(),
        args,
        Path(out_dir) / BERT_FILE,
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["hidden"],
        dynamic_axes={
            "input_ids": {1: "T_tok"},
            "attention_mask": {1: "T_tok"},
            "token_type_ids": {1: "T_tok"},
            "hidden": {1: "T_tok"},
        },
    )
    _restore_unused_inputs(path, ["input_ids", "attention_mask", "token_type_ids"], [1, "T_tok"])
    return path


def _restore_unused_inputs(path: Path, names: list[str], shape: list) -> None:
    """Add back int64 inputs the TorchScript exporter dropped because nothing reads them.

    A 2-layer BERT's hidden_states[-3] is the embedding output, which ignores ``attention_mask``;
    the graph contract (e) still lists it, and the runtime feeds it.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    present = {value.name for value in model.graph.input}
    missing = [name for name in names if name not in present]
    if not missing:
        return
    inputs = list(model.graph.input)
    for name in missing:
        inputs.insert(names.index(name), helper.make_tensor_value_info(name, TensorProto.INT64, shape))
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    with atomic_output(path, suffix=".onnx.tmp") as tmp:
        onnx.save_model(model, str(tmp))


def verify_bert(
    bert: nn.Module,
    onnx_path: str | os.PathLike,
    lengths: tuple[int, ...] = (3, 17),
    seed: int = 0,
    check: bool = True,
) -> dict[str, float]:
    """Compare ONNX Runtime and PyTorch on random character sequences of the given lengths.

    Returns ``{"hidden_max_abs_error": e}`` (inf on a shape mismatch). With ``check`` (default), an
    error above ``BERT_TOLERANCE`` raises GraphMismatchError.
    """
    session = _session(onnx_path)
    vocab_size = _bert_vocab_size(bert)
    worst = 0.0
    for i, num_chars in enumerate(lengths):
        feeds = _bert_inputs(vocab_size, num_chars, seed + i)
        with torch.no_grad():
            expected = bert(
                *(torch.from_numpy(feeds[n]) for n in ("input_ids", "attention_mask", "token_type_ids"))
            ).numpy()
        got = session.run(["hidden"], feeds)[0]
        if got.shape != expected.shape:
            worst = float("inf")
            break
        worst = max(worst, float(np.abs(got - expected).max()))
    if check and not worst <= BERT_TOLERANCE:
        raise GraphMismatchError(
            f"{onnx_path}: BERT hidden states differ between ONNX Runtime and PyTorch by {worst:.3g} "
            f"(allowed {BERT_TOLERANCE:g}); this is a converter bug, please report it"
        )
    return {"hidden_max_abs_error": worst}


# --------------------------------------------------------------------------------------------------
# tokenizer


def write_tokenizer(bert_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Copy the BERT tokenizer (tokenizer.json, else vocab.txt) from ``bert_dir`` into ``out_dir``.

    The file is checked to load with the ``tokenizers`` library first, so a broken tokenizer stops
    the conversion rather than the first synthesis. Returns the written path.
    """
    source = bert_tokenizer_file(bert_dir)
    try:
        from tokenizers import Tokenizer
        from tokenizers.implementations import BertWordPieceTokenizer

        if source.name == "tokenizer.json":
            Tokenizer.from_file(str(source))
        else:
            BertWordPieceTokenizer(str(source))
    except Exception as exc:
        raise CheckpointError(
            f"BERT tokenizer {source} cannot be loaded ({exc}): restore the file from the original model folder"
        ) from exc
    return copy_file_atomic(source, Path(out_dir) / source.name)


def _session(onnx_path: str | os.PathLike):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
