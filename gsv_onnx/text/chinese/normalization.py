"""Mandarin text normalization: raw text -> Han characters and V2 punctuation (spec §6.2).

Stage 1 (`normalize_sentences`) splits the text into sentences and verbalizes numbers, dates,
times, units and symbols in upstream's rule order. Stage 2 (`text_normalize`) maps punctuation,
drops everything that is neither Han (U+4E00..U+9FA5) nor one of ! ? … , . - and collapses runs
of punctuation. All patterns use ASCII digits [0-9] only, so other scripts' digits are dropped
rather than misread.
"""

from __future__ import annotations

import re
from functools import lru_cache

from ..symbols import PUNCTUATION
from .data import measure_words, traditional_to_simplified_table
from .numbers import read_cardinal, read_digits, read_number

# --- sentence split -------------------------------------------------------------------------

_PRE_DELETE = re.compile(r"[——《》【】<>{}()（）#&@“”^_|\\]")
_SENTENCE_END = re.compile(r"([：、，；。？！,;?!][”’]?)")
_POST_DELETE = re.compile(r"[-——《》【】<=>{}()（）#&@“”^_|\\]")

_FULLWIDTH = {0xFF10 + i: 0x30 + i for i in range(10)}
_FULLWIDTH.update({0xFF21 + i: 0x41 + i for i in range(26)})
_FULLWIDTH.update({0xFF41 + i: 0x61 + i for i in range(26)})
_FULLWIDTH[0x3000] = 0x20


# --- dates and times ------------------------------------------------------------------------

_DATE = re.compile(r"([0-9]{4}|[0-9]{2})年((0?[1-9]|1[0-2])月)?(((0?[1-9])|((1|2)[0-9])|30|31)([日号]))?")
_DATE_NUMERIC = re.compile(r"([0-9]{4})([- /.])(0[1-9]|1[012])\2(0[1-9]|[12][0-9]|3[01])")
_CLOCK = r"([0-1]?[0-9]|2[0-3]):([0-5][0-9])(:([0-5][0-9]))?"
_TIME = re.compile(_CLOCK)
_TIME_RANGE = re.compile(_CLOCK + r"(~|-)" + _CLOCK)


def _date(m: re.Match) -> str:
    year, month, day = m.group(1), m.group(3), m.group(5)
    text = read_digits(year) + "年"
    if month:
        text += read_cardinal(month) + "月"
    if day:
        text += read_cardinal(day) + m.group(9)
    return text


def _date_numeric(m: re.Match) -> str:
    return f"{read_digits(m.group(1))}年{read_cardinal(m.group(3))}月{read_cardinal(m.group(4))}日"


def _clock_part(value: str) -> str:
    # minutes/seconds keep a leading zero as 零 ("08" -> 零八)
    text = read_number(value.lstrip("0"))
    return "零" + text if value.startswith("0") else text


def _clock(hour: str, minute: str, second: str | None, half_minute: str) -> str:
    text = read_number(hour) + "点"
    if minute.lstrip("0"):
        # upstream decides "half" from the first clock of a range for both clocks
        text += "半" if int(half_minute) == 30 else _clock_part(minute) + "分"
    if second and second.lstrip("0"):
        text += _clock_part(second) + "秒"
    return text


def _time(m: re.Match) -> str:
    return _clock(m.group(1), m.group(2), m.group(4), m.group(2))


def _time_range(m: re.Match) -> str:
    first = _clock(m.group(1), m.group(2), m.group(4), m.group(2))
    return first + "至" + _clock(m.group(6), m.group(7), m.group(9), m.group(2))


# --- ranges, temperatures, units ------------------------------------------------------------

