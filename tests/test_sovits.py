"""SoVITS V2: strict loading of upstream's file, ONNX graphs (c) and (c') against our PyTorch modules."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from gsv_onnx.convert.checkpoints import load_sovits_checkpoint  # noqa: E402
from gsv_onnx.convert.export_sovits import (  # noqa: E402
    SovitsGraphMismatchError,
    export_sovits,
    speed_frames,
    verify_sovits,
)
from gsv_onnx.convert.sovits import (  # noqa: E402
    build_sovits,
    create_sovits,
    fold_weight_norm,
    frames_for,
    random_init_,
    spectrogram_torch,
)
from gsv_onnx.errors import CheckpointError  # noqa: E402

SOVITS_FIXTURE = "sovits/s2Gv2-random-tiny_e8_s1000.pth"


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread: on a shared 2-core machine, OpenMP barriers make 2 threads ~20x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def checkpoint(upstream_tiny):
    return load_sovits_checkpoint(upstream_tiny / SOVITS_FIXTURE)


@pytest.fixture(scope="module")
def model(checkpoint):
    return build_sovits(checkpoint.config, checkpoint.state_dict, "fixture SoVITS")


@pytest.fixture(scope="module")
def graphs(model, tmp_path_factory):
    return export_sovits(model, tmp_path_factory.mktemp("sovits_onnx"))


def _session(path):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _decoder_inputs(model, num_tokens, num_phones, speed, seed):
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 1024, (1, num_tokens), generator=gen)
    phones = torch.randint(0, 732, (1, num_phones), generator=gen)
    with torch.no_grad():
        ge = model.compute_ge(torch.rand(1, 704, 61, generator=gen) * 2)
    noise = 0.5 * torch.randn(1, model.cfg.inter_channels, frames_for(num_tokens, speed), generator=gen)
    return codes, phones, ge, noise


# ---------------------------------------------------------------------------------------------
# Loading


def test_fixture_loads_strictly_with_upstream_keys(checkpoint, model):
    assert set(model.state_dict()) == set(checkpoint.state_dict)
    # fp16 file -> fp32 module, values preserved
    key = "dec.ups.0.weight_v"
    assert model.state_dict()[key].dtype == torch.float32
    assert torch.equal(model.state_dict()[key], checkpoint.state_dict[key].float())


def test_enc_q_keys_are_ignored(checkpoint):
    state = dict(checkpoint.state_dict)
    state["enc_q.pre.weight"] = torch.zeros(3, 3, 1)
    build_sovits(checkpoint.config, state, "pretrained-like file")


@pytest.mark.parametrize(
    "mutate, named",
    [
        (lambda s: s.pop("flow.flows.2.enc.cond_layer.weight_g"), "flow.flows.2.enc.cond_layer.weight_g"),
        (lambda s: s.__setitem__("enc_p.proj.weight", torch.zeros(64, 192, 3)), "enc_p.proj.weight"),
        (lambda s: s.__setitem__("dec.extra.weight", torch.zeros(2)), "dec.extra.weight"),
        (lambda s: s.pop("quantizer.vq.layers.0._codebook.embed_avg"), "embed_avg"),
    ],
    ids=["missing", "misshaped", "unexpected", "missing-buffer"],
)
def test_bad_state_dict_names_the_key(checkpoint, mutate, named):
    state = dict(checkpoint.state_dict)
    mutate(state)
    with pytest.raises(CheckpointError, match=named.replace(".", r"\.")):
        build_sovits(checkpoint.config, state, "broken file")


def test_non_v2_config_is_refused(checkpoint):
    config = copy.deepcopy(checkpoint.config)
    config["model"]["gin_channels"] = 1024
    with pytest.raises(CheckpointError, match="gin_channels 1024"):
        build_sovits(config, checkpoint.state_dict, "v2Pro-like file")


def test_random_init_has_upstream_key_set(checkpoint):
    fresh = random_init_(create_sovits(checkpoint.config), seed=3)
    state = fresh.state_dict()
    assert list(state) == list(checkpoint.state_dict)
    for key, value in checkpoint.state_dict.items():
        assert tuple(state[key].shape) == tuple(value.shape), key
    # weight norm as weight_norm() initialises it: g = ||v|| per output row
    v = state["dec.resblocks.4.convs1.1.weight_v"]
    assert torch.allclose(state["dec.resblocks.4.convs1.1.weight_g"], v.norm(dim=(1, 2), keepdim=True))
    codebook = "quantizer.vq.layers.0._codebook."
    assert torch.equal(state[codebook + "embed_avg"], state[codebook + "embed"])
    assert state[codebook + "inited"].item() == 1
    # deterministic for a seed, and it loads strictly into a fresh model
    state = {k: v.clone() for k, v in state.items()}
    other = random_init_(fresh, seed=4).state_dict()
    assert not torch.equal(state["enc_p.proj.weight"], other["enc_p.proj.weight"])
    again = random_init_(fresh, seed=3).state_dict()
    assert all(torch.equal(state[k], again[k]) for k in state)
    build_sovits(checkpoint.config, {k: v.half() for k, v in state.items()}, "random tiny")


# ---------------------------------------------------------------------------------------------
# PyTorch behaviour


def test_fold_weight_norm_keeps_outputs(model):
    codes, phones, ge, noise = _decoder_inputs(model, 5, 7, 1.0, seed=2)
    folded = fold_weight_norm(model)
    assert not any(k.endswith(("weight_g", "weight_v")) for k in folded.state_dict())
    with torch.no_grad():
        a = model.decode(codes, phones, ge, 1.0, noise)
        b = folded.decode(codes, phones, ge, 1.0, noise)
    assert torch.allclose(a, b, atol=1e-6)


def test_extract_latent_is_nearest_codebook_entry(model):
    ssl = torch.randn(1, 768, 149, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        codes = model.extract_latent(ssl)
        projected = model.ssl_proj(ssl)[0].T
        expected = torch.cdist(projected.double(), model.quantizer.embed.double()).argmin(dim=1)
    assert tuple(codes.shape) == (1, 1, 74) and codes.dtype == torch.int64
    assert torch.equal(codes[0, 0], expected)


def test_spectrogram_torch_matches_runtime_numpy():
    from gsv_onnx.audio import spectrogram

    wav = np.random.default_rng(5).uniform(-0.8, 0.8, 32_000 + 123).astype(np.float32)
    reference = spectrogram_torch(torch.from_numpy(wav)[None])
    assert tuple(reference.shape) == (1, 1025, len(wav) // 640)
    np.testing.assert_allclose(spectrogram(wav), reference[0].numpy(), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# ONNX graphs


def test_graph_signatures_follow_the_contract(graphs):
    decoder = _session(graphs["sovits_decoder"])
    assert [(i.name, i.type, i.shape) for i in decoder.get_inputs()] == [
        ("semantic_codes", "tensor(int64)", [1, "T_sem"]),
        ("phone_ids", "tensor(int64)", [1, "T_phone"]),
        ("ge", "tensor(float)", [1, 512, 1]),
        ("speed", "tensor(float)", [1]),
        ("noise", "tensor(float)", [1, 32, "F"]),
    ]
    assert [(o.name, o.shape) for o in decoder.get_outputs()] == [("audio", [1, 1, "N_audio"])]
    ref_enc = _session(graphs["ref_enc"])
    assert [(i.name, i.shape) for i in ref_enc.get_inputs()] == [("ref_spec", [1, 704, "T_ref"])]
    assert [(o.name, o.shape) for o in ref_enc.get_outputs()] == [("ge", [1, 512, 1])]


@pytest.mark.parametrize("speed, samples", [(1.0, 64_000), (1.25, 51_840), (0.8, 80_640)])
def test_decoder_graph_matches_torch(model, graphs, speed, samples):
    """50 tokens give upstream's lengths (spec §3.3) in PyTorch and ONNX Runtime, with equal samples."""
    codes, phones, ge, noise = _decoder_inputs(model, 50, 41, speed, seed=10)
    with torch.no_grad():
        expected = model.decode(codes, phones, ge, speed, noise).numpy()
    assert expected.shape == (1, 1, samples)
    (audio,) = _session(graphs["sovits_decoder"]).run(
        None,
        {
            "semantic_codes": codes.numpy(),
            "phone_ids": phones.numpy(),
            "ge": ge.numpy(),
            "speed": np.array([speed], dtype=np.float32),
            "noise": noise.numpy(),
        },
    )
    assert audio.shape == (1, 1, samples)
    np.testing.assert_allclose(audio, expected, atol=1e-5)
    assert np.abs(expected).max() > 1e-3  # the comparison is not between two silences


