"""Reading upstream GPT-SoVITS checkpoints: the GPT `.ckpt` and the SoVITS `.pth` (spec §1).

Both are `torch.save` zip archives of a dict `{"weight", "config", "info"}`. Two things need care:

* SoVITS fine-tunes pickle their `config` as an instance of upstream's `utils.HParams`. We never put
  upstream's code on the path: the class name is mapped to `_HParamsState`, a plain container of
  ours, through torch's `weights_only` unpickler (which refuses every other unknown global, so a
  checkpoint can never run code), and the result is turned into nested dicts.
* Files of some versions carry a 2-byte version code in place of the zip magic `PK`. We read the
  code, put `PK` back in memory and never touch the user's file.

The SoVITS version (v1, v2, v2Pro, v2ProPlus, v3, v4, LoRA) is detected from that header, the keys
and the tensor shapes, never from the file size. Only V2 converts; every other version raises
`UnsupportedVersionError` naming it.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gsv_onnx.convert import require_torch
from gsv_onnx.errors import CheckpointError, UnsupportedVersionError

ZIP_MAGIC = b"PK"

# 2-byte header codes written in place of `PK` (spec §1.2): code -> (symbol_version, model_version, is_lora)
HEADER_VERSIONS: dict[bytes, tuple[str, str, bool]] = {
    b"00": ("v1", "v1", False),
    b"01": ("v2", "v2", False),
    b"02": ("v2", "v3", False),
    b"03": ("v2", "v3", True),
    b"04": ("v2", "v4", True),
    b"05": ("v2", "v2Pro", False),
    b"06": ("v2", "v2ProPlus", False),
}

V1_PHONE_ROWS = 322  # symbols of GPT-SoVITS v1
V2_PHONE_ROWS = 732  # symbols2 (v2 and later)
V2_GIN_CHANNELS = 512
PRO_GIN_CHANNELS = 1024

GPT_TEXT_EMBEDDING_KEY = "ar_text_embedding.word_embeddings.weight"
SOVITS_TEXT_EMBEDDING_KEY = "enc_p.text_embedding.weight"
GPT_PREFIX = "model."

SUPPORTED_VERSION = "v2"


class _HParamsState:
    """Stand-in for upstream's `utils.HParams` while unpickling: it only keeps the pickled state.

    Upstream's HParams stores its entries in `__dict__`, nested sections being HParams too, so the
    pickled state is a plain dict; `hparams_to_dict` turns the result into nested dicts.
    """

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state) form
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"utils.HParams state is a {type(state).__name__}, not a dict")
        self.__dict__.update(state)


def hparams_to_dict(value: Any) -> Any:
    """Recursively turn unpickled HParams containers (and dicts of them) into plain dicts/lists."""
    if isinstance(value, _HParamsState):
        return {str(k): hparams_to_dict(v) for k, v in vars(value).items()}
    if isinstance(value, Mapping):
        return {k: hparams_to_dict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [hparams_to_dict(v) for v in value]
    return value


@dataclass
class GptCheckpoint:
    """A GPT (Text2SemanticDecoder) checkpoint.

    `state_dict` keys are those of the decoder itself: the `model.` prefix the training wrapper adds
    is removed. Tensors keep the file's dtype (fp16 in trained files).
    """

    path: Path
    state_dict: dict[str, Any]
    config: dict[str, Any]
    info: Any
    sha256: str
    version: str = SUPPORTED_VERSION

    @property
    def model_config(self) -> dict[str, Any]:
        """The `config["model"]` section (n_layer, hidden_dim, head, vocab sizes, EOS, ...)."""
        return self.config["model"]


@dataclass
class SovitsVersion:
    """Result of SoVITS version detection; `evidence` lists what decided it, for messages."""

    model_version: str
    symbol_version: str
    is_lora: bool
    header: bytes
    evidence: list[str] = field(default_factory=list)

    @property
    def supported(self) -> bool:
        return self.model_version == SUPPORTED_VERSION and not self.is_lora


@dataclass
class SovitsCheckpoint:
    """A SoVITS (SynthesizerTrn) checkpoint; `config` is a nested dict whatever the file held."""

    path: Path
    state_dict: dict[str, Any]
    config: dict[str, Any]
    info: Any
    version: str
    header: bytes
    sha256: str

    @property
    def model_config(self) -> dict[str, Any]:
        """The `config["model"]` section (inter_channels, upsample sizes, gin_channels, ...)."""
        return self.config["model"]


# ---------------------------------------------------------------------------------------------
# Raw reading


@dataclass
class _RawCheckpoint:
    path: Path
    payload: dict
    header: bytes
    sha256: str


def _read_raw(path: str | Path, kind: str, flag: str) -> _RawCheckpoint:
    """Read and unpickle a torch checkpoint safely, restoring a replaced zip magic in memory."""
    torch = require_torch()
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{kind} checkpoint {path} does not exist; check the {flag} path")
    if path.is_dir():
        raise CheckpointError(f"{kind} checkpoint {path} is a directory; pass the checkpoint file to {flag}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {kind} checkpoint {path}: {exc.strerror or exc}") from exc
    sha256 = hashlib.sha256(data).hexdigest()
    if not data:
        raise CheckpointError(f"{kind} checkpoint {path} is empty (0 bytes); copy the file again")
    header = data[:2]
    if header in HEADER_VERSIONS:
        data = ZIP_MAGIC + data[2:]  # upstream's loader does the same, in memory only
    elif header != ZIP_MAGIC:
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (it starts with {header!r}, not a zip archive); "
            f"pass the {kind} {'.ckpt' if kind == 'GPT' else '.pth'} file to {flag}"
        )
    zip_state = _zip_state(data)
    if zip_state == "unreadable":
        raise CheckpointError(
            f"{kind} checkpoint {path} is truncated or corrupted (its zip directory is unreadable, "
            f"{len(data):,} bytes); copy or download the file again"
        )
    if zip_state == "not-torch":
        raise CheckpointError(
            f"{path} is a zip archive but not a PyTorch checkpoint (no data.pkl inside); "
            f"pass the {kind} {'.ckpt' if kind == 'GPT' else '.pth'} file to {flag}"
        )
    try:
        with torch.serialization.safe_globals([(_HParamsState, "utils.HParams")]):
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{kind} checkpoint {path} holds objects a GPT-SoVITS checkpoint does not have, so it was "
            f"not loaded ({first_line[:200]}); pass an unmodified upstream checkpoint"
        ) from exc
    except Exception as exc:  # torch raises RuntimeError/EOFError/KeyError/... on damaged archives
        raise CheckpointError(
            f"{kind} checkpoint {path} is corrupted ({type(exc).__name__}: {str(exc).strip()[:200]}); "
            "copy or download the file again"
        ) from exc
    if not isinstance(payload, Mapping) or "weight" not in payload:
        found = (
            f"keys like {', '.join(sorted(map(str, payload))[:3])}"
            if isinstance(payload, Mapping)
            else f"a {type(payload).__name__}"
        )
        raise CheckpointError(
            f"{path} is a PyTorch file but not a GPT-SoVITS {kind} checkpoint (no 'weight' entry; "
            f"it holds {found}); pass the {kind} file written by GPT-SoVITS training to {flag}"
        )
    if not isinstance(payload["weight"], Mapping) or not payload["weight"]:
        raise CheckpointError(f"{kind} checkpoint {path} has an empty or invalid 'weight' state dict")
    for key, value in payload["weight"].items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{kind} checkpoint {path}: weight {key!r} is a {type(value).__name__}, not a tensor"
            )
    return _RawCheckpoint(path=path, payload=dict(payload), header=header, sha256=sha256)


def _zip_state(data: bytes) -> str:
    """ "ok", "unreadable" (truncated / damaged directory) or "not-torch" (a zip without data.pkl)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return "unreadable"
    return "ok" if any(name.endswith("data.pkl") for name in names) else "not-torch"


