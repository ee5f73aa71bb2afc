"""Mandarin tone sandhi and the word merges that prepare for it (spec §6.2 G2P steps 4 and 6).

Finals are pypinyin FINALS_TONE3 strings whose last character is the tone digit (5 = neutral).
Every function here follows upstream's order and conditions, including its quirks, because the
model was trained on phones produced that way.
"""

from __future__ import annotations

from functools import lru_cache

from pypinyin import Style, lazy_pinyin

from .data import must_neutral_words
from .data import must_not_neutral_words as _must_not_neutral
from .segmenter import cut_for_search

# Characters after which 一 keeps its first tone (it is then the number "one" at a clause end).
_CLAUSE_PUNCT = "：，；。？！“”‘’':,;.?!"
_SENTENCE_PARTICLES = "吧呢哈啊呐噻嘛吖嗨呐哦哒额滴哩哟喽啰耶喔诶"


@lru_cache(maxsize=65536)
def _finals_tone3_cached(word: str) -> tuple[str, ...]:
    return tuple(lazy_pinyin(word, neutral_tone_with_five=True, style=Style.FINALS_TONE3))


def finals_tone3(word: str) -> list[str]:
    """pypinyin FINALS_TONE3 readings of `word` (neutral tone written 5); a fresh list per call."""
    return list(_finals_tone3_cached(word))


def _with_tone(final: str, tone: str) -> str:
    return final[:-1] + tone


def _all_tone_three(finals: list[str]) -> bool:
    return all(f[-1:] == "3" for f in finals)


def _is_reduplication(word: str) -> bool:
    return len(word) == 2 and word[0] == word[1]


def split_word(word: str) -> list[str]:
    """Split a word in two around its shortest search-mode sub-word (upstream's `_split_word`)."""
    subwords = sorted(cut_for_search(word), key=len)
    first = subwords[0]
    if word.find(first) == 0:
        return [first, word[len(first) :]]
    return [word[: -len(first)], first]


# --- merges before sandhi -------------------------------------------------------------------


