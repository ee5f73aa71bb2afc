"""Conversion of upstream GPT-SoVITS V2 checkpoints to a gsv-onnx bundle.

Needs the `[convert]` extra (torch, transformers, onnx). The runtime never imports this package.
"""

from __future__ import annotations

from gsv_onnx.errors import MissingDependencyError


def require_torch():
    """Import torch or raise a clear error naming the extra to install."""
    try:
        import torch
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            "conversion needs PyTorch: install the CPU build of torch, then pip install 'gsv-onnx[convert]'"
        ) from exc
    return torch
