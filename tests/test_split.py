"""Text splitting matches upstream's cut0-cut5 and pre/post processing (spec §7.1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gsv_onnx.errors import OptionsError, TextError
from gsv_onnx.runtime.split import (
    collapse_repeated_punctuation,
    cut0,
    cut1,
    cut2,
    cut3,
    cut4,
    cut5,
    merge_short_pieces,
    prepare_prompt_text,
    sentences,
    split_long_piece,
    split_text,
)

PARITY_FILE = Path(__file__).parent / "data" / "split_parity.jsonl"


def numbered(n: int) -> str:
    return "".join(f"第{i}句话。" for i in range(n))


@pytest.mark.parametrize(
    ("n", "sizes"),
    [(1, [1]), (4, [4]), (5, [5]), (8, [8]), (9, [4, 5]), (12, [4, 8]), (13, [4, 4, 5]), (16, [4, 4, 8])],
)
def test_cut1_groups_sentences_in_fours_last_absorbs_rest(n, sizes):
    pieces = cut1(numbered(n)).split("\n")
    assert [piece.count("。") for piece in pieces] == sizes
    assert "".join(pieces) == numbered(n)


def test_cut1_keeps_short_text_unchanged_and_drops_punctuation_only_groups():
    assert cut1("你好……世界——") == "你好……世界——"  # <= 4 sentences: the original text
    text = "一。二。三。四。五。六。七。八。" + "!?,." * 2  # ASCII marks only count as punctuation
    assert all(piece.strip("，。！？") for piece in cut1(text).split("\n"))


def test_sentences_replace_ellipsis_and_dash_and_close_the_text():
    assert sentences("你好……世界——再见") == ["你好。", "世界，", "再见。"]


def test_cut2_fifty_characters_and_short_tail_merges():
    text = ("一二三四五六七八九十" * 3 + "。") * 4  # four sentences of 31 characters
    pieces = cut2(text).split("\n")
    assert [len(piece) for piece in pieces] == [62, 62]
    assert cut2("只有一句") == "只有一句"


def test_cut3_and_cut4_drop_their_delimiter():
    assert cut3("。甲。乙。丙。") == "甲\n乙\n丙"
    # "." after a digit does not split, even at a sentence end (upstream's regex)
    assert cut4("Pi is 3.14. Next one.Done.") == "Pi is 3.14. Next one\nDone"
    # a "." next to a digit on one side only does not split either
    assert cut4("Version 2. Next") == "Version 2. Next"


def test_cut5_splits_after_each_mark_but_not_in_decimals():
    assert cut5("你好，我是小明。价格3.5元！好") == "你好，\n我是小明。\n价格3.5元！\n好"
    assert cut5("a,,b") == "a,\nb"  # the lone "," piece is dropped


def test_cut0_returns_text_or_blank_for_punctuation():
    assert cut0("任何 文本。不切") == "任何 文本。不切"
    assert cut0("!?. ") == "\n"


def test_collapse_repeated_punctuation():
    assert collapse_repeated_punctuation("真的吗?!?!...好-,") == "真的吗?好-"
    assert collapse_repeated_punctuation("好。。。") == "好。。。"  # "。" is not in the collapse set


def test_merge_short_pieces():
    assert merge_short_pieces(["一。", "二。", "三四五六七。", "八。"]) == ["一。二。三四五六七。八。"]
    assert merge_short_pieces(["短"]) == ["短"]
    assert merge_short_pieces(["一二三四五", "六"]) == ["一二三四五六"]


def test_split_text_prepends_mark_when_first_sentence_is_short():
    assert split_text("你好，今天天气真不错啊。", "cut0", "zh") == ["。你好，今天天气真不错啊。"]
    assert split_text("Hi, how are you doing", "cut0", "en") == [".Hi, how are you doing."]
    assert split_text("今天天气真不错啊", "cut0", "zh") == ["今天天气真不错啊。"]


def test_split_text_default_cut1_and_server_cut5():
    text = "今天天气不错。我们去公园吧！好的，走吧。"
    assert split_text(text, "cut1", "zh") == [text]
    assert split_text(text, "cut5", "zh") == ["今天天气不错。", "我们去公园吧！", "好的，走吧。"]


def test_split_text_skips_punctuation_only_and_rejects_nothing_to_say():
    assert split_text("", "cut1") == []
    assert split_text("\n\n", "cut1") == []
    assert split_text("。。。", "cut0") == []  # kept by the cut, skipped as wordless
    with pytest.raises(TextError):
        split_text("!!!", "cut0")
    with pytest.raises(TextError):
        split_text("!!!", "cut5")
    with pytest.raises(TextError):
        split_text("……", "cut1")


def test_split_text_unknown_method():
    with pytest.raises(OptionsError, match="cut9"):
        split_text("你好", "cut9")


def test_long_pieces_are_cut_at_marks_and_hard_cut_without_marks():
    sentence = "这是一个比较长的句子，" * 60  # 660 characters, no newline
    pieces = split_text(sentence, "cut0", "zh")
    assert all(len(piece) <= 510 for piece in pieces) and len(pieces) == 2
    no_marks = "字" * 1200
    chunks = split_long_piece(no_marks)
    assert [len(chunk) for chunk in chunks] == [510, 510, 180]


def test_very_long_text_splits_quickly():
    text = "今天天气不错，我们去公园散步吧。" * 6250  # 100k characters
    pieces = split_text(text, "cut1", "zh")
    assert sum(len(piece) for piece in pieces) >= 100_000 and max(len(p) for p in pieces) <= 510


def test_prompt_text_gets_a_closing_mark():
    assert prepare_prompt_text("参考音频说的话\n", "zh") == "参考音频说的话。"
    assert prepare_prompt_text("Hello there", "en") == "Hello there."
    assert prepare_prompt_text("好的！", "zh") == "好的！"


def _parity_cases():
    if not PARITY_FILE.is_file():
        return []
    cases = []
    with PARITY_FILE.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            if line.strip():
                cases.append(pytest.param(json.loads(line), id=f"line{number + 1}"))
    return cases


@pytest.mark.skipif(not PARITY_FILE.is_file(), reason="tests/data/split_parity.jsonl not present yet")
@pytest.mark.parametrize("case", _parity_cases())
def test_matches_upstream_parity_vectors(case):
    """Each line: text, method, lang and upstream's pieces (`segments`), or the error it raised."""
    if case.get("error"):
        with pytest.raises(TextError):
            split_text(case["text"], case["method"], case["lang"])
    else:
        assert split_text(case["text"], case["method"], case["lang"]) == case["segments"]
