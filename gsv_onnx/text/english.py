"""English frontend: upstream V2's normalization and ARPAbet g2p, fully offline (spec §6.2, English).

Pipeline (same order and rules as upstream's `english.py` + `en_normalization/expend.py`):

1. `text_normalize`: full-width 。！？ -> ASCII, numbers/money/times/units/fractions/ordinals read
   out through inflect (1001-2999 as years), accents stripped, everything but letters, space and
   ' . , ? ! - deleted, i.e./e.g. expanded, a space put before every capital that follows a
   non-space (so all-caps words are spelled letter by letter), punctuation runs collapsed.
2. `g2p`: tokens (a regex equivalent to nltk's TweetTokenizer on that character set), POS tags
   (gruut-lang-en's CRF model through python-crfsuite, only when a homograph is present), then per
   token: homographs by POS, the CMU lexicon (+ upstream's hot words, minus its deleted
   acronyms), short OOV words spelled, possessive 's, compound split with wordsegment, and
   finally g2p_en's GRU seq2seq model run by a small numpy decoder of our own.

Data files live in gsv_onnx/data/en (built by scripts/build_en_data.py from PyPI packages; licenses
in docs/frontend.md). Nothing is downloaded; nltk is never imported.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import re
import string
import threading
import unicodedata
from pathlib import Path

import numpy as np

from ..errors import MissingDependencyError, TextError
from .symbols import symbol_to_id
from .types import G2PResult

__all__ = ["g2p", "text_normalize", "normalize", "tokenize", "lookup_word", "predict_oov"]

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "en"
LEXICON_PATH = DATA_DIR / "cmudict.txt.gz"
GRU_WEIGHTS_PATH = DATA_DIR / "g2p_en_checkpoint20.npz"
HOMOGRAPHS_PATH = DATA_DIR / "homographs.en"

# Upstream's hot-word file (engdict-hot.rep) overrides these three entries.
HOT_WORDS = {
    "chatgpt": "CH AE1 T JH IY1 P IY1 T IY1".split(),
    "json": "JH EY1 S AH0 N".split(),
    "conda": "K AA1 N D AH0".split(),
}
# Acronyms whose CMU reading upstream deletes, so they are spelled letter by letter instead.
DELETED_WORDS = ("ae", "ai", "ar", "ios", "hud", "os")
# Homograph entries upstream patches after loading g2p_en's table.
HOMOGRAPH_PATCHES = {
    "read": ("R IY1 D".split(), "R EH1 D".split(), "VBP"),
    "complex": ("K AH0 M P L EH1 K S".split(), "K AA1 M P L EH0 K S".split(), "JJ"),
}

# Punctuation of the V2 table (upstream `symbols.punctuation`).
_PUNCTUATION = ["!", "?", "…", ",", ".", "-"]

# ---------------------------------------------------------------------------------------------
# Normalization (upstream en_normalization/expend.py, reimplemented)
# ---------------------------------------------------------------------------------------------

_inflect_engine = None
_inflect_lock = threading.Lock()


def _import_inflect():
    """Import inflect without typeguard's import-time instrumentation.

    inflect 7 decorates ~100 methods with `typeguard.typechecked`, which re-parses the module
    source for each of them: 6 s of import on a small machine. We only pass well-typed values,
    so the checks add nothing; the decorator is made a no-op while inflect loads, then restored.
    The words produced are the same.
    """
    import sys

    if "inflect" in sys.modules:
        return sys.modules["inflect"]
    try:
        import typeguard
    except ImportError:
        typeguard = None
    original = getattr(typeguard, "typechecked", None)
    if typeguard is not None:
        typeguard.typechecked = lambda target=None, **_: target if target is not None else (lambda f: f)
    try:
        import inflect
    finally:
        if typeguard is not None:
            typeguard.typechecked = original
    return inflect


def _inflect():
    global _inflect_engine
    with _inflect_lock:
        if _inflect_engine is None:
            _inflect_engine = _import_inflect().engine()
    return _inflect_engine


# Longest digit string read as one number; longer ones (beyond inflect's range, or Python's
# int-from-string limit) are read digit by digit instead of failing.
_MAX_NUMBER_DIGITS = 60

_UNIT_WORDS = {
    "m": ("meter", "meters"),
    "km": ("kilometer", "kilometers"),
    "km/h": ("kilometer per hour", "kilometers per hour"),
    "ft": ("feet", "feet"),
    "L": ("liter", "liters"),
    "tbsp": ("tablespoon", "tablespoons"),
    "tsp": ("teaspoon", "teaspoons"),
    "h": ("hour", "hours"),
    "min": ("minute", "minutes"),
    "s": ("second", "seconds"),
    "°C": ("degree celsius", "degrees celsius"),
    "°F": ("degree fahrenheit", "degrees fahrenheit"),
}

_LIST_ORDINAL_RE = re.compile(r"\b([0-9]+)\. ")
_THOUSANDS_RE = re.compile(r"([0-9][0-9\,]+[0-9])")
_CLOCK_RE = re.compile(r"\b([01]?[0-9]|2[0-3]):([0-5][0-9])\b")
# The alternation order matters: "km/h" can never win over "km" (upstream behaviour).
_UNIT_RE = re.compile(r"\b([0-9]+(\.[0-9]+)?(m|km|km/h|ft|L|tbsp|tsp|h|min|s|°C|°F))\b")
_POUNDS_BEFORE_RE = re.compile(r"£([0-9\.\,]*[0-9]+)")
_POUNDS_AFTER_RE = re.compile(r"(?<![0-9\.\,])([0-9\.\,]*[0-9])£")
_DOLLARS_BEFORE_RE = re.compile(r"\$([0-9\.\,]*[0-9]+)")
_DOLLARS_AFTER_RE = re.compile(r"(?<![(0-9\.\,])([(0-9\.\,]*[0-9])\$")
_DECIMAL_RE = re.compile(r"(?<![0-9])([0-9]+\.\s*[0-9]+)")
_FRACTION_RE = re.compile(r"(?<![0-9])([0-9]+/[0-9]+)")
_ORDINAL_SUFFIX_RE = re.compile(r"(?<![0-9])[0-9]+(st|nd|rd|th)")
_DIGITS_RE = re.compile(r"[0-9]+")
# The (?<!...) guards above, and "X*D" written for upstream's equivalent "X*D+" (D inside X), only stop a failed match from being retried at every position of a
# long digit/space run (quadratic time on 100k-character input); they never change a result,
# because a match that fails at the start of such a run fails at every later position of it too.

_SUPERSCRIPTS = "⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ"
_OPERAND = rf"((-?)((?<![0-9])(\d+)(\.\d+)?[{_SUPERSCRIPTS}]*)|(\.\d+[{_SUPERSCRIPTS}]*)|([A-Za-z][{_SUPERSCRIPTS}]*))"
_ARITHMETIC_RE = re.compile(_OPERAND + r"\s+([\+\-\×÷=])\s+" + _OPERAND)
_OPERATOR_WORDS = {"+": " plus ", "-": " minus ", "×": " times ", "÷": " divided by ", "=": " Equals "}
# Note: the leading whitespace is consumed and not put back ("is -5" -> "isnegative 5"), as upstream.
_NEGATIVE_RE = re.compile(r"(?:^|(?<!\s)\s+)(-)(\d+)")

_NOT_KEPT_RE = re.compile(r"[^ A-Za-z'.,?!\-]")
_IE_RE = re.compile(r"(?i)i\.e\.")
_EG_RE = re.compile(r"(?i)e\.g\.")
_CAPITAL_RE = re.compile(r"(?<!^)(?<![\s])([A-Z])")

_PUNCT_CLASS = "".join(re.escape(p) for p in _PUNCTUATION)
_PUNCT_RUN_RE = re.compile(f"([{_PUNCT_CLASS}\\s])([{_PUNCT_CLASS}])+")

# Upstream escapes every key of its map, so the two bracketed keys only match themselves
# literally; in effect only 。！？ are mapped (";", ":", "，" and quotes are deleted later).
_CJK_PUNCT_MAP = {"[;:：，；]": ",", '["’]': "'", "。": ".", "！": "!", "？": "?"}
_CJK_PUNCT_RE = re.compile("|".join(re.escape(k) for k in _CJK_PUNCT_MAP))


def _canonical(digits: str) -> str:
    """Decimal digits of `digits` without separators or leading zeros ("0" when none), i.e. str(int(x))
    without int()'s length limit (upstream would crash on stray separators or huge numbers)."""
    return re.sub(r"[^0-9]", "", digits).lstrip("0") or "0"