_RANGE_UNITS = r"(%|°C|℃|度|摄氏度|cm2|cm²|cm3|cm³|cm|db|ds|kg|km|m2|m²|m³|m3|ml|m|mm|s)"
# Every "[0-9]+" that must be followed by something starts with (?<![0-9]): a match can then only
# begin at the start of a digit run, which finds the same leftmost matches as upstream's patterns
# but keeps long digit strings linear instead of quadratic.
_D = r"(?<![0-9])[0-9]+"
_SIGNED_OR_FRACTION = r"((-?)((" + _D + r")(\.[0-9]+)?)|(\.([0-9]+)))"
_TILDE_RANGE = re.compile(_SIGNED_OR_FRACTION + _RANGE_UNITS + "[~]" + _SIGNED_OR_FRACTION + _RANGE_UNITS)
_TEMPERATURE = re.compile(r"(-?)(" + _D + r"(\.[0-9]+)?)(°C|℃|度|摄氏度)")
# Unit abbreviations replaced anywhere in the sentence, longest spellings first.
_UNITS = (
    ("cm2", "平方厘米"),
    ("cm²", "平方厘米"),
    ("cm3", "立方厘米"),
    ("cm³", "立方厘米"),
    ("cm", "厘米"),
    ("db", "分贝"),
    ("ds", "毫秒"),
    ("kg", "千克"),
    ("km", "千米"),
    ("m2", "平方米"),
    ("m²", "平方米"),
    ("m³", "立方米"),
    ("m3", "立方米"),
    ("ml", "毫升"),
    ("m", "米"),
    ("mm", "毫米"),
    ("s", "秒"),
)


def _temperature(m: re.Match) -> str:
    # upstream compares the decimal group (not the unit) with 摄氏度, so every unit is read 度
    return ("零下" if m.group(1) else "") + read_number(m.group(2)) + "度"


def _units(sentence: str) -> str:
    for abbreviation, reading in _UNITS:
        if abbreviation in sentence:
            sentence = sentence.replace(abbreviation, reading)
    return sentence


# --- arithmetic, powers, fractions, percentages --------------------------------------------

_SUP = "⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ"
_OPERAND = rf"((-?)(({_D})(\.[0-9]+)?[{_SUP}]*)|(\.[0-9]+[{_SUP}]*)|([A-Za-z][{_SUP}]*))"
_ARITHMETIC = re.compile(_OPERAND + r"([\+\-\×÷=])" + _OPERAND)
_OPERATORS = {"+": "加", "-": "减", "×": "乘", "÷": "除", "=": "等于"}
_POWER = re.compile(f"[{_SUP}]+")
_SUP_TO_ASCII = str.maketrans(_SUP, "0123456789xyn")
_FRACTION = re.compile(r"(-?)(" + _D + r")/([0-9]+)")
_PERCENT = re.compile(r"(-?)(" + _D + r"(\.[0-9]+)?)%")


def _arithmetic(m: re.Match) -> str:
    return m.group(1) + _OPERATORS[m.group(8)] + m.group(9)


def _power(m: re.Match) -> str:
    return "的" + m.group(0).translate(_SUP_TO_ASCII) + "次方"


def _fraction(m: re.Match) -> str:
    return ("负" if m.group(1) else "") + read_number(m.group(3)) + "分之" + read_number(m.group(2))


def _percent(m: re.Match) -> str:
    return ("负" if m.group(1) else "") + "百分之" + read_number(m.group(2))


# --- phone numbers --------------------------------------------------------------------------

_MOBILE = re.compile(r"(?<![0-9])((\+?86 ?)?1([38][0-9]|5[0-35-9]|7[678]|9[89])[0-9]{8})(?![0-9])")
_LANDLINE = re.compile(r"(?<![0-9])((0(10|2[1-3]|[3-9][0-9]{2})-?)?[1-9][0-9]{6,7})(?![0-9])")
_SERVICE_400 = re.compile(r"(400)(-)?[0-9]{3}(-)?[0-9]{4}")


def _mobile(m: re.Match) -> str:
    return "，".join(read_digits(part, alt_one=True) for part in m.group(0).strip("+").split())


