"""Random-weight model sets in upstream GPT-SoVITS V2's exact file formats (tests and benchmarks).

`make_test_models(out_dir, size)` writes what a user has after training:

    out_dir/gpt/<name>-e15.ckpt                 GPT: {"weight": fp16 under "model.", "config": dict, "info"}
    out_dir/sovits/<name>_e8_s1000.pth          SoVITS: {"weight": fp16 without enc_q, "config": utils.HParams, "info"}
    out_dir/chinese-hubert-base/                config.json, preprocessor_config.json, pytorch_model.bin
    out_dir/chinese-roberta-wwm-ext-large/      config.json, pytorch_model.bin, tokenizer.json

Sizes: "tiny" (seconds to convert: a 2-layer, 64-wide GPT; small SoVITS channels that keep V2's
hard-coded sizes) and "full" (the real V2 configuration, spec §1.1 and §3.1).

The SoVITS config is pickled, as upstream's trainer does, as an instance of a class named `HParams`
in a module named `utils`: the class is created here on the fly and registered in `sys.modules`
only while saving, so the bytes are like upstream's and readers need the same unpickler mapping.
Variants for detection tests: a plain-dict config and a 2-byte version header in place of `PK`.
"""

from __future__ import annotations

import copy
import os
import sys
import tempfile
import threading
import types
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gsv_onnx.convert import require_torch
from gsv_onnx.errors import GsvError
from gsv_onnx.fileio import atomic_output, write_bytes_atomic

torch = require_torch()

SIZES = ("tiny", "full")
DEFAULT_NAME = "gsv-random"

# --------------------------------------------------------------------------------------------------
# Configs: the key layout of upstream's s1longer-v2.yaml (+ trainer keys) and s2.json (+ fine-tune keys)


def gpt_config(size: str = "full", name: str = DEFAULT_NAME) -> dict[str, Any]:
    """The GPT checkpoint's `config` dict; "full" has the V2 model section of spec §1.1."""
    _check_size(size)
    model = {
        "vocab_size": 1025,
        "phoneme_vocab_size": 732,
        "embedding_dim": 512,
        "hidden_dim": 512,
        "head": 16,
        "linear_units": 2048,
        "n_layer": 24,
        "dropout": 0,
        "EOS": 1024,
        "random_bert": 0,
    }
    if size == "tiny":
        model.update(embedding_dim=64, hidden_dim=64, head=4, linear_units=256, n_layer=2)
    return {
        "train": {
            "seed": 1234,
            "epochs": 15,
            "batch_size": 8,
            "save_every_n_epoch": 5,
            "precision": "16-mixed",
            "gradient_clip": 1.0,
            "if_save_every_weights": True,
            "if_save_latest": True,
            "if_dpo": False,
            "half_weights_save_dir": "GPT_weights_v2",
            "exp_name": name,
        },
        "optimizer": {
            "lr": 0.01,
            "lr_init": 1e-05,
            "lr_end": 0.0001,
            "warmup_steps": 2000,
            "decay_steps": 40000,
        },
        "data": {"max_eval_sample": 8, "max_sec": 54, "num_workers": 4, "pad_val": 1024},
        "model": model,
        "inference": {"top_k": 15},
        "pretrained_s1": "GPT_SoVITS/pretrained_models/gsv-v2final-pretrained/s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt",
        "train_semantic_path": f"logs/{name}/6-name2semantic.tsv",
        "train_phoneme_path": f"logs/{name}/2-name2text.txt",
        "output_dir": f"logs/{name}/logs_s1_v2",
    }


