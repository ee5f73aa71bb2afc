"""Japanese frontend: pyopenjtalk phones with prosody marks, as upstream V2 (spec §6.2, Japanese).

Needs the `[ja]` extra (pyopenjtalk) and an Open JTalk dictionary that is *installed*, never
downloaded: Debian's `open-jtalk-mecab-naist-jdic` (found automatically at its standard path),
a directory named by `OPEN_JTALK_DICT_DIR`, or a pyopenjtalk build that bundles its dictionary
(pyopenjtalk-plus). A missing piece raises `MissingDependencyError` saying what to install.

Phones: each run of Japanese characters (kana, kanji, Latin letters, digits, full-width
alphanumerics) goes through Open JTalk's full-context labels and becomes ESPnet-style phones with
prosody marks: "#" accent-phrase boundary (not in the V2 table: it becomes UNK, as upstream),
"[" pitch rise, "]" pitch fall, "_" pause; devoiced vowels are written lower case. Every other
character is kept as a mark (spaces skipped) with CJK punctuation mapped to ASCII.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

from ..errors import MissingDependencyError, TextError
from .symbols import UNK, symbol_to_id
from .types import G2PResult

__all__ = ["g2p", "text_normalize", "prosody_phones", "DEBIAN_DICT_DIR"]

DEBIAN_DICT_DIR = "/var/lib/mecab/dic/open-jtalk/naist-jdic"
_INSTALL_HINT = (
    "install the Japanese language pack: pip install 'gsv-onnx[ja]' and an Open JTalk dictionary "
    "(apt-get install open-jtalk-mecab-naist-jdic, or set OPEN_JTALK_DICT_DIR to a naist-jdic "
    "directory, or pip install pyopenjtalk-plus which bundles one)"
)

_PUNCTUATION = ["!", "?", "…", ",", ".", "-"]
_PUNCT_CLASS = "".join(re.escape(p) for p in _PUNCTUATION)
_PUNCT_RUN_RE = re.compile(f"([{_PUNCT_CLASS}])([{_PUNCT_CLASS}])+")

# Characters read by Open JTalk; every other character separates runs and is kept as a mark.
_JA_CHARS = r"A-Za-z\d\u3005\u3040-\u30ff\u4e00-\u9fff\uff11-\uff19\uff21-\uff3a\uff41-\uff5a\uff66-\uff9d"
_JA_CHAR_RE = re.compile(f"[{_JA_CHARS}]")
_MARK_RE = re.compile(f"[^{_JA_CHARS}]")

_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_MARK_MAP = {"：": ",", "；": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": ".", "·": ",", "、": ","}

_pyopenjtalk = None
_load_lock = threading.Lock()
_run_lock = threading.Lock()  # Open JTalk's global instance is not thread-safe


def _has_dictionary(path: str | bytes | None) -> bool:
    if not path:
        return False
    if isinstance(path, bytes):
        path = path.decode("utf-8", "replace")
    return (Path(path) / "sys.dic").is_file()


def _load():
    """Import pyopenjtalk with an installed dictionary, or raise MissingDependencyError."""
    global _pyopenjtalk
    with _load_lock:
        if _pyopenjtalk is not None:
            return _pyopenjtalk
        # pyopenjtalk reads OPEN_JTALK_DICT_DIR once, at import: point it at Debian's dictionary
        # unless the user chose one.
        user_choice = os.environ.get("OPEN_JTALK_DICT_DIR")
        if not user_choice and _has_dictionary(DEBIAN_DICT_DIR):
            os.environ["OPEN_JTALK_DICT_DIR"] = DEBIAN_DICT_DIR
        try:
            import pyopenjtalk
        except ImportError as exc:
            raise MissingDependencyError(f"Japanese needs pyopenjtalk ({exc}); {_INSTALL_HINT}") from exc
        dict_dir = getattr(pyopenjtalk, "OPEN_JTALK_DICT_DIR", None)
        if not _has_dictionary(dict_dir) and not user_choice:
            # imported earlier by other code without the variable: its dictionary is only opened
            # lazily, on first use, from this module attribute
            if _has_dictionary(DEBIAN_DICT_DIR):
                pyopenjtalk.OPEN_JTALK_DICT_DIR = DEBIAN_DICT_DIR.encode("utf-8")
                dict_dir = pyopenjtalk.OPEN_JTALK_DICT_DIR
        if not _has_dictionary(dict_dir):
            # Without one, pyopenjtalk would try to download a dictionary on first use.
            raise MissingDependencyError(f"no Open JTalk dictionary at {dict_dir!r}; {_INSTALL_HINT}")
        _pyopenjtalk = pyopenjtalk
        return pyopenjtalk


def is_available() -> bool:
    """True when pyopenjtalk and an installed dictionary are present."""
    try:
        _load()
    except MissingDependencyError:
        return False
    return True


def text_normalize(text: str) -> str:
    """Upstream's Japanese normalization: only runs of punctuation are collapsed to their first mark."""
    return _PUNCT_RUN_RE.sub(r"\1", text)


