"""GPT (Text2SemanticDecoder): strict loading, ONNX export vs torch, the zero-copy decoder, the sampler port."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gsv_onnx.convert.export_gpt import export_gpt, verify_gpt  # noqa: E402
from gsv_onnx.convert.gpt import (  # noqa: E402
    Text2SemanticDecoder,
    build_gpt,
    random_init_,
    reference_generate,
    reference_sample,
)
from gsv_onnx.errors import CheckpointError  # noqa: E402
from gsv_onnx.runtime.decoder import DecodeLimitError, GptDecoder  # noqa: E402
from gsv_onnx.runtime.options import RuntimeOptions  # noqa: E402

TINY_CONFIG = {
    "vocab_size": 1025,
    "phoneme_vocab_size": 732,
    "embedding_dim": 64,
    "hidden_dim": 64,
    "head": 4,
    "linear_units": 256,
    "n_layer": 2,
    "dropout": 0,
    "EOS": 1024,
}
TOL = 1e-4
ONE_THREAD = RuntimeOptions(intra_op_threads=1)


def _inputs(text_len: int, prompt_len: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    phone_ids = rng.integers(0, 732, (1, text_len))
    bert = rng.standard_normal((1, 1024, text_len)).astype(np.float32)
    codes = rng.integers(0, 1024, (1, prompt_len))
    return phone_ids, bert, codes


@pytest.fixture(scope="module")
def tiny_model() -> Text2SemanticDecoder:
    model = Text2SemanticDecoder.from_config(TINY_CONFIG)
    return random_init_(model, seed=3).eval()


@pytest.fixture(scope="module")
def tiny_graphs(tiny_model, tmp_path_factory):
    """The "cache_read" decode form: design.md (b) with [1, P, H] cache inputs that are only read."""
    return export_gpt(tiny_model, tmp_path_factory.mktemp("gpt"), decode_attention="cache_read")


@pytest.fixture(scope="module")
def gqa_graphs(tiny_model, tmp_path_factory):
    """The default export: GroupQueryAttention on in-place buffers."""
    return export_gpt(tiny_model, tmp_path_factory.mktemp("gpt_gqa"))


@pytest.fixture(params=["cache_read", "gqa"])
def any_graphs(request):
    """Both decode variants: design.md's cache-reading graph and the GroupQueryAttention one."""
    return request.getfixturevalue("tiny_graphs" if request.param == "cache_read" else "gqa_graphs")


@pytest.fixture(scope="module")
def fixture_checkpoint(upstream_tiny):
    path = next((upstream_tiny / "gpt").glob("*.ckpt"))
    return torch.load(path, map_location="cpu", weights_only=False)


# -- strict loading ------------------------------------------------------------------------------


def test_fixture_gpt_loads_strictly(fixture_checkpoint):
    weight = fixture_checkpoint["weight"]
    model = build_gpt(fixture_checkpoint["config"]["model"], weight, "fixture GPT")
    state = model.state_dict()
    assert sorted("model." + k for k in state) == sorted(weight)
    for key, value in weight.items():  # fp16 on disk -> fp32 module, values preserved
        assert state[key[len("model.") :]].dtype == torch.float32
        assert torch.equal(state[key[len("model.") :]], value.float())


def test_full_size_key_count_matches_upstream():
    model = Text2SemanticDecoder()  # V2 defaults: 24 x 512, 16 heads
    state = model.state_dict()
    assert len(state) == 295
    assert sum(v.numel() for v in state.values()) == 77_606_402


@pytest.mark.parametrize("problem", ["missing", "unexpected", "misshaped"])
def test_bad_state_dict_names_the_key(tiny_model, problem):
    state = {"model." + k: v.clone() for k, v in tiny_model.state_dict().items()}
    if problem == "missing":
        del state["model.h.layers.1.norm2.bias"]
        key = "h.layers.1.norm2.bias"
    elif problem == "unexpected":
        state["model.speaker_proj.weight"] = torch.zeros(64, 4096)
        key = "speaker_proj.weight"
    else:
        state["model.ar_predict_layer.weight"] = torch.zeros(1024, 64)
        key = "ar_predict_layer.weight"
    with pytest.raises(CheckpointError, match=problem.replace("misshaped", "mis-shaped")) as info:
        build_gpt(TINY_CONFIG, state, "my.ckpt")
    assert key in str(info.value) and "my.ckpt" in str(info.value)


