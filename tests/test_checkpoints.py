"""Checkpoint reading: formats, HParams configs, version detection and every kind of bad input."""

from __future__ import annotations

import copy
import hashlib
import os
import zipfile

import pytest

torch = pytest.importorskip("torch")

from gsv_onnx.convert.checkpoints import (  # noqa: E402
    HEADER_VERSIONS,
    detect_sovits_version,
    load_gpt_checkpoint,
    load_sovits_checkpoint,
)
from gsv_onnx.convert.testmodels import (  # noqa: E402
    random_sovits_state_dict,
    sovits_config,
    write_gpt_checkpoint,
    write_sovits_checkpoint,
)
from gsv_onnx.errors import CheckpointError, UnsupportedVersionError  # noqa: E402


@pytest.fixture(scope="module")
def sovits_parts():
    """(config, fp16 state dict) of a random tiny SoVITS V2."""
    return random_sovits_state_dict("tiny", seed=3)


def _write(tmp_path, sovits_parts, name="s.pth", weight=None, config=None, **kwargs):
    base_config, base_weight = sovits_parts
    return write_sovits_checkpoint(
        tmp_path / name,
        weight=base_weight if weight is None else weight,
        config=base_config if config is None else config,
        **kwargs,
    )


# -- formats ------------------------------------------------------------------------------------


def test_tiny_models_read_as_v2(tiny_models):
    gpt = load_gpt_checkpoint(tiny_models.gpt)
    assert gpt.info == "GPT-e15"
    assert gpt.model_config["n_layer"] == 2 and gpt.model_config["hidden_dim"] == 64
    assert all(not k.startswith("model.") for k in gpt.state_dict)
    assert gpt.state_dict["ar_text_embedding.word_embeddings.weight"].shape == (732, 64)
    assert gpt.state_dict["bert_proj.weight"].dtype == torch.float16
    assert gpt.sha256 == hashlib.sha256(tiny_models.gpt.read_bytes()).hexdigest()
    sovits = load_sovits_checkpoint(tiny_models.sovits)
    assert sovits.version == "v2" and sovits.header == b"PK"
    assert isinstance(sovits.config, dict) and isinstance(sovits.config["model"], dict)
    assert sovits.model_config["gin_channels"] == 512
    assert sovits.info == "8epoch_1000iteration"
    assert not any(k.startswith("enc_q.") for k in sovits.state_dict)


def test_sovits_config_is_pickled_as_utils_hparams(tiny_models):
    with zipfile.ZipFile(tiny_models.sovits) as archive:
        pickled = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    assert b"utils\nHParams" in pickled  # GLOBAL opcode "utils HParams", as upstream's files have
    # and it cannot be loaded without a stand-in for that class
    with pytest.raises(Exception, match="utils"):
        torch.load(tiny_models.sovits, weights_only=True)


def test_upstream_fixture_reads_as_v2(upstream_tiny):
    sovits_path = next((upstream_tiny / "sovits").glob("*.pth"))
    before = hashlib.sha256(sovits_path.read_bytes()).hexdigest()
    sovits = load_sovits_checkpoint(sovits_path)
    assert sovits.version == "v2"
    assert sovits.config["model"]["version"] == "v2"
    assert sovits.config["data"]["hop_length"] == 640
    assert sovits.state_dict["enc_p.text_embedding.weight"].shape[0] == 732
    assert sovits.sha256 == before
    gpt = load_gpt_checkpoint(next((upstream_tiny / "gpt").glob("*.ckpt")))
    assert gpt.model_config["phoneme_vocab_size"] == 732


def test_plain_dict_config_equals_hparams_config(tmp_path, sovits_parts):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    as_hparams = load_sovits_checkpoint(_write(tmp_path / "a", sovits_parts))
    as_dict = load_sovits_checkpoint(_write(tmp_path / "b", sovits_parts, config_format="dict"))
    assert as_dict.config == as_hparams.config
    assert as_dict.version == "v2"


def test_enc_q_keys_are_accepted(tmp_path, sovits_parts):
    weight = dict(sovits_parts[1])
    weight["enc_q.pre.weight"] = torch.zeros(192, 1025, 1, dtype=torch.float16)
    checkpoint = load_sovits_checkpoint(_write(tmp_path, sovits_parts, weight=weight))
    assert checkpoint.version == "v2" and "enc_q.pre.weight" in checkpoint.state_dict


# -- version detection ----------------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(HEADER_VERSIONS))
def test_every_header_code(tmp_path, sovits_parts, code):
    path = _write(tmp_path, sovits_parts, header=code)
    original = path.read_bytes()
    symbols, model_version, is_lora = HEADER_VERSIONS[code]
    if model_version == "v2" and not is_lora:
        checkpoint = load_sovits_checkpoint(path)
        assert checkpoint.version == "v2" and checkpoint.header == code
    else:
        with pytest.raises(UnsupportedVersionError) as info:
            load_sovits_checkpoint(path)
        message = str(info.value)
        assert f"GPT-SoVITS {model_version}" in message and "only V2 is supported yet" in message
        assert f"file header '{code.decode()}'" in message
        if is_lora:
            assert "LoRA" in message
    assert path.read_bytes() == original  # the user's file is never modified


