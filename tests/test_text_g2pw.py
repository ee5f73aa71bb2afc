"""Optional g2pW path: a synthetic G2PWModel directory drives the real loading and batching code.

The model here is a small ONNX graph with g2pW's inputs and output. It picks the "right" reading
of a polyphonic character only when the token at `position_ids` is that character's token, so the
tokenization, context window and position bookkeeping are all exercised.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("opencc")

from onnx import TensorProto, helper  # noqa: E402

from gsv_onnx.errors import TextError  # noqa: E402
from gsv_onnx.text import phonemize  # noqa: E402
from gsv_onnx.text.chinese.g2pw import G2PW  # noqa: E402

VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "銀",
    "行",
    "長",
    "很",
    "忙",
    "。",
    ".",
    ",",
    "他",
    "在",
]
POLYPHONIC = [("行", "ㄏㄤ2"), ("行", "ㄒㄧㄥ2"), ("長", "ㄔㄤ2"), ("長", "ㄓㄤ3")]
GOOD = {"行": "ㄒㄧㄥ2", "長": "ㄓㄤ3"}  # chosen when the position is right
BAD = {"行": "ㄏㄤ2", "長": "ㄔㄤ2"}  # chosen when it is wrong


def _build(model_dir):
    labels = sorted({p for _, p in POLYPHONIC})
    chars = sorted({c for c, _ in POLYPHONIC})
    good = np.zeros((len(chars), len(labels)), dtype=np.float32)
    bad = np.zeros_like(good)
    for i, ch in enumerate(chars):
        good[i, labels.index(GOOD[ch])] = 1.0
        bad[i, labels.index(BAD[ch])] = 1.0
    char_token = np.array([VOCAB.index(ch) for ch in chars], dtype=np.int64)

    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["B", "T"]),
        helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, ["B", "T"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["B", "T"]),
        helper.make_tensor_value_info("phoneme_mask", TensorProto.FLOAT, ["B", len(labels)]),
        helper.make_tensor_value_info("char_ids", TensorProto.INT64, ["B"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["B"]),
    ]
    output = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["B", len(labels)])
    inits = [
        helper.make_tensor("good", TensorProto.FLOAT, good.shape, good.flatten()),
        helper.make_tensor("bad", TensorProto.FLOAT, bad.shape, bad.flatten()),
        helper.make_tensor("char_token", TensorProto.INT64, char_token.shape, char_token),
        helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
        helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
    ]
    nodes = [
        helper.make_node("Unsqueeze", ["position_ids", "axis1"], ["pos2"]),
        helper.make_node("GatherElements", ["input_ids", "pos2"], ["tok"], axis=1),
        helper.make_node("Gather", ["char_token", "char_ids"], ["want"]),
        helper.make_node("Unsqueeze", ["want", "axis1"], ["want2"]),
        helper.make_node("Equal", ["tok", "want2"], ["hit_b"]),
        helper.make_node("Cast", ["hit_b"], ["hit"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["one", "hit"], ["miss"]),
        helper.make_node("Gather", ["good", "char_ids"], ["g"], axis=0),
        helper.make_node("Gather", ["bad", "char_ids"], ["b"], axis=0),
        helper.make_node("Mul", ["g", "hit"], ["gh"]),
        helper.make_node("Mul", ["b", "miss"], ["bm"]),
        helper.make_node("Add", ["gh", "bm"], ["score"]),
        helper.make_node("Mul", ["score", "phoneme_mask"], ["probs"]),
    ]
    graph = helper.make_graph(nodes, "tiny_g2pw", inputs, [output], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, model_dir / "g2pW.onnx")
    (model_dir / "POLYPHONIC_CHARS.txt").write_text(
        "\n".join(f"{c}\t{p}" for c, p in POLYPHONIC), encoding="utf-8"
    )
    (model_dir / "MONOPHONIC_CHARS.txt").write_text("銀\tㄧㄣ2\n", encoding="utf-8")
    bopomofo = {"ㄏㄤ": "hang", "ㄒㄧㄥ": "xing", "ㄔㄤ": "chang", "ㄓㄤ": "zhang", "ㄧㄣ": "yin"}
    (model_dir / "bopomofo_to_pinyin_wo_tune_dict.json").write_text(json.dumps(bopomofo), encoding="utf-8")
    (model_dir / "char_bopomofo_dict.json").write_text("{}", encoding="utf-8")
    (model_dir / "config.py").write_text(
        "use_mask = True\nuse_char_phoneme = False\nimport os\n", encoding="utf-8"
    )
    (model_dir / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def g2pw(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("G2PWModel")
    _build(model_dir)
    return G2PW(model_dir)


def test_predict_uses_model_for_polyphonic_characters(g2pw):
    readings = g2pw.predict(["银行行长很忙.", "他在银行."])
    assert readings[0][:4] == ["yin2", "xing2", "xing2", "zhang3"]
    assert readings[0][6] == "."
    assert readings[1][3] == "xing2"
    assert g2pw.runs == 1  # every polyphonic character of both sentences in one batched call


def test_phonemize_with_g2pw(g2pw):
    plain = phonemize("银行行长很忙。他在银行。", "zh")
    runs_before = g2pw.runs
    modelled = phonemize("银行行长很忙。他在银行。", "zh", g2pw=g2pw)
    assert g2pw.runs == runs_before + 1
    assert plain.phones[2:4] == ["h", "ang2"]
    # the second 行 is then neutralised by the reduplication rule, as in upstream
    assert modelled.phones[2:8] == ["x", "ing2", "x", "ing5", "zh", "ang3"]
    assert modelled.word2ph == plain.word2ph


def test_missing_model_dir_is_a_text_error(tmp_path):
    with pytest.raises(TextError):
        G2PW(tmp_path / "nope")
    with pytest.raises(TextError):
        G2PW(tmp_path)  # exists but holds no model