def sovits_config(size: str = "full", name: str = DEFAULT_NAME) -> dict[str, Any]:
    """The SoVITS checkpoint's `config` as nested dicts; "full" is V2's s2.json (spec §3.1)."""
    _check_size(size)
    model = {
        "inter_channels": 192,
        "hidden_channels": 192,
        "filter_channels": 768,
        "n_heads": 2,
        "n_layers": 6,
        "kernel_size": 3,
        "p_dropout": 0.1,
        "resblock": "1",
        "resblock_kernel_sizes": [3, 7, 11],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        "upsample_rates": [10, 8, 2, 2, 2],
        "upsample_initial_channel": 512,
        "upsample_kernel_sizes": [16, 16, 8, 2, 2],
        "n_layers_q": 3,
        "use_spectral_norm": False,
        "gin_channels": 512,
        "semantic_frame_rate": "25hz",
        "freeze_quantizer": True,
        "version": "v2",
    }
    if size == "tiny":
        # V2's hard-coded sizes (HuBERT 768, codebook 1024 x 768, ref_enc 704 bins, MRTE 512,
        # gin 512, hidden 192 for MRTE's content channels) stay; the free channels shrink.
        model.update(inter_channels=32, filter_channels=128, n_layers=2, upsample_initial_channel=64)
    return {
        "train": {
            "log_interval": 100,
            "eval_interval": 500,
            "seed": 1234,
            "epochs": 8,
            "learning_rate": 0.0001,
            "betas": [0.8, 0.99],
            "eps": 1e-09,
            "batch_size": 4,
            "fp16_run": True,
            "lr_decay": 0.999875,
            "segment_size": 20480,
            "init_lr_ratio": 1,
            "warmup_epochs": 0,
            "c_mel": 45,
            "c_kl": 1.0,
            "text_low_lr_rate": 0.4,
            "grad_ckpt": False,
            "pretrained_s2G": "GPT_SoVITS/pretrained_models/gsv-v2final-pretrained/s2G2333k.pth",
            "pretrained_s2D": "GPT_SoVITS/pretrained_models/gsv-v2final-pretrained/s2D2333k.pth",
            "if_save_latest": True,
            "if_save_every_weights": True,
            "save_every_epoch": 4,
            "gpu_numbers": "0",
        },
        "data": {
            "max_wav_value": 32768.0,
            "sampling_rate": 32000,
            "filter_length": 2048,
            "hop_length": 640,
            "win_length": 2048,
            "n_mel_channels": 128,
            "mel_fmin": 0.0,
            "mel_fmax": None,
            "add_blank": True,
            "n_speakers": 300,
            "cleaned_text": True,
            "exp_dir": f"logs/{name}",
        },
        "model": model,
        "s2_ckpt_dir": f"logs/{name}",
        "content_module": "cnhubert",
        "save_weight_dir": "SoVITS_weights_v2",
        "name": name,
        "version": "v2",
        "pretrain": None,
        "resume_step": None,
    }


def _check_size(size: str) -> None:
    if size not in SIZES:
        raise GsvError(f"unknown test-model size {size!r}; use one of {', '.join(SIZES)}")


# --------------------------------------------------------------------------------------------------
# utils.HParams, made on the fly so that the pickle names `utils.HParams` like upstream's files

_UTILS_LOCK = threading.Lock()


def _make_hparams_class() -> type:
    """A class named HParams whose module is `utils`: a plain attribute container like upstream's."""
    return types.new_class(
        "HParams", (), {}, lambda ns: ns.update({"__module__": "utils", "__qualname__": "HParams"})
    )


def _to_hparams(value: Any, cls: type) -> Any:
    """Nested dicts -> nested HParams instances (entries in `__dict__`, as upstream stores them)."""
    if isinstance(value, dict):
        instance = cls.__new__(cls)
        for key, item in value.items():
            instance.__dict__[key] = _to_hparams(item, cls)
        return instance
    return value


def _save_with_fake_utils(payload_factory, path: Path) -> None:
    """torch.save the payload while a module named `utils` holding HParams is importable."""
    cls = _make_hparams_class()
    module = types.ModuleType("utils")
    module.HParams = cls
    with _UTILS_LOCK:
        previous = sys.modules.get("utils")
        sys.modules["utils"] = module
        try:
            _atomic_save(payload_factory(cls), path)
        finally:
            if previous is None:
                sys.modules.pop("utils", None)
            else:
                sys.modules["utils"] = previous