def _number_words(num: int | str, **kwargs) -> str:
    """inflect's number_to_words, degraded to digit-by-digit for numbers beyond its range."""
    if len(str(num)) <= _MAX_NUMBER_DIGITS:
        try:
            return _inflect().number_to_words(num, **kwargs)
        except Exception:  # noqa: BLE001 - inflect raises several types for out-of-range input
            pass
    return " ".join(_inflect().number_to_words(d) for d in str(num) if d.isdigit())


def _ordinal(words_or_digits: str) -> str:
    """inflect's ordinal(), with a plain "th" for digit strings too long for it."""
    if len(words_or_digits) <= _MAX_NUMBER_DIGITS or not words_or_digits.isdigit():
        try:
            return _inflect().ordinal(words_or_digits)
        except Exception:  # noqa: BLE001
            pass
    return words_or_digits + "th"


def _list_ordinal(m: re.Match) -> str:
    return _ordinal(m.group(1)) + ", "


def _clock(m: re.Match) -> str:
    hours, minutes = int(m.group(1)), int(m.group(2))
    period = "a.m." if hours < 12 else "p.m."
    if hours > 12:
        hours -= 12
    hour_words = _number_words(hours)
    if minutes == 0:
        return f"{hour_words} o'clock {period}"
    return f"{hour_words} {_number_words(minutes)} {period}"


