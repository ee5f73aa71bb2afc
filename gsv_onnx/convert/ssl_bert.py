"""HuBERT (chinese-hubert-base) and RoBERTa (chinese-roberta-wwm-ext-large) for the converter.

Both come from the user's model directories (``config.json`` + ``pytorch_model.bin``, a plain fp16
state dict), read offline with transformers' model classes built from the config: never
``from_pretrained`` with a hub name, never a download.

- HuBERT (spec §4.1) runs on the raw 16 kHz waveform and yields ``last_hidden_state``. The
  checkpoint stores the positional convolution with the old weight-norm names
  (``weight_g``/``weight_v``, norm over dim 2); current transformers registers it as a
  parametrization (``parametrizations.weight.original0/1``), so keys are mapped before a strict
  load, and the weight norm is then folded into a plain weight (what gets exported).
- RoBERTa (spec §5) is stored as a ``BertForMaskedLM`` state dict (``bert.*`` + ``cls.*``); what
  runs is the embeddings plus the first ``num_hidden_layers - 2`` layers, whose output is
  ``hidden_states[-3]`` (layer 22 of 24 for the real model).

The module also writes random-weight HuBERT/RoBERTa directories in the same formats (tiny for tests,
full for benchmarks) for the test-model generator.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import OrderedDict
from pathlib import Path

from gsv_onnx.convert import require_torch
from gsv_onnx.convert.strict import load_strict
from gsv_onnx.errors import CheckpointError, MissingDependencyError
from gsv_onnx.fileio import atomic_output

torch = require_torch()
nn = torch.nn

HUBERT_HIDDEN = 768  # the SoVITS ssl_proj expects 768-dim HuBERT features (spec §1.3)
BERT_HIDDEN = 1024  # the GPT's bert_proj is hard-coded 1024 -> 512 (spec §1.3)
BERT_LAYERS_SKIPPED = 2  # hidden_states[-3]: the last two transformer layers are not run (spec §5)

_WEIGHT_FILES = ("pytorch_model.bin", "model.safetensors")
_POS_CONV = "encoder.pos_conv_embed.conv."
_POS_CONV_G = _POS_CONV + "parametrizations.weight.original0"
_POS_CONV_V = _POS_CONV + "parametrizations.weight.original1"

# Keys a BERT checkpoint may carry that we never run: the pooler and the next-sentence head of
# pre-training exports, and the position-id buffer older transformers saved.
_BERT_IGNORED_PREFIXES = ("bert.pooler.", "cls.seq_relationship.", "bert.embeddings.position_ids")


# --------------------------------------------------------------------------------------------------
# Reading a model directory


def _read_model_dir(model_dir: str | os.PathLike, what: str, expected_type: str) -> tuple[dict, dict, Path]:
    """Read ``config.json`` and the state dict of a transformers model directory, offline.

    Returns (config dict, state dict, weights file). Raises CheckpointError naming the problem.
    """
    directory = Path(model_dir)
    if not directory.exists():
        raise CheckpointError(
            f"{what} directory {directory} does not exist: pass the folder that holds config.json and pytorch_model.bin"
        )
    if not directory.is_dir():
        raise CheckpointError(
            f"{what} path {directory} is not a directory: pass the model folder (config.json + pytorch_model.bin), not a file"
        )
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(
            f"{what} directory {directory} has no config.json: use the complete model folder as downloaded"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{what} {config_path} is not valid JSON ({exc}): restore the original file"
        ) from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{what} {config_path} does not hold a JSON object: restore the original file")
    model_type = config.get("model_type")
    if model_type != expected_type:
        raise CheckpointError(
            f"{what} {config_path} has model_type {model_type!r}, expected {expected_type!r}: "
            f"check that you passed the {what} directory and not another model's"
        )
    weights = next((directory / name for name in _WEIGHT_FILES if (directory / name).is_file()), None)
    if weights is None:
        raise CheckpointError(
            f"{what} directory {directory} has no pytorch_model.bin: use the complete model folder as downloaded"
        )
    state = _load_state_dict(weights, what)
    return config, state, weights


def _load_state_dict(path: Path, what: str) -> dict:
    """Load a plain state dict (pickle via torch.load with weights_only, or safetensors)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/corrupt/non-checkpoint files
        raise CheckpointError(
            f"{what} weights {path} cannot be read ({type(exc).__name__}: {exc}): the file is corrupted or truncated; download it again"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{what} weights {path} are not a plain state dict of tensors: pass the transformers model file (pytorch_model.bin)"
        )
    if not state:
        raise CheckpointError(f"{what} weights {path} are empty: download the file again")
    return dict(state)


