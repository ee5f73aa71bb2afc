"""Mandarin frontend: `text_normalize` and `g2p` (spec §6.2)."""

from __future__ import annotations

from ..types import G2PResult
from .g2p import g2p as _g2p_norm
from .normalization import text_normalize

__all__ = ["g2p", "g2p_with_sp", "text_normalize"]

_SPECIAL_SILENCES = (("￥", "SP2"), ("^", "SP3"))


def g2p(text: str, override=None, g2pw=None) -> G2PResult:
    """Normalize raw Mandarin text and convert it to V2 phones with word2ph.

    Upstream's special-silence rule is applied: a segment containing "￥" (or "^") is processed with
    that character read as a comma, and every comma phone of the segment becomes SP2 (or SP3).
    `g2pw` is an optional loaded `chinese.g2pw.G2PW` polyphone model.
    """
    for mark, silence in _SPECIAL_SILENCES:
        if mark in text:
            return g2p_with_sp(text.replace(mark, ","), silence, override, g2pw)
    norm_text = text_normalize(text)
    phones, word2ph = _g2p_norm(norm_text, override, g2pw)
    return G2PResult(norm_text=norm_text, phones=phones, word2ph=word2ph)


def g2p_with_sp(text: str, silence: str, override=None, g2pw=None) -> G2PResult:
    """g2p with every "," phone replaced by the silence symbol `silence` (SP2/SP3)."""
    norm_text = text_normalize(text)
    phones, word2ph = _g2p_norm(norm_text, override, g2pw)
    phones = [silence if p == "," else p for p in phones]
    return G2PResult(norm_text=norm_text, phones=phones, word2ph=word2ph)