def _looks_like_gpt(state_dict: Mapping) -> bool:
    return any(
        k.endswith(GPT_TEXT_EMBEDDING_KEY) or k.startswith(GPT_PREFIX + "h.layers.") for k in state_dict
    )


def _looks_like_sovits(state_dict: Mapping) -> bool:
    return any(k.startswith(("enc_p.", "dec.", "ref_enc.", "quantizer.")) for k in state_dict)


# ---------------------------------------------------------------------------------------------
# GPT


def load_gpt_checkpoint(path: str | Path) -> GptCheckpoint:
    """Read a GPT `.ckpt`, check it is a V2-family GPT and strip the `model.` key prefix.

    Raises CheckpointError (unreadable, wrong kind, inconsistent) or UnsupportedVersionError (v1).
    """
    raw = _read_raw(path, "GPT", "--gpt")
    weight = raw.payload["weight"]
    if not _looks_like_gpt(weight) and _looks_like_sovits(weight):
        raise CheckpointError(
            f"{raw.path} is a SoVITS checkpoint (it holds enc_p/dec weights), not a GPT one; "
            "pass it to --sovits and the GPT .ckpt to --gpt"
        )
    config = hparams_to_dict(raw.payload.get("config"))
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise CheckpointError(
            f"GPT checkpoint {raw.path} has no 'config' with a 'model' section; "
            "it is not a GPT-SoVITS GPT checkpoint"
        )
    prefixed = [k for k in weight if k.startswith(GPT_PREFIX)]
    if len(prefixed) != len(weight):
        others = [k for k in weight if not k.startswith(GPT_PREFIX)]
        raise CheckpointError(
            f"GPT checkpoint {raw.path} has weights outside 'model.' ({', '.join(others[:5])}); "
            "pass an unmodified GPT-SoVITS GPT checkpoint"
        )
    state_dict = {k[len(GPT_PREFIX) :]: v for k, v in weight.items()}
    model_config = config["model"]
    for key in ("vocab_size", "phoneme_vocab_size", "hidden_dim", "head", "n_layer"):
        if key not in model_config:
            raise CheckpointError(f"GPT checkpoint {raw.path}: config.model lacks {key!r}")
    embedding = state_dict.get(GPT_TEXT_EMBEDDING_KEY)
    phone_rows = int(embedding.shape[0]) if embedding is not None else int(model_config["phoneme_vocab_size"])
    if phone_rows == 512 or phone_rows == V1_PHONE_ROWS:
        raise UnsupportedVersionError(
            f"{raw.path} is a GPT-SoVITS v1 GPT ({phone_rows}-row phone table); "
            "only V2 is supported yet: use a V2 GPT checkpoint"
        )
    if phone_rows != V2_PHONE_ROWS:
        raise CheckpointError(
            f"GPT checkpoint {raw.path} has a {phone_rows}-row phone table; a V2 GPT has {V2_PHONE_ROWS}"
        )
    if int(model_config["phoneme_vocab_size"]) != phone_rows:
        raise CheckpointError(
            f"GPT checkpoint {raw.path}: config.model.phoneme_vocab_size is "
            f"{model_config['phoneme_vocab_size']} but the phone table has {phone_rows} rows"
        )
    return GptCheckpoint(
        path=raw.path,
        state_dict=state_dict,
        config=config,
        info=raw.payload.get("info"),
        sha256=raw.sha256,
    )


