"""Precision variants of exported graphs: `quantize_graph(path, precision) -> Path`.

Precisions (the graph boundary stays float32 whatever the variant):

* ``fp32``: the graph as exported (returned unchanged).
* ``fp16``: weights *stored* as float16, each followed by a Cast to float32 that ONNX Runtime
  folds when the session loads, so compute stays fp32 at fp32 speed. Half the disk size; exact for
  GPT-SoVITS checkpoints, whose weights are fp16 on disk anyway. Only MatMul/Gemm/Conv weights
  are rounded; other tensors (embeddings, the sinusoidal table) become fp16 only where exact.
* ``int8``: dynamic quantization of every MatMul/Gemm with a constant weight: signed int8 weights
  (QInt8, per output channel), activations quantized per call. ONNX Runtime runs these as
  DynamicQuantizeMatMul, whose x86 kernel uses AVX-512 VNNI / AVX2 int8 dot products; the
  attention products on the KV cache (no constant operand) stay fp32. The GPT prefill's and
  BERT's choice (the GPT decode step's int8 form is weight-only 8-bit, see `quantize_gpt`).
* ``int4``: weight-only 4-bit blocks (MatMulNBits, block 32, symmetric) on constant-weight
  MatMuls; activations stay fp32. Meant for BERT-like graphs where weight size dominates.

`quantize_gpt` does the GPT pair and stores the weights both graphs share once. Its int8 decode
graph differs from `quantize_graph(..., "int8")`: the one-row decode step runs its matmuls as
MatMulNBits (8-bit symmetric weight blocks of GPT_INT8_DECODE_BLOCK, accuracy_level 4 = int8
activations and VNNI dot products), measured ~25% faster per token than DynamicQuantizeMatMul on
2 Zen 4 cores and closer to fp32 (logit error 0.32 vs 0.39, greedy agreement 200/200 for both);
the prefill graph (200+ rows, where DynamicQuantizeMatMul is ~1.7x faster) keeps the dynamic form.
"""

from __future__ import annotations

from pathlib import Path

from gsv_onnx.errors import GsvError

PRECISIONS = ("fp32", "fp16", "int8", "int4")
#: Initializers below this size stay float32 in the fp16 variant (scalars, shape constants).
FP16_MIN_ELEMENTS = 256
#: Weight block (rows of K) of the GPT int8 decode graph's MatMulNBits: 256 (the largest the
#: quantizer takes) ran 4-15 % faster per step than 128 and 32 on 2 Zen 4 cores, with the same
#: fidelity on the full-size random GPT (greedy agreement 200/200, logit error 0.20 vs 0.18).
GPT_INT8_DECODE_BLOCK = 256


class QuantizeError(GsvError):
    """A precision variant cannot be produced."""


def _check_precision(precision: str) -> None:
    """QuantizeError naming the choices when `precision` is not one of PRECISIONS."""
    if precision not in PRECISIONS:
        raise QuantizeError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")


def variant_path(path: Path, precision: str) -> Path:
    """`gpt_decode.onnx` -> `gpt_decode.int8.onnx` (fp32 keeps the original name)."""
    path = Path(path)
    return path if precision == "fp32" else path.with_name(f"{path.stem}.{precision}{path.suffix}")


def quantize_graph(path: str | Path, precision: str, out_path: str | Path | None = None) -> Path:
    """Write the `precision` variant of the ONNX graph at `path`; returns its path.

    `out_path` defaults to `<stem>.<precision>.onnx` next to the input; fp32 returns `path`
    itself. The variant keeps its weights inside the .onnx file (use `share_external_data` to move
    weights common to several graphs into one file). Raises QuantizeError for an unknown precision.
    """
    import onnx

    path = Path(path)
    _check_precision(precision)
    if precision == "fp32":
        return path
    out = Path(out_path) if out_path is not None else variant_path(path, precision)
    if precision == "int8":
        _dynamic_int8(path, out)
        _drop_external_data_file_refs(out)
    elif precision == "int4":
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(onnx.load(str(path)), bits=4, block_size=32, is_symmetric=True)
        quantizer.process()
        onnx.save_model(quantizer.model.model, str(out))
    else:
        model = onnx.load(str(path))
        _store_weights_fp16(model)
        onnx.save_model(model, str(out))
    return out


