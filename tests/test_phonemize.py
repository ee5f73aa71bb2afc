"""`gsv_onnx.text.phonemize`: interface, request languages, segmentation, user control, errors."""

from __future__ import annotations

import importlib.util
import json

import pytest

from gsv_onnx.errors import GsvError, MissingDependencyError, TextError
from gsv_onnx.text import LANGUAGES, PhonemizeResult, UserDictionary, phonemize, segment_text, symbol_to_id
from gsv_onnx.text.frontend import jyutping_phones
from gsv_onnx.text.langseg import full_cjk, full_en, get_texts, split_by_script
from gsv_onnx.text.markup import OverrideChunk, PauseChunk, TextChunk, parse_markup, pronunciation_kind
from gsv_onnx.text.symbols import UNK_ID

HAS = {name: importlib.util.find_spec(name) is not None for name in ("pyopenjtalk", "g2pk2", "ToJyutping")}


def _check_consistent(result: PhonemizeResult) -> None:
    assert result.phone_ids == [symbol_to_id[p] for p in result.phones]
    assert all(0 <= i < 732 for i in result.phone_ids)
    for seg in result.segments:
        assert seg.lang in ("zh", "en", "ja", "ko", "yue")
        assert len(seg.phones) == len(seg.phone_ids)
        if seg.word2ph is not None:
            assert len(seg.word2ph) == len(seg.norm_text)
            assert sum(seg.word2ph) == len(seg.phones)


def test_languages_constant():
    assert LANGUAGES == (
        "auto",
        "auto_yue",
        "en",
        "zh",
        "ja",
        "ko",
        "yue",
        "all_zh",
        "all_ja",
        "all_yue",
        "all_ko",
    )


def test_zh_result_fields():
    result = phonemize("银行行长说这件事情很重要。", "zh")
    _check_consistent(result)
    assert [s.lang for s in result.segments] == ["zh"]
    assert result.norm_text == "银行行长说这件事情很重要."
    assert result.phones[:4] == ["y", "in2", "h", "ang2"]
    assert result.word2ph == [2] * 12 + [1]
    assert result.pauses == []


def test_short_text_is_redone_with_a_leading_period():
    result = phonemize("你好", "zh")
    assert result.norm_text == ".你好"
    assert result.phones[0] == "."


def test_multiple_spaces_collapse():
    assert segment_text("hello    world", "en") == [("en", "hello    world")]
    result = phonemize("hello    world", "en")
    assert result.segments[0].text == "hello world"


def test_mixed_auto_segments():
    result = phonemize("我今天用ChatGPT写代码，效率很高。", "auto")
    _check_consistent(result)
    assert [s.lang for s in result.segments] == ["zh", "en", "zh"]
    assert result.word2ph is None  # en segments carry no word2ph
    assert result.segments[0].word2ph is not None


def test_request_language_zh_keeps_english_pieces():
    assert [lang for lang, _ in segment_text("我爱Python编程", "zh")] == ["zh", "en", "zh"]
    assert [lang for lang, _ in segment_text("我爱Python编程", "all_zh")] == ["zh", "en", "zh"]


def test_yue_labels():
    assert [lang for lang, _ in segment_text("我哋今日去饮茶", "auto_yue")] == ["yue"]
    assert [lang for lang, _ in segment_text("我哋今日去饮茶", "all_yue")] == ["yue"]
    assert [lang for lang, _ in segment_text("我哋今日去饮茶", "yue")] == ["yue"]


def test_langseg_rules():
    assert full_en("Hello, world!")
    assert not full_en("你好 world")
    assert not full_en("123")
    assert full_cjk("你好abc，123") == "你好123"
    pieces = get_texts("MyGO?,你也喜欢まいご吗？")
    assert [p.lang for p in pieces][0] == "en"
    assert "ja" in [p.lang for p in pieces]
    assert [p.lang for p in get_texts("안녕하세요 여러분")] == ["ko"]
    assert [p.lang for p in get_texts("12345")] == ["zh"]


def test_script_splitter_fallback():
    pieces = split_by_script("你好hello世界 123 かな 한국")
    assert [p.lang for p in pieces] == ["zh", "en", "zh", "digit", "ja", "ko"]
    assert "".join(p.text for p in pieces) == "你好hello世界 123 かな 한국"


@pytest.mark.parametrize("lang", ["fr", "", "ZH", "chinese", None])
def test_unknown_language_lists_accepted_codes(lang):
    with pytest.raises(TextError) as info:
        phonemize("你好", lang)
    for code in LANGUAGES:
        assert code in str(info.value)


@pytest.mark.parametrize("text", [123, None, b"bytes", ["list"]])
def test_non_string_text(text):
    with pytest.raises(TextError):
        phonemize(text, "zh")


@pytest.mark.parametrize("text", ["", "   ", "！？。", "☃☃☃", "\x00\x01"])
def test_nothing_to_pronounce(text):
    with pytest.raises(TextError):
        phonemize(text, "zh")


def test_lone_surrogates_and_controls_are_dropped():
    result = phonemize("你\ud800好\x07世界\u200e", "zh")
    assert result.norm_text == "你好世界"


def test_special_silence_mark():
    result = phonemize("价格是一百元￥特价", "zh")
    assert "SP2" in result.phones


# --- user control ---------------------------------------------------------------------------


def test_parse_markup():
    chunks = parse_markup("我{行|xing2}了[pause:0.5]再见[pause:250ms]")
    assert chunks == [
        TextChunk("我"),
        OverrideChunk("行", "xing2"),
        TextChunk("了"),
        PauseChunk(0.5),
        TextChunk("再见"),
        PauseChunk(0.25),
    ]


def test_pause_limit():
    with pytest.raises(TextError):
        parse_markup("[pause:61]")