_P3_RE = re.compile(r"\-(.*?)\+")
_A1_RE = re.compile(r"/A:([0-9\-]+)\+")
_A2_RE = re.compile(r"\+(\d+)\+")
_A3_RE = re.compile(r"\+(\d+)/")
_E3_RE = re.compile(r"!(\d+)_")
_F1_RE = re.compile(r"/F:(\d+)_")


def _feature(regex: re.Pattern, label: str) -> int:
    m = regex.search(label)
    return int(m.group(1)) if m else -50


def prosody_phones(text: str) -> list[str]:
    """Phones with prosody marks for one run of Japanese text (leading "^" and final "$"/"?" removed)."""
    pyopenjtalk = _load()
    with _run_lock:
        labels = pyopenjtalk.make_label(pyopenjtalk.run_frontend(text))
    phones: list[str] = []
    count = len(labels)
    for n, label in enumerate(labels):
        m = _P3_RE.search(label)
        p3 = m.group(1) if m else ""
        if p3 in "AEIOU":  # devoiced vowel -> plain lower-case vowel
            p3 = p3.lower()
        if p3 == "sil":
            if n == 0:
                phones.append("^")
            elif n == count - 1:
                phones.append("?" if _feature(_E3_RE, label) == 1 else "$")
            continue
        if p3 == "pau":
            phones.append("_")
            continue
        phones.append(p3)
        if n + 1 >= count:
            continue
        a1 = _feature(_A1_RE, label)
        a2 = _feature(_A2_RE, label)
        a3 = _feature(_A3_RE, label)
        f1 = _feature(_F1_RE, label)
        a2_next = _feature(_A2_RE, labels[n + 1])
        if a3 == 1 and a2_next == 1 and p3 in "aeiouAEIOUNcl":
            phones.append("#")  # accent phrase boundary
        elif a1 == 0 and a2_next == a2 + 1 and a2 != f1:
            phones.append("]")  # pitch falls after this mora
        elif a2 == 1 and a2_next == 2:
            phones.append("[")  # pitch rises
    return phones[1:-1]


# Open JTalk crashes the whole process (segmentation fault) on long runs of one repeated kana
# from about 341 characters on ("ア" * 345, "ッ" * 400, "え" * 1063); up to 340 every kana was
# checked safe. A run without any mark or space that long is not real text (upstream also cuts
# text into sentences first), so runs over _MAX_RUN characters are read in pieces of that size.
_MAX_RUN = 256


def _split_long_run(run: str) -> list[str]:
    """`run` cut into pieces of at most _MAX_RUN characters (unchanged when shorter)."""
    return [run[i : i + _MAX_RUN] for i in range(0, len(run), _MAX_RUN)] if len(run) > _MAX_RUN else [run]


def g2p_normalized(norm_text: str) -> list[str]:
    """V2 phones of normalized Japanese text (unknown symbols already mapped to UNK)."""
    # lone surrogates cannot cross into Open JTalk's C++ code; they become marks (-> UNK)
    text = _SURROGATE_RE.sub("\ufffd", norm_text).replace("％", "パーセント").lower()
    runs = _MARK_RE.split(text)
    marks = _MARK_RE.findall(text)
    phones: list[str] = []
    for i, run in enumerate(runs):
        if _JA_CHAR_RE.match(run):
            for piece in _split_long_run(run):
                phones.extend(prosody_phones(piece))
        if i < len(marks):
            if marks[i] == " ":
                continue
            phones.append(marks[i])
    phones = [_MARK_MAP.get(p, p) for p in phones]
    return [p if p in symbol_to_id else UNK for p in phones]


def g2p(text: str) -> G2PResult:
    """Raw Japanese text -> normalized text and V2 phones (upstream `clean_text` for "ja")."""
    if not isinstance(text, str):
        raise TextError(f"Japanese text must be a str, got {type(text).__name__}")
    _load()
    norm_text = text_normalize(text)
    return G2PResult(norm_text=norm_text, phones=g2p_normalized(norm_text), word2ph=None)