def test_detection_ignores_file_size(tmp_path, sovits_parts):
    """Upstream's size rule would call this small V2 file "v1"; the 732-row table says v2."""
    path = _write(tmp_path, sovits_parts)
    assert os.path.getsize(path) < 82_978 * 1024
    assert load_sovits_checkpoint(path).version == "v2"


def _variant(sovits_parts, add=None, replace=None, drop_prefixes=()):
    config, weight = sovits_parts
    weight = {k: v for k, v in weight.items() if not k.startswith(drop_prefixes)}
    weight.update(add or {})
    weight.update(replace or {})
    return copy.deepcopy(config), weight


def _half(*shape):
    return torch.zeros(*shape, dtype=torch.float16)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("v1_phone_table", "v1"),
        ("sv_emb", "v2Pro"),
        ("sv_emb_plus", "v2ProPlus"),
        ("gin_1024", "v2Pro"),
        ("cfm", "v3/v4"),
        ("lora_rank", "v3/v4 LoRA"),
    ],
)
def test_versions_from_keys_and_shapes(tmp_path, sovits_parts, case, expected):
    extra = None
    config, weight = sovits_parts
    if case == "v1_phone_table":
        config, weight = _variant(sovits_parts, replace={"enc_p.text_embedding.weight": _half(322, 192)})
    elif case == "sv_emb":
        config, weight = _variant(
            sovits_parts, add={"sv_emb.weight": _half(16, 8), "prelu.weight": _half(16)}
        )
    elif case == "sv_emb_plus":
        config, weight = _variant(
            sovits_parts,
            add={"sv_emb.weight": _half(16, 8)},
            replace={"dec.ups.0.weight_v": _half(768, 384, 20), "dec.ups.0.weight_g": _half(768, 1, 1)},
        )
    elif case == "gin_1024":
        config, weight = _variant(sovits_parts, replace={"ref_enc.fc.fc.weight": _half(1024, 128)})
    elif case == "cfm":
        config, weight = _variant(
            sovits_parts,
            add={"cfm.estimator.proj_out.weight": _half(100, 1024), "bridge.0.weight": _half(512, 32, 1)},
            drop_prefixes=("dec.", "flow."),
        )
    elif case == "lora_rank":
        extra = {"lora_rank": 32}
    path = _write(tmp_path, sovits_parts, weight=weight, config=config, extra=extra)
    with pytest.raises(
        UnsupportedVersionError, match=f"is a GPT-SoVITS {expected} model.*only V2 is supported yet"
    ):
        load_sovits_checkpoint(path)


def test_header_v2_but_weights_v2pro(sovits_parts):
    config, weight = _variant(sovits_parts, add={"sv_emb.weight": _half(4, 4)})
    version = detect_sovits_version(b"01", weight, config)
    assert version.model_version == "v2Pro" and not version.supported


def test_detect_plain_v2(sovits_parts):
    config, weight = sovits_parts
    version = detect_sovits_version(b"PK", weight, config)
    assert version.supported and version.model_version == "v2" and version.symbol_version == "v2"
    assert "732-row phone table" in version.evidence


def test_gpt_v1_is_unsupported(tmp_path, tiny_models):
    payload = torch.load(tiny_models.gpt, weights_only=True)
    payload["config"]["model"]["phoneme_vocab_size"] = 512
    key = "model.ar_text_embedding.word_embeddings.weight"
    payload["weight"][key] = payload["weight"][key][:512].clone()
    path = tmp_path / "v1.ckpt"
    torch.save(payload, path)
    with pytest.raises(UnsupportedVersionError, match="v1 GPT.*only V2 is supported yet"):
        load_gpt_checkpoint(path)


# -- bad inputs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("loader", [load_gpt_checkpoint, load_sovits_checkpoint])
def test_empty_file(tmp_path, loader):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"is empty \(0 bytes\)"):
        loader(path)


@pytest.mark.parametrize("loader", [load_gpt_checkpoint, load_sovits_checkpoint])
def test_missing_file_and_directory(tmp_path, loader):
    with pytest.raises(CheckpointError, match="does not exist"):
        loader(tmp_path / "nope.ckpt")
    with pytest.raises(CheckpointError, match="is a directory"):
        loader(tmp_path)


def test_truncated_files(tmp_path, tiny_models):
    for source, loader in (
        (tiny_models.gpt, load_gpt_checkpoint),
        (tiny_models.sovits, load_sovits_checkpoint),
    ):
        data = source.read_bytes()
        path = tmp_path / f"truncated{source.suffix}"
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match="is truncated or corrupted"):
            loader(path)