# ---------------------------------------------------------------------------------------------
# SoVITS


def detect_sovits_version(
    header: bytes, state_dict: Mapping, config: Mapping | None, has_lora_rank: bool = False
) -> SovitsVersion:
    """Detect the SoVITS model version from the 2-byte header, the keys and the shapes (spec §1.2).

    The header, when present, names the version the saver wrote; the weights are then checked for
    the structures each version has (v3/v4 CFM, v2Pro speaker-embedding layers, the v1 322-row phone
    table, LoRA adapters). When header and weights disagree, a non-V2 result wins: only a file
    both call V2 converts. File size is never used.
    """
    evidence: list[str] = []
    header_version: tuple[str, str, bool] | None = None
    if header != ZIP_MAGIC:
        if header not in HEADER_VERSIONS:
            raise CheckpointError(f"unknown SoVITS version header {header!r}")
        header_version = HEADER_VERSIONS[header]
        evidence.append(f"file header {header.decode('ascii')!r}")

    keys = list(state_dict)
    model_cfg = config.get("model", {}) if isinstance(config, Mapping) else {}
    is_lora = has_lora_rank or any("lora_" in k for k in keys)
    structure: tuple[str, str] | None = None  # (model_version, symbol_version)

    embedding = state_dict.get(SOVITS_TEXT_EMBEDDING_KEY)
    phone_rows = int(embedding.shape[0]) if embedding is not None else None
    symbol_version = "v1" if phone_rows == V1_PHONE_ROWS else "v2"

    if any(k.startswith(("cfm.", "wns1.", "bridge.")) for k in keys):
        # v3 and v4 share this layout (CFM + DiT, no flow / HiFi-GAN in the synthesizer)
        structure = ("v3/v4", "v2")
        evidence.append("CFM (cfm.*) weights")
    elif is_lora:
        structure = ("v3/v4", "v2")
        evidence.append("LoRA adapter weights")
    elif any(k.startswith(("sv_emb.", "ge_to512.", "prelu.")) for k in keys):
        ups = state_dict.get("dec.ups.0.weight_v", state_dict.get("dec.ups.0.weight"))
        plus = ups is not None and (int(ups.shape[0]) == 768 or int(ups.shape[-1]) == 20)
        structure = ("v2ProPlus" if plus else "v2Pro", "v2")
        evidence.append("speaker-embedding weights (sv_emb.*)")
        if plus:
            evidence.append(f"dec.ups.0 of shape {tuple(ups.shape)}")
    elif phone_rows == V1_PHONE_ROWS:
        structure = ("v1", "v1")
        evidence.append(f"{V1_PHONE_ROWS}-row phone table")
    else:
        gin = _gin_channels(state_dict, model_cfg)
        if gin == PRO_GIN_CHANNELS:
            structure = ("v2Pro", "v2")
            evidence.append(f"gin_channels {gin}")
        elif phone_rows == V2_PHONE_ROWS:
            structure = ("v2", "v2")
            evidence.append(f"{V2_PHONE_ROWS}-row phone table")
        elif phone_rows is None:
            structure = None
        else:
            raise CheckpointError(
                f"SoVITS weights have a {phone_rows}-row phone table; V1 has {V1_PHONE_ROWS} and "
                f"V2 {V2_PHONE_ROWS}: this is not a GPT-SoVITS checkpoint layout"
            )

    if header_version is not None:
        head_symbols, head_model, head_lora = header_version
        if head_model != SUPPORTED_VERSION or head_lora:
            if structure and structure[0] not in (head_model, "v3/v4", SUPPORTED_VERSION):
                evidence.append(f"weights that look like {structure[0]}")
            return SovitsVersion(head_model, head_symbols, head_lora or is_lora, header, evidence)
        # header says v2: the weights decide if they say otherwise
        if structure is not None and structure[0] != SUPPORTED_VERSION:
            return SovitsVersion(structure[0], structure[1], is_lora, header, evidence)
        return SovitsVersion("v2", symbol_version, False, header, evidence)
    if structure is None:
        raise CheckpointError(
            f"SoVITS weights lack {SOVITS_TEXT_EMBEDDING_KEY!r}; this is not a GPT-SoVITS SoVITS checkpoint"
        )
    model_version = structure[0]
    return SovitsVersion(model_version, structure[1], is_lora, header, evidence)