# -- torch reference -----------------------------------------------------------------------------


def test_decode_step_equals_prefill_over_longer_prompt(tiny_model):
    """The cache-reading step (block-diagonal products, joint softmax) equals full attention."""
    phone_ids, bert, codes = (torch.from_numpy(a) for a in _inputs(10, 6))
    with torch.no_grad():
        _, k_cache, v_cache = tiny_model.prefill(phone_ids, bert, codes)
        for token in (5, 900):
            logits, k_new, v_new = tiny_model.decode_step(
                torch.tensor([[token]]), torch.tensor([codes.shape[1]]), k_cache, v_cache
            )
            codes = torch.cat([codes, torch.tensor([[token]])], dim=1)
            full_logits, full_k, full_v = tiny_model.prefill(phone_ids, bert, codes)
            assert torch.allclose(logits, full_logits, atol=TOL)
            assert torch.allclose(k_new[:, :, 0], full_k[:, :, -1], atol=TOL)
            assert torch.allclose(v_new[:, :, 0], full_v[:, :, -1], atol=TOL)
            k_cache = torch.cat([k_cache, k_new], dim=2)
            v_cache = torch.cat([v_cache, v_new], dim=2)


def test_prefill_text_rows_ignore_the_prompt(tiny_model):
    """Text positions never attend to semantic ones (spec §2.3): their K/V do not depend on the prompt."""
    phone_ids, bert, codes = (torch.from_numpy(a) for a in _inputs(8, 5))
    with torch.no_grad():
        _, k_with, _ = tiny_model.prefill(phone_ids, bert, codes)
        logits_free, k_free, _ = tiny_model.prefill(phone_ids, bert, None)
    assert k_free.shape[2] == 8 and k_with.shape[2] == 13
    assert torch.allclose(k_with[:, :, :8], k_free, atol=1e-6)
    assert logits_free.shape == (1, 1025)


def test_random_init_gives_varied_logits(tiny_model):
    phone_ids, bert, codes = (torch.from_numpy(a) for a in _inputs(12, 6))
    tokens = reference_generate(tiny_model, phone_ids, bert, codes, top_k=1, max_steps=40)
    assert len(set(tokens.tolist())) > 10


# -- ONNX export ---------------------------------------------------------------------------------


def test_export_writes_contract_graphs(tiny_graphs):
    import onnx

    def signature(values):
        return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}

    prefill = onnx.load(str(tiny_graphs["gpt_prefill"]), load_external_data=False)
    assert signature(prefill.graph.input) == {
        "phone_ids": [1, "T_text"],
        "bert_features": [1, 1024, "T_text"],
        "prompt_codes": [1, "T_prompt"],
    }
    assert signature(prefill.graph.output)["logits"] == [1, 1025]
    assert signature(prefill.graph.output)["k_cache"][:2] == [2, 1]
    decode = onnx.load(str(tiny_graphs["gpt_decode"]), load_external_data=False)
    inputs = signature(decode.graph.input)
    assert inputs["token"] == [1, 1] and inputs["position"] == [1]
    assert {k for k in inputs if "cache" in k} == {"k_cache_0", "k_cache_1", "v_cache_0", "v_cache_1"}
    assert inputs["k_cache_1"] == [1, "P", 64]
    assert signature(decode.graph.output) == {
        "logits": [1, 1025],
        "k_new": [2, 1, 1, 64],
        "v_new": [2, 1, 1, 64],
    }
    # the decode graph never concatenates or copies a cache input: each one only feeds a Reshape
    for name in ("k_cache_0", "v_cache_1"):
        consumers = [n for n in decode.graph.node if name in n.input]
        assert [n.op_type for n in consumers] == ["Reshape"]
        flat = consumers[0].output[0]  # the [P, H] view goes straight into a matmul, never a Concat
        assert {n.op_type for n in decode.graph.node if flat in n.input} == {"MatMul"}
    # weights used by both graphs live once in the shared data file
    weight_bytes = 4 * sum(p.numel() for p in Text2SemanticDecoder.from_config(TINY_CONFIG).parameters())
    pe_bytes = 4 * 4000 * 64
    assert tiny_graphs["gpt_data"].stat().st_size < 1.1 * (weight_bytes + pe_bytes)