def _unit(m: re.Match) -> str:
    unit = m.group(3)
    amount = _canonical(m.group(1).replace(unit, "").replace(".", ""))
    plural = not (m.group(2) is None and amount == "1")
    return m.group(1).replace(unit, " " + _UNIT_WORDS[unit][int(plural)])


def _currency(m: re.Match, major: tuple[str, str], minor: tuple[str, str]) -> str:
    amount = m.group(1)
    parts = amount.split(".")
    if len(parts) > 2:
        return amount + " " + major[1]
    whole = _canonical(parts[0])
    cents = _canonical(parts[1].ljust(2, "0")) if len(parts) > 1 and parts[1] else "0"
    if whole != "0" and cents != "0":
        return f"{whole} {major[whole != '1']} and {cents} {minor[cents != '1']}"
    if whole != "0":
        return f"{whole} {major[whole != '1']}"
    if cents != "0":
        return f"{cents} {minor[cents != '1']}"
    return "zero " + major[1]


def _pounds(m: re.Match) -> str:
    return _currency(m, ("pound", "pounds"), ("penny", "pence"))


def _dollars(m: re.Match) -> str:
    return _currency(m, ("dollar", "dollars"), ("cent", "cents"))


def _decimal(m: re.Match) -> str:
    whole, fraction = m.group(1).split(".")[:2]
    return whole + " point " + " ".join(fraction)


def _fraction(m: re.Match) -> str:
    numerator, denominator = (_canonical(x) for x in m.group(0).split("/"))
    numerator_words = _number_words(numerator)
    if denominator == "2":
        return f"{numerator_words} {'half' if numerator == '1' else 'halves'}"
    if denominator == "1":
        return numerator_words
    denominator_words = _ordinal(_number_words(denominator))
    if numerator not in ("0", "1"):
        denominator_words += "s"
    return f"{numerator_words} {denominator_words}"


def _ordinal_suffix(m: re.Match) -> str:
    if len(m.group(0)) > _MAX_NUMBER_DIGITS:
        return _number_words(m.group(0)[:-2]) + " " + m.group(1)
    return _number_words(m.group(0))


