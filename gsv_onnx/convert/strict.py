"""Strict state-dict loading with errors that name the offending keys."""

from __future__ import annotations

from collections.abc import Mapping

from gsv_onnx.errors import CheckpointError


def load_strict(module, state_dict: Mapping, what: str, ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Load `state_dict` into `module`, failing on any missing, unexpected or mis-shaped key.

    `what` names the checkpoint in messages ("GPT checkpoint my.ckpt"). Keys starting with one of
    `ignore_prefixes` (for example training-only `enc_q.`) are dropped first. Tensors are cast to the
    module's parameter dtype, so fp16 checkpoints load into fp32 modules as upstream does.
    """
    state = {k: v for k, v in state_dict.items() if not k.startswith(ignore_prefixes)}
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_short(unexpected)}")
    if misshaped:
        problems.append(f"mis-shaped keys: {_short(misshaped)}")
    if problems:
        raise CheckpointError(
            f"{what} does not match the GPT-SoVITS V2 architecture: {'; '.join(problems)}. "
            "Check that the file is an unmodified V2 checkpoint of the right kind."
        )
    cast = {k: state[k].to(expected[k].dtype) for k in expected}
    module.load_state_dict(cast, strict=True)


def _short(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} (+{len(items) - limit} more)"