def test_default_decode_graph_keeps_the_contract_names(gqa_graphs):
    import onnx

    from gsv_onnx.bundle import OPTIONAL_INPUTS, graph_contract

    def signature(values):
        return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}

    decode = onnx.load(str(gqa_graphs["gpt_decode"]), load_external_data=False)
    inputs, outputs = signature(decode.graph.input), signature(decode.graph.output)
    contract = graph_contract("gpt_decode", 2)
    optional = {name for name, _ in OPTIONAL_INPUTS["gpt_decode"]}
    assert set(inputs) == {name for name, _ in contract["inputs"]} | optional
    assert {name for name, _ in contract["outputs"]} <= set(outputs)
    assert inputs["k_cache_1"] == [1, 4, "C", 16] and inputs["cache_len"] == [1]
    assert outputs["k_present_1"] == [1, 4, "C", 16] and outputs["k_new"] == [2, 1, 1, 64]
    attention = [n for n in decode.graph.node if n.op_type == "GroupQueryAttention"]
    assert len(attention) == 2
    for i in range(2):  # the cache buffers feed only the attention operator
        assert [n.op_type for n in decode.graph.node if f"k_cache_{i}" in n.input] == ["GroupQueryAttention"]


def test_ort_matches_torch(tiny_model, any_graphs):
    errors = verify_gpt(tiny_model, any_graphs, steps=4)
    assert set(errors) == {
        "prefill_logits",
        "prefill_cache",
        "prefill_ref_free_logits",
        "decode_logits",
        "decode_cache",
    }
    assert max(errors.values()) < TOL, errors


def test_mutated_weight_fails_verification(tiny_model, any_graphs):
    mutated = Text2SemanticDecoder.from_config(TINY_CONFIG)
    mutated.load_state_dict(tiny_model.state_dict())
    with torch.no_grad():
        mutated.h.layers[1].linear1.weight[3, 7] += 0.5
    errors = verify_gpt(mutated.eval(), any_graphs)
    assert errors["prefill_logits"] > 10 * TOL
    assert errors["decode_logits"] > 10 * TOL


@pytest.mark.parametrize("decode_attention", ["cache_read", "gqa"])
def test_fixture_gpt_exports_and_verifies(fixture_checkpoint, tmp_path, decode_attention):
    model = build_gpt(fixture_checkpoint["config"]["model"], fixture_checkpoint["weight"], "fixture GPT")
    errors = verify_gpt(model, export_gpt(model, tmp_path, decode_attention=decode_attention))
    assert max(errors.values()) < TOL, errors


# -- runtime decoder -----------------------------------------------------------------------------


def test_decoder_matches_torch_prefill_and_steps(tiny_model, any_graphs):
    decoder = GptDecoder(any_graphs["gpt_prefill"], any_graphs["gpt_decode"], ONE_THREAD, max_new_tokens=30)
    for prompt_len in (7, 0):
        phone_ids, bert, codes = _inputs(11, prompt_len, seed=prompt_len)
        logits = decoder.prefill(phone_ids, bert, codes if prompt_len else None)
        assert decoder.cache_len == 11 + prompt_len and decoder.position == prompt_len
        fed = []
        for _ in range(6):
            fed.append(int(np.argmax(logits[:-1])))
            logits = decoder.step(fed[-1])
        with torch.no_grad():
            expected, _, _ = tiny_model.prefill(
                torch.from_numpy(phone_ids), torch.from_numpy(bert), torch.tensor([codes[0].tolist() + fed])
            )
        assert np.abs(logits - expected[0].numpy()).max() < TOL
        assert decoder.position == prompt_len + 6