def _dynamic_int8(path: Path, out: Path, nodes: list[str] | None = None) -> None:
    """Dynamic int8 (signed per-channel weights) on the constant-weight MatMul/Gemm nodes of `path`
    (only `nodes` when given), written to `out`."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(path),
        str(out),
        op_types_to_quantize=["MatMul", "Gemm"],
        nodes_to_quantize=nodes,
        per_channel=True,
        reduce_range=False,
        weight_type=QuantType.QInt8,
        # DefaultTensorType: shape inference cannot see through com.microsoft ops (GQA)
        extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def _weight_only_int8(path: Path, out: Path) -> Path:
    """MatMulNBits variant of `path`: 8-bit symmetric weights in blocks, int8 compute (level 4)."""
    import onnx

    model = _matmul_nbits(onnx.load(str(path)), 8, GPT_INT8_DECODE_BLOCK, 4, op_types=("MatMul", "Gemm"))
    if not any(node.op_type == "MatMulNBits" for node in model.graph.node):
        raise QuantizeError(f"{path.name} has no constant-weight MatMul/Gemm to quantize; is it a GPT graph?")
    onnx.save_model(model, str(out))
    return out


def _drop_external_data_file_refs(path: Path) -> None:
    """Re-save a model whose tensors are all inline, so it has no dangling external references."""
    import onnx

    model = onnx.load(str(path))
    onnx.save_model(model, str(path))


def _store_weights_fp16(model, round_any: bool = False) -> None:
    """Replace float32 initializers by float16 ones plus a Cast back to float32 (folded at load).

    Tensors that fp16 does not hold exactly are rounded only where they are matmul/conv weights,
    unless `round_any` (the SoVITS decoder, whose folded weight-norm weights are never exact and
    whose other tables tolerate rounding: waveform SNR > 60 dB).
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    weight_ops = ("MatMul", "Gemm", "Conv", "ConvTranspose")
    weight_inputs = {node.input[1] for node in model.graph.node if node.op_type in weight_ops}
    other_inputs = {
        name
        for node in model.graph.node
        for index, name in enumerate(node.input)
        if not (node.op_type in weight_ops and index == 1)
    }
    casts = []
    for tensor in model.graph.initializer:
        if tensor.data_type != onnx.TensorProto.FLOAT:
            continue
        array = numpy_helper.to_array(tensor)
        if array.size < FP16_MIN_ELEMENTS or not np.all(np.abs(array) < 65504):
            continue  # small constants, or values that fp16 cannot hold
        exact = np.array_equal(array.astype(np.float16).astype(np.float32), array)
        if not (exact or round_any) and (tensor.name not in weight_inputs or tensor.name in other_inputs):
            continue  # rounding is only acceptable for matmul/conv weights (not e.g. the sinusoidal table)
        name = tensor.name
        half = numpy_helper.from_array(array.astype(np.float16), name=f"{name}__fp16")
        tensor.CopyFrom(half)
        casts.append(
            helper.make_node("Cast", [half.name], [name], to=onnx.TensorProto.FLOAT, name=f"{name}__cast")
        )
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(casts + nodes)


