"""Cantonese frontend (gsv_onnx.text.cantonese): ToJyutping + upstream's initial/final split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gsv_onnx.text import cantonese
from gsv_onnx.text.symbols import symbol_to_id

PARITY = Path(__file__).parent / "data" / "frontend_parity.jsonl"


def test_sentence_phones_and_word2ph() -> None:
    result = cantonese.g2p("我哋今日去咗飲茶，好開心！")
    assert result.norm_text == "我哋今日去咗饮茶,好开心!"  # Chinese normalizer: simplified, ASCII marks
    assert result.phones[:4] == ["Yng", "Yo5", "Yd", "Yei6"]
    assert result.word2ph == [2] * 8 + [1] + [2] * 3 + [1]
    assert sum(result.word2ph) == len(result.phones)
    assert len(result.word2ph) == len(result.norm_text)
    assert all(p in symbol_to_id for p in result.phones)


@pytest.mark.parametrize(
    ("syllable", "phones"),
    [
        ("saam1", ["Ys", "Yaam1"]),
        ("gwong2", ["Ygw", "Yong2"]),  # "gw" listed before "g"
        ("aa3", ["Yaa", "Ya3"]),  # vowel-initial: empty final repeats the initial's last letter
        ("m4", ["Ym", "Ym4"]),
        ("ng5", ["Yng", "Yg5"]),
        ("ngaa4", ["Yng", "Yaa4"]),  # "nga..." split after two letters
        ("jyut6", ["Yj", "Yyut6"]),
    ],
)
def test_initial_final_split(syllable: str, phones: list[str]) -> None:
    assert cantonese.jyutping_to_phones([syllable]) == (phones, [2])


def test_punctuation_map_and_deletion() -> None:
    assert cantonese.replace_punctuation("「你」（好）～…abc") == "你好-…"
    out, word2ph = cantonese.jyutping_to_phones(["nei5", ",", "hou2", "!"])
    assert out == ["Yn", "Yei5", ",", "Yh", "You2", "!"] and word2ph == [2, 1, 2, 1]


def test_numbers_are_read_by_the_chinese_normalizer() -> None:
    result = cantonese.g2p("我有3個")
    assert result.norm_text == "我有三个"
    assert result.phones[4:6] == ["Ys", "Yaam1"]


def test_empty_and_non_chinese_text() -> None:
    for text in ("", "abc", "😀", "   "):
        result = cantonese.g2p(text)
        assert result.norm_text == "" and result.phones == [] and result.word2ph == []


def test_parity_with_upstream_cantonese_segments() -> None:
    if not PARITY.is_file():
        pytest.skip("tests/data/frontend_parity.jsonl is not present")
    rows = [json.loads(line) for line in PARITY.read_text(encoding="utf-8").splitlines() if line.strip()]
    segments = [{"id": r["id"], **seg} for r in rows for seg in r["segments"] if seg["lang"] == "yue"]
    mismatched = []
    for seg in segments:
        result = cantonese.g2p(seg["text"])
        if (result.phones, result.word2ph, result.norm_text) != (
            seg["phones"],
            seg["word2ph"],
            seg["norm_text"],
        ):
            mismatched.append(seg["id"])
    assert len(mismatched) <= 0.05 * len(segments), mismatched
