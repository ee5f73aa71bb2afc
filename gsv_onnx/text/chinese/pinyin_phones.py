"""Pinyin syllable -> two V2 phones (initial, toned final), derived from spelling rules.

Upstream looks syllables up in a 429-line table (opencpop-strict); the same mapping follows from
these rules, which we apply instead of shipping a table (spec §6.2 G2P step 8):

* zero-initial syllables take a pseudo-initial from their first letter: a.. -> AA, e.. -> EE,
  o.. -> OO, and keep the whole spelling as the final (ai -> AA ai, er -> EE er, ou -> OO ou);
* y and w are initials; after y, u-spellings are ü-finals (yu -> y v, yuan -> y van), and the
  two spellings whose vowel is [ɛ] use the special finals E/En (ye -> y E, yan -> y En);
  after w the rest is the final as written (wei -> w ei, wen -> w en);
* after j, q, x, u (or v) is ü: ju -> j v, juan -> j van, jue -> j ve, jun -> j vn;
* i after z, c, s is the apical i0, after zh, ch, sh, r the retroflex ir;
* otherwise the rest of the spelling is the final (l + v for lü, gui -> g ui, liu -> l iu).
"""

from __future__ import annotations

from functools import lru_cache

from ..symbols import ZH_FINALS

_INITIALS_LONGEST_FIRST = sorted(
    "b p m f d t n l g k h j q x zh ch sh r z c s y w".split(), key=len, reverse=True
)
_FINAL_SET = frozenset(ZH_FINALS)
_PSEUDO_INITIAL = {"a": "AA", "e": "EE", "o": "OO"}


@lru_cache(maxsize=2048)
def split_syllable(pinyin: str) -> tuple[str, str] | None:
    """Split a toneless pinyin syllable (v for ü) into (initial, final) phones, or None if invalid."""
    if not pinyin or not pinyin.isascii() or not pinyin.isalpha() or not pinyin.islower():
        return None
    initial = next((c for c in _INITIALS_LONGEST_FIRST if pinyin.startswith(c)), "")
    rest = pinyin[len(initial) :]
    if not initial:
        pseudo = _PSEUDO_INITIAL.get(pinyin[0])
        if pseudo is None:
            return None
        final = pinyin
        initial = pseudo
    elif not rest or rest in ("ir", "i0"):
        return None
    elif initial == "y":
        if rest[0] in "uv":
            final = "v" + rest[1:]
        elif rest == "e":
            final = "E"
        elif rest == "an":
            final = "En"
        else:
            final = rest
    elif initial in ("j", "q", "x") and rest[0] in "uv":
        final = "v" + rest[1:]
    elif rest == "i" and initial in ("z", "c", "s"):
        final = "i0"
    elif rest == "i" and initial in ("zh", "ch", "sh", "r"):
        final = "ir"
    else:
        final = rest
    if final not in _FINAL_SET or not _combination_exists(initial, final):
        return None
    return initial, final


_NO_I_FINALS = frozenset("f g k h zh ch sh r z c s w".split())


def _combination_exists(initial: str, final: str) -> bool:
    """Phonotactics: which initials take ü-finals and i-finals (rejects "bv", "qa", "gi", ...)."""
    if final[0] == "v":
        return initial in ("j", "q", "x", "y") or (initial in ("l", "n") and final in ("v", "ve"))
    if initial in ("j", "q", "x"):
        return final[0] == "i"
    if final[0] == "i" and final not in ("i0", "ir"):
        return initial not in _NO_I_FINALS
    return True


def respell(initial: str, final: str) -> str:
    """Turn pypinyin's strict (initial, final) pair into the written syllable, as upstream does.

    pypinyin's strict finals spell the underlying final (uei, iou, uen; i/u/ü for y/w syllables);
    upstream rewrites them to written pinyin before its table lookup.
    """
    if initial:
        return initial + {"uei": "ui", "iou": "iu", "uen": "un"}.get(final, final)
    whole = {"ing": "ying", "i": "yi", "in": "yin", "u": "wu"}.get(final)
    if whole is not None:
        return whole
    if final and final[0] in "viu":
        return {"v": "yu", "i": "y", "u": "w"}[final[0]] + final[1:]
    return final
