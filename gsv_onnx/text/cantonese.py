"""Cantonese frontend: jyutping -> "Y"-prefixed initials and toned finals (spec §6.2, Cantonese).

Normalization is the Mandarin TextNormalizer's first stage (numbers, dates, units... read out
in Chinese characters, sentence split; owned by `gsv_onnx.text.chinese.normalization`), then
Cantonese's own punctuation map, keeping only CJK ideographs and ! ? … , . -.

g2p: ToJyutping reads the whole text (word context picks the reading); each syllable is split
into initial + final with upstream's ordered prefix list and becomes two phones, "Y" + initial
and "Y" + final + tone (word2ph 2); punctuation stays itself (word2ph 1). BERT features are
zeros for Cantonese, so word2ph only has to match norm_text character by character.
"""

from __future__ import annotations

import re
import threading

from ..errors import TextError
from .symbols import UNK, symbol_to_id
from .types import G2PResult

__all__ = ["g2p", "text_normalize", "replace_punctuation", "jyutping_to_phones"]

_PUNCTUATION = ["!", "?", "…", ",", ".", "-"]
_PUNCT_SET = set(_PUNCTUATION)

# Upstream's ordered list: the first entry that the toneless syllable starts with is its initial
# (it also lists vowel-initial pseudo-initials such as "aa", "ou", "ung").
INITIALS = [
    "aa", "aai", "aak", "aap", "aat", "aau", "ai", "au", "ap", "at", "ak", "a", "p", "b", "e",
    "ts", "t", "dz", "d", "kw", "k", "gw", "g", "f", "h", "l", "m", "ng", "n", "s", "y", "w", "c",
    "z", "j", "ong", "on", "ou", "oi", "ok", "o", "uk", "ung", "sp", "spl", "spn", "sil",
]  # fmt: skip

_PUNCT_MAP = {
    "：": ",", "；": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": ".", "·": ",", "、": ",",
    "...": "…", "$": ".", "“": "'", "”": "'", '"': "'", "‘": "'", "’": "'", "（": "'", "）": "'",
    "(": "'", ")": "'", "《": "'", "》": "'", "【": "'", "】": "'", "[": "'", "]": "'", "—": "-",
    "～": "-", "~": "-", "「": "'", "」": "'",
}  # fmt: skip
_PUNCT_MAP_RE = re.compile("|".join(re.escape(k) for k in _PUNCT_MAP))
_PUNCT_CLASS = "".join(re.escape(p) for p in _PUNCTUATION)
_NOT_KEPT_RE = re.compile(r"[^\u4e00-\u9fa5" + _PUNCT_CLASS + r"]+")
_SYLLABLES_RE = re.compile(r"^([a-z]+[1-6]+[ ]?)+$")

_tojyutping = None
_load_lock = threading.Lock()


def _jyutping_list(text: str) -> list[tuple[str, str | None]]:
    global _tojyutping
    with _load_lock:
        if _tojyutping is None:
            import ToJyutping

            _tojyutping = ToJyutping
    return _tojyutping.get_jyutping_list(text)


def _normalize_sentences(text: str) -> list[str]:
    """Stage 1 of the Chinese TextNormalizer (seam: owned by the Mandarin frontend)."""
    from .chinese.normalization import normalize_sentences

    return normalize_sentences(text)


def replace_punctuation(text: str) -> str:
    """Cantonese punctuation map, then delete everything but CJK ideographs and ! ? … , . -."""
    text = _PUNCT_MAP_RE.sub(lambda m: _PUNCT_MAP[m.group(0)], text)
    return _NOT_KEPT_RE.sub("", text)


def _drop_unreadable(text: str) -> str:
    """Remove ideographs ToJyutping has no reading for (upstream would crash on them)."""
    if not text:
        return text
    entries = _jyutping_list(text)
    if len(entries) != len(text):  # not one entry per character: leave the text alone
        return text
    return "".join(c for c, r in entries if c in _PUNCT_SET or (r and _SYLLABLES_RE.match(r)))


def text_normalize(text: str) -> str:
    """Upstream's Cantonese text_normalize: Chinese TextNormalizer sentences + punctuation map."""
    normalized = "".join(replace_punctuation(s) for s in _normalize_sentences(text))
    return _drop_unreadable(normalized)


def _split_syllable(syllable: str) -> list[str]:
    """jyutping syllable (tone digit last) -> ["Y"+initial, "Y"+final+tone] per upstream's rules."""
    try:
        tone = int(syllable[-1])
        base = syllable[:-1]
    except ValueError:
        tone, base = 0, syllable
    for initial in INITIALS:
        if base.startswith(initial):
            if base.startswith("nga"):
                initial, final = base[:2], base[2:] or base[-1]
            else:
                final = base[len(initial) :] or initial[-1]
            final_toned = f"{final}{tone}" if tone not in (-1, 0) else final
            return ["Y" + initial, "Y" + final_toned]
    # no listed prefix (never produced by ToJyutping's inventory): keep two phones per syllable
    return ["Y" + base[:1], "Y" + (base[1:] or base[:1]) + (str(tone) if tone else "")]


def jyutping_to_phones(syllables: list[str]) -> tuple[list[str], list[int]]:
    """Jyutping syllables and punctuation marks -> phones and word2ph (2 per syllable, 1 per mark)."""
    phones: list[str] = []
    word2ph: list[int] = []
    for syllable in syllables:
        if syllable in _PUNCT_SET or syllable == "_":
            phones.append(syllable)
            word2ph.append(1)
        else:
            phones.extend(_split_syllable(syllable))
            word2ph.append(2)
    return phones, word2ph


def _syllables(norm_text: str) -> list[str]:
    out: list[str] = []
    for char, reading in _jyutping_list(norm_text):
        if char in _PUNCT_SET:
            out.append(char)
        elif reading and _SYLLABLES_RE.match(reading):
            out.append(reading)
        else:
            raise TextError(f"no jyutping reading for {char!r}")
    return out


def g2p(text: str) -> G2PResult:
    """Raw Cantonese text -> normalized text, V2 phones and word2ph (upstream `clean_text` for "yue")."""
    if not isinstance(text, str):
        raise TextError(f"Cantonese text must be a str, got {type(text).__name__}")
    norm_text = text_normalize(text)
    phones, word2ph = jyutping_to_phones(_syllables(norm_text)) if norm_text else ([], [])
    phones = [p if p in symbol_to_id else UNK for p in phones]
    if len(word2ph) != len(norm_text) or sum(word2ph) != len(phones):
        raise TextError(f"Cantonese alignment failed for {norm_text!r}")
    return G2PResult(norm_text=norm_text, phones=phones, word2ph=word2ph)
