"""Mandarin grapheme-to-phoneme: normalized text -> V2 phones and word2ph (spec §6.2 G2P).

Default path (no model): jieba POS segmentation -> upstream's merges -> pypinyin per word ->
tone sandhi -> erhua -> rule-based pinyin-to-phone split. Each Han character yields two phones
(initial, toned final), each punctuation mark one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from pypinyin import Style, lazy_pinyin

from ..symbols import PUNCTUATION
from .data import must_erhua, not_erhua
from .pinyin_phones import respell, split_syllable
from .segmenter import cut_with_pos
from .tone_sandhi import modified_tone, pre_merge_for_modify

_PUNCT_SET = frozenset(PUNCTUATION)
_SENTENCE_SPLIT = re.compile(r"(?<=[!?…,.\-])\s*")
_LATIN_RUN = re.compile(r"[a-zA-Z]+")

# A per-word pinyin source: (word, pos) -> list of TONE3 syllables (or None to use pypinyin).
PinyinOverride = Callable[[str, str], "list[str] | None"]


@lru_cache(maxsize=65536)
def _initials_finals_cached(word: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    initials = lazy_pinyin(word, neutral_tone_with_five=True, style=Style.INITIALS)
    finals = lazy_pinyin(word, neutral_tone_with_five=True, style=Style.FINALS_TONE3)
    n = min(len(initials), len(finals))
    return tuple(initials[:n]), tuple(finals[:n])


def initials_finals(word: str) -> tuple[list[str], list[str]]:
    """pypinyin's strict initials and FINALS_TONE3 for `word` (neutral tone 5); fresh lists per call."""
    initials, finals = _initials_finals_cached(word)
    return list(initials), list(finals)


def split_tone3(syllable: str) -> tuple[str, str]:
    """Split a TONE3 syllable such as "zhong1" into pypinyin strict (initial, final+tone)."""
    from pypinyin.contrib.tone_convert import to_finals_tone3, to_initials

    return to_initials(syllable), to_finals_tone3(syllable, neutral_tone_with_five=True)


def merge_erhua(initials: list[str], finals: list[str], word: str, pos: str) -> tuple[list[str], list[str]]:
    """Erhua: a word-final 儿 read er1 becomes er2; then a trailing 儿 takes the previous tone."""
    if finals and len(finals) == len(word) and word[-1] == "儿" and finals[-1] == "er1":
        finals[-1] = "er2"
    if word not in must_erhua() and (word in not_erhua() or pos in ("a", "j", "nr")):
        return initials, finals
    if len(finals) != len(word) or len(word) < 2:
        return initials, finals
    if word[-1] == "儿" and finals[-1] in ("er2", "er5") and word[-2:] not in not_erhua():
        finals[-1] = "er" + finals[-2][-1]
    return initials, finals


def syllable_to_phones(initial: str, final: str) -> list[str]:
    """(strict initial, final with tone digit) -> [initial phone, final phone + tone]."""
    tone = final[-1:]
    if tone not in ("1", "2", "3", "4", "5"):
        # syllables pypinyin writes without a tone (rare interjections): read as neutral
        tone = "5"
        base = final
    else:
        base = final[:-1]
    split = split_syllable(respell(initial, base))
    if split is None:
        split = _approximate(initial, base)
    return [split[0], split[1] + tone]


def _approximate(initial: str, final: str) -> tuple[str, str]:
    """Nearest opencpop syllable for spellings outside the inventory (m, n, ng, hm, ê, ...)."""
    if not final or final in ("m", "n", "ng", "hm", "hng"):
        return ("EE", "en") if "n" in initial + final else ("m", "u")
    if final.startswith("ê"):
        return ("EE", "ei")
    guess = split_syllable(initial + final[:-1]) if len(final) > 1 else None
    return guess or ("UNK", "UNK")


def _model_initials_finals(word: str, readings: list[str | None]) -> tuple[list[str], list[str]]:
    """(initials, finals) from per-character TONE3 readings (g2pW path); gaps use pypinyin."""
    from pypinyin.contrib.tone_convert import to_finals_tone3, to_initials

    initials, finals = [], []
    for ch, reading in zip(word, readings, strict=False):
        if not reading:
            i, f = initials_finals(ch)
            initials += i
            finals += f
        elif reading[0].isalpha():
            initials.append(to_initials(reading))
            finals.append(to_finals_tone3(reading, neutral_tone_with_five=True))
        else:
            initials.append(reading)
            finals.append(reading)
    return initials, finals


def sentence_g2p(
    sentence: str, override: PinyinOverride | None = None, readings: list[str | None] | None = None
) -> tuple[list[str], list[int]]:
    """Phones and word2ph of one normalized sentence (Han characters and V2 punctuation).

    `readings` are per-character TONE3 pinyin from g2pW for the Latin-free sentence; without
    them pypinyin reads each word.
    """
    sentence = _LATIN_RUN.sub("", sentence)
    phones: list[str] = []
    word2ph: list[int] = []
    if not sentence:
        return phones, word2ph
    words = pre_merge_for_modify(cut_with_pos(sentence))
    offset = 0
    for word, pos in words:
        start, offset = offset, offset + len(word)
        if pos == "eng":
            continue
        forced = override(word, pos) if override is not None else None
        if forced is not None:
            pairs = [split_tone3(s) for s in forced]
            initials = [p[0] for p in pairs]
            finals = [p[1] for p in pairs]
        else:
            if readings is not None:
                initials, finals = _model_initials_finals(word, readings[start:offset])
            else:
                initials, finals = initials_finals(word)
            finals = modified_tone(word, pos, finals)
            initials, finals = merge_erhua(initials, finals, word, pos)
        for initial, final in zip(initials, finals, strict=False):
            if initial == final:
                # non-Han item: punctuation is one phone; a character pypinyin has no reading
                # for becomes UNK UNK so that word2ph stays aligned with the text
                for ch in initial:
                    if ch in _PUNCT_SET:
                        phones.append(ch)
                        word2ph.append(1)
                    else:
                        phones += ["UNK", "UNK"]
                        word2ph.append(2)
                continue
            phones.extend(syllable_to_phones(initial, final))
            word2ph.append(2)
    return phones, word2ph


def g2p(norm_text: str, override: PinyinOverride | None = None, g2pw=None) -> tuple[list[str], list[int]]:
    """Phones and word2ph of normalized text, sentence by sentence as upstream splits it.

    With a loaded `g2pw` (chinese.g2pw.G2PW) all sentences are read by the model in one batched
    call; otherwise pypinyin reads them word by word.
    """
    sentences = [s for s in _SENTENCE_SPLIT.split(norm_text) if s.strip()]
    readings: list[list[str | None] | None] = [None] * len(sentences)
    if g2pw is not None:
        latin_free = [_LATIN_RUN.sub("", s) for s in sentences]
        batch = [s for s in latin_free if s]
        predicted = iter(g2pw.predict(batch) if batch else [])
        readings = [next(predicted) if s else None for s in latin_free]
    phones: list[str] = []
    word2ph: list[int] = []
    for sentence, sentence_readings in zip(sentences, readings, strict=True):
        p, w = sentence_g2p(sentence, override, sentence_readings)
        phones += p
        word2ph += w
    return phones, word2ph