def _landline(m: re.Match) -> str:
    return "，".join(read_digits(part, alt_one=True) for part in m.group(0).split("-"))


# --- plain numbers --------------------------------------------------------------------------

_NUMERIC_RANGE = re.compile(
    r"(?<![0-9\+\-\×÷=])((-?)(([0-9]+)(\.[0-9]+)?))[-~]((-?)(([0-9]+)(\.[0-9]+)?))(?![0-9\+\-\×÷=])"
)
_NEGATIVE = re.compile(r"(-)([0-9]+)")
_VERSION = re.compile(r"((" + _D + r")(\.[0-9]+)(\.[0-9]+)?(\.[0-9]+)+)")
_DECIMAL = re.compile(r"(-?)((" + _D + r")(\.[0-9]+))|(\.([0-9]+))")
_NUMBER = re.compile(r"(-?)(([0-9]+)(\.[0-9]+)?)|(\.([0-9]+))")
_LONG_DIGITS = re.compile(r"[0-9]{3}[0-9]*")


@lru_cache(maxsize=1)
def _quantified_re() -> re.Pattern:
    # a number followed by a measure word is read as a cardinal (2 -> 两)
    words = "|".join(re.escape(w) for w in measure_words())
    return re.compile(r"(" + _D + r")([多余几\+])?(" + words + ")")


def _numeric_range(m: re.Match) -> str:
    first = _NUMBER.sub(_number, m.group(1))
    second = _NUMBER.sub(_number, m.group(6))
    return first + "到" + second


def _negative(m: re.Match) -> str:
    return "负" + read_number(m.group(2))


def _version(m: re.Match) -> str:
    return "".join("点" if ch == "." else read_number(ch) for ch in m.group(1))


def _number(m: re.Match) -> str:
    if m.group(5):
        return read_number(m.group(5))
    return ("负" if m.group(1) else "") + read_number(m.group(2))


def _quantified(m: re.Match) -> str:
    number = read_number(m.group(1))
    if number == "二":
        number = "两"
    approx = "多" if m.group(2) == "+" else (m.group(2) or "")
    return number + approx + m.group(3)


# --- symbols after the number rules ---------------------------------------------------------

_CIRCLED = {chr(0x2460 + i): ch for i, ch in enumerate("一二三四五六七八九十")}
_GREEK = {
    "α": "阿尔法", "β": "贝塔", "γ": "伽玛", "Γ": "伽玛", "δ": "德尔塔", "Δ": "德尔塔",
    "ε": "艾普西龙", "ζ": "捷塔", "η": "依塔", "θ": "西塔", "Θ": "西塔", "ι": "艾欧塔",
    "κ": "喀帕", "λ": "拉姆达", "Λ": "拉姆达", "μ": "缪", "ν": "拗", "ξ": "克西", "Ξ": "克西",
    "ο": "欧米克伦", "π": "派", "Π": "派", "ρ": "肉", "ς": "西格玛", "Σ": "西格玛", "σ": "西格玛",
    "τ": "套", "υ": "宇普西龙", "φ": "服艾", "Φ": "服艾", "χ": "器", "ψ": "普赛", "Ψ": "普赛",
    "ω": "欧米伽", "Ω": "欧米伽",
}  # fmt: skip
_SYMBOL_WORDS = {"/": "每", "+": "加", "-": "减", "×": "乘", "÷": "除", "=": "等", **_CIRCLED, **_GREEK}
_SYMBOLS_RE = re.compile("|".join(re.escape(k) for k in _SYMBOL_WORDS))


def to_simplified(text: str) -> str:
    """Traditional -> simplified, character by character (PaddleSpeech's table, as upstream)."""
    return text.translate(traditional_to_simplified_table())