@pytest.mark.parametrize(
    ("pron", "kind"),
    [("hang2", "pinyin"), ("yin2 hang2", "pinyin"), ("R EH1 D", "arpabet"), ("hong4", "pinyin")]
    + [("G P T", "respelling"), ("ngo5 dei6", "jyutping"), ("hello", "respelling")],
)
def test_pronunciation_kind(pron, kind):
    assert pronunciation_kind(pron) == kind


def test_pronunciation_kind_cantonese_context():
    assert pronunciation_kind("hong4", cantonese=True) == "jyutping"


def test_inline_pinyin_override():
    plain = phonemize("他在银行上班。", "zh")
    forced = phonemize("他在银{行|xing2}上班。", "zh")
    _check_consistent(forced)
    assert "ang2" in plain.phones and "ing2" in forced.phones
    assert forced.norm_text == "他在银行上班."  # one merged zh segment, BERT still sees the sentence
    assert [s.lang for s in forced.segments] == ["zh"]


def test_inline_arpabet_override():
    result = phonemize("我想{read|R EH1 D}这本书", "auto")
    _check_consistent(result)
    en = [s for s in result.segments if s.lang == "en"]
    assert en and en[0].phones == ["R", "EH1", "D"]


def test_inline_jyutping_override():
    result = phonemize("{行|hang4}", "yue")
    _check_consistent(result)
    yue = [s for s in result.segments if s.lang == "yue"]
    assert yue[0].phones == ["Yh", "Yang4"]
    assert jyutping_phones("ngo5") == ["Yng", "Yo5"]
    assert jyutping_phones("m4") == ["Ym", "Ym4"]


def test_pause_reported_with_phone_position():
    result = phonemize("今天天气很好。[pause:0.8]我们出去玩吧。", "zh")
    _check_consistent(result)
    assert len(result.pauses) == 1
    pause = result.pauses[0]
    assert pause.seconds == pytest.approx(0.8)
    assert result.phones[pause.phone_index - 1] == "."  # after the first sentence
    assert result.segments[0].pause_after == pytest.approx(0.8)


def test_pause_only_text_is_allowed():
    result = phonemize("[pause:1]", "zh")
    assert result.phones == [] or all(p in ".,!?…-" for p in result.phones)
    assert [p.seconds for p in result.pauses] == [1.0]


def test_markup_can_be_disabled():
    result = phonemize("数学{x|y}", "zh", markup_enabled=False)
    assert "{x|y}" in "".join(s.text for s in result.segments)  # taken as plain text


def test_user_dictionary(tmp_path):
    path = tmp_path / "dict.tsv"
    path.write_text("# comment\n银行\tyin2 xing2\nGPU\tJH IY1 P IY1 Y UW1\n", encoding="utf-8")
    user_dict = UserDictionary.load(path)
    result = phonemize("他在银行买了GPU。", "auto", user_dict=user_dict)
    _check_consistent(result)
    assert "ing2" in result.phones[4:8]
    assert "JH" in result.phones

    json_path = tmp_path / "dict.json"
    json_path.write_text(json.dumps({"行长": "hang2 zhang3"}, ensure_ascii=False), encoding="utf-8")
    assert UserDictionary.load(json_path).entries == {"行长": "hang2 zhang3"}


def test_user_dictionary_errors(tmp_path):
    with pytest.raises(TextError):
        UserDictionary.load(tmp_path / "missing.tsv")
    bad = tmp_path / "bad.tsv"
    bad.write_text("no tab here\n", encoding="utf-8")
    with pytest.raises(TextError):
        UserDictionary.load(bad)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(TextError):
        UserDictionary.load(bad_json)


def test_unknown_arpabet_becomes_unk():
    result = phonemize("{zork|ZZ1 AA1 K}好的好的", "auto")
    assert UNK_ID in result.phone_ids


# --- other languages (modules of the language packs) -------------------------------------


def test_english_path():
    result = phonemize("Hello world, this is a test.", "en")
    _check_consistent(result)
    assert [s.lang for s in result.segments] == ["en"]
    assert "HH" in result.phones


@pytest.mark.skipif(not HAS["pyopenjtalk"], reason="Japanese pack not installed")
def test_japanese_path():
    result = phonemize("こんにちは、世界。", "ja")
    _check_consistent(result)
    assert [s.lang for s in result.segments] == ["ja"]


@pytest.mark.skipif(not HAS["g2pk2"], reason="Korean pack not installed")
def test_korean_path():
    result = phonemize("안녕하세요 여러분", "ko")
    _check_consistent(result)
    assert [s.lang for s in result.segments] == ["ko"]


@pytest.mark.skipif(not HAS["ToJyutping"], reason="Cantonese pack not installed")
def test_cantonese_path():
    result = phonemize("我哋今日去饮茶。", "yue")
    _check_consistent(result)
    assert result.segments[0].lang == "yue"
    assert result.segments[0].word2ph is not None


def test_missing_module_errors_are_gsv_errors(monkeypatch):
    import gsv_onnx.text.frontend as frontend

    monkeypatch.setitem(frontend._MODULES, "ko", "no_such_module_xyz")
    monkeypatch.delitem(frontend._loaded, "ko", raising=False)
    with pytest.raises(TextError, match="not available"):
        phonemize("안녕하세요 여러분", "ko")


def test_missing_dependency_error(monkeypatch):
    import sys

    import gsv_onnx.text.frontend as frontend

    monkeypatch.delitem(frontend._loaded, "ja", raising=False)
    monkeypatch.setitem(sys.modules, "gsv_onnx.text.japanese", None)
    with pytest.raises((MissingDependencyError, TextError)) as info:
        phonemize("こんにちは", "ja")
    assert isinstance(info.value, GsvError)