@pytest.mark.parametrize("t_ref", [1, 5, 150])
def test_ref_enc_graph_matches_torch(model, graphs, t_ref):
    spec = torch.rand(1, 704, t_ref, generator=torch.Generator().manual_seed(t_ref)) * 3
    with torch.no_grad():
        expected = model.compute_ge(spec).numpy()
    (ge,) = _session(graphs["ref_enc"]).run(None, {"ref_spec": spec.numpy()})
    assert ge.shape == (1, 512, 1)
    np.testing.assert_allclose(ge, expected, atol=1e-5)


def test_decoder_graph_short_inputs(model, graphs):
    """Lengths below the relative-attention window (4) exercise the clamped index paths."""
    codes, phones, ge, noise = _decoder_inputs(model, 1, 2, 1.0, seed=11)
    with torch.no_grad():
        expected = model.decode(codes, phones, ge, 1.0, noise).numpy()
    (audio,) = _session(graphs["sovits_decoder"]).run(
        None,
        {
            "semantic_codes": codes.numpy(),
            "phone_ids": phones.numpy(),
            "ge": ge.numpy(),
            "speed": np.array([1.0], dtype=np.float32),
            "noise": noise.numpy(),
        },
    )
    np.testing.assert_allclose(audio, expected, atol=1e-5)