def _transformers():
    """Import transformers or raise a clear error naming the extra to install."""
    try:
        import transformers
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            "reading HuBERT/RoBERTa needs transformers: pip install 'gsv-onnx[convert]'"
        ) from exc
    return transformers


def _build_config(config_cls, config: dict, what: str, path: Path):
    try:
        return config_cls.from_dict(config, attn_implementation="eager")
    except Exception as exc:
        raise CheckpointError(
            f"{what} config {path} is not a valid {config_cls.__name__} ({exc}): restore the original config.json"
        ) from exc


# --------------------------------------------------------------------------------------------------
# HuBERT


class HubertFeatures(nn.Module):
    """HuBERT on the raw waveform: wav16k [B, N] -> features [B, 768, T50] (spec §4.1)."""

    def __init__(self, hubert) -> None:
        super().__init__()
        self.hubert = hubert

    def forward(self, wav16k):
        """Return ``last_hidden_state`` transposed to channel-first, as upstream feeds ssl_proj."""
        hidden = self.hubert(wav16k).last_hidden_state
        return hidden.transpose(1, 2)


def _map_hubert_keys(state: dict) -> dict:
    """Rename the positional conv's weight-norm tensors to the names current transformers expects.

    Files hold ``weight_g``/``weight_v`` (old ``torch.nn.utils.weight_norm``) or already
    ``parametrizations.weight.original0/1``; a folded plain ``weight`` is turned back into (g, v).
    """
    mapped = {}
    for key, value in state.items():
        if key == _POS_CONV + "weight_g":
            key = _POS_CONV_G
        elif key == _POS_CONV + "weight_v":
            key = _POS_CONV_V
        mapped[key] = value
    plain = _POS_CONV + "weight"
    if plain in mapped and _POS_CONV_V not in mapped and _POS_CONV_G not in mapped:
        weight = mapped.pop(plain)
        mapped[_POS_CONV_V] = weight
        mapped[_POS_CONV_G] = torch.linalg.vector_norm(weight.float(), dim=(0, 1), keepdim=True).to(
            weight.dtype
        )
    return mapped


def load_hubert(model_dir: str | os.PathLike) -> nn.Module:
    """Load chinese-hubert-base from ``model_dir`` strictly; returns a ``HubertFeatures`` in eval mode.

    The module maps wav16k [1, N] (raw samples in [-1, 1], no feature-extractor normalization) to
    [1, 768, T50]. The positional conv's weight norm is folded into a plain weight. Raises
    CheckpointError for a missing directory/file, wrong model type, or missing/unexpected/mis-shaped keys.
    """
    transformers = _transformers()
    HubertConfig = transformers.HubertConfig
    HubertModel = transformers.HubertModel

    what = "HuBERT"
    config_dict, state, weights = _read_model_dir(model_dir, what, "hubert")
    config = _build_config(HubertConfig, config_dict, what, weights.parent / "config.json")
    if config.hidden_size != HUBERT_HIDDEN:
        raise CheckpointError(
            f"HuBERT config in {weights.parent} has hidden_size {config.hidden_size}, but GPT-SoVITS V2 needs "
            f"{HUBERT_HIDDEN} (chinese-hubert-base): pass the chinese-hubert-base directory"
        )
    if getattr(config, "conv_pos_batch_norm", False) or config.do_stable_layer_norm:
        raise CheckpointError(
            f"HuBERT config in {weights.parent} is not a HuBERT-base layout (stable layer norm / batch-norm positional conv): pass chinese-hubert-base"
        )
    model = HubertModel(config)
    load_strict(model, _map_hubert_keys(state), f"HuBERT checkpoint {weights}")
    # Fold w = g * v / ||v|| once; the exported graph then holds a plain conv weight.
    torch.nn.utils.parametrize.remove_parametrizations(
        model.encoder.pos_conv_embed.conv, "weight", leave_parametrized=True
    )
    model.eval()
    return HubertFeatures(model).eval()


# --------------------------------------------------------------------------------------------------
# RoBERTa (BERT)


class BertHiddenMinus3(nn.Module):
    """BERT embeddings + the first ``n - 2`` layers: outputs hidden_states[-3] [B, T, hidden] (spec §5)."""

    def __init__(self, bert_model, total_layers: int) -> None:
        super().__init__()
        self.bert = bert_model
        self.total_layers = total_layers

    def forward(self, input_ids, attention_mask, token_type_ids):
        """Return the hidden state after layer ``total_layers - 2`` (third from last of all hidden states)."""
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return out.last_hidden_state


