"""Fuzzing `phonemize` with arbitrary Unicode: it only ever raises TextError and ids stay in the table.

10,000 short strings from a mix of all Unicode categories (lone surrogates and control characters
included) and of characters the frontend treats specially (CJK, kana, Hangul, digits, emoji,
right-to-left scripts, markup), over every request language; then a few long inputs up to 100,000
characters with a time limit, so that nothing degrades into a hang.
"""

from __future__ import annotations

import importlib.util
import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gsv_onnx.errors import MissingDependencyError, TextError
from gsv_onnx.text import LANGUAGES, phonemize

# language packs that are optional extras: without them, MissingDependencyError is the documented answer
_PACKS = {"ja": "pyopenjtalk", "ko": "g2pk2", "yue": "ToJyutping"}
_MISSING = {lang for lang, module in _PACKS.items() if importlib.util.find_spec(module) is None}

_SPECIAL = list(
    "你好世界银行行长一不儿了的们子上下来去吧啊嗯呣￥^０１２３４５６７８９ＡＢＣ"
    "ひらがなカタカナーッ한국어안녕하세요ㄱㅏ"
    "abcXYZ0123456789.,!?;:'\"-—–…~～/\\|{}[]()<>@#$%&*+=×÷²³°℃㎡①②αβπΩ"
    "\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"
    "שלוםעולםمرحباбвгдежзїієґ"
    "\x00\x01\x07\x08\x0b\x0c\x0d\x1b\x7f\x85\xa0\u2028\u2029\n\t "
    "\U0001f600\U0001f389\U0001f1e8\U0001f1f3\u2764\ufe0f\U0001f468\u200d\U0001f469\u200d\U0001f467"
    "𠀀𪚥𫠠"
) + ["{行|hang2}", "[pause:0.3]", "{read|R EH1 D}", "[pause:", "{|}", "...", "——", "\r\n"]


def _not_hangul(ch: str) -> bool:
    # Hangul still comes from _SPECIAL; drawing it from all 11k syllables as well would spend most
    # of the run inside g2pk2 (about 0.25 s a call) without covering anything new
    return not ("\uac00" <= ch <= "\ud7af" or "\u1100" <= ch <= "\u11ff" or "\u3130" <= ch <= "\u318f")


_ANY_CHAR = st.characters(codec=None, categories=None, exclude_categories=()).filter(_not_hangul)
_TEXT = st.lists(st.one_of(_ANY_CHAR, st.sampled_from(_SPECIAL)), max_size=24).map("".join)


def _check(text: str, lang: str) -> None:
    try:
        result = phonemize(text, lang)
    except TextError:
        return
    except MissingDependencyError:
        # only acceptable when a segment of a pack that is not installed was needed
        assert _MISSING, "MissingDependencyError although every language pack is installed"
        return
    ids = result.phone_ids
    assert all(isinstance(i, int) and 0 <= i < 732 for i in ids)
    for seg in result.segments:
        if seg.word2ph is not None:
            assert len(seg.word2ph) == len(seg.norm_text)
            assert sum(seg.word2ph) == len(seg.phones)
    for pause in result.pauses:
        assert 0 <= pause.phone_index <= len(ids) and pause.seconds >= 0


@settings(
    max_examples=10_000,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(text=_TEXT, lang=st.sampled_from(LANGUAGES))
def test_fuzz_short_strings(text, lang):
    _check(text, lang)


def _long_text(n: int, seed: int) -> str:
    rng = random.Random(seed)
    pool = _SPECIAL + [chr(rng.randrange(0x20, 0x2FFFF)) for _ in range(400)]
    return "".join(rng.choice(pool) for _ in range(n))


@pytest.mark.parametrize(
    ("text", "lang", "limit_s"),
    [
        (_long_text(100_000, 1), "auto", 150.0),
        ("银行行长说这件事情很重要。" * 8_000, "zh", 90.0),
        ("a" * 100_000, "en", 60.0),
        ("\x00" * 100_000, "zh", 30.0),
        ("1" * 100_000, "zh", 60.0),
    ],
    ids=["mixed-100k", "zh-100k", "one-letter-100k", "nul-100k", "digits-100k"],
)
def test_long_inputs_finish(text, lang, limit_s):
    # CPU time of this process, not wall time: the limit is about the algorithm (no quadratic
    # blow-up, no hang), not about how busy the machine is
    start = time.process_time()
    _check(text, lang)
    assert time.process_time() - start < limit_s
