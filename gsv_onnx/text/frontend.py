"""`phonemize`: text -> V2 phones, word2ph and normalized text, per language segment (spec §6).

Request languages are upstream's V2 set. The text is split into language segments (langseg),
each segment goes through its language module (`gsv_onnx.text.chinese`, `.english`, `.japanese`,
`.korean`, `.cantonese`, imported on first use) and upstream's cleaning rules are applied
(English gets a leading "," when it has fewer than 4 phones; phones outside the table become UNK).
Inline overrides, pause marks and a user dictionary are handled here (see `markup`).
"""

from __future__ import annotations

import importlib
import re
import unicodedata
from types import ModuleType

from ..errors import GsvError, MissingDependencyError, TextError
from . import markup
from .langseg import get_texts
from .symbols import PUNCTUATION, UNK, phones_to_ids, symbol_to_id
from .types import G2PResult, Pause, PhonemizeResult, Segment

LANGUAGES = ("auto", "auto_yue", "en", "zh", "ja", "ko", "yue", "all_zh", "all_ja", "all_yue", "all_ko")
SEGMENT_LANGUAGES = ("zh", "en", "ja", "ko", "yue")

_MODULES = {"zh": "chinese", "en": "english", "ja": "japanese", "ko": "korean", "yue": "cantonese"}
_EXTRAS = {"ja": "ja", "ko": "ko", "yue": "yue", "en": "en"}
_loaded: dict[str, ModuleType] = {}

_MULTI_SPACE = re.compile(r" {2,}")
_SILENT_PHONES = frozenset(PUNCTUATION) | {"SP", "SP2", "SP3", "UNK", "_"}


def _language_module(lang: str) -> ModuleType:
    module = _loaded.get(lang)
    if module is not None:
        return module
    name = f"{__package__}.{_MODULES[lang]}"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or "?"
        if missing == name:
            raise TextError(
                f"language {lang!r} is not available in this build of gsv-onnx (module {name} is missing)"
            ) from exc
        raise MissingDependencyError(
            f"language {lang!r} needs the package {missing!r}; install it with "
            f"pip install 'gsv-onnx[{_EXTRAS.get(lang, lang)}]'"
        ) from exc
    if not hasattr(module, "g2p"):
        raise TextError(f"language module {name} has no g2p(); this build of gsv-onnx is broken")
    _loaded[lang] = module
    return module


def _sanitize(text: str) -> str:
    """Drop lone surrogates and invisible format characters; control characters become spaces."""
    out = []
    for ch in text:
        cp = ord(ch)
        if 0xD800 <= cp <= 0xDFFF:
            continue
        if ch in "\n\t":
            out.append(ch)
            continue
        cat = unicodedata.category(ch)
        if cat == "Cc":
            out.append(" ")
        elif cat in ("Cf", "Cs", "Co", "Cn"):  # format marks (RTL, zero-width), private, unassigned
            continue
        else:
            out.append(ch)
    return "".join(out)


def segment_text(text: str, lang: str) -> list[tuple[str, str]]:
    """(language, text) pieces for a request language, as upstream's get_phones_and_bert splits them."""
    if lang == "en":
        return [("en", text)]
    if lang in ("all_zh", "all_ja", "all_ko", "all_yue"):
        default = {"all_zh": "zh", "all_ja": "ja", "all_ko": "ko", "all_yue": "zh"}[lang]
        pieces = [(p.lang, p.text) for p in get_texts(text, default)]
        if lang == "all_yue":
            pieces = [("yue" if lg == "zh" else lg, t) for lg, t in pieces]
        return pieces
    pieces = [(p.lang, p.text) for p in get_texts(text)]
    if lang == "auto":
        return pieces
    if lang == "auto_yue":
        return [("yue" if lg == "zh" else lg, t) for lg, t in pieces]
    # zh / ja / ko / yue: merge consecutive non-English pieces under the requested language
    merged: list[tuple[str, str]] = []
    for piece_lang, piece_text in pieces:
        is_en = piece_lang == "en"
        if merged and (merged[-1][0] == "en") == is_en:
            merged[-1] = (merged[-1][0], merged[-1][1] + piece_text)
        else:
            merged.append(("en" if is_en else lang, piece_text))
    return merged