def _gin_channels(state_dict: Mapping, model_cfg: Mapping) -> int | None:
    fc = state_dict.get("ref_enc.fc.fc.weight")
    if fc is not None:
        return int(fc.shape[0])
    value = model_cfg.get("gin_channels") if isinstance(model_cfg, Mapping) else None
    return int(value) if value is not None else None


def load_sovits_checkpoint(path: str | Path) -> SovitsCheckpoint:
    """Read a SoVITS `.pth`, detect its version and return it if it is V2.

    Raises CheckpointError (unreadable, wrong kind, inconsistent config) or UnsupportedVersionError
    naming the detected version for anything but V2.
    """
    raw = _read_raw(path, "SoVITS", "--sovits")
    weight = raw.payload["weight"]
    if _looks_like_gpt(weight) and not _looks_like_sovits(weight):
        raise CheckpointError(
            f"{raw.path} is a GPT checkpoint (it holds model.h.layers.* weights), not a SoVITS one; "
            "pass it to --gpt and the SoVITS .pth to --sovits"
        )
    config = hparams_to_dict(raw.payload.get("config"))
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise CheckpointError(
            f"SoVITS checkpoint {raw.path} has no 'config' with a 'model' section; "
            "it is not a GPT-SoVITS SoVITS checkpoint"
        )
    version = detect_sovits_version(raw.header, weight, config, has_lora_rank="lora_rank" in raw.payload)
    if not version.supported:
        name = version.model_version + (" LoRA" if version.is_lora else "")
        raise UnsupportedVersionError(
            f"{raw.path} is a GPT-SoVITS {name} model (detected from {', '.join(version.evidence)}); "
            "only V2 is supported yet"
        )
    _check_sovits_config(raw.path, weight, config)
    return SovitsCheckpoint(
        path=raw.path,
        state_dict=dict(weight),
        config=config,
        info=raw.payload.get("info"),
        version=version.model_version,
        header=raw.header,
        sha256=raw.sha256,
    )


