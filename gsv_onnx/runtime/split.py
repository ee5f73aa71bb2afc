"""Upstream's text splitting: the cut0-cut5 methods and the pre/post processing (spec §7.1).

`split_text(text, method, lang)` returns the pieces that upstream's `TextPreprocessor` would
synthesize one by one (before phonemization drops pieces whose normalized text is empty):

1. runs of ! ? … , . - collapse to their first mark;
2. newlines are stripped at both ends; when the text does not start with a split mark and its
   first sentence is shorter than 4 characters, "。" ("." for English) is put in front;
3. the cut method;
4. blank lines collapse, the result is split on newlines, empty and single-space items dropped
   (text that leaves nothing raises `TextError`);
5. consecutive pieces are joined until they reach 5 characters, a short rest joins the last;
6. pieces without any word character are skipped, a closing "。"/"." is added where the piece does
   not end with a split mark, and pieces over 510 characters are cut at split marks.

One deliberate difference: upstream can leave a piece over 510 characters when it contains no
split mark (BERT then fails); here such a piece is cut every 510 characters.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from gsv_onnx.errors import OptionsError, TextError

#: Marks after which upstream splits sentences ("splits" upstream).
SPLIT_MARKS = frozenset("，。？！,.?!~:：—…")

#: Marks whose runs collapse to the first one before splitting (step 1).
COLLAPSE_MARKS = "!?…,.-"

#: What the cut methods treat as "only punctuation" (a piece made only of these is dropped).
CUT_PUNCTUATION = frozenset("!?…,.- ")

#: cut5's marks: the mark stays with the piece before it.
CUT5_MARKS = frozenset(",.;?!、，。？！;：…")

#: BERT's limit on characters per piece (512 positions minus [CLS] and [SEP]).
MAX_PIECE_CHARS = 510

#: Pieces shorter than this are joined with the next one (step 5).
MIN_PIECE_CHARS = 5

_COLLAPSE_RE = re.compile("([" + re.escape(COLLAPSE_MARKS) + "])[" + re.escape(COLLAPSE_MARKS) + "]+")
_FIRST_SENTENCE_RE = re.compile("[" + re.escape("".join(sorted(SPLIT_MARKS))) + "]")
_SPLIT_KEEP_RE = re.compile("([" + re.escape("".join(sorted(SPLIT_MARKS))) + "])")
_CUT4_RE = re.compile(r"(?<!\d)\.(?!\d)")
_NON_WORD_RE = re.compile(r"\W+")


def _only_punctuation(piece: str, marks: frozenset[str] = CUT_PUNCTUATION) -> bool:
    return set(piece) <= marks


def sentences(text: str) -> list[str]:
    """Split after every split mark, keeping the mark (upstream's `split`).

    "……" becomes "。" and "——" becomes "，" first, and "。" is added when the text does not end
    with a split mark, so every sentence ends with one.
    """
    text = text.replace("……", "。").replace("——", "，")
    if not text:
        return []
    if text[-1] not in SPLIT_MARKS:
        text += "。"
    result: list[str] = []
    start = 0
    for index, char in enumerate(text):
        if char in SPLIT_MARKS:
            result.append(text[start : index + 1])
            start = index + 1
    return result


def cut0(text: str) -> str:
    """No split (a text of punctuation and spaces only becomes an empty line)."""
    return "\n" if _only_punctuation(text) else text


def cut1(text: str) -> str:
    """Four sentences per piece; the last piece absorbs the rest (9 -> 4+5); <= 4: unchanged."""
    text = text.strip("\n")
    parts = sentences(text)
    starts = list(range(0, len(parts), 4))
    if len(starts) > 1:
        # The last group start is dropped, so the final group takes 4 to 7 sentences.
        bounds = starts[:-1] + [len(parts)]
        pieces = ["".join(parts[bounds[i] : bounds[i + 1]]) for i in range(len(bounds) - 1)]
    else:
        pieces = [text]
    return "\n".join(piece for piece in pieces if not _only_punctuation(piece))


def cut2(text: str, max_chars: int = 50) -> str:
    """Sentences accumulate until a piece exceeds 50 characters; a short last piece joins the previous."""
    text = text.strip("\n")
    parts = sentences(text)
    if len(parts) < 2:
        return text
    pieces: list[str] = []
    current = ""
    for part in parts:
        current += part
        if len(current) > max_chars:
            pieces.append(current)
            current = ""
    if current:
        pieces.append(current)
    if len(pieces) > 1 and len(pieces[-1]) < max_chars:
        last = pieces.pop()
        pieces[-1] += last
    return "\n".join(piece for piece in pieces if not _only_punctuation(piece))


def cut3(text: str) -> str:
    """Split on "。" (dropped), after stripping "。" at both ends."""
    text = text.strip("\n")
    pieces = text.strip("。").split("。")
    return "\n".join(piece for piece in pieces if not _only_punctuation(piece))


def cut4(text: str) -> str:
    """Split on "." (dropped) unless a digit is next to it, after stripping "." at both ends."""
    text = text.strip("\n")
    pieces = _CUT4_RE.split(text.strip("."))
    return "\n".join(piece for piece in pieces if not _only_punctuation(piece))


def cut5(text: str) -> str:
    """Split after each punctuation mark (kept with its piece); "." between two digits stays."""
    text = text.strip("\n")
    pieces: list[str] = []
    start = 0
    last = len(text) - 1
    for index, char in enumerate(text):
        if char not in CUT5_MARKS:
            continue
        if char == "." and 0 < index < last and text[index - 1].isdigit() and text[index + 1].isdigit():
            continue  # a decimal point
        pieces.append(text[start : index + 1])
        start = index + 1
    if start < len(text):
        pieces.append(text[start:])
    return "\n".join(piece for piece in pieces if not _only_punctuation(piece, CUT5_MARKS))


CUT_METHODS: dict[str, Callable[[str], str]] = {
    "cut0": cut0,
    "cut1": cut1,
    "cut2": cut2,
    "cut3": cut3,
    "cut4": cut4,
    "cut5": cut5,
}


def collapse_repeated_punctuation(text: str) -> str:
    """Runs of ! ? … , . - become their first mark ("!!!" -> "!", ",." -> ",")."""
    return _COLLAPSE_RE.sub(r"\1", text)


def merge_short_pieces(pieces: list[str], min_chars: int = MIN_PIECE_CHARS) -> list[str]:
    """Join consecutive pieces until each has >= min_chars; a short rest joins the last piece."""
    if len(pieces) < 2:
        return pieces
    merged: list[str] = []
    current = ""
    for piece in pieces:
        current += piece
        if len(current) >= min_chars:
            merged.append(current)
            current = ""
    if current:
        if merged:
            merged[-1] += current
        else:
            merged.append(current)
    return merged


def split_long_piece(piece: str, max_chars: int = MAX_PIECE_CHARS) -> list[str]:
    """Cut a piece longer than `max_chars` at split marks into chunks of <= max_chars.

    A run without split marks that is itself too long is cut every `max_chars` characters.
    """
    chunks: list[str] = []
    current = ""
    for part in _SPLIT_KEEP_RE.split(piece):
        if len(current) + len(part) > max_chars:
            if current:
                chunks.append(current)
            current = part
        else:
            current += part
        while len(current) > max_chars:
            chunks.append(current[:max_chars])
            current = current[max_chars:]
    if current:
        chunks.append(current)
    return chunks


def closing_mark(lang: str) -> str:
    """The mark upstream adds to a piece or prompt without one: "." for English, else "。"."""
    return "." if lang == "en" else "。"


#: First private-use code point used to shield protected spans (markup) from splitting.
_SHIELD_BASE = 0xE000
_SHIELD_COUNT = 6400


def split_text(
    text: str, method: str = "cut1", lang: str = "zh", protect: re.Pattern | None = None
) -> list[str]:
    """The pieces upstream synthesizes one by one for `text` (spec §7.1, steps 1-6).

    `protect`: spans matching this pattern (e.g. the frontend's `[pause:0.5]` and `{word|pron}`
    markup, which contain split marks) are kept whole: each counts as one non-word character
    while splitting. Returns [] for text that is empty after stripping newlines. Raises
    `TextError` when the cut leaves only blank lines, and `OptionsError` for an unknown method.
    """
    if protect is None:
        return _split_text(text, method, lang)
    spans: list[str] = []

    def shield(match: re.Match) -> str:
        if len(spans) >= _SHIELD_COUNT:
            return match.group(0)
        spans.append(match.group(0))
        return chr(_SHIELD_BASE + len(spans) - 1)

    shielded = protect.sub(shield, text)
    if not spans:
        return _split_text(text, method, lang)
    pieces = _split_text(shielded, method, lang)
    restore = re.compile(f"[{chr(_SHIELD_BASE)}-{chr(_SHIELD_BASE + len(spans) - 1)}]")
    return [restore.sub(lambda m: spans[ord(m.group(0)) - _SHIELD_BASE], piece) for piece in pieces]


def _split_text(text: str, method: str, lang: str) -> list[str]:
    try:
        cut = CUT_METHODS[method]
    except KeyError:
        raise OptionsError(
            f"unknown text split method {method!r}; use one of {', '.join(CUT_METHODS)}"
        ) from None
    text = collapse_repeated_punctuation(text)
    text = text.strip("\n")
    if not text:
        return []
    first_sentence = _FIRST_SENTENCE_RE.split(text, maxsplit=1)[0].strip()
    if text[0] not in SPLIT_MARKS and len(first_sentence) < 4:
        text = closing_mark(lang) + text
    text = cut(text)
    while "\n\n" in text:
        text = text.replace("\n\n", "\n")
    items = text.split("\n")
    if all(item in (" ", "\n", "") for item in items):
        raise TextError("the text has nothing to say (only punctuation or blank lines); give some words")
    items = [item for item in items if item not in (" ", "")]
    pieces: list[str] = []
    for piece in merge_short_pieces(items):
        if not piece.strip() or not _NON_WORD_RE.sub("", piece):
            continue  # blank or punctuation only
        if piece[-1] not in SPLIT_MARKS:
            piece += closing_mark(lang)
        if len(piece) > MAX_PIECE_CHARS:
            pieces.extend(split_long_piece(piece))
        else:
            pieces.append(piece)
    return pieces


def prepare_prompt_text(prompt_text: str, lang: str) -> str:
    """Upstream's handling of the reference transcript (spec §4.3).

    Newlines stripped at both ends; "。" ("." for English) added when it does not end with a split mark.
    """
    prompt_text = prompt_text.strip("\n")
    if prompt_text and prompt_text[-1] not in SPLIT_MARKS:
        prompt_text += closing_mark(lang)
    return prompt_text