def load_bert(model_dir: str | os.PathLike) -> nn.Module:
    """Load chinese-roberta-wwm-ext-large from ``model_dir``; returns a module producing hidden_states[-3].

    The file is a ``BertForMaskedLM`` state dict. Every ``bert.embeddings.*`` and ``bert.encoder.*``
    key must be present with the config's shape and nothing unknown may appear; the MLM head
    (``cls.predictions.*``, unused) is shape-checked when present, and a pooler or next-sentence head
    is ignored. Raises CheckpointError naming the offending keys.
    """
    transformers = _transformers()
    BertConfig = transformers.BertConfig
    BertForMaskedLM = transformers.BertForMaskedLM
    BertModel = transformers.BertModel

    what = "BERT"
    config_dict, state, weights = _read_model_dir(model_dir, what, "bert")
    config = _build_config(BertConfig, config_dict, what, weights.parent / "config.json")
    total_layers = int(config.num_hidden_layers)
    if total_layers < BERT_LAYERS_SKIPPED:
        raise CheckpointError(
            f"BERT config in {weights.parent} has {total_layers} layers; hidden_states[-3] needs at least 2: pass chinese-roberta-wwm-ext-large"
        )
    label = f"BERT checkpoint {weights}"

    # Check the whole file against the masked-LM layout (built on the meta device: no memory).
    with torch.device("meta"):
        full_shapes = {k: tuple(v.shape) for k, v in BertForMaskedLM(config).state_dict().items()}
    state = {k: v for k, v in state.items() if not k.startswith(_BERT_IGNORED_PREFIXES)}
    required = [k for k in full_shapes if k.startswith("bert.")]
    missing = [k for k in required if k not in state]
    unexpected = [k for k in state if k not in full_shapes]
    misshaped = [
        f"{k} (file {tuple(state[k].shape)}, model {full_shapes[k]})"
        for k in state
        if k in full_shapes and tuple(state[k].shape) != full_shapes[k]
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
            f"{label} does not match its config.json (chinese-roberta-wwm-ext-large layout): {'; '.join(problems)}. "
            "Check that the folder holds an unmodified BERT masked-LM checkpoint and its own config."
        )

    run_layers = total_layers - BERT_LAYERS_SKIPPED
    run_config = _build_config(
        BertConfig, {**config_dict, "num_hidden_layers": run_layers}, what, weights.parent / "config.json"
    )
    model = BertModel(run_config, add_pooling_layer=False)
    prefix_ok = ("bert.embeddings.",) + tuple(f"bert.encoder.layer.{i}." for i in range(run_layers))
    subset = {k[len("bert.") :]: v for k, v in state.items() if k.startswith(prefix_ok)}
    load_strict(model, subset, label)
    model.eval()
    return BertHiddenMinus3(model, total_layers).eval()


def _short(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} (+{len(items) - limit} more)"


# --------------------------------------------------------------------------------------------------
# Random-weight model directories (test-model generator)