def test_decoder_binds_buffers_without_copies(tiny_graphs):
    """Buffers keep their address, steps allocate no cache-sized memory, logits equal a concat path exactly."""
    decoder = GptDecoder(tiny_graphs["gpt_prefill"], tiny_graphs["gpt_decode"], ONE_THREAD, max_new_tokens=40)
    session = decoder.decode_session
    phone_ids, bert, codes = _inputs(300, 20)
    logits = decoder.prefill(phone_ids, bert, codes)
    k_ref, v_ref = (c.copy() for c in decoder.cache_view())
    addresses = (decoder.k_buffer.ctypes.data, decoder.v_buffer.ctypes.data)
    cache_bytes = k_ref.nbytes + v_ref.nbytes
    position = 20
    tracemalloc.start()
    try:
        for _ in range(25):
            token = int(np.argmax(logits[:-1]))
            baseline = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            logits = decoder.step(token)
            step_peak = tracemalloc.get_traced_memory()[1] - baseline
            assert step_peak < cache_bytes / 8, f"a step allocated {step_peak} bytes (cache: {cache_bytes})"
            assert (decoder.k_buffer.ctypes.data, decoder.v_buffer.ctypes.data) == addresses
            # the plain path: whole caches as fresh arrays, grown by concatenation
            feeds = {"token": np.array([[token]]), "position": np.array([position])}
            for i in range(decoder.n_layer):
                feeds[f"k_cache_{i}"] = k_ref[i][None]
                feeds[f"v_cache_{i}"] = v_ref[i][None]
            ref_logits, k_new, v_new = session.run(None, feeds)
            assert np.array_equal(logits, ref_logits[0])
            k_ref = np.concatenate([k_ref, k_new[:, 0]], axis=1)
            v_ref = np.concatenate([v_ref, v_new[:, 0]], axis=1)
            position += 1
    finally:
        tracemalloc.stop()
    k_view, v_view = decoder.cache_view()
    assert np.array_equal(k_view, k_ref) and np.array_equal(v_view, v_ref)


def test_gqa_decoder_writes_in_place_without_copies(gqa_graphs):
    """GQA graph: buffers bound once as past and present; no per-step allocation; the same logits as
    a plain run that gets fresh copies of the cache and lets ORT allocate the present outputs."""
    decoder = GptDecoder(gqa_graphs["gpt_prefill"], gqa_graphs["gpt_decode"], ONE_THREAD, max_new_tokens=40)
    assert decoder.in_place
    session = decoder.decode_session
    logits = decoder.prefill(*_inputs(300, 20))
    # rows past the cache are never read: poison them
    decoder.k_buffer[:, :, decoder.cache_len :] = np.nan
    decoder.v_buffer[:, :, decoder.cache_len :] = np.nan
    addresses = (decoder.k_buffer.ctypes.data, decoder.v_buffer.ctypes.data)
    cache_bytes = sum(c.nbytes for c in decoder.cache_view())
    tracemalloc.start()
    try:
        for _ in range(20):
            token, cache_len, position = int(np.argmax(logits[:-1])), decoder.cache_len, decoder.position
            plain_feeds = {
                "token": np.array([[token]]),
                "position": np.array([position]),
                "cache_len": np.array([cache_len]),
            }
            for i in range(decoder.n_layer):
                plain_feeds[f"k_cache_{i}"] = decoder.k_buffer[i][None].copy()
                plain_feeds[f"v_cache_{i}"] = decoder.v_buffer[i][None].copy()
            baseline = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            logits = decoder.step(token)
            step_peak = tracemalloc.get_traced_memory()[1] - baseline
            assert step_peak < cache_bytes / 8, f"a step allocated {step_peak} bytes (cache: {cache_bytes})"
            assert (decoder.k_buffer.ctypes.data, decoder.v_buffer.ctypes.data) == addresses
            plain = session.run(["logits", "k_present_0", "k_new"], plain_feeds)
            assert np.isfinite(logits).all() and np.array_equal(logits, plain[0][0])
            # the new row landed in the buffer at row cache_len, as in ORT's own present output
            assert np.array_equal(decoder.k_buffer[0][:, cache_len], plain[1][0][:, cache_len])
            assert np.array_equal(plain[2][0, 0, 0], plain[1][0][:, cache_len].reshape(-1))
    finally:
        tracemalloc.stop()


