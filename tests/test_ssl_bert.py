"""HuBERT / RoBERTa loading (strict, offline) and the reference_encoder / bert ONNX graphs."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")

from gsv_onnx.convert import export_ssl_bert as ex  # noqa: E402
from gsv_onnx.convert import ssl_bert  # noqa: E402
from gsv_onnx.errors import CheckpointError  # noqa: E402


@pytest.fixture(scope="module")
def hubert_dir(upstream_tiny):
    return upstream_tiny / "chinese-hubert-base"


@pytest.fixture(scope="module")
def bert_dir(upstream_tiny):
    return upstream_tiny / "chinese-roberta-wwm-ext-large"


@pytest.fixture(scope="module")
def hubert(hubert_dir):
    return ssl_bert.load_hubert(hubert_dir)


@pytest.fixture(scope="module")
def bert(bert_dir):
    return ssl_bert.load_bert(bert_dir)


@pytest.fixture(scope="module")
def sovits_model(upstream_tiny):
    from gsv_onnx.convert.checkpoints import load_sovits_checkpoint
    from gsv_onnx.convert.sovits import build_sovits

    ckpt = load_sovits_checkpoint(upstream_tiny / "sovits" / "s2Gv2-random-tiny_e8_s1000.pth")
    return build_sovits(ckpt.config, ckpt.state_dict, f"SoVITS checkpoint {ckpt.path}")


@pytest.fixture(scope="module")
def reference_onnx(hubert, sovits_model, tmp_path_factory):
    return ex.export_reference_encoder(hubert, sovits_model, tmp_path_factory.mktemp("reference"))


@pytest.fixture(scope="module")
def bert_onnx(bert, tmp_path_factory):
    return ex.export_bert(bert, tmp_path_factory.mktemp("bert"))


def _copy_dir(src, dst):
    shutil.copytree(src, dst)
    for path in dst.iterdir():
        path.chmod(0o644)
    return dst


def _rewrite_state(model_dir, edit):
    path = model_dir / "pytorch_model.bin"
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)


def _hubert_frames(num_samples: int) -> int:
    length = num_samples
    for kernel, stride in [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2:
        length = (length - kernel) // stride + 1
    return length


# ------------------------------------------------------------------------------------------ HuBERT


def test_hubert_matches_transformers_own_loading(hubert, hubert_dir, monkeypatch):
    from transformers import HubertModel

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # transformers' own loader (local folder) maps weight_g/weight_v itself: an independent reference.
    reference = HubertModel.from_pretrained(
        str(hubert_dir), attn_implementation="eager", dtype=torch.float32
    ).eval()
    wave = torch.from_numpy(np.random.default_rng(0).uniform(-0.5, 0.5, (1, 30000)).astype(np.float32))
    with torch.no_grad():
        expected = reference(wave).last_hidden_state.transpose(1, 2)
        got = hubert(wave)
    assert got.shape == (1, 768, _hubert_frames(30000))
    assert torch.allclose(got, expected, atol=1e-5)
    # The positional conv's weight norm is folded into a plain weight (what gets exported).
    conv = hubert.hubert.encoder.pos_conv_embed.conv
    assert not hasattr(conv, "parametrizations") and conv.weight.shape == (768, 48, 16)


def test_hubert_strict_loading_errors(hubert_dir, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        ssl_bert.load_hubert(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="not a directory"):
        ssl_bert.load_hubert(hubert_dir / "config.json")

    no_bin = _copy_dir(hubert_dir, tmp_path / "no_bin")
    (no_bin / "pytorch_model.bin").unlink()
    with pytest.raises(CheckpointError, match="no pytorch_model.bin"):
        ssl_bert.load_hubert(no_bin)

    no_config = _copy_dir(hubert_dir, tmp_path / "no_config")
    (no_config / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        ssl_bert.load_hubert(no_config)

    truncated = _copy_dir(hubert_dir, tmp_path / "truncated")
    data = (truncated / "pytorch_model.bin").read_bytes()
    (truncated / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot be read"):
        ssl_bert.load_hubert(truncated)

    misshaped = _copy_dir(hubert_dir, tmp_path / "misshaped")
    key = "encoder.layers.0.attention.q_proj.weight"
    _rewrite_state(misshaped, lambda s: s.__setitem__(key, s[key][:, :700].clone()))
    with pytest.raises(CheckpointError, match=rf"mis-shaped keys: {key} \(file \(768, 700\)"):
        ssl_bert.load_hubert(misshaped)

    missing = _copy_dir(hubert_dir, tmp_path / "missing")
    _rewrite_state(missing, lambda s: s.pop("encoder.pos_conv_embed.conv.weight_g"))
    with pytest.raises(
        CheckpointError,
        match=r"missing keys: encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original0",
    ):
        ssl_bert.load_hubert(missing)

    extra = _copy_dir(hubert_dir, tmp_path / "extra")
    _rewrite_state(extra, lambda s: s.__setitem__("encoder.surprise", torch.zeros(3)))
    with pytest.raises(CheckpointError, match=r"unexpected keys: encoder\.surprise"):
        ssl_bert.load_hubert(extra)

    wrong_type = _copy_dir(hubert_dir, tmp_path / "wrong_type")
    config = json.loads((wrong_type / "config.json").read_text())
    (wrong_type / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(CheckpointError, match="model_type 'bert', expected 'hubert'"):
        ssl_bert.load_hubert(wrong_type)


# -------------------------------------------------------------------------------------------- BERT


def test_bert_is_hidden_states_minus_3(bert, bert_dir):
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig.from_dict(
        json.loads((bert_dir / "config.json").read_text()), attn_implementation="eager"
    )
    full = BertForMaskedLM(config).eval()
    state = torch.load(bert_dir / "pytorch_model.bin", weights_only=True)
    full.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    ids = torch.tensor([[101, 872, 1962, 8024, 686, 4518, 102]])
    mask, types = torch.ones_like(ids), torch.zeros_like(ids)
    with torch.no_grad():
        expected = full(
            input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True
        ).hidden_states[-3]
        got = bert(ids, mask, types)
    assert got.shape == (1, 7, 64)
    assert torch.allclose(got, expected, atol=1e-6)
    assert len(bert.bert.encoder.layer) == 1  # 3 layers in the file, hidden_states[-3] = after layer 1


def test_bert_strict_loading_errors(bert_dir, hubert_dir, tmp_path):
    with pytest.raises(CheckpointError, match="model_type 'hubert', expected 'bert'"):
        ssl_bert.load_bert(hubert_dir)

    misshaped = _copy_dir(bert_dir, tmp_path / "misshaped")
    key = "bert.encoder.layer.2.output.dense.weight"  # a layer that is not run is still checked
    _rewrite_state(misshaped, lambda s: s.__setitem__(key, s[key][:, :100].clone()))
    with pytest.raises(CheckpointError, match=rf"mis-shaped keys: {key}"):
        ssl_bert.load_bert(misshaped)

    missing = _copy_dir(bert_dir, tmp_path / "missing")
    _rewrite_state(missing, lambda s: s.pop("bert.embeddings.LayerNorm.bias"))
    with pytest.raises(CheckpointError, match=r"missing keys: bert\.embeddings\.LayerNorm\.bias"):
        ssl_bert.load_bert(missing)

    extra = _copy_dir(bert_dir, tmp_path / "extra")
    _rewrite_state(extra, lambda s: s.__setitem__("bert.encoder.layer.9.odd", torch.zeros(2)))
    with pytest.raises(CheckpointError, match=r"unexpected keys: bert\.encoder\.layer\.9\.odd"):
        ssl_bert.load_bert(extra)

    # A pooler / next-sentence head (pre-training exports) is tolerated: never run.
    pooled = _copy_dir(bert_dir, tmp_path / "pooled")
    _rewrite_state(
        pooled,
        lambda s: s.update(
            {"bert.pooler.dense.weight": torch.zeros(64, 64), "cls.seq_relationship.bias": torch.zeros(2)}
        ),
    )
    ssl_bert.load_bert(pooled)


# ----------------------------------------------------------------------------------- ONNX parity


def test_reference_encoder_onnx_matches_torch(hubert, sovits_model, reference_onnx):
    path = reference_onnx
    assert path.name == "reference_encoder.onnx" and path.is_file()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["wav16k"]
    assert [o.name for o in session.get_outputs()] == ["prompt_codes"]
    result = ex.verify_reference_encoder(hubert, sovits_model, path)
    assert result["prompt_codes_mismatch"] == 0 and result["prompt_codes_total"] > 100
    # The contract's shapes: 3 s + 0.6 s pad -> 179 HuBERT frames -> 89 codes (spec §4.1).
    wave = ex._test_wave(48000, seed=5)
    codes = session.run(None, {"wav16k": wave})[0]
    assert codes.dtype == np.int64 and codes.shape == (1, 89)
    with torch.no_grad():
        expected = sovits_model.extract_latent(hubert(torch.from_numpy(wave)))[0].numpy()
    np.testing.assert_array_equal(codes, expected)
    assert len(set(codes[0].tolist())) > 1


def test_reference_encoder_mutated_weight_is_caught(hubert, sovits_model, reference_onnx):
    path = reference_onnx
    hubert = copy.deepcopy(hubert)
    with torch.no_grad():
        hubert.hubert.feature_projection.projection.weight.mul_(-1.0)
    with pytest.raises(ex.GraphMismatchError, match="prompt codes differ"):
        ex.verify_reference_encoder(hubert, sovits_model, path, seconds=(1.0,))
    result = ex.verify_reference_encoder(hubert, sovits_model, path, seconds=(1.0,), check=False)
    assert result["prompt_codes_mismatch"] > 0


def test_bert_onnx_matches_torch(bert, bert_onnx):
    path = bert_onnx
    assert path.name == "bert.onnx" and path.is_file()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in session.get_outputs()] == ["hidden"]
    result = ex.verify_bert(bert, path, lengths=(1, 9, 40))
    assert result["hidden_max_abs_error"] < 1e-4
    # A padded mask is honoured too (not baked in at export).
    ids = np.array([[101, 872, 1962, 102, 0, 0]])
    mask = np.array([[1, 1, 1, 1, 0, 0]])
    got = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[
        0
    ]
    with torch.no_grad():
        expected = bert(
            torch.from_numpy(ids), torch.from_numpy(mask), torch.zeros(1, 6, dtype=torch.long)
        ).numpy()
    assert np.abs(got - expected).max() < 1e-4


def test_bert_mutated_weight_is_caught(bert, bert_onnx):
    bert = copy.deepcopy(bert)
    with torch.no_grad():
        bert.bert.encoder.layer[0].intermediate.dense.weight.mul_(1.5)
    with pytest.raises(ex.GraphMismatchError, match="BERT hidden states differ"):
        ex.verify_bert(bert, bert_onnx)


# ------------------------------------------------------------------------------------- tokenizer


def test_write_tokenizer(bert_dir, tmp_path):
    out = ex.write_tokenizer(bert_dir, tmp_path / "bundle")
    assert out.name == "tokenizer.json" and out.read_bytes() == (bert_dir / "tokenizer.json").read_bytes()

    vocab_only = tmp_path / "vocab_only"
    vocab_only.mkdir()
    (vocab_only / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n你\n好\n", encoding="utf-8")
    assert ex.write_tokenizer(vocab_only, tmp_path / "b2").name == "vocab.txt"

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="neither tokenizer.json nor vocab.txt"):
        ex.write_tokenizer(empty, tmp_path / "b3")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        ex.write_tokenizer(broken, tmp_path / "b4")
    assert not (tmp_path / "b4" / "tokenizer.json").exists()


# ----------------------------------------------------------------------------- random model dirs


def test_random_tiny_dirs_load_and_run(tmp_path):
    from tokenizers import Tokenizer

    hubert_dir = ssl_bert.make_random_hubert_dir(tmp_path / "hubert", size="tiny", seed=3)
    bert_dir = ssl_bert.make_random_bert_dir(tmp_path / "bert", size="tiny", seed=4)
    assert {p.name for p in hubert_dir.iterdir()} == {
        "config.json",
        "preprocessor_config.json",
        "pytorch_model.bin",
    }
    assert {p.name for p in bert_dir.iterdir()} == {"config.json", "pytorch_model.bin", "tokenizer.json"}

    raw = torch.load(hubert_dir / "pytorch_model.bin", weights_only=True)
    assert all(v.dtype == torch.float16 for v in raw.values())
    assert raw["encoder.pos_conv_embed.conv.weight_g"].shape == (1, 1, 16)  # upstream's old names
    hubert = ssl_bert.load_hubert(hubert_dir)
    with torch.no_grad():
        features = hubert(torch.from_numpy(ex._test_wave(16000, seed=1)))
    assert features.shape == (1, 768, _hubert_frames(16000 + 9600)) and torch.isfinite(features).all()

    bert = ssl_bert.load_bert(bert_dir)
    config = json.loads((bert_dir / "config.json").read_text())
    assert config["hidden_size"] == 1024 and config["num_hidden_layers"] == 3
    tokenizer = Tokenizer.from_file(str(bert_dir / "tokenizer.json"))
    assert config["vocab_size"] == tokenizer.get_vocab_size() <= 4500
    encoding = tokenizer.encode("今天天气不错，Hi!")
    assert encoding.tokens[0] == "[CLS]" and encoding.tokens[-1] == "[SEP]"
    assert encoding.tokens[1:7] == ["今", "天", "天", "气", "不", "错"]
    assert tokenizer.encode("龘").tokens == ["[CLS]", "[UNK]", "[SEP]"]  # rare: not in the tiny vocabulary
    ids = torch.tensor([encoding.ids])
    with torch.no_grad():
        hidden = bert(ids, torch.ones_like(ids), torch.zeros_like(ids))
    assert hidden.shape == (1, len(encoding.ids), 1024) and torch.isfinite(hidden).all()

    # Same seed -> same weights; another seed -> different weights.
    again = ssl_bert.make_random_hubert_dir(tmp_path / "hubert2", size="tiny", seed=3)
    other = ssl_bert.make_random_hubert_dir(tmp_path / "hubert3", size="tiny", seed=4)
    a, b, c = (torch.load(d / "pytorch_model.bin", weights_only=True) for d in (hubert_dir, again, other))
    key = "encoder.layers.0.attention.q_proj.weight"
    assert torch.equal(a[key], b[key]) and not torch.equal(a[key], c[key])


def test_full_size_configs_are_the_real_ones():
    hubert = ssl_bert._hubert_config("full")
    assert hubert["conv_dim"] == [512] * 7 and hubert["num_hidden_layers"] == 12
    assert hubert["intermediate_size"] == 3072 and hubert["num_conv_pos_embeddings"] == 128
    bert = ssl_bert._bert_config("full", 21128)
    assert (
        bert["hidden_size"],
        bert["num_hidden_layers"],
        bert["num_attention_heads"],
        bert["intermediate_size"],
    ) == (1024, 24, 16, 4096)
    vocab = ssl_bert._bert_vocab("full", 21128)
    assert len(vocab) == len(set(vocab)) == 21128 and "龥" in vocab
    with pytest.raises(ValueError, match="tiny"):
        ssl_bert._hubert_config("medium")


@pytest.mark.slow
def test_full_size_random_dirs(tmp_path):
    hubert = ssl_bert.load_hubert(ssl_bert.make_random_hubert_dir(tmp_path / "h", size="full"))
    assert len(hubert.hubert.encoder.layers) == 12
    bert = ssl_bert.load_bert(ssl_bert.make_random_bert_dir(tmp_path / "b", size="full"))
    assert len(bert.bert.encoder.layer) == 22