def _number(m: re.Match) -> str:
    digits = m.group(0)
    if len(digits) > _MAX_NUMBER_DIGITS:
        return " ".join(_number_words(d) for d in digits)
    num = int(digits)
    if 1000 < num < 3000:  # read as a year
        if num == 2000:
            return "two thousand"
        if 2000 < num < 2010:
            return "two thousand " + _number_words(num % 100)
        if num % 100 == 0:
            return _number_words(num // 100) + " hundred"
        return _number_words(num, andword="", zero="oh", group=2).replace(", ", " ")
    return _number_words(num, andword="")


def _arithmetic(m: re.Match) -> str:
    return m.group(1) + _OPERATOR_WORDS[m.group(8)] + m.group(9)


def _negative(m: re.Match) -> str:
    return ("negative " if m.group(1) else "") + m.group(2)


def normalize(text: str) -> str:
    """Upstream's `en_normalization.normalize`: numbers and symbols read out, then cleaned."""
    text = _LIST_ORDINAL_RE.sub(_list_ordinal, text)
    # each pass rewrites every non-overlapping "a op b"; operators only ever disappear
    while _ARITHMETIC_RE.search(text):
        text = _ARITHMETIC_RE.sub(_arithmetic, text)
    text = _NEGATIVE_RE.sub(_negative, text)
    text = _THOUSANDS_RE.sub(lambda m: m.group(1).replace(",", ""), text)
    text = _CLOCK_RE.sub(_clock, text)
    text = _UNIT_RE.sub(_unit, text)
    text = _POUNDS_BEFORE_RE.sub(_pounds, text)
    text = _POUNDS_AFTER_RE.sub(_pounds, text)
    text = _DOLLARS_BEFORE_RE.sub(_dollars, text)
    text = _DOLLARS_AFTER_RE.sub(_dollars, text)
    text = _DECIMAL_RE.sub(_decimal, text)
    text = _FRACTION_RE.sub(_fraction, text)
    text = _ORDINAL_SUFFIX_RE.sub(_ordinal_suffix, text)
    text = _DIGITS_RE.sub(_number, text)
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    text = text.replace("%", " percent")
    text = _NOT_KEPT_RE.sub("", text)
    text = _IE_RE.sub("that is", text)
    text = _EG_RE.sub("for example", text)
    return _CAPITAL_RE.sub(r" \1", text)


def text_normalize(text: str) -> str:
    """Upstream's English `text_normalize`: CJK sentence marks, `normalize`, punctuation runs."""
    text = _CJK_PUNCT_RE.sub(lambda m: _CJK_PUNCT_MAP[m.group(0)], text)
    text = normalize(text)
    # a punctuation mark right after whitespace or another mark is dropped (reference leakage)
    return _PUNCT_RUN_RE.sub(r"\1", text)


# ---------------------------------------------------------------------------------------------
# Tokenizer: nltk's TweetTokenizer restricted to what normalized text can contain
# ---------------------------------------------------------------------------------------------

# Normalized text holds only ASCII letters, space and ' . , ? ! -. On that alphabet the only
# TweetTokenizer rules that can fire are: naked domain names ("google.com"), words with inner
# apostrophes/dashes, plain words, dotted ellipses and single other characters, tried in that
# order at each position, case-insensitively.
_TOKEN_RE = re.compile(
    r"""
    (?<!@)[a-z0-9]+(?:[.\-][a-z0-9]+){0,126}[.][a-z]{2,13}\b/?(?!@)   # naked domain
    | [^\W\d_](?:[^\W\d_]|['\-_])+[^\W\d_]                            # word with ' or -
    | [\w_]+                                                          # plain word
    | \.(?:[^\S\r\n]*\.)+                                             # ellipsis dots
    | \S                                                              # anything else
    """,
    re.VERBOSE | re.IGNORECASE,
)
# TweetTokenizer first shortens runs of 4+ identical non-alphanumeric characters to 3.
_HANG_RE = re.compile(r"([^\w]|_)\1{3,}")


def tokenize(text: str) -> list[str]:
    """Split normalized English text into tokens exactly as upstream's TweetTokenizer does."""
    return _TOKEN_RE.findall(_HANG_RE.sub(r"\1\1\1", text))


# ---------------------------------------------------------------------------------------------
# Data: lexicon, homographs, POS tagger, GRU
# ---------------------------------------------------------------------------------------------

_load_lock = threading.RLock()


@functools.cache
def _lexicon() -> dict[str, list[str]]:
    """word (lower case) -> first CMU pronunciation, with upstream's hot words and deletions."""
    if not LEXICON_PATH.is_file():
        raise MissingDependencyError(
            f"English lexicon {LEXICON_PATH} is missing; reinstall gsv-onnx "
            "(or rebuild it with scripts/build_en_data.py)"
        )
    lexicon: dict[str, list[str]] = {}
    with gzip.open(LEXICON_PATH, "rt", encoding="utf-8") as f:
        for line in f:
            word, _, phones = line.rstrip("\n").partition("\t")
            lexicon[word] = phones.split(" ")
    lexicon.update(HOT_WORDS)
    for word in DELETED_WORDS:
        lexicon.pop(word, None)
    return lexicon


@functools.cache
def _homographs() -> dict[str, tuple[list[str], list[str], str]]:
    """g2p_en's homograph table: word -> (pron if POS matches, pron otherwise, POS prefix)."""
    table: dict[str, tuple[list[str], list[str], str]] = {}
    for line in HOMOGRAPHS_PATH.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        headword, pron1, pron2, pos = line.strip().split("|")
        table[headword.lower()] = (pron1.split(), pron2.split(), pos)
    table.update(HOMOGRAPH_PATCHES)
    return table


@functools.cache
def _wordsegment():
    import wordsegment

    wordsegment.load()
    return wordsegment


class _CrfPosTagger:
    """Penn Treebank POS tags from gruut-lang-en's CRF model (python-crfsuite).

    The feature set is the one the model was trained with: the word (base64), its length,
    punctuation/digit flags, 2-3 character prefixes and suffixes, for the word and its two
    neighbours on each side, plus sentence begin/end markers.
    """

    def __init__(self) -> None:
        spec = importlib.util.find_spec("gruut_lang_en")
        model = None
        if spec is not None and spec.submodule_search_locations:
            model = Path(list(spec.submodule_search_locations)[0]) / "pos" / "model.crf"
        if model is None or not model.is_file():
            raise MissingDependencyError(
                "English POS model not found: install the `gruut-lang-en` package (pip install gruut-lang-en)"
            )
        import pycrfsuite

        self._tagger = pycrfsuite.Tagger()
        self._tagger.open(str(model))
        self._lock = threading.Lock()

    @staticmethod
    def _word_features(word: str, prefix: str = "") -> dict[str, object]:
        import base64

        feats: dict[str, object] = {
            f"{prefix}bias": 1.0,
            f"{prefix}word": base64.b64encode(word.encode()).decode("ascii"),
            f"{prefix}len(word)": len(word),
            f"{prefix}word.ispunctuation": word in string.punctuation,
            f"{prefix}word.isdigit()": word.isdigit(),
        }
        for n in (2, 3):
            feats[f"{prefix}word[:{n}]"] = word[:n]
        for n in (2, 3):
            feats[f"{prefix}word[-{n}:]"] = word[-n:]
        return feats

    def features(self, words: list[str]) -> list[dict[str, object]]:
        out = []
        for i, word in enumerate(words):
            feats = self._word_features(word)
            if i == 0:
                feats["BOS"] = True
            if i == len(words) - 1:
                feats["EOS"] = True
            for j in (1, 2):
                if i >= j:
                    feats.update(self._word_features(words[i - j], prefix=f"-{j}:"))
            for j in (1, 2):
                if i < len(words) - j:
                    feats.update(self._word_features(words[i + j], prefix=f"+{j}:"))
            out.append(feats)
        return out

    def __call__(self, words: list[str]) -> list[str]:
        if not words:
            return []
        feats = self.features(words)
        with self._lock:
            return list(self._tagger.tag(feats))


@functools.cache
def _pos_tagger() -> _CrfPosTagger:
    return _CrfPosTagger()


class _GruG2p:
    """g2p_en's attention-free GRU encoder-decoder (greedy), evaluated with numpy.

    Graphemes: <pad> <unk> </s> a..z. Phonemes: <pad> <unk> <s> </s> + 70 ARPAbet symbols
    (g2p_en's order). At most 20 output phonemes, as in g2p_en.
    """

    GRAPHEMES = ["<pad>", "<unk>", "</s>"] + list("abcdefghijklmnopqrstuvwxyz")
    PHONEMES = ["<pad>", "<unk>", "<s>", "</s>"] + (
        "AA0 AA1 AA2 AE0 AE1 AE2 AH0 AH1 AH2 AO0 AO1 AO2 AW0 AW1 AW2 AY0 AY1 AY2 B CH D DH "
        "EH0 EH1 EH2 ER0 ER1 ER2 EY0 EY1 EY2 F G HH IH0 IH1 IH2 IY0 IY1 IY2 JH K L M N NG "
        "OW0 OW1 OW2 OY0 OY1 OY2 P R S SH T TH UH0 UH1 UH2 UW UW0 UW1 UW2 V W Y Z ZH"
    ).split()
    MAX_STEPS = 20

    def __init__(self) -> None:
        if not GRU_WEIGHTS_PATH.is_file():
            raise MissingDependencyError(
                f"English OOV model {GRU_WEIGHTS_PATH} is missing; reinstall gsv-onnx "
                "(or rebuild it with scripts/build_en_data.py)"
            )
        with np.load(GRU_WEIGHTS_PATH) as w:
            self.enc_emb = w["enc_emb"]
            self.enc = (w["enc_w_ih"], w["enc_w_hh"], w["enc_b_ih"], w["enc_b_hh"])
            self.dec_emb = w["dec_emb"]
            self.dec = (w["dec_w_ih"], w["dec_w_hh"], w["dec_b_ih"], w["dec_b_hh"])
            self.fc_w = w["fc_w"]
            self.fc_b = w["fc_b"]
        self.grapheme_ids = {g: i for i, g in enumerate(self.GRAPHEMES)}

    @staticmethod
    def _step(x: np.ndarray, h: np.ndarray, w_ih, w_hh, b_ih, b_hh) -> np.ndarray:
        """One PyTorch-convention GRU step (gates r, z, n) for a batch of 1."""
        gates_x = x @ w_ih.T + b_ih
        gates_h = h @ w_hh.T + b_hh
        size = h.shape[-1]
        reset_update = 1.0 / (1.0 + np.exp(-(gates_x[:, : 2 * size] + gates_h[:, : 2 * size])))
        reset, update = reset_update[:, :size], reset_update[:, size:]
        candidate = np.tanh(gates_x[:, 2 * size :] + reset * gates_h[:, 2 * size :])
        return (1.0 - update) * candidate + update * h

    def __call__(self, word: str) -> list[str]:
        ids = [self.grapheme_ids.get(c, 1) for c in word] + [2]  # unknown chars -> <unk>, then </s>
        h = np.zeros((1, self.enc[1].shape[1]), np.float32)
        for i in ids:
            h = self._step(self.enc_emb[i][None, :], h, *self.enc)
        token = 2  # <s>
        out: list[str] = []
        for _ in range(self.MAX_STEPS):
            h = self._step(self.dec_emb[token][None, :], h, *self.dec)
            logits = h @ self.fc_w.T + self.fc_b
            token = int(logits.argmax())
            if token == 3:  # </s>
                break
            out.append(self.PHONEMES[token])
        return out


@functools.cache
def _gru() -> _GruG2p:
    return _GruG2p()


@functools.lru_cache(maxsize=8192)
def predict_oov(word: str) -> tuple[str, ...]:
    """ARPAbet prediction of g2p_en's neural model for a lower-case word."""
    return tuple(_gru()(word))


# ---------------------------------------------------------------------------------------------
# g2p
# ---------------------------------------------------------------------------------------------

_VOICELESS_END = {"P", "T", "K", "F", "TH", "HH"}
_SIBILANT_END = {"S", "Z", "SH", "ZH", "CH", "JH"}
_POSSESSIVE_RE = re.compile(r"^([a-z]+)('s)$")
_LETTER_RE = re.compile("[a-z]")


def _spell(word: str, lexicon: dict[str, list[str]]) -> list[str]:
    phones: list[str] = []
    for ch in word:
        if ch == "a":
            phones.append("EY1")
        elif not ch.isalpha():
            phones.append(ch)
        else:
            phones.extend(lexicon[ch] if ch in lexicon else predict_oov(ch))
    return phones


def lookup_word(word: str, depth: int = 0) -> list[str]:
    """Upstream's `qryword`: ARPAbet of one token (original case) that is not a homograph."""
    lexicon = _lexicon()
    lower = word.lower()
    if len(lower) > 1 and lower in lexicon:
        return list(lexicon[lower])
    # (upstream's name dictionary for title-case words would be consulted here; no registry
    # package ships it, see docs/frontend.md)
    if len(lower) <= 3:
        return _spell(lower, lexicon)
    if _POSSESSIVE_RE.match(lower):
        phones = lookup_word(lower[:-2], depth + 1)
        if phones and phones[-1] in _VOICELESS_END:
            return phones + ["S"]
        if phones and phones[-1] in _SIBILANT_END:
            return phones + ["AH0", "Z"]
        return phones + ["Z"]
    parts = _wordsegment().segment(lower) if depth < 32 else [lower]
    if len(parts) <= 1:
        return list(predict_oov(lower))
    return [p for part in parts for p in lookup_word(part, depth + 1)]


_lookup_cached = functools.lru_cache(maxsize=65536)(lambda word: tuple(lookup_word(word)))

_DROPPED = {" ", "<pad>", "UW", "</s>", "<s>"}


# Compound splitting (wordsegment) costs about 1 ms per letter. To keep pathological input (a
# 100k-letter "word") from running for minutes, an out-of-dictionary token longer than
# _MAX_OOV_TOKEN letters, or any beyond _OOV_LETTER_BUDGET letters of such tokens in one call, is
# spelled letter by letter instead. Real text never reaches either limit.
_MAX_OOV_TOKEN = 100
_OOV_LETTER_BUDGET = 20_000


def _token_phones(token: str, pos: str | None, oov_budget: list[int]) -> list[str]:
    lower = token.lower()
    if _LETTER_RE.search(lower) is None:
        return [lower]
    if len(lower) == 1:
        if token == "A":
            return ["EY1"]
        return list(_lexicon().get(lower) or predict_oov(lower))
    homographs = _homographs()
    if lower in homographs:
        pron_match, pron_other, pos_prefix = homographs[lower]
        pos = pos or ""
        if pos.startswith(pos_prefix) or (len(pos) < len(pos_prefix) and pos == pos_prefix[: len(pos)]):
            return list(pron_match)
        return list(pron_other)
    if len(lower) > 3 and lower not in _lexicon():
        oov_budget[0] -= len(lower)
        if len(lower) > _MAX_OOV_TOKEN or oov_budget[0] < 0:
            return _spell(lower, _lexicon())
    return list(_lookup_cached(token))


def g2p_normalized(norm_text: str) -> list[str]:
    """ARPAbet phones (V2 symbols) of already normalized English text, before the "," rule."""
    tokens = tokenize(norm_text)
    homographs = _homographs()
    tags: list[str | None]
    if any(t.lower() in homographs for t in tokens):
        tags = list(_pos_tagger()(tokens))
    else:
        tags = [None] * len(tokens)
    raw: list[str] = []
    oov_budget = [_OOV_LETTER_BUDGET]
    for token, tag in zip(tokens, tags, strict=True):
        raw.extend(_token_phones(token, tag, oov_budget))
    phones: list[str] = []
    for ph in raw:
        if ph in _DROPPED:
            continue
        if ph == "<unk>":
            ph = "UNK"
        if ph in symbol_to_id:
            phones.append(ph)
        elif ph == "'":
            phones.append("-")
        # anything else (never produced from normalized text) is dropped, as upstream
    return phones


def g2p(text: str) -> G2PResult:
    """Raw English text -> normalized text and V2 phones (upstream `clean_text` for "en").

    Fewer than 4 phones get a "," in front, as upstream does for English segments.
    """
    if not isinstance(text, str):
        raise TextError(f"English text must be a str, got {type(text).__name__}")
    with _load_lock:
        norm_text = text_normalize(text)
        phones = g2p_normalized(norm_text)
    if len(phones) < 4:
        phones = [","] + phones
    return G2PResult(norm_text=norm_text, phones=phones, word2ph=None)