def test_in_graph_frame_count_matches_python_rule(tmp_path):
    """The float32 `speed` input must give upstream's float64 frame count (0.8 is not exact in fp32)."""

    class Frames(torch.nn.Module):
        def forward(self, y, speed):
            return speed_frames(y, speed)

    path = tmp_path / "frames.onnx"
    torch.onnx.export(
        Frames(),
        (torch.zeros(1, 2, 10), torch.tensor([1.25])),
        str(path),
        input_names=["y", "speed"],
        output_names=["frames"],
        dynamic_axes={"y": {2: "T"}},
        opset_version=17,
        dynamo=False,
    )
    session = _session(path)
    for length in (2, 10, 50, 100, 101, 300, 1999):
        for speed in (1.0, 0.5, 0.7, 0.8, 0.9, 0.95, 1.1, 1.2, 1.25, 1.3, 1.5, 2.0):
            (frames,) = session.run(
                None, {"y": np.zeros((1, 2, length), np.float32), "speed": np.array([speed], np.float32)}
            )
            expected = length if speed == 1 else int(length / speed) + 1
            assert int(frames[0]) == expected, (length, speed)


def test_verify_passes_and_catches_a_mutated_weight(model, graphs):
    errors = verify_sovits(model, graphs, speeds=(1.0, 0.8), num_tokens=12)
    assert errors["sovits_decoder"] < 1e-5 and errors["ref_enc"] < 1e-5
    assert errors["sovits_decoder_snr_db"] > 100
    quick = {"speeds": (1.0,), "num_tokens": 6, "num_phones": 5}
    mutated = copy.deepcopy(model)
    with torch.no_grad():
        mutated.dec.conv_post.weight[0, 1, 3] += 0.1
    with pytest.raises(SovitsGraphMismatchError, match="sovits_decoder"):
        verify_sovits(mutated, graphs, **quick)
    mutated = copy.deepcopy(model)
    with torch.no_grad():
        mutated.ref_enc.slf_attn.w_vs.weight[5, 9] += 0.5
    with pytest.raises(SovitsGraphMismatchError, match="ref_enc"):
        verify_sovits(mutated, graphs, **quick)