def test_decoder_stops_at_capacity(tiny_graphs):
    decoder = GptDecoder(tiny_graphs["gpt_prefill"], tiny_graphs["gpt_decode"], ONE_THREAD, max_new_tokens=2)
    with pytest.raises(DecodeLimitError):
        decoder.step(1)
    decoder.prefill(*_inputs(5, 3))
    decoder.step(1)
    decoder.step(2)
    with pytest.raises(DecodeLimitError, match="max_new_tokens"):
        decoder.step(3)


def test_decoder_loop_with_reference_sampler_matches_reference_generate(tiny_model, any_graphs):
    phone_ids, bert, codes = _inputs(14, 9, seed=5)
    steps = 40
    noise = np.random.default_rng(9).exponential(size=(steps, 1025)).astype(np.float32)
    expected = reference_generate(
        tiny_model,
        torch.from_numpy(phone_ids),
        torch.from_numpy(bert),
        torch.from_numpy(codes),
        top_k=15,
        exp_noise=torch.from_numpy(noise),
        max_steps=steps,
    ).tolist()
    decoder = GptDecoder(
        any_graphs["gpt_prefill"], any_graphs["gpt_decode"], ONE_THREAD, max_new_tokens=steps
    )
    logits = decoder.prefill(phone_ids, bert, codes)
    generated: list[int] = []
    for step in range(steps):
        if step:
            logits = decoder.step(generated[-1])
        token, stop = reference_sample(logits, codes[0].tolist() + generated, step, exp_noise=noise[step])
        generated.append(token)
        if stop:
            generated.pop()
            break
    else:
        generated = generated[1:]
    assert generated == expected


# -- sampler port --------------------------------------------------------------------------------


def _logits_with(probabilities: dict[int, float], vocab: int = 1025):
    logits = torch.full((vocab,), float("-inf"))
    for token, p in probabilities.items():
        logits[token] = math.log(p)
    return logits


def test_top_p_removes_the_crossing_token():
    logits = _logits_with({5: 0.5, 6: 0.3, 7: 0.2})
    noise = torch.ones(1025)
    noise[6] = 1e-6  # an overwhelming draw for token 6 if it survived
    token, stop = reference_sample(logits, [], 20, top_p=0.6, repetition_penalty=1.0, exp_noise=noise)
    assert (token, stop) == (5, False)
    token, _ = reference_sample(logits, [], 20, top_p=0.85, repetition_penalty=1.0, exp_noise=noise)
    assert token == 6


def test_eos_dropped_for_the_first_eleven_steps():
    logits = torch.zeros(1025)
    logits[1024] = 10.0  # EOS would win both the argmax test and the draw
    logits[3] = 2.0
    noise = torch.ones(1025)
    for step in range(11):
        token, stop = reference_sample(logits, [], step, top_k=15, exp_noise=noise[:1024])
        assert (token, stop) == (3, False)
    token, stop = reference_sample(logits, [], 11, top_k=15, exp_noise=noise)
    assert (token, stop) == (1024, True)


