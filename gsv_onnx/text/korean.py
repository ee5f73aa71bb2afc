"""Korean frontend: g2pk2 pronunciation rules -> compatibility jamo, as upstream V2 (spec §6.2, Korean).

Needs the `[ko]` extra: g2pk2, python-mecab-ko (with its dictionary package) and jamo. g2pk2 is
loaded offline: it asks nltk for the CMU dictionary at import (which would download it) and
runs `pip install` when MeCab is missing. We hand it an empty stand-in instead (the dictionary is
never consulted: Latin letters are spelled in Hangul before g2pk2 sees the text) and check for MeCab
ourselves, so nothing is downloaded or installed at run time.

Phones: Latin letters -> Hangul letter names; g2pk2; decomposition into compatibility jamo with
compound vowels split; upstream's fix for g2pk2's "ㅇㅡㄹ ㄹ"/"ㄹㅡㄹ ㄹ" error; "." appended when
the text ends with a jamo; then per character: CJK punctuation -> ASCII, space -> 空, anything
else outside the V2 table -> 停.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import sys
import threading

from ..errors import MissingDependencyError, TextError
from .symbols import symbol_to_id
from .types import G2PResult

__all__ = ["g2p", "text_normalize", "latin_to_hangul", "divide_hangul", "fix_g2pk2_error"]

_INSTALL_HINT = "install the Korean language pack: pip install 'gsv-onnx[ko]'"

# Hangul names of the Latin letters (upstream's table); case-insensitive.
_LATIN_NAMES = {
    "a": "에이", "b": "비", "c": "시", "d": "디", "e": "이", "f": "에프", "g": "지", "h": "에이치",
    "i": "아이", "j": "제이", "k": "케이", "l": "엘", "m": "엠", "n": "엔", "o": "오", "p": "피",
    "q": "큐", "r": "아르", "s": "에스", "t": "티", "u": "유", "v": "브이", "w": "더블유", "x": "엑스",
    "y": "와이", "z": "제트",
}  # fmt: skip
# Applied letter by letter in alphabetical order, as upstream (a replacement never contains Latin).
_LATIN_RES = [(re.compile(letter, re.IGNORECASE), name) for letter, name in _LATIN_NAMES.items()]

# Compound vowels split into two simple ones (the V2 table has only the simple jamo).
_VOWEL_SPLITS = {
    "ㅘ": "ㅗㅏ", "ㅙ": "ㅗㅐ", "ㅚ": "ㅗㅣ", "ㅝ": "ㅜㅓ", "ㅞ": "ㅜㅔ", "ㅟ": "ㅜㅣ", "ㅢ": "ㅡㅣ",
    "ㅑ": "ㅣㅏ", "ㅒ": "ㅣㅐ", "ㅕ": "ㅣㅓ", "ㅖ": "ㅣㅔ", "ㅛ": "ㅣㅗ", "ㅠ": "ㅣㅜ",
}  # fmt: skip

_MARK_MAP = {
    "：": ",", "；": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": ".", "·": ",", "、": ",",
    "...": "…", " ": "空",
}  # fmt: skip
_FINAL_JAMO_RE = re.compile(r"([\u3131-\u3163])$")

_g2p_instance = None
_jamo = None
_load_lock = threading.Lock()
_run_lock = threading.Lock()


class _EnglishLexiconShim:
    """Stands in for `nltk.corpus.cmudict` (g2pk2 only calls `.dict()`).

    g2pk2 consults it for ASCII words only, and every ASCII letter has already been spelled in
    Hangul by `latin_to_hangul` when g2pk2 runs, so an empty lexicon gives the same output as
    the full CMU dictionary without loading it.
    """

    @staticmethod
    def dict() -> dict[str, list[list[str]]]:
        return {}


@contextlib.contextmanager
def _offline_nltk():
    """Make `import g2pk2` find a CMU dictionary without nltk's downloader.

    g2pk2 runs `nltk.data.find('corpora/cmudict.zip')` at import and calls `nltk.download` when
    it fails; both are replaced for the duration of the import, and `nltk.corpus.cmudict` is
    pointed at an empty stand-in. Everything is restored afterwards.
    """
    import nltk
    import nltk.corpus
    import nltk.data

    def _no_download(*args, **kwargs):
        raise MissingDependencyError("g2pk2 tried to download nltk data; " + _INSTALL_HINT)

    real_find, real_download = nltk.data.find, nltk.download
    real_cmudict = nltk.corpus.__dict__.get("cmudict")

    def _find(resource, *args, **kwargs):
        if "cmudict" in str(resource):
            return "gsv-onnx:cmudict"
        return real_find(resource, *args, **kwargs)

    nltk.data.find, nltk.download = _find, _no_download
    nltk.corpus.cmudict = _EnglishLexiconShim
    try:
        yield
    finally:
        nltk.data.find, nltk.download = real_find, real_download
        if real_cmudict is not None:
            nltk.corpus.cmudict = real_cmudict


class _CompiledPatternCache:
    """Drop-in for the `re` module inside g2pk2, keeping every compiled pattern.

    g2pk2 applies several hundred distinct regex strings per call, more than `re`'s internal
    cache holds, so each call recompiled them all (80 % of its time). Same functions, same
    results; only the compilation is remembered.
    """

    def __init__(self) -> None:
        self._patterns: dict[tuple[type, object, int], re.Pattern] = {}

    def compile(self, pattern, flags=0):
        if isinstance(pattern, re.Pattern):
            return pattern
        key = (type(pattern), pattern, int(flags))
        compiled = self._patterns.get(key)
        if compiled is None:
            compiled = self._patterns[key] = re.compile(pattern, flags)
        return compiled

    def sub(self, pattern, repl, string, count=0, flags=0):
        return self.compile(pattern, flags).sub(repl, string, count)

    def subn(self, pattern, repl, string, count=0, flags=0):
        return self.compile(pattern, flags).subn(repl, string, count)

    def search(self, pattern, string, flags=0):
        return self.compile(pattern, flags).search(string)

    def match(self, pattern, string, flags=0):
        return self.compile(pattern, flags).match(string)

    def fullmatch(self, pattern, string, flags=0):
        return self.compile(pattern, flags).fullmatch(string)

    def findall(self, pattern, string, flags=0):
        return self.compile(pattern, flags).findall(string)

    def finditer(self, pattern, string, flags=0):
        return self.compile(pattern, flags).finditer(string)

    def split(self, pattern, string, maxsplit=0, flags=0):
        return self.compile(pattern, flags).split(string, maxsplit)

    def __getattr__(self, name):  # flags, escape, error, ...
        return getattr(re, name)


def _load():
    """g2pk2's G2p and jamo, loaded offline, or MissingDependencyError naming the extra."""
    global _g2p_instance, _jamo
    with _load_lock:
        if _g2p_instance is not None:
            return _g2p_instance, _jamo
        for module, package in (
            ("g2pk2", "g2pk2"),
            ("jamo", "jamo"),
            ("mecab", "python-mecab-ko"),
            ("nltk", "nltk"),
        ):
            if importlib.util.find_spec(module) is None:
                raise MissingDependencyError(f"Korean needs the `{package}` package; {_INSTALL_HINT}")
        import jamo

        with _offline_nltk():
            import g2pk2.g2pk2 as g2pk2_module

        g2pk2_module.cmudict = _EnglishLexiconShim
        pattern_cache = _CompiledPatternCache()
        for name, module in list(sys.modules.items()):
            if (name == "g2pk2" or name.startswith("g2pk2.")) and getattr(module, "re", None) is re:
                module.re = pattern_cache

        class _OfflineG2p(g2pk2_module.G2p):
            def __init__(self) -> None:
                super().__init__()
                # g2pk2's __call__ re-reads idioms.txt and re-joins rule comments for every call;
                # the same steps with the rules prepared once (see __call__) are twice as fast
                self._idiom_rules = []
                with open(self.idioms_path, encoding="utf8") as f:
                    for line in f:
                        line = line.split("#")[0].strip()
                        if "===" in line:
                            before, after = line.split("===")
                            self._idiom_rules.append((re.compile(before), after))
                self._table_rules = [
                    (first if first and re.escape(first) == first else None, re.compile(pattern), replacement)
                    for pattern, replacement, _ in self.table
                    for first in [pattern[:1]]
                ]

            def __call__(self, string, descriptive=False, verbose=False, group_vowels=False, to_syl=True):
                """g2pk2's G2p.__call__, step for step, with precompiled rules and no rule glosses.

                A table rule whose pattern starts with a literal character is skipped when that
                character is absent (it cannot match), which is most of the 402 rules.
                """
                m = g2pk2_module
                for pattern, replacement in self._idiom_rules:  # 1. idioms
                    string = pattern.sub(replacement, string)
                string = m.convert_eng(string, self.cmu)  # 2. English words to Hangul
                string = m.annotate(string, self.mecab)  # 3. POS annotation
                string = m.convert_num(string)  # 4. numbers
                inp = m.h2j(string)  # 5. decompose
                for func in (  # 6. special rules
                    m.jyeo, m.ye, m.consonant_ui, m.josa_ui, m.vowel_ui, m.jamo, m.rieulgiyeok,
                    m.rieulbieub, m.verb_nieun, m.balb, m.palatalize, m.modifying_rieul,
                ):  # fmt: skip
                    inp = func(inp, descriptive, verbose)
                inp = re.sub("/[PJEB]", "", inp)
                for first, pattern, replacement in self._table_rules:  # 7. batchim + onset table
                    if first is None or first in inp:
                        inp = pattern.sub(replacement, inp)
                for func in (m.link1, m.link2, m.link3, m.link4):  # 8. linking
                    inp = func(inp, descriptive, verbose)
                if group_vowels:  # 9. post-processing
                    inp = m.group(inp)
                if to_syl:
                    inp = m.compose(inp)
                return inp

            def check_mecab(self):  # upstream's would pip-install python-mecab-ko when missing
                if importlib.util.find_spec("mecab") is None:
                    raise MissingDependencyError("Korean needs python-mecab-ko; " + _INSTALL_HINT)

            def get_mecab(self):
                try:
                    import mecab

                    return mecab.MeCab()
                except Exception as exc:  # noqa: BLE001 - dictionary missing or broken
                    raise MissingDependencyError(
                        f"python-mecab-ko could not load its dictionary ({exc}); {_INSTALL_HINT}"
                    ) from exc

        _g2p_instance = _OfflineG2p()
        _jamo = jamo
        return _g2p_instance, _jamo