def _check_sovits_config(path: Path, state_dict: Mapping, config: dict) -> None:
    """Check the config has what the decoder needs and agrees with the weights' shapes."""
    model_cfg = config["model"]
    data_cfg = config.get("data")
    required_model = (
        "inter_channels",
        "hidden_channels",
        "filter_channels",
        "n_heads",
        "n_layers",
        "kernel_size",
        "resblock_kernel_sizes",
        "resblock_dilation_sizes",
        "upsample_rates",
        "upsample_initial_channel",
        "upsample_kernel_sizes",
        "gin_channels",
    )
    missing = [k for k in required_model if k not in model_cfg]
    if not isinstance(data_cfg, dict):
        missing.append("data")
    else:
        missing += [
            f"data.{k}" for k in ("sampling_rate", "filter_length", "hop_length") if k not in data_cfg
        ]
    if missing:
        raise CheckpointError(f"SoVITS checkpoint {path}: config lacks {', '.join(missing)}")
    ups = state_dict.get("dec.ups.0.weight_v", state_dict.get("dec.ups.0.weight"))
    expected = (
        int(model_cfg["upsample_initial_channel"]),
        int(model_cfg["upsample_initial_channel"]) // 2,
        int(model_cfg["upsample_kernel_sizes"][0]),
    )
    if ups is not None and tuple(int(s) for s in ups.shape) != expected:
        raise CheckpointError(
            f"SoVITS checkpoint {path}: dec.ups.0 has shape {tuple(ups.shape)} but the config "
            f"(upsample_initial_channel, upsample_kernel_sizes) implies {expected}"
        )
    gin = _gin_channels(state_dict, model_cfg)
    if gin != V2_GIN_CHANNELS or int(model_cfg["gin_channels"]) != V2_GIN_CHANNELS:
        raise CheckpointError(
            f"SoVITS checkpoint {path}: gin_channels is {model_cfg['gin_channels']} (weights {gin}); "
            f"V2 needs {V2_GIN_CHANNELS}"
        )