def _atomic_save(payload: Any, path: Path, header: bytes | None = None) -> None:
    """torch.save to a temporary file in the same directory, optionally replace `PK`, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)
        if header is not None:
            with open(tmp, "r+b") as handle:
                handle.write(header)


# --------------------------------------------------------------------------------------------------
# Writers


def random_gpt_state_dict(size: str = "tiny", seed: int = 0) -> tuple[dict[str, Any], OrderedDict]:
    """(config, fp16 state dict with upstream's `model.` keys) of a random GPT."""
    from gsv_onnx.convert import gpt

    config = gpt_config(size)
    model = gpt.Text2SemanticDecoder.from_config(config["model"])
    gpt.random_init_(model, seed=seed)
    weight = OrderedDict(
        (gpt.CHECKPOINT_PREFIX + k, v.detach().half()) for k, v in model.state_dict().items()
    )
    return config, weight


def write_gpt_checkpoint(path: str | os.PathLike, size: str = "tiny", seed: int = 0, epoch: int = 15) -> Path:
    """Write a random GPT `.ckpt` like upstream's trainer (fp16 weights, dict config, "GPT-e15")."""
    path = Path(path)
    config, weight = random_gpt_state_dict(size, seed)
    config["train"]["exp_name"] = path.stem.split("-e")[0]
    _atomic_save({"weight": weight, "config": config, "info": f"GPT-e{epoch}"}, path)
    return path


def random_sovits_state_dict(size: str = "tiny", seed: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config dict, fp16 state dict without enc_q) of a random SoVITS V2 generator."""
    from gsv_onnx.convert import sovits

    config = sovits_config(size)
    model = sovits.create_sovits(config)
    sovits.random_init_(model, seed=seed)
    weight = {k: v.detach().half() for k, v in model.state_dict().items() if not k.startswith("enc_q.")}
    return config, weight


def write_sovits_checkpoint(
    path: str | os.PathLike,
    size: str = "tiny",
    seed: int = 0,
    config_format: str = "hparams",
    header: bytes | None = None,
    weight: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    epoch: int = 8,
    steps: int = 1000,
) -> Path:
    """Write a random SoVITS `.pth` like upstream's saver.

    `config_format` "hparams" pickles the config as `utils.HParams` (fine-tunes), "dict" as a plain
    dict. `header` (e.g. b"05") replaces the first two bytes `PK`, as upstream's savers do for some
    versions. `weight`/`config` override the random ones (detection tests); `extra` adds top-level
    entries (e.g. {"lora_rank": 32}).
    """
    if config_format not in ("hparams", "dict"):
        raise GsvError(f"unknown config format {config_format!r}; use hparams or dict")
    if header is not None and len(header) != 2:
        raise GsvError("a version header is exactly 2 bytes")
    path = Path(path)
    if weight is None or config is None:
        random_config, random_weight = random_sovits_state_dict(size, seed)
        weight = random_weight if weight is None else weight
        config = random_config if config is None else config
    config = copy.deepcopy(config)
    config["name"] = path.stem.split("_e")[0]
    info = f"{epoch}epoch_{steps}iteration"

    def payload(hparams_cls: type | None) -> OrderedDict:
        opt: OrderedDict[str, Any] = OrderedDict()
        opt["weight"] = weight
        opt["config"] = _to_hparams(config, hparams_cls) if hparams_cls is not None else config
        opt["info"] = info
        opt.update(extra or {})
        return opt

    if config_format == "hparams":
        if header is None:
            _save_with_fake_utils(payload, path)
        else:
            with tempfile.TemporaryDirectory(dir=path.parent if path.parent.exists() else None) as tmp:
                plain = Path(tmp) / "plain.pth"
                _save_with_fake_utils(payload, plain)
                data = bytearray(plain.read_bytes())
            data[:2] = header
            _write_bytes_atomic(path, bytes(data))
    else:
        _atomic_save(payload(None), path, header=header)
    return path


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, data)


@dataclass
class TestModels:
    """Paths of a generated model set, as `gsv convert` takes them."""

    __test__ = False  # not a pytest test class

    root: Path
    gpt: Path
    sovits: Path
    hubert: Path
    bert: Path


def test_model_paths(root: str | os.PathLike, size: str = "tiny", name: str = DEFAULT_NAME) -> TestModels:
    """Where `make_test_models(root, size, name=name)` puts each file."""
    _check_size(size)
    root = Path(root)
    return TestModels(
        root=root,
        gpt=root / "gpt" / f"{name}-{size}-e15.ckpt",
        sovits=root / "sovits" / f"{name}-{size}_e8_s1000.pth",
        hubert=root / "chinese-hubert-base",
        bert=root / "chinese-roberta-wwm-ext-large",
    )


test_model_paths.__test__ = False  # not a pytest test


def make_test_models(
    out_dir: str | os.PathLike, size: str = "tiny", seed: int = 0, name: str = DEFAULT_NAME
) -> TestModels:
    """Write a complete random V2 model set (GPT, SoVITS, HuBERT, RoBERTa) under `out_dir`."""
    from gsv_onnx.convert.ssl_bert import make_random_bert_dir, make_random_hubert_dir

    root = Path(out_dir)
    models = test_model_paths(root, size, name)
    root.mkdir(parents=True, exist_ok=True)
    write_gpt_checkpoint(models.gpt, size=size, seed=seed)
    write_sovits_checkpoint(models.sovits, size=size, seed=seed + 1)
    make_random_hubert_dir(models.hubert, size=size, seed=seed + 2)
    make_random_bert_dir(models.bert, size=size, seed=seed + 3)
    return models