# ---------------------------------------------------------------------------------------------
# Precision variants (quantize_sovits_graph)


def test_int8_variant_quantizes_wide_convs_and_verifies(model, graphs, tmp_path):
    import onnx

    from gsv_onnx.convert.export_sovits import is_reduced_precision
    from gsv_onnx.convert.quantize import quantize_sovits_graph, sovits_int8_nodes, sovits_int8_residual_adds

    fp32_graph = onnx.load(str(graphs["sovits_decoder"]))
    nodes = sovits_int8_nodes(fp32_graph)
    # tiny model: upsample_initial_channel 64 -> of the HiFi-GAN only conv_pre, cond and stage 0
    # (32 channels, resblocks 0-2) qualify; the text encoder's and flow's wide convs do too
    dec_nodes = [n for n in nodes if n.startswith("/dec/")]
    resblock_nodes = [n for n in dec_nodes if "/dec/resblocks." in n]
    assert len(resblock_nodes) == 18 and all(n.split("/")[2][-1] in "012" for n in resblock_nodes)
    assert set(dec_nodes) - set(resblock_nodes) == {"/dec/conv_pre/Conv", "/dec/cond/Conv"}
    assert any(n.startswith("/encoder_text/") for n in nodes) and any(n.startswith("/enc/") for n in nodes)
    assert not sovits_int8_residual_adds(fp32_graph)  # no resblock of >= 64 channels here

    out = quantize_sovits_graph(graphs["sovits_decoder"], "int8", out_path=tmp_path / "dec.int8.onnx")
    assert is_reduced_precision(out)
    int8_graph = onnx.load(str(out))
    ops = [n.op_type for n in int8_graph.graph.node]
    assert ops.count("QLinearConv") == len(nodes)
    assert "ConvTranspose" not in ops  # the upsamplers became polyphase Convs
    # standard ONNX ops, plus ORT's CPU contrib QLinearAdd where residuals are quantized
    assert {n.domain for n in int8_graph.graph.node if n.op_type != "QLinearAdd"} <= {"", "ai.onnx"}
    assert [i.name for i in int8_graph.graph.input] == [i.name for i in fp32_graph.graph.input]
    assert [o.name for o in int8_graph.graph.output] == ["audio"]
    assert out.stat().st_size < 0.5 * graphs["sovits_decoder"].stat().st_size
    errors = verify_sovits(
        model, {"sovits_decoder": out, "ref_enc": graphs["ref_enc"]}, speeds=(1.0, 0.8), num_tokens=10
    )
    assert errors["sovits_decoder_snr_db"] > 20
    # and the quantization really happened: the int8 graph's audio is not fp32's
    codes, phones, ge, noise = _decoder_inputs(model, 8, 6, 1.0, seed=12)
    feeds = {
        "semantic_codes": codes.numpy(),
        "phone_ids": phones.numpy(),
        "ge": ge.numpy(),
        "speed": np.array([1.0], dtype=np.float32),
        "noise": noise.numpy(),
    }
    (int8_audio,) = _session(out).run(None, feeds)
    (fp32_audio,) = _session(graphs["sovits_decoder"]).run(None, feeds)
    assert not np.array_equal(int8_audio, fp32_audio)
    # ref_enc stays fp32 in an int8 bundle
    assert quantize_sovits_graph(graphs["ref_enc"], "int8") == graphs["ref_enc"]