def normalize_sentence(sentence: str) -> str:
    """Verbalize one sentence: numbers, dates, times, units and symbols -> Chinese characters."""
    sentence = to_simplified(sentence).translate(_FULLWIDTH)
    sentence = _DATE.sub(_date, sentence)
    sentence = _DATE_NUMERIC.sub(_date_numeric, sentence)
    sentence = _TIME_RANGE.sub(_time_range, sentence)
    sentence = _TIME.sub(_time, sentence)
    sentence = _TILDE_RANGE.sub(lambda m: m.group(0).replace("~", "至"), sentence)
    sentence = _TEMPERATURE.sub(_temperature, sentence)
    sentence = _units(sentence)
    # each pass rewrites one operator of every "a op b"; chains need more passes
    for _ in range(len(sentence)):
        if not _ARITHMETIC.search(sentence):
            break
        sentence = _ARITHMETIC.sub(_arithmetic, sentence)
    sentence = _POWER.sub(_power, sentence)
    sentence = _FRACTION.sub(_fraction, sentence)
    sentence = _PERCENT.sub(_percent, sentence)
    sentence = _MOBILE.sub(_mobile, sentence)
    sentence = _LANDLINE.sub(_landline, sentence)
    sentence = _SERVICE_400.sub(_landline, sentence)
    sentence = _NUMERIC_RANGE.sub(_numeric_range, sentence)
    sentence = _NEGATIVE.sub(_negative, sentence)
    sentence = _VERSION.sub(_version, sentence)
    sentence = _DECIMAL.sub(_number, sentence)
    sentence = _quantified_re().sub(_quantified, sentence)
    sentence = _LONG_DIGITS.sub(lambda m: read_digits(m.group(0), alt_one=True), sentence)
    sentence = _NUMBER.sub(_number, sentence)
    sentence = _SYMBOLS_RE.sub(lambda m: _SYMBOL_WORDS[m.group(0)], sentence)
    return _POST_DELETE.sub("", sentence)


def split_sentences(text: str) -> list[str]:
    """Upstream's sentence split: drop spaces and bracket-like symbols, break after ：、，；。？！,;?!."""
    text = _PRE_DELETE.sub("", text.replace(" ", ""))
    text = _SENTENCE_END.sub("\\1\n", text).strip()
    return [s.strip() for s in re.split(r"\n+", text)]


def normalize_sentences(text: str) -> list[str]:
    """Stage 1 of normalization (upstream's TextNormalizer): verbalized sentences."""
    return [normalize_sentence(s) for s in split_sentences(text)]


# --- stage 2: punctuation --------------------------------------------------------------------

_PUNCT_MAP = {
    "：": ",", "；": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": ".", "·": ",", "、": ",",
    "...": "…", "$": ".", "/": ",", "—": "-", "~": "…", "～": "…",
}  # fmt: skip
_PUNCT_RE = re.compile("|".join(re.escape(k) for k in _PUNCT_MAP))
_PUNCT_CLASS = "".join(re.escape(p) for p in PUNCTUATION)
_NOT_KEPT = re.compile(r"[^\u4e00-\u9fa5" + _PUNCT_CLASS + r"]+")
_PUNCT_RUN = re.compile(f"([{_PUNCT_CLASS}])([{_PUNCT_CLASS}])+")


def replace_punctuation(text: str) -> str:
    """Map punctuation to the V2 set and delete every other non-Han character."""
    text = text.replace("嗯", "恩").replace("呣", "母")
    text = _PUNCT_RE.sub(lambda m: _PUNCT_MAP[m.group(0)], text)
    return _NOT_KEPT.sub("", text)


def collapse_punctuation(text: str) -> str:
    """Keep only the first mark of each run of punctuation (avoids leaking reference audio)."""
    return _PUNCT_RUN.sub(r"\1", text)


def text_normalize(text: str) -> str:
    """Raw Mandarin text -> normalized text of Han characters and ! ? … , . - (upstream's text_normalize)."""
    return collapse_punctuation("".join(replace_punctuation(s) for s in normalize_sentences(text)))