def test_repetition_penalty_is_in_place_and_once_per_id():
    logits = torch.zeros(1025)
    logits[1024], logits[40], logits[41] = 2.0, 2.2, -1.0
    noise = torch.ones(1025)
    # 40 is the raw argmax, but penalized (2.2 / 1.35 < 2) EOS is, so the step stops
    token, stop = reference_sample(logits, [40, 40, 40, 41], 30, top_k=1, exp_noise=noise)
    assert (token, stop) == (1024, True)
    # duplicates do not compound: three 40s penalize like one (2.2/1.35 > 1.6, 2.2/1.35**3 < 1.6)
    logits2 = torch.zeros(1025)
    logits2[40], logits2[7] = 2.2, 1.6
    token, _ = reference_sample(logits2, [40, 40, 40], 30, top_k=1, exp_noise=noise)
    assert token == 40


def test_top_k_keeps_ties_and_temperature_sharpens():
    logits = torch.full((1025,), -5.0)
    logits[[10, 11, 12]] = 1.0
    noise = torch.ones(1025)
    noise[12] = 0.5  # favour the third tied token
    token, _ = reference_sample(logits, [], 30, top_k=2, repetition_penalty=1.0, exp_noise=noise)
    assert token == 12  # kept although k = 2, because it ties with the pivot
    logits[13] = 0.9
    noise[13] = 0.001
    hot, _ = reference_sample(
        logits, [], 30, top_k=5, temperature=1.0, repetition_penalty=1.0, exp_noise=noise
    )
    cold, _ = reference_sample(
        logits, [], 30, top_k=5, temperature=0.01, repetition_penalty=1.0, exp_noise=noise
    )
    assert hot == 13 and cold == 12


def test_reference_generate_discards_the_stop_token_and_caps(tiny_model):
    phone_ids, bert, codes = (torch.from_numpy(a) for a in _inputs(9, 4))
    capped = reference_generate(tiny_model, phone_ids, bert, codes, top_k=1, max_steps=12)
    free = reference_generate(tiny_model, phone_ids, bert, None, top_k=1, max_steps=12)
    assert len(capped) == 11  # with a prompt, the first of 12 generated tokens is dropped at the cap
    assert len(free) == 12  # reference-free keeps all
    # force EOS right after step 11: the EOS token itself is not returned
    eos_model = Text2SemanticDecoder.from_config(TINY_CONFIG)
    eos_model.load_state_dict(tiny_model.state_dict())
    with torch.no_grad():
        eos_model.ar_predict_layer.weight[1024] = eos_model.ar_predict_layer.weight[1024].abs() * 0 + 5.0
        eos_model.h.layers[1].norm2.bias.fill_(1.0)
        eos_model.h.layers[1].norm2.weight.fill_(0.0)
    tokens = reference_generate(eos_model.eval(), phone_ids, bert, codes, top_k=1, max_steps=50)
    assert len(tokens) == 11 and 1024 not in tokens.tolist()


# -- precision variants --------------------------------------------------------------------------


def _teacher_forced(reference: GptDecoder, variant: GptDecoder, steps: int):
    inputs = _inputs(30, 10, seed=11)
    ref_logits, var_logits = reference.prefill(*inputs), variant.prefill(*inputs)
    errors, agree = [], []
    for _ in range(steps):
        token = int(np.argmax(ref_logits[:-1]))
        errors.append(float(np.abs(ref_logits - var_logits).max()))
        agree.append(int(np.argmax(var_logits[:-1])) == token)
        ref_logits, var_logits = reference.step(token), variant.step(token)
    return max(errors), float(np.mean(agree))


def test_fp16_variant_is_exact_for_fp16_weights(any_graphs):
    from gsv_onnx.convert.quantize import quantize_gpt

    variant = quantize_gpt(any_graphs, "fp16")
    assert variant["gpt_data"].stat().st_size < 0.75 * any_graphs["gpt_data"].stat().st_size
    reference = GptDecoder(any_graphs["gpt_prefill"], any_graphs["gpt_decode"], ONE_THREAD)
    half = GptDecoder(variant["gpt_prefill"], variant["gpt_decode"], ONE_THREAD)
    max_error, agreement = _teacher_forced(reference, half, 10)
    assert max_error < 1e-5 and agreement == 1.0  # random_init_ weights are fp16-exact