def quantize_gpt(paths: dict[str, Path], precision: str) -> dict[str, Path]:
    """The `precision` variant of both GPT graphs from `export_gpt`'s result.

    Weights the two graphs share are stored once, in `gpt.<precision>.onnx.data`. Returns
    {"gpt_prefill", "gpt_decode", "gpt_data"} like `export_gpt` (fp32: the input unchanged).
    """
    from gsv_onnx.convert.export_gpt import share_external_data

    if precision == "fp32":
        return dict(paths)
    if precision == "int4":
        raise QuantizeError(
            "int4 is not offered for the GPT (its decode step is bound by int8 kernels); use int8"
        )
    out = {"gpt_prefill": quantize_graph(paths["gpt_prefill"], precision)}
    if precision == "int8":
        out["gpt_decode"] = _weight_only_int8(
            paths["gpt_decode"], variant_path(paths["gpt_decode"], precision)
        )
    else:
        out["gpt_decode"] = quantize_graph(paths["gpt_decode"], precision)
    data_name = f"gpt.{precision}.onnx.data"
    share_external_data([out["gpt_prefill"], out["gpt_decode"]], data_name)
    out["gpt_data"] = out["gpt_prefill"].parent / data_name
    return out


# ---------------------------------------------------------------------------------------------
# BERT and HuBERT reference-encoder variants (owner: memory/load side). See `quantize_bert` and
# `quantize_reference_encoder`; measured figures are in docs/performance.md.

#: Weight block (rows of K) of BERT's 4-bit MatMulNBits: 32 keeps the feature error of 4 bits low.
BERT_INT4_BLOCK = 32
#: MatMulNBits accuracy level of BERT's 4-bit matmuls (4 = int8 activations, VNNI dot products).
BERT_INT4_ACCURACY_LEVEL = 4
#: Gather tables (embeddings) with at least this many elements are stored as float16 in the int8 and
#: int4 BERT variants; the gathered rows are cast back to float32 (the table is never expanded).
FP16_GATHER_MIN_ELEMENTS = 1 << 20


def quantize_bert(path: str | Path, precision: str, out_path: str | Path | None = None) -> Path:
    """Write the `precision` variant of `bert.onnx`; returns its path (fp32 returns `path`).

    * int4: 4-bit weight-only MatMulNBits (blocks of BERT_INT4_BLOCK, symmetric, int8 compute) on
      every constant-weight MatMul, and the word-embedding table stored as float16 and gathered in
      float16 (a Cast follows the Gather, so only the looked-up rows become float32).
    * int8: `quantize_graph(..., "int8")` (dynamic int8 MatMuls) plus the same float16 embeddings.
    * fp16: `quantize_graph(..., "fp16")`.

    Raises QuantizeError for an unknown precision or a graph without MatMuls to quantize.
    """
    import onnx

    path = Path(path)
    _check_precision(precision)
    if precision == "fp32":
        return store_weights_externally(path)
    if precision == "fp16":
        return store_weights_externally(quantize_graph(path, precision, out_path))
    out = Path(out_path) if out_path is not None else variant_path(path, precision)
    if precision == "int8":
        quantize_graph(path, "int8", out)
        model = onnx.load(str(out))
    else:
        model = _matmul_nbits(
            onnx.load(str(path)), bits=4, block_size=BERT_INT4_BLOCK, accuracy_level=BERT_INT4_ACCURACY_LEVEL
        )
        if not any(node.op_type == "MatMulNBits" for node in model.graph.node):
            raise QuantizeError(f"{path.name} has no constant-weight MatMul to quantize; is it a BERT graph?")
    gather_tables_fp16(model)
    _save_external(model, out)
    return out