def is_available() -> bool:
    """True when the Korean language pack is installed."""
    try:
        _load()
    except MissingDependencyError:
        return False
    return True


def text_normalize(text: str) -> str:
    """Upstream has no Korean normalization step: the text is used as is."""
    return text


def latin_to_hangul(text: str) -> str:
    """Spell every Latin letter by its Korean name (a -> 에이, ...)."""
    for regex, name in _LATIN_RES:
        text = regex.sub(name, text)
    return text


def divide_hangul(text: str) -> str:
    """Hangul syllables -> compatibility jamo, compound vowels split in two."""
    _, jamo = _load()
    try:
        text = jamo.j2hcj(jamo.h2j(text))
    except Exception:  # noqa: BLE001 - jamo rejects a few archaic/nameless jamo; convert per character
        text = "".join(_jamo_char(jamo, ch) for ch in text)
    for compound, simple in _VOWEL_SPLITS.items():
        text = text.replace(compound, simple)
    return text


def _jamo_char(jamo, ch: str) -> str:
    try:
        return jamo.j2hcj(jamo.h2j(ch))
    except Exception:  # noqa: BLE001 - left as is; it becomes 停 like any other non-table character
        return ch


# MeCab's C++ binding cannot take lone surrogates, and NUL would cut its input short.
_UNSAFE_FOR_MECAB_RE = re.compile("[\ud800-\udfff\x00]")


