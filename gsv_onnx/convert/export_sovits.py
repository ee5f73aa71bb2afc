"""ONNX export of the SoVITS graphs: `sovits_decoder.onnx` (c) and `ref_enc.onnx` (c') of design.md.

Both graphs take dynamic lengths. Weight norm is folded before tracing. The decoder's speed step is a
Resize (linear, half_pixel, like PyTorch's align_corners=False) whose output length is computed in
the graph: T when speed == 1 (then the Resize is an exact identity, so no If node is needed),
otherwise floor(T / speed) + 1. That length is computed in float64 from the float32 `speed` rounded
to 6 decimals, so a speed such as 0.8 (0.800000011920929 in float32) gives the same frame count as
upstream's Python float: the runtime computes F for the noise as floor(2·T_sem / s) + 1 with
s = round(speed, 6) in float64.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gsv_onnx.convert import export_torchscript, require_torch
from gsv_onnx.convert.sovits import REF_ENC_BINS, SovitsV2, fold_weight_norm, frames_for
from gsv_onnx.errors import GraphMismatchError

torch = require_torch()
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

DECODER_FILE = "sovits_decoder.onnx"
REF_ENC_FILE = "ref_enc.onnx"
SPEED_DECIMALS = 6
# fp32 graphs agree with PyTorch to ~1e-6 on audio in [-1, 1]; anything near this is a converter bug.
FP32_TOLERANCE = 1e-4
# ...and, whatever the loudness of the model's output, within this waveform SNR (measured 117-139 dB).
FP32_MIN_SNR_DB = 80.0
# Reduced-precision graphs (fp16 / int8 weights) are judged by waveform SNR against PyTorch instead.
REDUCED_PRECISION_MIN_SNR_DB = 20.0
_REDUCED_PRECISION_OPS = {
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "ConvInteger",
    "QLinearConv",
    "QLinearMatMul",
    "MatMulNBits",
}


# Kept as a name for the SoVITS verify stage; one error type for every graph mismatch.
SovitsGraphMismatchError = GraphMismatchError


class _LinearResize(torch.autograd.Function):
    """Linear resize of (1, C, T) to `sizes` = [1, C, F]; exported as one ONNX Resize node."""

    @staticmethod
    def forward(ctx, x, sizes):  # noqa: D102 - eager path used while tracing
        return F.interpolate(x, size=int(sizes[-1]), mode="linear", align_corners=False)

    @staticmethod
    def symbolic(g, x, sizes):  # noqa: D102 - ONNX graph construction
        empty = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
        return g.op(
            "Resize",
            x,
            empty,
            empty,
            sizes,
            mode_s="linear",
            coordinate_transformation_mode_s="half_pixel",
        )


def speed_frames(y, speed):
    """Frame count after the speed step, as a traced int64 tensor of shape (1,).

    T if speed == 1 else floor(T / s) + 1 with s = round(speed, 6), in float64. Everything is a
    1-element tensor on purpose: the TorchScript exporter treats 0-d tensors and Python scalars as
    "scalars" and silently computes in float32, which floors 300 / 1.2 to 249 instead of 250.
    """
    f64 = torch.float64
    length = torch._shape_as_tensor(y)[2:3].to(f64)
    scale = torch.full((1,), 10.0**SPEED_DECIMALS, dtype=f64)
    one = torch.ones(1, dtype=f64)
    speed64 = torch.round(speed.to(f64).reshape(1) * scale) / scale
    stretched = torch.floor(length / speed64) + one
    return torch.where(speed64 == one, length, stretched).to(torch.int64)


class SovitsDecoderGraph(nn.Module):
    """Graph (c): semantic_codes, phone_ids, ge, speed, noise -> audio (1, 1, F * hop)."""

    def __init__(self, model: SovitsV2) -> None:
        super().__init__()
        self.model = fold_weight_norm(model)

    def forward(self, semantic_codes, phone_ids, ge, speed, noise):
        model = self.model
        latent = model.latent_frames(semantic_codes)
        y = model.enc_p.encode(latent, phone_ids, ge)
        frames = speed_frames(y, speed)
        sizes = torch.cat([torch._shape_as_tensor(y)[:2], frames])
        y = _LinearResize.apply(y, sizes)
        m, logs = model.enc_p.project(y)
        return model.synthesize(m, logs, noise, ge)


class RefEncGraph(nn.Module):
    """Graph (c'): ref_spec (1, 704, T_ref) -> ge (1, gin_channels, 1)."""

    def __init__(self, model: SovitsV2) -> None:
        super().__init__()
        self.ref_enc = fold_weight_norm(model).ref_enc

    def forward(self, ref_spec):
        return self.ref_enc(ref_spec)


def _example_decoder_inputs(model: SovitsV2, num_tokens: int, num_phones: int, speed: float, seed: int):
    gen = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    semantic_codes = torch.randint(0, 1024, (1, num_tokens), generator=gen)
    phone_ids = torch.randint(0, cfg.phone_vocab_size, (1, num_phones), generator=gen)
    ref_spec = torch.rand(1, REF_ENC_BINS, 97, generator=gen) * 2
    with torch.no_grad():
        ge = model.compute_ge(ref_spec)
    noise = 0.5 * torch.randn(1, cfg.inter_channels, frames_for(num_tokens, speed), generator=gen)
    return semantic_codes, phone_ids, ge, torch.tensor([speed], dtype=torch.float32), noise


def _export(
    module: nn.Module, args: tuple, path: Path, input_names, output_names, dynamic_axes, output_shapes
) -> None:
    export_torchscript(module, args, path, input_names, output_names, dynamic_axes)
    _set_output_shapes(path, output_shapes)


def _set_output_shapes(path: Path, shapes: dict[str, list]) -> None:
    """Write the contract's output shapes (the tracer names static batch dims symbolically)."""
    import onnx

    graph_model = onnx.load(str(path))
    for output in graph_model.graph.output:
        if output.name not in shapes:
            continue
        dims = output.type.tensor_type.shape.dim
        for dim, value in zip(dims, shapes[output.name], strict=True):
            if isinstance(value, int):
                dim.Clear()
                dim.dim_value = value
            else:
                dim.Clear()
                dim.dim_param = value
    onnx.save_model(graph_model, str(path))


def export_sovits(model: SovitsV2, out_dir: str | Path) -> dict[str, Path]:
    """Write `sovits_decoder.onnx` and `ref_enc.onnx` into `out_dir`; return {graph name: path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    decoder_path = out_dir / DECODER_FILE
    # Example at speed != 1 so the traced shapes are not specialised to the identity case.
    _export(
        SovitsDecoderGraph(model).eval(),
        _example_decoder_inputs(model, 12, 9, 1.25, seed=0),
        decoder_path,
        ["semantic_codes", "phone_ids", "ge", "speed", "noise"],
        ["audio"],
        {
            "semantic_codes": {1: "T_sem"},
            "phone_ids": {1: "T_phone"},
            "noise": {2: "F"},
            "audio": {2: "N_audio"},
        },
        {"audio": [1, 1, "N_audio"]},
    )
    ref_path = out_dir / REF_ENC_FILE
    _export(
        RefEncGraph(model).eval(),
        (torch.rand(1, REF_ENC_BINS, 23),),
        ref_path,
        ["ref_spec"],
        ["ge"],
        {"ref_spec": {2: "T_ref"}},
        {"ge": [1, model.cfg.gin_channels, 1]},
    )
    return {"sovits_decoder": decoder_path, "ref_enc": ref_path}


def graph_signatures(model: SovitsV2) -> dict[str, dict[str, list[dict]]]:
    """Inputs/outputs of both graphs as the manifest lists them (design.md (c), (c'))."""
    cfg = model.cfg

    def io(name: str, dtype: str, shape: list) -> dict:
        return {"name": name, "dtype": dtype, "shape": shape}

    return {
        "sovits_decoder": {
            "inputs": [
                io("semantic_codes", "int64", [1, "T_sem"]),
                io("phone_ids", "int64", [1, "T_phone"]),
                io("ge", "float32", [1, cfg.gin_channels, 1]),
                io("speed", "float32", [1]),
                io("noise", "float32", [1, cfg.inter_channels, "F"]),
            ],
            "outputs": [io("audio", "float32", [1, 1, "N_audio"])],
        },
        "ref_enc": {
            "inputs": [io("ref_spec", "float32", [1, REF_ENC_BINS, "T_ref"])],
            "outputs": [io("ge", "float32", [1, cfg.gin_channels, 1])],
        },
    }


def verify_sovits(
    model: SovitsV2,
    paths: dict[str, Path],
    speeds: tuple[float, ...] = (1.0, 1.25, 0.8),
    num_tokens: int = 25,
    num_phones: int = 17,
    check: bool = True,
) -> dict[str, float]:
    """Compare ONNX Runtime with the PyTorch model on seeded random inputs.

    Returns `sovits_decoder` (max abs audio error, worst over `speeds`), `sovits_decoder_snr_db`
    (worst waveform SNR) and `ref_enc` (max abs error of ge). With `check`, raises
    SovitsGraphMismatchError when an fp32 graph is off by more than FP32_TOLERANCE (or, for the
    decoder, below FP32_MIN_SNR_DB, which catches errors in a quiet model's output), or when a
    reduced-precision graph (quantized or fp16 weights) falls below REDUCED_PRECISION_MIN_SNR_DB.
    A shape mismatch counts as an infinite error.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    model = model.eval()
    errors: dict[str, float] = {}

    decoder = ort.InferenceSession(str(paths["sovits_decoder"]), options, providers=["CPUExecutionProvider"])
    worst, worst_snr = 0.0, float("inf")
    for i, speed in enumerate(speeds):
        codes, phones, ge, speed_t, noise = _example_decoder_inputs(
            model, num_tokens, num_phones, speed, 100 + i
        )
        with torch.no_grad():
            expected = model.decode(codes, phones, ge, speed, noise).numpy()
        (got,) = decoder.run(
            None,
            {
                "semantic_codes": codes.numpy(),
                "phone_ids": phones.numpy(),
                "ge": ge.numpy(),
                "speed": speed_t.numpy(),
                "noise": noise.numpy(),
            },
        )
        worst = max(worst, _max_abs(got, expected))
        worst_snr = min(worst_snr, waveform_snr_db(got, expected))
    errors["sovits_decoder"] = worst
    errors["sovits_decoder_snr_db"] = worst_snr

    ref_enc = ort.InferenceSession(str(paths["ref_enc"]), options, providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(7)
    spec = torch.rand(1, REF_ENC_BINS, 151, generator=gen) * 3
    with torch.no_grad():
        expected = model.compute_ge(spec).numpy()
    (got,) = ref_enc.run(None, {"ref_spec": spec.numpy()})
    errors["ref_enc"] = _max_abs(got, expected)
    ge_snr = waveform_snr_db(got, expected)  # ge as a signal: judges reduced-precision ref_enc graphs

    if check:
        _check_graph(paths["sovits_decoder"], "sovits_decoder", errors["sovits_decoder"], worst_snr)
        _check_graph(paths["ref_enc"], "ref_enc", errors["ref_enc"], ge_snr, fp32_snr=False)
    return errors


def waveform_snr_db(got: np.ndarray, reference: np.ndarray) -> float:
    """10·log10(sum ref² / sum (got - ref)²); inf for identical signals, -inf for a shape mismatch."""
    if got.shape != reference.shape:
        return float("-inf")
    ref = reference.astype(np.float64)
    noise = float(np.sum((got.astype(np.float64) - ref) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * float(np.log10(signal / noise))


def is_reduced_precision(path: str | Path) -> bool:
    """Whether a graph holds quantized ops or float16 weights (then SNR, not max error, is judged)."""
    import onnx

    graph_model = onnx.load(str(path), load_external_data=False)
    if any(node.op_type in _REDUCED_PRECISION_OPS for node in graph_model.graph.node):
        return True
    return any(init.data_type == onnx.TensorProto.FLOAT16 for init in graph_model.graph.initializer)


def _check_graph(path: Path, name: str, max_error: float, snr_db: float, fp32_snr: bool = True) -> None:
    if is_reduced_precision(path):
        if not snr_db >= REDUCED_PRECISION_MIN_SNR_DB:
            raise SovitsGraphMismatchError(
                f"{name} graph ({path.name}) reaches only {snr_db:.1f} dB SNR against PyTorch "
                f"(needs {REDUCED_PRECISION_MIN_SNR_DB:g} dB); convert with --precision fp32 for this model"
            )
        return
    if not max_error <= FP32_TOLERANCE or (fp32_snr and not snr_db >= FP32_MIN_SNR_DB):
        snr = f", waveform SNR {snr_db:.1f} dB (needs {FP32_MIN_SNR_DB:g})" if fp32_snr else ""
        raise SovitsGraphMismatchError(
            f"{name} graph ({path.name}) differs from PyTorch by {max_error:.3g} (allowed {FP32_TOLERANCE:g}){snr}; "
            "this is a converter bug, please report it"
        )


def _max_abs(got: np.ndarray, expected: np.ndarray) -> float:
    if got.shape != expected.shape:
        return float("inf")
    return float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64))))