def quantize_reference_encoder(path: str | Path, precision: str, out_path: str | Path | None = None) -> Path:
    """Write the `precision` variant of `reference_encoder.onnx` (HuBERT + prompt extractor).

    * fp32: the graph itself, its weights moved to external data (see `store_weights_externally`).
    * fp16: weights stored as float16 (`quantize_graph`), external data.
    * int8 (and int4, which maps to it): dynamic int8 (signed, per channel) on HuBERT's MatMuls
      only; the convolutional feature extractor, the positional convolution and the prompt
      extractor (ssl_proj and the codebook distances that the argmin reads) stay fp32. Measured on
      the full-size random model (7 clips, 1079 frames): 98.2% of the prompt codes equal fp32's,
      and every differing code is a near-tie (its fp32 distance is within 0.4% of the distance
      spread of the nearest one; the median top-2 gap is 5.8%); 340 -> 136 MB, 2.5x faster load,
      ~40% less CPU per reference.

    Raises QuantizeError for an unknown precision or a graph without HuBERT MatMuls.
    """
    import onnx

    path = Path(path)
    _check_precision(precision)
    if precision == "fp32":
        return store_weights_externally(path)
    out = (
        Path(out_path)
        if out_path is not None
        else variant_path(path, "int8" if precision == "int4" else precision)
    )
    if precision == "fp16":
        return store_weights_externally(quantize_graph(path, precision, out))
    model = onnx.load(str(path), load_external_data=False)
    constants = {t.name for t in model.graph.initializer}
    hubert_matmuls = [
        node.name
        for node in model.graph.node
        if node.op_type in ("MatMul", "Gemm")
        and node.input[1] in constants
        and node.name.startswith("/hubert/")
    ]
    if not hubert_matmuls:
        raise QuantizeError(
            f"{path.name} has no HuBERT MatMuls (/hubert/...) to quantize; is it a reference encoder?"
        )
    _dynamic_int8(path, out, nodes=hubert_matmuls)
    _save_external(onnx.load(str(out)), out)
    return out


#: Initializers of at least this many bytes go to the external data file.
EXTERNAL_DATA_MIN_BYTES = 1024


def store_weights_externally(path: str | Path) -> Path:
    """Rewrite the graph at `path` with its weights in `<file name>.data` next to it; returns `path`.

    ONNX Runtime memory-maps external data on CPU: the weights are not copied out of a parsed
    protobuf, so a session loads faster and never holds a second copy while loading (full-size
    BERT int8: 0.76 s and +290 MB at the peak instead of 1.14 s and +574 MB; the HuBERT reference
    encoder fp32: 0.44 s, +348 MB instead of 0.97 s, +609 MB), and weights that a kernel prepacks
    are not kept twice. A graph already stored this way is left as it is.
    """
    import onnx

    path = Path(path)
    head = onnx.load(str(path), load_external_data=False)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in head.graph.initializer):
        return path
    model = onnx.load(str(path))
    _save_external(model, path)
    return path


def _save_external(model, out: Path) -> None:
    """Save `model` at `out` with initializers >= EXTERNAL_DATA_MIN_BYTES in `<out name>.data`."""
    import onnx

    out = Path(out)
    data = out.with_name(out.name + ".data")
    data.unlink(missing_ok=True)  # save_model appends to an existing data file
    onnx.save_model(
        model,
        str(out),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data.name,
        size_threshold=EXTERNAL_DATA_MIN_BYTES,
    )


def _matmul_nbits(
    model, bits: int, block_size: int, accuracy_level: int | None, op_types: tuple[str, ...] = ("MatMul",)
):
    """`model` with its constant-weight `op_types` nodes as symmetric `bits`-bit MatMulNBits blocks."""
    import logging

    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    config = DefaultWeightOnlyQuantConfig(
        block_size=block_size,
        is_symmetric=True,
        accuracy_level=accuracy_level,
        bits=bits,
        op_types_to_quantize=op_types,
    )
    quantizer = MatMulNBitsQuantizer(
        model,
        bits=bits,
        block_size=block_size,
        is_symmetric=True,
        accuracy_level=accuracy_level,
        op_types_to_quantize=op_types,
        algo_config=config,
    )
    quantizer_logger = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = quantizer_logger.level
    quantizer_logger.setLevel(logging.WARNING)  # one INFO line per skipped node otherwise
    try:
        quantizer.process()
    finally:
        quantizer_logger.setLevel(level)
    return quantizer.model.model


