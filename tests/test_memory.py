"""Memory and load-time controls: session options, lazy KV buffers, the HuBERT session's lifecycle,
and the BERT / reference-encoder variants with fp16 embeddings and external weights (tiny models)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from gsv_onnx.bench import workload as wl
from gsv_onnx.errors import OptionsError
from gsv_onnx.runtime.options import RuntimeOptions
from gsv_onnx.runtime.sessions import (
    create_session,
    lazy_zeros,
    register_shared_arena,
    release_free_heap,
    session_options,
)
from gsv_onnx.runtime.tts import TTS


def _resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


# -- runtime options -------------------------------------------------------------------------------


def test_memory_options_defaults_and_validation():
    options = RuntimeOptions()
    assert options.memory_pattern is False and options.shared_arena is True
    assert options.keep_reference_encoder is False
    for name in ("memory_pattern", "shared_arena", "keep_reference_encoder"):
        with pytest.raises(OptionsError, match=name):
            RuntimeOptions(**{name: "yes"})


def test_session_options_follow_the_memory_options():
    plain = session_options(RuntimeOptions(intra_op_threads=1))
    assert plain.enable_mem_pattern is False
    shared = plain.get_session_config_entry("session.use_env_allocators") == "1"
    assert shared == register_shared_arena()
    own = session_options(RuntimeOptions(intra_op_threads=1, shared_arena=False, memory_pattern=True))
    assert own.enable_mem_pattern is True
    with pytest.raises(Exception):  # noqa: B017 - ORT raises a plain error for an entry never set
        own.get_session_config_entry("session.use_env_allocators")


def test_release_free_heap_reports_whether_it_could_trim():
    import platform

    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert release_free_heap() is glibc


# -- lazy KV buffers -------------------------------------------------------------------------------


def test_lazy_zeros_is_a_writable_zero_array():
    array = lazy_zeros((3, 4, 5), np.float32)
    assert array.shape == (3, 4, 5) and array.dtype == np.float32 and array.flags.writeable
    assert not array.any()
    array[1, 2] = 7.0
    assert array.sum() == 35.0
    assert lazy_zeros((0, 4), np.float32).shape == (0, 4)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_lazy_zeros_makes_only_written_rows_resident():
    # a KV-cache-like buffer [layer, head, capacity, dim] (96 MB); write 64 rows of every head
    shape = (12, 16, 2048, 64)
    before = _resident_bytes()
    buffer = lazy_zeros(shape, np.float32)
    buffer[:, :, :64] = 1.0
    grown = _resident_bytes() - before
    total = buffer.nbytes
    # 64 of 2048 rows per head = 3% of the buffer (plus page rounding); huge pages made it all resident
    assert grown < total / 4, f"{grown / 1e6:.0f} MB resident of {total / 1e6:.0f} MB"
    assert float(buffer[:, :, :64].mean()) == 1.0 and not buffer[:, :, 64:].any()


# -- the HuBERT session's lifecycle ----------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_bytes() -> bytes:
    return wl.reference_wav_bytes()


def test_prepare_voice_releases_the_reference_encoder(tiny_bundle, reference_bytes):
    tts = TTS.load(tiny_bundle, RuntimeOptions(intra_op_threads=1))
    assert tts._reference_encoder is None  # created lazily
    first = tts.prepare_voice(reference_bytes, text=wl.PROMPT_TEXT, lang="zh")
    assert tts._reference_encoder is None  # released when prepare_voice returned
    assert tts.release_reference_encoder() is False  # nothing left to release
    second = tts.prepare_voice(reference_bytes, text=wl.PROMPT_TEXT, lang="zh")  # created again
    assert tts._reference_encoder is None
    np.testing.assert_array_equal(first.prompt_codes, second.prompt_codes)
    np.testing.assert_array_equal(first.ge, second.ge)


def test_keep_reference_encoder_keeps_the_session(tiny_bundle, reference_bytes):
    tts = TTS.load(tiny_bundle, RuntimeOptions(intra_op_threads=1, keep_reference_encoder=True))
    voice = tts.prepare_voice(reference_bytes, text=wl.PROMPT_TEXT, lang="zh")
    session = tts._reference_encoder
    assert session is not None
    tts.prepare_voice(reference_bytes, text=wl.PROMPT_TEXT, lang="zh")
    assert tts._reference_encoder is session  # the same session serves every voice
    released = TTS.load(tiny_bundle, RuntimeOptions(intra_op_threads=1))
    other = released.prepare_voice(reference_bytes, text=wl.PROMPT_TEXT, lang="zh")
    np.testing.assert_array_equal(voice.prompt_codes, other.prompt_codes)
    assert tts.release_reference_encoder() is True and tts._reference_encoder is None


def test_memory_options_do_not_change_the_audio(tiny_bundle, reference_bytes):
    """Shared arena, memory pattern and lazy KV buffers are bookkeeping: same samples either way."""
    waves = []
    for options in (
        RuntimeOptions(intra_op_threads=1),
        RuntimeOptions(intra_op_threads=1, shared_arena=False, memory_pattern=True),
    ):
        tts = TTS.load(tiny_bundle, options)
        voice = tts.prepare_voice(reference_bytes, text=wl.PROMPT_TEXT, lang="zh")
        result = tts.synthesize("今天天气不错。", voice, lang="zh", seed=3, top_k=1)
        waves.append(result.samples)
    np.testing.assert_array_equal(waves[0], waves[1])


# -- BERT and reference-encoder variants -----------------------------------------------------------

quantize = pytest.importorskip("onnx") and __import__("gsv_onnx.convert.quantize", fromlist=["x"])


def _graph_copy(tiny_bundle: Path, name: str, tmp_path: Path) -> Path:
    import json

    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    entry = manifest["graphs"][name]
    source = tiny_bundle / entry["file"]
    target = tmp_path / source.name
    shutil.copyfile(source, target)
    for data in entry.get("external_data", []):  # the graph's weights, when stored beside it
        shutil.copyfile(tiny_bundle / data["file"], tmp_path / data["file"])
    return target


def _bert_feeds(vocab: int, length: int, seed: int) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(seed).integers(1, vocab, (1, length)).astype(np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def _run(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _vocab(path: Path) -> int:
    import onnx

    model = onnx.load(str(path))
    (table,) = [t for t in model.graph.initializer if "word_embeddings" in t.name]
    return int(table.dims[0])


def test_gather_tables_fp16_casts_only_the_gathered_rows(tiny_bundle, tmp_path):
    import onnx

    bert = _graph_copy(tiny_bundle, "bert", tmp_path)
    model = onnx.load(str(bert))
    converted = quantize.gather_tables_fp16(model, min_elements=1)
    assert any("word_embeddings" in name for name in converted)
    tables = {t.name: t for t in model.graph.initializer}
    assert all(tables[name].data_type == onnx.TensorProto.FLOAT16 for name in converted)
    casts = [n for n in model.graph.node if n.op_type == "Cast" and n.name.endswith("__cast")]
    assert len(casts) >= len(converted)
    onnx.checker.check_model(model)
    fp16_path = tmp_path / "bert.e16.onnx"
    onnx.save_model(model, str(fp16_path))
    feeds = _bert_feeds(_vocab(bert), 9, 0)
    reference, variant = _run(bert, feeds), _run(fp16_path, feeds)
    assert variant.dtype == np.float32 and variant.shape == reference.shape
    assert np.abs(variant - reference).max() < 1e-2 * max(1.0, np.abs(reference).max())


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_quantize_bert_writes_external_weights_close_to_fp32(tiny_bundle, tmp_path, precision):
    bert = _graph_copy(tiny_bundle, "bert", tmp_path)
    out = quantize.quantize_bert(bert, precision)
    assert out.name == f"bert.{precision}.onnx" and (tmp_path / f"bert.{precision}.onnx.data").is_file()
    assert out.stat().st_size < 100_000  # the weights live in the .data file
    feeds = _bert_feeds(_vocab(bert), 12, 1)
    reference, variant = _run(bert, feeds), _run(out, feeds)
    relative = np.linalg.norm(variant - reference) / np.linalg.norm(reference)
    assert relative < (0.1 if precision == "int8" else 0.6), relative


def test_quantize_reference_encoder_fp32_is_exact_and_idempotent(tiny_bundle, tmp_path):
    graph = _graph_copy(tiny_bundle, "reference_encoder", tmp_path)
    wav = np.random.default_rng(2).standard_normal((1, 16000 * 3)).astype(np.float32) * 0.1
    before = _run(graph, {"wav16k": wav})
    out = quantize.quantize_reference_encoder(graph, "fp32")
    assert out == graph and (tmp_path / (graph.name + ".data")).is_file()
    np.testing.assert_array_equal(_run(out, {"wav16k": wav}), before)
    data_size = (tmp_path / (graph.name + ".data")).stat().st_size
    assert quantize.store_weights_externally(out) == out  # already external: unchanged
    assert (tmp_path / (graph.name + ".data")).stat().st_size == data_size
    int8 = quantize.quantize_reference_encoder(graph, "int8")
    assert int8.name == "reference_encoder.int8.onnx" and _run(int8, {"wav16k": wav}).shape == before.shape


def test_external_weights_load_through_create_session(tiny_bundle, tmp_path):
    bert = _graph_copy(tiny_bundle, "bert", tmp_path)
    out = quantize.quantize_bert(bert, "int8")
    session = create_session(out, RuntimeOptions(intra_op_threads=1))
    feeds = _bert_feeds(_vocab(bert), 5, 3)
    np.testing.assert_allclose(session.run(None, feeds)[0], _run(out, feeds), rtol=0, atol=1e-6)


def test_precision_plan_per_graph():
    from gsv_onnx.convert.pipeline import precision_plan

    int8 = precision_plan("int8")
    assert int8["bert"] == "int8" and int8["reference_encoder"] == "int8" and int8["ref_enc"] == "fp32"
    int4 = precision_plan("int4")
    assert int4["bert"] == "int4" and int4["reference_encoder"] == "int8"