def fix_g2pk2_error(text: str) -> str:
    """Upstream's fix: "ㅇㅡㄹ ㄹ" / "ㄹㅡㄹ ㄹ" -> "… ㄴ" (g2pk2 wrongly liaises ㄹ across a space)."""
    out = []
    i = 0
    while i < len(text) - 4:
        if text[i : i + 3] in ("ㅇㅡㄹ", "ㄹㅡㄹ") and text[i + 3] == " " and text[i + 4] == "ㄹ":
            out.append(text[i : i + 3] + " ㄴ")
            i += 5
        else:
            out.append(text[i])
            i += 1
    out.append(text[i:])
    return "".join(out)


def _to_symbol(ch: str) -> str:
    ch = _MARK_MAP.get(ch, ch)
    return ch if ch in symbol_to_id else "停"


def g2p_normalized(text: str) -> list[str]:
    """V2 phones (jamo, punctuation, 空 for spaces, 停 for anything else) of Korean text."""
    g2p_model, _ = _load()
    text = latin_to_hangul(_UNSAFE_FOR_MECAB_RE.sub("\ufffd", text))
    with _run_lock:
        text = g2p_model(text)
    text = divide_hangul(text)
    text = fix_g2pk2_error(text)
    text = _FINAL_JAMO_RE.sub(r"\1.", text)
    return [_to_symbol(ch) for ch in text]


def g2p(text: str) -> G2PResult:
    """Raw Korean text -> text and V2 phones (upstream `clean_text` for "ko")."""
    if not isinstance(text, str):
        raise TextError(f"Korean text must be a str, got {type(text).__name__}")
    norm_text = text_normalize(text)
    return G2PResult(norm_text=norm_text, phones=g2p_normalized(norm_text), word2ph=None)