def gather_tables_fp16(model, min_elements: int = FP16_GATHER_MIN_ELEMENTS) -> list[str]:
    """Store large float32 tables read only by Gather as float16, with a Cast after each Gather.

    ONNX Runtime folds a Cast that follows an initializer into a float32 copy at load, which would
    keep the memory of float32; a Cast after the Gather converts only the rows looked up. Returns
    the names of the tables converted (in place). Tables whose values fp16 cannot hold are skipped.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, index))
    converted = []
    new_nodes = []
    for tensor in model.graph.initializer:
        if tensor.data_type != onnx.TensorProto.FLOAT:
            continue
        uses = consumers.get(tensor.name, [])
        if not uses or any(node.op_type != "Gather" or index != 0 for node, index in uses):
            continue
        if int(np.prod(tensor.dims)) < min_elements:
            continue
        array = numpy_helper.to_array(tensor)
        if not np.all(np.abs(array) < 65504):
            continue
        tensor.CopyFrom(numpy_helper.from_array(array.astype(np.float16), name=tensor.name))
        for node, _ in uses:
            gathered = node.output[0]
            node.output[0] = f"{gathered}__fp16"
            new_nodes.append(
                (
                    node.name,
                    helper.make_node(
                        "Cast",
                        [node.output[0]],
                        [gathered],
                        to=onnx.TensorProto.FLOAT,
                        name=f"{node.name}__cast",
                    ),
                )
            )
        converted.append(tensor.name)
    if new_nodes:
        after = dict(new_nodes)
        nodes = []
        for node in model.graph.node:
            nodes.append(node)
            if node.name in after:
                nodes.append(after[node.name])  # right after its Gather: the graph stays sorted
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return converted


# ---------------------------------------------------------------------------------------------
# SoVITS decoder / ref_enc variants (owner: SoVITS side). Separate from the functions above.
#
# The vocoder is ~96% HiFi-GAN convolutions, which quantize_graph's MatMul-based variants do not
# touch. Measured on the full-size random V2 model (benchmarks/sovits_vocoder.py):
# * fp16: every large float weight stored as float16 + Cast (folded at session load); compute and
#   speed stay fp32, the file halves. Weight-norm folding makes the conv weights non-fp16-exact, so
#   this rounds them (waveform SNR vs fp32 > 60 dB).
# * int8: static quantization (s8 per-channel weights, u8 activations calibrated with MinMax on a
#   few random decodes; QOperator format: QLinearConv, QLinearAdd) of every convolution with at
#   least SOVITS_INT8_MIN_CHANNELS output channels: the HiFi-GAN resblocks of the wide stages,
#   conv_pre and cond, and the text encoder (enc_p) and flow, whose ~100 MB of fp32 weights were
#   most of the file for ~7% of the time. The transposed-conv upsamplers are first rewritten as
#   equivalent polyphase Convs (exact in fp32; ConvTranspose has no int8 CPU kernel) and those with
#   >= SOVITS_INT8_MIN_UPSAMPLE_CHANNELS output channels are quantized; resblocks of
#   >= SOVITS_INT8_MIN_RESIDUAL_CHANNELS also add their residual in int8. The graph is simplified
#   once offline first (ORT's basic level: constant folding of the shape arithmetic, standard ONNX
#   ops only), which every session load would otherwise redo. QLinearConv uses VNNI on x86 and int8
#   dot products on ARM64; QLinearAdd is an ORT CPU contrib kernel (every platform). What stays
#   fp32: the 16-channel last stage with its upsampler and conv_post (int8 there costs ~11 dB of
#   SNR for ~11% less CPU), the attention matmuls and the elementwise ops. 10 s of audio, 2 threads:
#   0.91 s (fp32 2.51 s; CPU 1.74 s vs 4.94 s), 44 MB, waveform SNR vs fp32 39-52 dB depending on
#   the random model. int4 has no CPU conv kernel and maps to the int8 variant.

SOVITS_INT8_MIN_CHANNELS = 32
#: A quantized upsampler's output is the residual stream of the next stage: the 32-channel one
#: costs ~3 dB, the 16-channel one ~11 dB, the wider ones < 0.3 dB each.
SOVITS_INT8_MIN_UPSAMPLE_CHANNELS = 64
#: HiFi-GAN resblocks of at least this many channels also add their residual in int8 (QLinearAdd):
#: then a whole resblock runs in uint8 and ORT's NHWC layout keeps no float Transposes around each
#: conv pair (~10% less CPU for < 1 dB); at 32 channels it would cost ~5 dB.
SOVITS_INT8_MIN_RESIDUAL_CHANNELS = 64
#: Name suffix of the Conv that replaces a ConvTranspose upsampler ("<name>/polyphase<stride>").
POLYPHASE_SUFFIX = "/polyphase"
SOVITS_CALIBRATION_RUNS = 4
SOVITS_CALIBRATION_TOKENS = 40


def quantize_sovits_graph(
    path: str | Path,
    precision: str,
    out_path: str | Path | None = None,
    ref_enc_path: str | Path | None = None,
) -> Path:
    """Write the `precision` variant of `sovits_decoder.onnx` or `ref_enc.onnx`; returns its path.

    fp32 returns `path`; fp16 stores weights as float16; int8 (and int4, which maps to it) quantizes
    the decoder's convolutions statically (see the notes above) and keeps `ref_enc` in fp32 (it is
    tiny).
    Calibration of the decoder draws random tokens, phones and prior noise and takes ge from
    `ref_enc_path` (default: `ref_enc.onnx` next to `path`) run on random spectrograms, so a real
    model is calibrated with its own timbre vectors. Raises QuantizeError for an unknown precision.
    """
    import onnx

    path = Path(path)
    _check_precision(precision)
    if precision == "fp32":
        return path
    out = Path(out_path) if out_path is not None else variant_path(path, precision)
    model = onnx.load(str(path))
    is_decoder = any(i.name == "semantic_codes" for i in model.graph.input)
    if precision == "fp16" or not is_decoder:
        if precision != "fp16":
            return path  # ref_enc: 0.6 M weights, negligible time; fp32 is the int8 bundle's choice
        _store_weights_fp16(model, round_any=True)
        onnx.save_model(model, str(out))
        return out
    _sovits_int8(path, model, out, Path(ref_enc_path) if ref_enc_path else path.with_name("ref_enc.onnx"))
    return out


def sovits_int8_nodes(model) -> list[str]:
    """Names of the decoder's Conv nodes that the int8 variant quantizes.

    Every Conv with a constant weight of at least SOVITS_INT8_MIN_CHANNELS output channels, except
    the polyphase upsamplers (see `sovits_polyphase_upsamplers`) of fewer than
    SOVITS_INT8_MIN_UPSAMPLE_CHANNELS output channels per phase.
    """
    from onnx import numpy_helper

    shapes = {t.name: numpy_helper.to_array(t).shape for t in model.graph.initializer}
    names = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        shape = shapes.get(node.input[1])
        if shape is None:
            continue
        channels, min_channels = shape[0], SOVITS_INT8_MIN_CHANNELS
        if POLYPHASE_SUFFIX in node.name:
            channels //= int(node.name.rsplit(POLYPHASE_SUFFIX, 1)[1])
            min_channels = SOVITS_INT8_MIN_UPSAMPLE_CHANNELS
        if channels >= min_channels:
            names.append(node.name)
    return names


def sovits_int8_residual_adds(model) -> list[str]:
    """Names of the residual Add nodes of HiFi-GAN resblocks with >= SOVITS_INT8_MIN_RESIDUAL_CHANNELS."""
    import re

    from onnx import numpy_helper

    shapes = {t.name: numpy_helper.to_array(t).shape for t in model.graph.initializer}
    resblock = re.compile(r"/dec/resblocks\.\d+/")
    channels: dict[str, int] = {}
    for node in model.graph.node:
        match = resblock.match(node.name)
        if match and node.op_type == "Conv" and node.input[1] in shapes:
            channels[match.group(0)] = shapes[node.input[1]][0]
    names = []
    for node in model.graph.node:
        match = resblock.match(node.name)
        if (
            node.op_type == "Add"
            and match
            and channels.get(match.group(0), 0) >= SOVITS_INT8_MIN_RESIDUAL_CHANNELS
        ):
            names.append(node.name)
    return names


def sovits_polyphase_upsamplers(model) -> int:
    """Rewrite each 1-D ConvTranspose of `model` (in place) as a Conv + interleave; returns how many.

    A ConvTranspose of stride s whose output is s times its input (kernel - pads == s, the HiFi-GAN
    upsamplers) computes output sample n·s + r from a few neighbouring inputs with the taps
    r + pad + m·s. One Conv with s·C_out output channels (channel c·s + r holds phase r of channel
    c) computes all phases on the input grid; Reshape (1, C_out, s, L) -> Transpose -> Reshape
    (1, C_out, L·s) interleaves them. The result equals the ConvTranspose up to float rounding, and
    unlike it has an int8 CPU kernel. ConvTransposes of another form are left as they are.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    nodes, rewritten = [], 0
    for node in graph.node:
        weight = initializers.get(node.input[1]) if node.op_type == "ConvTranspose" else None
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if weight is None or len(weight.dims) != 3:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(weight)
        c_in, c_out, kernel = w.shape
        (stride,) = attrs.get("strides", [1])
        pad_begin, pad_end = attrs.get("pads", [0, 0])
        if (
            attrs.get("group", 1) != 1
            or attrs.get("dilations", [1]) != [1]
            or any(attrs.get("output_padding", []))
            or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
            or "output_shape" in attrs
            or kernel - pad_begin - pad_end != stride
        ):
            nodes.append(node)
            continue
        # out[c, n·s + r] = sum over m of W[:, c, m·s + r + pad_begin] · x[:, n - m]
        first = min(-((r + pad_begin) // stride) for r in range(stride))
        last = max((kernel - 1 - r - pad_begin) // stride for r in range(stride))
        taps = last - first + 1
        phase_weight = np.zeros((c_out * stride, c_in, taps), dtype=w.dtype)
        for r in range(stride):
            for m in range(first, last + 1):
                k = m * stride + r + pad_begin
                if 0 <= k < kernel:
                    phase_weight[r::stride, :, last - m] = w[:, :, k].T
        name = f"{node.name}{POLYPHASE_SUFFIX}{stride}"
        inputs = [node.input[0], f"{name}.weight"]
        graph.initializer.append(numpy_helper.from_array(phase_weight, inputs[1]))
        if len(node.input) > 2 and node.input[2]:
            bias = np.repeat(numpy_helper.to_array(initializers[node.input[2]]), stride)
            inputs.append(f"{name}.bias")
            graph.initializer.append(numpy_helper.from_array(bias, inputs[2]))
        for suffix, shape in (("split_shape", [0, c_out, stride, -1]), ("merge_shape", [0, c_out, -1])):
            graph.initializer.append(numpy_helper.from_array(np.array(shape, np.int64), f"{name}.{suffix}"))
        nodes += [
            helper.make_node(
                "Conv", inputs, [f"{name}_phases"], name=name, kernel_shape=[taps], pads=[last, -first]
            ),
            helper.make_node(
                "Reshape", [f"{name}_phases", f"{name}.split_shape"], [f"{name}_split"], name=f"{name}_split"
            ),
            helper.make_node(
                "Transpose",
                [f"{name}_split"],
                [f"{name}_interleaved"],
                name=f"{name}_interleave",
                perm=[0, 1, 3, 2],
            ),
            helper.make_node(
                "Reshape",
                [f"{name}_interleaved", f"{name}.merge_shape"],
                [node.output[0]],
                name=f"{name}_merge",
            ),
        ]
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
        used = {name for node in graph.node for name in node.input}
        kept = [t for t in graph.initializer if t.name in used]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return rewritten


def _sovits_calibration_feeds(model, ref_enc_path: Path) -> list[dict]:
    """Random decoder inputs for calibration; ge comes from the model's own ref_enc when present."""
    import numpy as np
    import onnxruntime as ort

    inputs = {i.name: i for i in model.graph.input}
    inter_channels = inputs["noise"].type.tensor_type.shape.dim[1].dim_value
    gin_channels = inputs["ge"].type.tensor_type.shape.dim[1].dim_value
    ref_enc = None
    if ref_enc_path.is_file():
        ref_enc = ort.InferenceSession(str(ref_enc_path), providers=["CPUExecutionProvider"])
    feeds = []
    for i in range(SOVITS_CALIBRATION_RUNS):
        rng = np.random.default_rng(1000 + i)
        if ref_enc is not None:
            # Magnitude spectra of noise at several levels, like quiet and loud references.
            spec = np.abs(rng.standard_normal((1, 704, 200))) * rng.uniform(0.1, 3.0)
            ge = ref_enc.run(None, {"ref_spec": spec.astype(np.float32)})[0]
        else:
            ge = rng.standard_normal((1, gin_channels, 1))
        tokens = SOVITS_CALIBRATION_TOKENS
        noise_scale = rng.uniform(0.4, 1.0)  # covers noise_scale 0.5 with margin
        feeds.append(
            {
                "semantic_codes": rng.integers(0, 1024, (1, tokens), dtype=np.int64),
                "phone_ids": rng.integers(0, 732, (1, 30), dtype=np.int64),
                "ge": ge.astype(np.float32),
                "speed": np.array([1.0], dtype=np.float32),
                "noise": (noise_scale * rng.standard_normal((1, inter_channels, 2 * tokens))).astype(
                    np.float32
                ),
            }
        )
    return feeds


def _sovits_int8(path: Path, model, out: Path, ref_enc_path: Path) -> None:
    import tempfile

    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    sovits_polyphase_upsamplers(model)
    # the quantizer's codebook and the phone embedding: fp16 rows, cast after the lookup
    gather_tables_fp16(model, min_elements=FP16_MIN_ELEMENTS)
    if not any("/dec/" in name for name in sovits_int8_nodes(model)):
        raise QuantizeError(f"{path.name} has no HiFi-GAN convolutions to quantize; is it a SoVITS decoder?")
    feeds = iter(_sovits_calibration_feeds(model, ref_enc_path))

    class _Reader(CalibrationDataReader):
        def get_next(self):
            return next(feeds, None)

    with tempfile.TemporaryDirectory(prefix="gsv-sovits-int8-") as tmp:
        rewritten, simplified = Path(tmp) / "polyphase.onnx", Path(tmp) / "simplified.onnx"
        onnx.save_model(model, str(rewritten))
        # ORT's basic level offline (standard ONNX ops only): what every session load would redo
        quant_pre_process(str(rewritten), str(simplified), skip_symbolic_shape=True)
        simplified_model = onnx.load(str(simplified), load_external_data=False)
        nodes = sovits_int8_nodes(simplified_model) + sovits_int8_residual_adds(simplified_model)
        del simplified_model
        quantize_static(
            str(simplified),
            str(out),
            _Reader(),
            # QLinearConv / QLinearAdd written out: ~0.13 s less session creation than QDQ pairs
            # that ORT fuses into the same kernels at every load, and ~0.6 dB closer to fp32
            quant_format=QuantFormat.QOperator,
            op_types_to_quantize=["Conv", "Add"],
            nodes_to_quantize=nodes,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    # Re-save with every tensor inline, declaring only the opsets its nodes use (ORT's offline pass
    # lists all of its own domains).
    quantized = onnx.load(str(out))
    used_domains = {node.domain or "" for node in quantized.graph.node} | {""}
    opsets = [o for o in quantized.opset_import if (o.domain or "") in used_domains or o.domain == "ai.onnx"]
    del quantized.opset_import[:]
    quantized.opset_import.extend(opsets)
    onnx.save_model(quantized, str(out))