def test_truncated_file_with_version_header(tmp_path, sovits_parts):
    data = _write(tmp_path, sovits_parts, header=b"05").read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[:4096])
    with pytest.raises(CheckpointError, match="is truncated or corrupted"):
        load_sovits_checkpoint(path)


def test_corrupted_pickle(tmp_path, tiny_models):
    data = bytearray(tiny_models.gpt.read_bytes())
    start = data.index(b"data.pkl") + len(b"data.pkl")
    # overwrite the start of the pickle stream (stored uncompressed after its local header)
    pkl_start = data.index(b"\x80\x02", start)
    data[pkl_start : pkl_start + 16] = b"\xff" * 16
    path = tmp_path / "corrupt.ckpt"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted|holds objects"):
        load_gpt_checkpoint(path)


def test_non_checkpoint_files(tmp_path):
    text = tmp_path / "notes.ckpt"
    text.write_text("this is not a model\n")
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint.*--gpt"):
        load_gpt_checkpoint(text)
    archive = tmp_path / "archive.pth"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match="zip archive but not a PyTorch checkpoint.*--sovits"):
        load_sovits_checkpoint(archive)


def test_torch_file_that_is_not_a_gpt_sovits_checkpoint(tmp_path):
    path = tmp_path / "plain.pth"
    torch.save({"layer.weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a GPT-SoVITS SoVITS checkpoint.*no 'weight'"):
        load_sovits_checkpoint(path)


def test_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.ckpt"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"weight": {"x": torch.zeros(1)}, "config": Evil()}, path)
    with pytest.raises(CheckpointError, match="holds objects a GPT-SoVITS checkpoint does not have"):
        load_gpt_checkpoint(path)
    assert not marker.exists()


def test_gpt_passed_as_sovits_and_back(tiny_models):
    with pytest.raises(CheckpointError, match="is a GPT checkpoint.*pass it to --gpt"):
        load_sovits_checkpoint(tiny_models.gpt)
    with pytest.raises(CheckpointError, match="is a SoVITS checkpoint.*pass it to --sovits"):
        load_gpt_checkpoint(tiny_models.sovits)


def test_sovits_config_inconsistent_with_weights(tmp_path, sovits_parts):
    config = sovits_config("tiny")
    config["model"]["upsample_initial_channel"] = 128
    path = _write(tmp_path, sovits_parts, config=config)
    with pytest.raises(CheckpointError, match=r"dec.ups.0 has shape \(64, 32, 16\).*implies \(128, 64, 16\)"):
        load_sovits_checkpoint(path)


def test_sovits_config_missing_section(tmp_path, sovits_parts):
    config = sovits_config("tiny")
    del config["model"]["gin_channels"]
    with pytest.raises(CheckpointError, match="config lacks gin_channels"):
        load_sovits_checkpoint(_write(tmp_path, sovits_parts, config=config))


# -- strict loading (our modules against the files) ------------------------------------------------


def test_strict_loading_names_missing_and_misshaped_keys(tmp_path, tiny_models, sovits_parts):
    from gsv_onnx.convert.gpt import build_gpt
    from gsv_onnx.convert.sovits import build_sovits

    gpt = load_gpt_checkpoint(tiny_models.gpt)
    state = dict(gpt.state_dict)
    state.pop("ar_predict_layer.weight")
    with pytest.raises(CheckpointError, match="missing keys: ar_predict_layer.weight"):
        build_gpt(gpt.model_config, state, "GPT checkpoint x.ckpt")
    state = dict(gpt.state_dict)
    state["bert_proj.weight"] = state["bert_proj.weight"][:, :512]
    with pytest.raises(CheckpointError, match=r"mis-shaped keys: bert_proj.weight \(file \(64, 512\)"):
        build_gpt(gpt.model_config, state, "GPT checkpoint x.ckpt")

    config, weight = sovits_parts
    extra = dict(weight)
    extra["dec.unknown.weight"] = _half(3)
    with pytest.raises(CheckpointError, match="unexpected keys: dec.unknown.weight"):
        build_sovits(config, extra, "SoVITS checkpoint y.pth")
    fewer = {k: v for k, v in weight.items() if k != "ref_enc.fc.fc.bias"}
    with pytest.raises(CheckpointError, match="missing keys: ref_enc.fc.fc.bias"):
        build_sovits(config, fewer, "SoVITS checkpoint y.pth")


def test_gpt_checkpoint_round_trip(tmp_path):
    path = write_gpt_checkpoint(tmp_path / "g-e15.ckpt", size="tiny", seed=5)
    payload = torch.load(path, weights_only=True)
    assert set(payload) == {"weight", "config", "info"}
    assert all(k.startswith("model.") and v.dtype == torch.float16 for k, v in payload["weight"].items())
    assert len(payload["weight"]) == 6 + 2 * 12 + 1
    assert payload["config"]["model"]["EOS"] == 1024