def merge_bu(seg: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Attach a lone 不 to the following word (it takes that word's POS)."""
    merged: list[tuple[str, str]] = []
    last_word = ""
    for word, pos in seg:
        if last_word == "不":
            word = last_word + word
        if word != "不":
            merged.append((word, pos))
        last_word = word
    if last_word == "不":
        merged.append((last_word, "d"))
    return merged


def merge_yi(seg: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Join "V 一 V" (same verb) into one word, then attach a lone 一 to the following word."""
    merged: list[list[str]] = []
    i = 0
    while i < len(seg):
        word, pos = seg[i]
        if i >= 1 and word == "一" and i + 1 < len(seg):
            last = merged[-1] if merged else list(seg[i - 1])
            following = seg[i + 1]
            if last[0] == following[0] and last[1] == "v" and following[1] == "v":
                merged[-1] = [last[0] + "一" + following[0], last[1]]
                i += 2
                continue
        merged.append([word, pos])
        i += 1
    result: list[list[str]] = []
    for word, pos in merged:
        if result and result[-1][0] == "一":
            result[-1][0] = result[-1][0] + word
        else:
            result.append([word, pos])
    return [(w, p) for w, p in result]


def merge_reduplication(seg: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Join a word with an identical following word (看 看 -> 看看)."""
    merged: list[list[str]] = []
    for word, pos in seg:
        if merged and word == merged[-1][0]:
            merged[-1][0] = merged[-1][0] + word
        else:
            merged.append([word, pos])
    return [(w, p) for w, p in merged]


def _merge_three_tones(seg: list[tuple[str, str]], whole_words: bool) -> list[tuple[str, str]]:
    finals = [finals_tone3(word) for word, _ in seg]
    merged: list[list[str]] = []
    merged_into_previous = [False] * len(seg)
    for i, (word, pos) in enumerate(seg):
        if i >= 1 and not merged_into_previous[i - 1]:
            if whole_words:
                both_three = _all_tone_three(finals[i - 1]) and _all_tone_three(finals[i])
            else:
                # upstream indexes [-1][-1] / [0][-1]; an empty reading raises and the step is skipped
                both_three = finals[i - 1][-1][-1] == "3" and finals[i][0][-1] == "3"
            if both_three:
                previous = seg[i - 1][0]
                if not _is_reduplication(previous) and len(previous) + len(word) <= 3:
                    merged[-1][0] = merged[-1][0] + word
                    merged_into_previous[i] = True
                    continue
        merged.append([word, pos])
    return [(w, p) for w, p in merged]


def merge_er(seg: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Attach 儿 to the previous word (erhua is decided later, per word)."""
    merged: list[list[str]] = []
    for i, (word, pos) in enumerate(seg):
        if i >= 1 and word == "儿" and seg[i - 1][0] != "#":
            merged[-1][0] = merged[-1][0] + word
        else:
            merged.append([word, pos])
    return [(w, p) for w, p in merged]


def pre_merge_for_modify(seg: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Upstream's merge pipeline; a step that fails on odd input leaves the segmentation unchanged."""
    seg = merge_bu(seg)
    for step in (
        merge_yi,
        merge_reduplication,
        lambda s: _merge_three_tones(s, True),
        lambda s: _merge_three_tones(s, False),
    ):
        try:
            seg = step(seg)
        except IndexError:
            pass
    return merge_er(seg)


# --- sandhi per word ------------------------------------------------------------------------


def bu_sandhi(word: str, finals: list[str]) -> list[str]:
    """不: neutral in the middle of "X不X"; second tone before a fourth tone."""
    if len(word) == 3 and word[1] == "不":
        finals[1] = _with_tone(finals[1], "5")
    else:
        for i, char in enumerate(word):
            if char == "不" and i + 1 < len(word) and finals[i + 1][-1:] == "4":
                finals[i] = _with_tone(finals[i], "2")
    return finals


def yi_sandhi(word: str, finals: list[str]) -> list[str]:
    """一: untouched in digit strings; neutral in "X一X"; first tone in 第一; else 2 before 4, 4 before others."""
    if "一" in word and all(ch.isnumeric() for ch in word if ch != "一"):
        return finals
    if len(word) == 3 and word[1] == "一" and word[0] == word[-1]:
        finals[1] = _with_tone(finals[1], "5")
    elif word.startswith("第一"):
        finals[1] = _with_tone(finals[1], "1")
    else:
        for i, char in enumerate(word):
            if char == "一" and i + 1 < len(word):
                if finals[i + 1][-1:] == "4":
                    finals[i] = _with_tone(finals[i], "2")
                elif word[i + 1] not in _CLAUSE_PUNCT:
                    finals[i] = _with_tone(finals[i], "4")
    return finals


def neutral_sandhi(word: str, pos: str, finals: list[str]) -> list[str]:
    """Neutral tones: reduplicated n/v/a words, particles, suffixes, locatives, directionals, 个."""
    neutral = must_neutral_words()
    for j in range(1, len(word)):
        if word[j] == word[j - 1] and pos[:1] in ("n", "v", "a") and word not in _must_not_neutral():
            finals[j] = _with_tone(finals[j], "5")
    ge_idx = word.find("个")
    last = word[-1:]
    if last and last in _SENTENCE_PARTICLES:
        finals[-1] = _with_tone(finals[-1], "5")
    elif last and last in "的地得":
        finals[-1] = _with_tone(finals[-1], "5")
    elif len(word) == 1 and word in "了着过" and pos in ("ul", "uz", "ug"):
        finals[-1] = _with_tone(finals[-1], "5")
    elif len(word) > 1 and last in "们子" and pos in ("r", "n") and word not in _must_not_neutral():
        finals[-1] = _with_tone(finals[-1], "5")
    elif len(word) > 1 and last in "上下里" and pos in ("s", "l", "f"):
        finals[-1] = _with_tone(finals[-1], "5")
    elif len(word) > 1 and last in "来去" and word[-2] in "上下进出回过起开":
        finals[-1] = _with_tone(finals[-1], "5")
    elif (
        ge_idx >= 1 and (word[ge_idx - 1].isnumeric() or word[ge_idx - 1] in "几有两半多各整每做是")
    ) or word == "个":
        finals[ge_idx] = _with_tone(finals[ge_idx], "5")
    elif word in neutral or word[-2:] in neutral:
        finals[-1] = _with_tone(finals[-1], "5")

    parts = split_word(word)
    part_finals = [finals[: len(parts[0])], finals[len(parts[0]) :]]
    for part, pf in zip(parts, part_finals, strict=False):
        if pf and (part in neutral or part[-2:] in neutral):
            pf[-1] = _with_tone(pf[-1], "5")
    return part_finals[0] + part_finals[1]


def three_sandhi(word: str, finals: list[str]) -> list[str]:
    """Third-tone sandhi: 2-, 3- (split into sub-words) and 4-character words."""
    if len(word) == 2 and _all_tone_three(finals):
        finals[0] = _with_tone(finals[0], "2")
    elif len(word) == 3:
        parts = split_word(word)
        if _all_tone_three(finals):
            if len(parts[0]) == 2:  # 蒙古/包
                finals[0] = _with_tone(finals[0], "2")
                finals[1] = _with_tone(finals[1], "2")
            elif len(parts[0]) == 1:  # 纸/老虎
                finals[1] = _with_tone(finals[1], "2")
        else:
            first, second = finals[: len(parts[0])], finals[len(parts[0]) :]
            if _all_tone_three(first) and len(first) == 2:  # 所有/人
                first[0] = _with_tone(first[0], "2")
            if _all_tone_three(second) and len(second) == 2:
                second[0] = _with_tone(second[0], "2")
            elif second and not _all_tone_three(second) and second[0][-1:] == "3" and first[-1][-1:] == "3":
                first[-1] = _with_tone(first[-1], "2")  # 好/喜欢
            finals = first + second
    elif len(word) == 4:
        first, second = finals[:2], finals[2:]
        for part in (first, second):
            if _all_tone_three(part):
                part[0] = _with_tone(part[0], "2")
        finals = first + second
    return finals


def modified_tone(word: str, pos: str, finals: list[str]) -> list[str]:
    """Apply 不, 一, neutral and third-tone sandhi in upstream's order."""
    if len(finals) != len(word):
        # pypinyin grouped non-Han characters; positions would not line up, so leave as is
        return finals
    finals = bu_sandhi(word, finals)
    finals = yi_sandhi(word, finals)
    finals = neutral_sandhi(word, pos, finals)
    finals = three_sandhi(word, finals)
    return finals