def test_int8_residual_adds_of_wide_resblocks_are_quantized(model, graphs, tmp_path, monkeypatch):
    import onnx

    from gsv_onnx.convert import quantize

    # the tiny model's widest resblocks have 32 channels: lower the threshold to exercise the path
    monkeypatch.setattr(quantize, "SOVITS_INT8_MIN_RESIDUAL_CHANNELS", 32)
    adds = quantize.sovits_int8_residual_adds(onnx.load(str(graphs["sovits_decoder"])))
    assert len(adds) == 9 and all(
        a.split("/")[2] in ("resblocks.0", "resblocks.1", "resblocks.2") for a in adds
    )
    out = quantize.quantize_sovits_graph(
        graphs["sovits_decoder"], "int8", out_path=tmp_path / "dec.int8.onnx"
    )
    int8_graph = onnx.load(str(out))
    quantized_adds = [
        n.name.removesuffix("_quant") for n in int8_graph.graph.node if n.op_type == "QLinearAdd"
    ]
    assert sorted(quantized_adds) == sorted(adds)
    errors = verify_sovits(
        model, {"sovits_decoder": out, "ref_enc": graphs["ref_enc"]}, speeds=(1.0,), num_tokens=10
    )
    assert errors["sovits_decoder_snr_db"] > 20


@pytest.mark.parametrize(
    "channels_in, channels_out, kernel, stride, pads, bias",
    [
        (8, 4, 16, 10, (3, 3), True),  # V2's ups.0
        (8, 4, 16, 8, (4, 4), False),  # ups.1
        (6, 3, 8, 2, (3, 3), True),  # ups.2
        (4, 2, 2, 2, (0, 0), True),  # ups.3 / ups.4
        (5, 3, 7, 4, (1, 2), True),  # uneven pads
    ],
)
def test_polyphase_upsampler_equals_conv_transpose(channels_in, channels_out, kernel, stride, pads, bias):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from gsv_onnx.convert.quantize import sovits_polyphase_upsamplers

    rng = np.random.default_rng(kernel * stride)
    inits = [
        numpy_helper.from_array(
            rng.standard_normal((channels_in, channels_out, kernel)).astype(np.float32), "w"
        )
    ]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(channels_out).astype(np.float32), "b"))
    node = helper.make_node(
        "ConvTranspose", ["x", "w", "b"] if bias else ["x", "w"], ["y"], name="/dec/ups.0/ConvTranspose",
        kernel_shape=[kernel], strides=[stride], pads=list(pads),
    )  # fmt: skip
    graph = helper.make_graph(
        [node],
        "ups",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels_in, "L"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels_out, "N"])],
        inits,
    )
    original = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    rewritten = copy.deepcopy(original)
    assert sovits_polyphase_upsamplers(rewritten) == 1
    onnx.checker.check_model(rewritten)
    assert [n.op_type for n in rewritten.graph.node] == ["Conv", "Reshape", "Transpose", "Reshape"]
    for length in (1, 2, 13):
        x = rng.standard_normal((1, channels_in, length)).astype(np.float32)
        (expected,) = ort.InferenceSession(original.SerializeToString()).run(None, {"x": x})
        (got,) = ort.InferenceSession(rewritten.SerializeToString()).run(None, {"x": x})
        assert got.shape == expected.shape == (1, channels_out, length * stride)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # a transposed conv of another form (output longer than stride x input) is left alone
    other = copy.deepcopy(original)
    next(a for a in other.graph.node[0].attribute if a.name == "pads").ints[:] = [0, 0]
    assert sovits_polyphase_upsamplers(other) == (0 if kernel != stride else 1)


def test_fp16_variant_halves_weights_and_verifies(model, graphs, tmp_path):
    from gsv_onnx.convert.quantize import quantize_sovits_graph

    paths = {
        name: quantize_sovits_graph(graphs[name], "fp16", out_path=tmp_path / f"{name}.fp16.onnx")
        for name in ("sovits_decoder", "ref_enc")
    }
    assert paths["sovits_decoder"].stat().st_size < 0.6 * graphs["sovits_decoder"].stat().st_size
    errors = verify_sovits(model, paths, speeds=(1.25,), num_tokens=10)
    assert errors["sovits_decoder_snr_db"] > 50
    assert errors["ref_enc"] < 1e-2
