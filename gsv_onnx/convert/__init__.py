"""Conversion of upstream GPT-SoVITS V2 checkpoints to a gsv-onnx bundle.

Needs the `[convert]` extra (torch, transformers, onnx). The runtime never imports this package.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from gsv_onnx.errors import MissingDependencyError
from gsv_onnx.fileio import atomic_output

#: ONNX opset of every exported graph.
OPSET = 17


def require_torch():
    """Import torch or raise a clear error naming the extra to install."""
    try:
        import torch
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            "conversion needs PyTorch: install the CPU build of torch, then pip install 'gsv-onnx[convert]'"
        ) from exc
    return torch


def export_torchscript(module, args: tuple, path: Path, input_names, output_names, dynamic_axes) -> Path:
    """Export `module` traced on `args` to `path` (atomically) with torch's TorchScript exporter.

    That exporter is deprecated in favour of dynamo, but it is several times faster here and traces
    the dynamic shapes these graphs need (the relative-attention index arithmetic of SoVITS
    included); every exported graph is checked against its module by the verify functions. Its
    deprecation and tracer warnings are silenced.
    """
    torch = require_torch()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, suffix=".onnx.tmp") as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(tmp),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    return path
