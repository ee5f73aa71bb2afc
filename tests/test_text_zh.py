"""Mandarin frontend: symbol table, normalization, tone sandhi, erhua, word2ph and phone mapping."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gsv_onnx.text.chinese import g2p, text_normalize
from gsv_onnx.text.chinese.normalization import normalize_sentences
from gsv_onnx.text.chinese.numbers import read_cardinal, read_digits, read_number
from gsv_onnx.text.chinese.pinyin_phones import respell, split_syllable
from gsv_onnx.text.symbols import SYMBOLS, UNK_ID, phone_to_id, symbol_to_id

SPEC = Path(__file__).resolve().parents[2] / "shared" / "docs" / "upstream-v2-spec.md"


# --- symbols --------------------------------------------------------------------------------


def test_symbol_table_size_and_known_ids():
    assert len(SYMBOLS) == 732
    assert len(set(SYMBOLS)) == 732
    known = {"!": 0, ",": 1, "-": 2, ".": 3, "?": 4, "AA": 5, "EE": 33, "OO": 66, "SP": 77, "SP2": 78}
    known |= {"SP3": 79, "UNK": 86, "_": 95, "…": 321, "[": 322, "]": 323, "停": 351, "空": 352, "Ya": 353}
    for sym, idx in known.items():
        assert symbol_to_id[sym] == idx


def test_symbol_table_matches_spec_listing():
    if not SPEC.is_file():
        pytest.skip("spec not present")
    listed: list[str] = []
    for line in SPEC.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\| (\d+)–(\d+) \| (.*) \|$", line)
        if m:
            listed += m.group(3).split(" ")
    assert listed == SYMBOLS


def test_unknown_phone_maps_to_unk():
    assert phone_to_id("not-a-phone") == UNK_ID == 86
    assert phone_to_id("zh") == symbol_to_id["zh"]


# --- pinyin -> phones rules -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("syllable", "phones"),
    [
        ("a", ("AA", "a")),
        ("ang", ("AA", "ang")),
        ("e", ("EE", "e")),
        ("er", ("EE", "er")),
        ("o", ("OO", "o")),
        ("ou", ("OO", "ou")),
        ("zi", ("z", "i0")),
        ("si", ("s", "i0")),
        ("zhi", ("zh", "ir")),
        ("ri", ("r", "ir")),
        ("ju", ("j", "v")),
        ("xuan", ("x", "van")),
        ("que", ("q", "ve")),
        ("jun", ("j", "vn")),
        ("lv", ("l", "v")),
        ("nve", ("n", "ve")),
        ("yu", ("y", "v")),
        ("yuan", ("y", "van")),
        ("yan", ("y", "En")),
        ("ye", ("y", "E")),
        ("you", ("y", "ou")),
        ("yong", ("y", "ong")),
        ("wei", ("w", "ei")),
        ("wo", ("w", "o")),
        ("gui", ("g", "ui")),
        ("liu", ("l", "iu")),
        ("lun", ("l", "un")),
        ("zhuang", ("zh", "uang")),
    ],
)
def test_split_syllable(syllable, phones):
    assert split_syllable(syllable) == phones


@pytest.mark.parametrize("bad", ["", "xx", "bv", "zhv", "m", "ng", "qa", "1"])
def test_split_syllable_rejects_non_syllables(bad):
    assert split_syllable(bad) is None


def test_every_split_gives_table_symbols():
    for initial in "b p m f d t n l g k h j q x zh ch sh r z c s y w".split() + [""]:
        for final in ["a", "o", "e", "i", "u", "v", "ai", "ei", "ao", "ou", "an", "en", "ang", "eng", "ong"]:
            split = split_syllable(initial + final)
            if split is not None:
                assert split[0] in symbol_to_id
                assert split[1] + "3" in symbol_to_id


@pytest.mark.parametrize(
    ("initial", "final", "written"),
    [("g", "uei", "gui"), ("l", "iou", "liu"), ("d", "uen", "dun"), ("", "i", "yi"), ("", "ing", "ying")]
    + [
        ("", "u", "wu"),
        ("", "v", "yu"),
        ("", "van", "yuan"),
        ("", "ia", "ya"),
        ("", "uo", "wo"),
        ("", "e", "e"),
    ],
)
def test_respell(initial, final, written):
    assert respell(initial, final) == written


# --- numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("digits", "reading"),
    [
        ("0", "零"),
        ("10", "十"),
        ("12", "十二"),
        ("20", "二十"),
        ("105", "一百零五"),
        ("1050", "一千零五十"),
        ("10000", "一万"),
        ("100000000", "一亿"),
        ("120034", "十二万零三十四"),
        ("007", "七"),
    ],
)
def test_read_cardinal(digits, reading):
    assert read_cardinal(digits) == reading


def test_read_number_and_digits():
    assert read_number("3.14") == "三点一四"
    assert read_number(".5") == "零点五"
    assert read_number("3.20") == "三点二零"  # upstream keeps one trailing zero
    assert read_digits("110", alt_one=True) == "幺幺零"
    assert read_digits("2024") == "二零二四"


# --- normalization ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("2024年3月15日", "二零二四年三月十五日"),
        ("2023-05-20召开", "二零二三年五月二十日召开"),
        ("下午3:30", "下午三点半"),
        ("12:05:30", "十二点零五分三十秒"),
        ("9:00-11:30", "九点至十一点三十分"),  # upstream decides "半" from the first clock
        ("温度-5℃", "温度零下五度"),
        ("35摄氏度", "三十五度"),  # upstream reads every temperature unit as 度
        ("20~25℃", "二十…二十五度"),  # ~ is not a range sign before a temperature
        ("重2.5kg", "重二点五千克"),
        ("30m²", "三十平方米"),
        ("3+5=8", "三加五等于八"),
        ("x²", "的二次方"),
        ("1/3", "三分之一"),
        ("75%", "百分之七十五"),
        ("-3.5%", "负百分之三点五"),
        ("13812345678", "幺三八幺二三四五六七八"),
        ("010-12345678", "零幺零减幺二三四五六七八"),  # arithmetic rule runs first
        ("400-123-4567", "四零零减幺二三减四五六七"),
        ("0755 12345678", "零七五五幺二三四五六七八"),
        ("+86 13812345678", "八六幺三八幺二三四五六七八"),
        ("1-5", "一减五"),
        ("1~5", "一到五"),
        ("-7", "负七"),
        ("1.2.3", "一点二点三"),
        ("12.5元", "十二点五元"),
        ("2个", "两个"),
        ("100美元", "一百美元"),
        ("编号12345", "编号幺二三四五"),
        ("12", "十二"),
        ("①②", "一二"),
        ("π", "派"),
        ("a/b", "每"),
        ("１２３", "幺二三"),
    ],
)
def test_normalization_cases(raw, normalized):
    assert text_normalize(raw) == normalized


def test_punctuation_map_and_collapse():
    assert text_normalize("你好，世界！") == "你好,世界!"
    assert text_normalize("什么？？？真的！！") == "什么?真的!"
    assert text_normalize("等等……好吧") == "等等…好吧"
    assert text_normalize("今天——明天") == "今天明天"
    assert text_normalize("你说呢～") == "你说呢…"
    assert text_normalize("《红楼梦》【中国】") == "红楼梦中国"
    assert text_normalize("嗯呣") == "恩母"
    assert text_normalize("Hello你好World") == "你好"
    assert text_normalize("臺灣") == "台湾"


def test_sentence_split_after_clause_punctuation():
    assert normalize_sentences("你好，世界。再见！") == ["你好，", "世界。", "再见！"]


# --- g2p: sandhi, erhua, alignment ------------------------------------------------------------


def _syllables(text: str) -> list[str]:
    result = g2p(text)
    out, i = [], 0
    for n in result.word2ph:
        out.append(" ".join(result.phones[i : i + n]))
        i += n
    return out


def test_word2ph_alignment():
    for text in ["银行行长说这件事情很重要。", "一二三，四五六！", "你好?", "重庆的天气真好……"]:
        result = g2p(text)
        assert len(result.word2ph) == len(result.norm_text)
        assert sum(result.word2ph) == len(result.phones)
        for ch, n in zip(result.norm_text, result.word2ph, strict=True):
            assert n == (1 if ch in "!?…,.-" else 2)


def test_bu_sandhi():
    assert _syllables("不怕")[0] == "b u2"
    assert _syllables("不好")[0] == "b u4"
    assert _syllables("好不好")[1] == "b u5"


def test_yi_sandhi():
    assert _syllables("一天")[0] == "y i4"
    assert _syllables("一段")[0] == "y i2"
    assert _syllables("看一看")[1] == "y i5"
    assert _syllables("第一")[1] == "y i1"
    assert _syllables("一二三")[0] == "y i1"  # digit strings keep 一 as yi1


def test_neutral_tone():
    assert _syllables("事情")[1] == "q ing5"  # must-neutral word list
    assert _syllables("我们")[1] == "m en5"
    assert _syllables("走吧")[1] == "b a5"
    assert _syllables("桌子")[1] == "z i05"


def test_third_tone_sandhi():
    assert _syllables("你好") == ["n i2", "h ao3"]
    assert _syllables("展览馆") == ["zh an2", "l an2", "g uan3"]
    assert _syllables("纸老虎") == ["zh ir3", "l ao2", "h u3"]


def test_erhua():
    assert _syllables("小孩儿")[-1] == "EE er2"
    assert _syllables("玩儿")[-1] == "EE er2"
    assert _syllables("女儿") == ["n v3", "EE er2"]  # 儿 is a full syllable in not-erhua words


def test_polyphones_from_phrase_data():
    assert _syllables("银行行长")[:3] == ["y in2", "h ang2", "h ang5"]
    assert _syllables("重庆")[0] == "ch ong2"
    assert _syllables("长大")[0] == "zh ang3"


def test_special_silences():
    assert "SP2" in g2p("你好￥世界").phones
    assert "," not in g2p("你好，世界￥").phones
    assert "SP3" in g2p("你好^世界").phones


def test_empty_and_symbol_only_text():
    assert g2p("").phones == []
    assert g2p("☃☃ abc").phones == []


def test_very_long_numbers_are_read_without_deep_recursion():
    assert read_cardinal("1" + "0" * 16) == "一亿亿"
    assert read_cardinal("100000001") == "一亿零一"
    reading = read_cardinal("9" * 5000)  # would exceed Python's recursion limit if done recursively
    assert reading.count("亿") == (5000 - 1) // 8


def test_long_digit_runs_normalize_in_linear_time():
    import time

    start = time.process_time()
    for text in ("1" * 50_000, "1" * 50_000 + "+", "2" * 50_000 + "%", "1.1" * 20_000):
        text_normalize(text)
    assert time.process_time() - start < 20.0