def _run_g2p(lang: str, text: str, g2pw=None) -> G2PResult:
    module = _language_module(lang)
    try:
        result = module.g2p(text, g2pw=g2pw) if (g2pw is not None and lang == "zh") else module.g2p(text)
    except GsvError:
        raise
    except RecursionError as exc:
        raise TextError(f"{lang} text is too deeply nested to pronounce: {text[:40]!r}") from exc
    except Exception as exc:  # noqa: BLE001 - any other failure of a g2p is a text problem to report
        raise TextError(
            f"the {lang} frontend could not pronounce {text[:40]!r}: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(result, G2PResult):
        raise TextError(f"the {lang} frontend returned {type(result).__name__}, expected G2PResult")
    return result


def _make_segment(text: str, lang: str, result: G2PResult) -> Segment:
    # (upstream's "fewer than 4 English phones -> leading ','" rule lives in english.g2p)
    phones = [p if p in symbol_to_id else UNK for p in result.phones]
    word2ph = list(result.word2ph) if result.word2ph is not None else None
    return Segment(
        text=text,
        lang=lang,
        norm_text=result.norm_text,
        phones=phones,
        phone_ids=phones_to_ids(phones),
        word2ph=word2ph,
    )


def _override_segment(chunk: markup.OverrideChunk, request_lang: str) -> Segment | markup.TextChunk:
    cantonese = request_lang in ("yue", "all_yue", "auto_yue")
    kind = markup.pronunciation_kind(chunk.pronunciation, cantonese=cantonese)
    tokens = chunk.pronunciation.split()
    if kind == "arpabet":
        phones = [t if t in symbol_to_id else UNK for t in tokens]
        return Segment(chunk.word, "en", chunk.word, phones, phones_to_ids(phones), None)
    if kind == "pinyin":
        from .chinese.g2p import split_tone3, syllable_to_phones

        phones = []
        for syllable in tokens:
            initial, final = split_tone3(syllable.lower().replace("u:", "v").replace("ü", "v"))
            phones += syllable_to_phones(initial, final)
        aligned = len(chunk.word) == len(tokens) and all("\u4e00" <= ch <= "\u9fa5" for ch in chunk.word)
        word2ph = [2] * len(tokens) if aligned else None
        return Segment(chunk.word, "zh", chunk.word, phones, phones_to_ids(phones), word2ph)
    if kind == "jyutping":
        phones = []
        for syllable in tokens:
            phones += jyutping_phones(syllable.lower())
        aligned = len(chunk.word) == len(tokens)
        word2ph = [2] * len(tokens) if aligned else None
        return Segment(chunk.word, "yue", chunk.word, phones, phones_to_ids(phones), word2ph)
    return markup.TextChunk(chunk.pronunciation)


# Cantonese initials tried in this order (spec §6.2 yue): the first prefix that matches wins.
_YUE_PREFIXES = (
    "aa aai aak aap aat aau ai au ap at ak a p b e ts t dz d kw k gw g f h l m ng n s y w c z j "
    "ong on ou oi ok o uk ung"
).split()


def jyutping_phones(syllable: str) -> list[str]:
    """One jyutping syllable with tone digit ("hong4") -> two V2 phones ("Yh", "Yong4")."""
    tone = syllable[-1] if syllable[-1:].isdigit() else "1"
    base = syllable.rstrip("0123456789")
    if base.startswith("nga"):
        initial = base[:2]
    else:
        initial = next((p for p in _YUE_PREFIXES if base.startswith(p)), base[:1])
    final = base[len(initial) :] or initial[-1]
    return ["Y" + initial, "Y" + final + tone]


def _merge_segments(segments: list[Segment]) -> list[Segment]:
    """Join neighbouring segments of one language (keeps BERT context across overrides)."""
    merged: list[Segment] = []
    for seg in segments:
        prev = merged[-1] if merged else None
        if (
            prev is not None
            and prev.lang == seg.lang
            and prev.pause_after == 0.0
            and (prev.word2ph is None) == (seg.word2ph is None)
        ):
            prev.text += seg.text
            prev.norm_text += seg.norm_text
            prev.phones = prev.phones + seg.phones
            prev.phone_ids = prev.phone_ids + seg.phone_ids
            if prev.word2ph is not None:
                prev.word2ph = prev.word2ph + seg.word2ph
            prev.pause_after = seg.pause_after
        else:
            merged.append(seg)
    return merged


def _phonemize_chunks(chunks: list[markup.Chunk], lang: str, g2pw=None) -> tuple[list[Segment], list[Pause]]:
    segments: list[Segment] = []
    pauses: list[Pause] = []
    n_phones = 0
    # respellings are plain text in the surrounding language; join them with their neighbours
    normalized: list[markup.Chunk] = []
    for chunk in chunks:
        item = _override_segment(chunk, lang) if isinstance(chunk, markup.OverrideChunk) else chunk
        if isinstance(item, markup.TextChunk) and normalized and isinstance(normalized[-1], markup.TextChunk):
            normalized[-1] = markup.TextChunk(normalized[-1].text + item.text)
        else:
            normalized.append(item)
    for item in normalized:
        if isinstance(item, markup.PauseChunk):
            if item.seconds > 0:
                pauses.append(Pause(phone_index=n_phones, seconds=item.seconds))
                if segments:
                    segments[-1].pause_after += item.seconds
            continue
        if isinstance(item, Segment):
            new = [item]
        else:
            text = _MULTI_SPACE.sub(" ", item.text)
            new = []
            for seg_lang, seg_text in segment_text(text, lang):
                if seg_lang not in _MODULES:  # upstream: unknown language -> English " "
                    seg_lang, seg_text = "en", " "
                new.append(_make_segment(seg_text, seg_lang, _run_g2p(seg_lang, seg_text, g2pw)))
        for seg in new:
            if seg.phones:
                segments.append(seg)
                n_phones += len(seg.phones)
    return _merge_segments(segments), pauses


def phonemize(
    text: str,
    lang: str = "auto",
    *,
    user_dict: markup.UserDictionary | None = None,
    markup_enabled: bool = True,
    g2pw=None,
) -> PhonemizeResult:
    """Convert `text` to V2 phones, segment by segment, in upstream's order.

    `lang` is one of auto, auto_yue, en, zh, ja, ko, yue, all_zh, all_ja, all_yue, all_ko.
    Inline overrides ``{word|pron}`` and pauses ``[pause:0.5]`` are honoured unless
    `markup_enabled` is False; `user_dict` entries apply like overrides. `g2pw` is an optional
    loaded `gsv_onnx.text.chinese.g2pw.G2PW` model for Mandarin polyphones.
    Raises TextError for an unknown language, non-string input or text with nothing to say,
    MissingDependencyError when a language pack is not installed.
    """
    if lang not in LANGUAGES:
        raise TextError(f"unknown language {lang!r}; use one of: {', '.join(LANGUAGES)}")
    if not isinstance(text, str):
        raise TextError(f"text must be a string, got {type(text).__name__}")
    text = _sanitize(text)
    if markup_enabled:
        chunks = markup.parse_markup(text)
    else:
        chunks = [markup.TextChunk(text)] if text else []
    if user_dict is not None:
        chunks = user_dict.apply(chunks)

    segments, pauses = _phonemize_chunks(chunks, lang, g2pw)
    if sum(len(s.phones) for s in segments) < 6 and any(isinstance(c, markup.TextChunk) for c in chunks):
        # upstream redoes very short texts once with "." in front (it steadies the GPT's start)
        first = next(i for i, c in enumerate(chunks) if isinstance(c, markup.TextChunk))
        chunks = list(chunks)
        chunks[first] = markup.TextChunk("." + chunks[first].text)
        segments, pauses = _phonemize_chunks(chunks, lang, g2pw)

    if not pauses and not any(p not in _SILENT_PHONES for s in segments for p in s.phones):
        raise TextError(
            f"nothing to pronounce in {text[:40]!r} (only punctuation, symbols or unsupported script); "
            "give words in a supported language (zh, en, ja, ko, yue)"
        )
    return PhonemizeResult(segments=segments, pauses=pauses)