_HUBERT_FULL = {
    "conv_dim": [512] * 7,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
}
_HUBERT_TINY = {
    "conv_dim": [32] * 7,
    "num_hidden_layers": 2,
    "num_attention_heads": 12,
    "intermediate_size": 64,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 16,
}
_BERT_FULL = {
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "vocab_size": 21128,
}
# hidden_size stays 1024 (the GPT's bert_proj input); 3 layers so that hidden_states[-3] runs one layer.
_BERT_TINY = {"num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 64, "vocab_size": 4000}


def _hubert_config(size: str) -> dict:
    shape = _size_table(size, _HUBERT_TINY, _HUBERT_FULL)
    return {
        "_name_or_path": f"gsv-onnx-random-{size}/chinese-hubert-base",
        "architectures": ["HubertModel"],
        "model_type": "hubert",
        "activation_dropout": 0.1,
        "apply_spec_augment": True,
        "attention_dropout": 0.1,
        "bos_token_id": 1,
        "conv_bias": False,
        "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
        "conv_stride": [5, 2, 2, 2, 2, 2, 2],
        "do_stable_layer_norm": False,
        "eos_token_id": 2,
        "feat_extract_activation": "gelu",
        "feat_extract_norm": "group",
        "feat_proj_dropout": 0.0,
        "feat_proj_layer_norm": True,
        "final_dropout": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout": 0.1,
        "hidden_size": HUBERT_HIDDEN,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-05,
        "layerdrop": 0.1,
        "mask_feature_length": 10,
        "mask_feature_prob": 0.0,
        "mask_time_length": 10,
        "mask_time_prob": 0.05,
        "num_feat_extract_layers": 7,
        "pad_token_id": 0,
        "torch_dtype": "float16",
        "use_weighted_layer_sum": False,
        "vocab_size": 32,
        **shape,
    }


def _bert_config(size: str, vocab_size: int) -> dict:
    shape = _size_table(size, _BERT_TINY, _BERT_FULL)
    return {
        "_name_or_path": f"gsv-onnx-random-{size}/chinese-roberta-wwm-ext-large",
        "architectures": ["BertForMaskedLM"],
        "model_type": "bert",
        "attention_probs_dropout_prob": 0.1,
        "bos_token_id": 0,
        "directionality": "bidi",
        "eos_token_id": 2,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": BERT_HIDDEN,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512,
        "output_past": True,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "torch_dtype": "float16",
        "type_vocab_size": 2,
        "use_cache": True,
        **shape,
        "vocab_size": vocab_size,
    }


def _size_table(size: str, tiny: dict, full: dict) -> dict:
    if size == "tiny":
        return dict(tiny)
    if size == "full":
        return dict(full)
    raise ValueError(f"size must be 'tiny' or 'full', not {size!r}")


def _random_tensor(key: str, shape: tuple[int, ...], generator) -> object:
    """A random fp32 tensor for one parameter, scaled so activations stay O(1) through the stack."""
    lower = key.lower()
    if ("norm" in lower) and lower.endswith("weight"):
        return torch.ones(shape) + 0.05 * torch.randn(shape, generator=generator)
    if len(shape) <= 1:
        return 0.02 * torch.randn(shape, generator=generator)
    if "embeddings" in lower and "pos_conv" not in lower:
        return 0.02 * torch.randn(shape, generator=generator)
    fan_in = 1
    for dim in shape[1:]:
        fan_in *= dim
    return torch.randn(shape, generator=generator) / fan_in**0.5


def _atomic_torch_save(state: dict, path: Path) -> None:
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def make_random_hubert_dir(out_dir: str | os.PathLike, size: str = "tiny", seed: int = 0) -> Path:
    """Write a random-weight chinese-hubert-base directory in upstream's format; returns the directory.

    Files: config.json, preprocessor_config.json and pytorch_model.bin (fp16 state dict with the
    positional conv as ``weight_g``/``weight_v``, like the real checkpoint). ``size`` is "tiny"
    (conv_dim 32, 2 layers, FFN 64; hidden stays 768) or "full" (the real HuBERT-base shapes).
    """
    transformers = _transformers()
    HubertConfig = transformers.HubertConfig
    HubertModel = transformers.HubertModel

    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    config_dict = _hubert_config(size)
    config = HubertConfig.from_dict(config_dict)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in HubertModel(config).state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    state: OrderedDict[str, object] = OrderedDict()
    for key, shape in shapes.items():
        if key == _POS_CONV_G:
            continue  # derived from v below
        name = _POS_CONV + "weight_v" if key == _POS_CONV_V else key
        state[name] = _random_tensor(key, shape, generator)
    weight_v = state[_POS_CONV + "weight_v"]
    # g = ||v|| over dims (0, 1) so the folded weight equals v: a sane scale for the random conv.
    state[_POS_CONV + "weight_g"] = torch.linalg.vector_norm(weight_v, dim=(0, 1), keepdim=True)
    state = OrderedDict((k, v.half()) for k, v in state.items())
    (directory / "config.json").write_text(json.dumps(config_dict, indent=2) + "\n", encoding="utf-8")
    preprocessor = {
        "do_normalize": True,
        "feature_extractor_type": "Wav2Vec2FeatureExtractor",
        "feature_size": 1,
        "padding_side": "right",
        "padding_value": 0,
        "return_attention_mask": False,
        "sampling_rate": 16000,
    }
    (directory / "preprocessor_config.json").write_text(
        json.dumps(preprocessor, indent=2) + "\n", encoding="utf-8"
    )
    _atomic_torch_save(state, directory / "pytorch_model.bin")
    return directory


_BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Punctuation the Chinese normalizer keeps (spec §6.2) plus common ASCII and CJK marks.
_BERT_PUNCT = list("!?…,.-\"#$%&'()*+/:;<=>@[\\]^_`{|}~，。！？、；：“”‘’（）《》【】—·")


def _bert_vocab(size: str, vocab_size: int) -> list[str]:
    """Our own vocabulary: specials, punctuation, ASCII letters/digits, then CJK characters.

    Tiny holds the common (GB 2312 level-1) characters, then fills up from U+4E00 (others become [UNK]);
    full holds every character of U+4E00..U+9FA5 and is padded with [unusedN] to ``vocab_size``.
    """
    vocab: list[str] = list(_BERT_SPECIALS)
    seen = set(vocab)

    def add(token: str) -> None:
        if token not in seen and len(vocab) < vocab_size:
            seen.add(token)
            vocab.append(token)

    for token in _BERT_PUNCT + list("0123456789abcdefghijklmnopqrstuvwxyz"):
        add(token)
    if size == "tiny":
        for char in _common_cjk_chars():
            add(char)
    for code in range(0x4E00, 0x9FA6):
        add(chr(code))
    unused = 0
    while len(vocab) < vocab_size:
        unused += 1
        add(f"[unused{unused}]")
    return vocab


def _common_cjk_chars() -> list[str]:
    """The 3,755 level-1 characters of GB 2312 (the most common hanzi), from Python's own codec."""
    chars = []
    for row in range(0xB0, 0xD8):
        for cell in range(0xA1, 0xFF):
            try:
                chars.append(bytes([row, cell]).decode("gb2312"))
            except UnicodeDecodeError:  # row 0xD7 ends early
                continue
    return chars


def _write_bert_tokenizer(vocab: list[str], path: Path) -> None:
    """Write a BERT WordPiece tokenizer.json (lower-casing, CJK split per char, [CLS] x [SEP])."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    ids = {token: i for i, token in enumerate(vocab)}
    tokenizer = Tokenizer(models.WordPiece(ids, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    tokenizer.add_special_tokens(list(_BERT_SPECIALS))
    tokenizer.save(str(path))


def make_random_bert_dir(out_dir: str | os.PathLike, size: str = "tiny", seed: int = 0) -> Path:
    """Write a random-weight chinese-roberta-wwm-ext-large directory in upstream's format; returns it.

    Files: config.json, pytorch_model.bin (fp16 ``BertForMaskedLM`` state dict, ``bert.*`` + ``cls.*``,
    decoder tied to the word embeddings) and tokenizer.json (our own vocabulary). "tiny" keeps
    hidden_size 1024 (the GPT's bert_proj input) with 3 layers, FFN 64 and a 4,000-entry vocabulary;
    "full" is the real BERT-large layout (24 layers, FFN 4096, 21,128 entries).
    """
    transformers = _transformers()
    BertConfig = transformers.BertConfig
    BertForMaskedLM = transformers.BertForMaskedLM

    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    vocab_size = _size_table(size, _BERT_TINY, _BERT_FULL)["vocab_size"]
    vocab = _bert_vocab(size, vocab_size)
    config_dict = _bert_config(size, len(vocab))
    config = BertConfig.from_dict(config_dict)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in BertForMaskedLM(config).state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    state: OrderedDict[str, object] = OrderedDict()
    for key, shape in shapes.items():
        if key in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias"):
            continue  # tied below, as transformers saves them
        state[key] = _random_tensor(key, shape, generator).half()
    state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]
    state["cls.predictions.decoder.bias"] = state["cls.predictions.bias"]
    state = OrderedDict((k, state[k]) for k in shapes)
    (directory / "config.json").write_text(json.dumps(config_dict, indent=2) + "\n", encoding="utf-8")
    _write_bert_tokenizer(vocab, directory / "tokenizer.json")
    _atomic_torch_save(state, directory / "pytorch_model.bin")
    return directory


def bert_tokenizer_file(bert_dir: str | os.PathLike) -> Path:
    """The tokenizer file of a BERT directory: tokenizer.json if present, else vocab.txt."""
    directory = Path(bert_dir)
    for name in ("tokenizer.json", "vocab.txt"):
        if (directory / name).is_file():
            return directory / name
    raise CheckpointError(
        f"BERT directory {directory} has neither tokenizer.json nor vocab.txt: use the complete "
        "chinese-roberta-wwm-ext-large folder (it ships tokenizer.json)"
    )


def copy_file_atomic(src: Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` through a temporary file in the destination directory."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(dst) as tmp:
        shutil.copyfile(src, tmp)
    return dst