def test_int8_variant_quantizes_weights_not_the_cache(any_graphs):
    import onnx

    from gsv_onnx.convert.quantize import quantize_gpt

    variant = quantize_gpt(any_graphs, "int8")
    graph = onnx.load(str(variant["gpt_decode"])).graph
    # the decode graph's weights are 8-bit MatMulNBits blocks (the prefill's: DynamicQuantizeMatMul)
    nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
    assert len(nbits) == 2 * 4 + 1  # in_proj, out_proj, linear1, linear2 per layer + ar_predict_layer
    assert all({a.name: a.i for a in n.attribute}["bits"] == 8 for n in nbits)
    prefill = onnx.load(str(variant["gpt_prefill"])).graph
    int8_weights = [
        t for t in prefill.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2
    ]
    assert len(int8_weights) >= 2 * 4 + 1
    for name in ("k_cache_0", "v_cache_1"):  # the cache products stay float
        assert [n.op_type for n in graph.node if name in n.input] in (["Reshape"], ["GroupQueryAttention"])
    reference = GptDecoder(any_graphs["gpt_prefill"], any_graphs["gpt_decode"], ONE_THREAD)
    quantized = GptDecoder(variant["gpt_prefill"], variant["gpt_decode"], ONE_THREAD)
    max_error, agreement = _teacher_forced(reference, quantized, 20)
    assert 1e-4 < max_error < 0.5  # really quantized, still close (logit std about 2)
    assert agreement >= 0.8


def test_unknown_precision_is_refused(tiny_graphs):
    from gsv_onnx.convert.quantize import QuantizeError, quantize_graph

    with pytest.raises(QuantizeError, match="int3"):
        quantize_graph(tiny_graphs["gpt_decode"], "int3")
    assert quantize_graph(tiny_graphs["gpt_decode"], "fp32") == tiny_graphs["gpt_decode"]


def test_sibling_decoders_share_sessions_and_decode_concurrently(any_graphs):
    """Decoders made from one pair of sessions (`sibling`) keep their own buffers: two threads
    decoding different inputs at the same time get exactly what each gets alone, and each keeps
    its buffers' addresses (no copies) throughout."""
    import threading

    first = GptDecoder(any_graphs["gpt_prefill"], any_graphs["gpt_decode"], ONE_THREAD, max_new_tokens=30)
    second = first.sibling()
    shared = GptDecoder(first.prefill_session, first.decode_session, max_new_tokens=30)
    assert second.prefill_session is first.prefill_session and second.decode_session is first.decode_session
    assert shared.decode_session is first.decode_session and shared.max_new_tokens == 30
    inputs = [_inputs(40, 9, seed=1), _inputs(25, 13, seed=2)]

    def run(decoder: GptDecoder, feeds, barrier=None) -> list[np.ndarray]:
        logits = decoder.prefill(*feeds)
        addresses = (decoder.k_buffer.ctypes.data, decoder.v_buffer.ctypes.data)
        out = [logits]
        for _ in range(20):
            if barrier is not None:
                barrier.wait(timeout=30)  # both threads step in lockstep: the runs overlap
            logits = decoder.step(int(np.argmax(logits[:-1])))
            out.append(logits)
            assert (decoder.k_buffer.ctypes.data, decoder.v_buffer.ctypes.data) == addresses
        return out

    alone = [run(first, feeds) for feeds in inputs]
    barrier = threading.Barrier(2)
    results: dict[int, list[np.ndarray]] = {}
    threads = [
        threading.Thread(target=lambda i=i, d=d: results.__setitem__(i, run(d, inputs[i], barrier)))
        for i, d in enumerate((first, second))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == [0, 1]
    assert first.k_buffer is not second.k_buffer
    for got, want in zip((results[0], results[1]), alone, strict=True):
        assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))
