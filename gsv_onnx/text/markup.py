"""User control over pronunciation: inline overrides, pause marks and a user dictionary.

Syntax (documented in docs/frontend.md):

* ``{word|pronunciation}`` says `word` exactly as given: pinyin with tone digits for Chinese
  (``{行|hang2}``, ``{银行|yin2 hang2}``), ARPAbet for English (``{read|R EH1 D}``), jyutping for
  Cantonese requests (``{行|hong4}``). Any other pronunciation is read as a respelling in the
  surrounding language (``{GPT|G P T}``).
* ``[pause:0.5]``, ``[pause:0.5s]`` or ``[pause:500ms]`` inserts that much silence (0..60 s).
* A `UserDictionary` maps words to such pronunciations and is applied as if every occurrence of a
  word had been written as an override.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TextError

MAX_PAUSE_SECONDS = 60.0

_OVERRIDE = re.compile(r"\{([^{}|\n]{1,64})\|([^{}|\n]{1,256})\}")
_PAUSE = re.compile(r"\[pause:\s*([0-9]{1,6}(?:\.[0-9]{1,6})?)\s*(ms|s)?\s*\]", re.IGNORECASE)
_MARKUP = re.compile(f"{_OVERRIDE.pattern}|{_PAUSE.pattern}", re.IGNORECASE)

_PINYIN_SYLLABLE = re.compile(r"^[a-zü]{1,6}[1-5]$")
_JYUTPING_SYLLABLE = re.compile(r"^[a-z]{1,6}[1-6]$")
_ARPABET_TOKEN = re.compile(r"^[A-Z]{1,2}[0-2]?$")


@dataclass
class TextChunk:
    """Plain text to run through segmentation and g2p."""

    text: str


@dataclass
class OverrideChunk:
    """A word with the pronunciation the user gave for it."""

    word: str
    pronunciation: str


@dataclass
class PauseChunk:
    """Silence of `seconds` requested by the user."""

    seconds: float


Chunk = TextChunk | OverrideChunk | PauseChunk


def pronunciation_kind(pronunciation: str, cantonese: bool = False) -> str:
    """Classify a pronunciation: "pinyin", "jyutping", "arpabet" or "respelling"."""
    tokens = pronunciation.split()
    if not tokens:
        return "respelling"
    if all(_ARPABET_TOKEN.match(t) for t in tokens) and any(t[-1].isdigit() for t in tokens):
        return "arpabet"
    lowered = [t.lower() for t in tokens]
    if cantonese and all(_JYUTPING_SYLLABLE.match(t) for t in lowered):
        return "jyutping"
    if all(_PINYIN_SYLLABLE.match(t.replace("u:", "v")) for t in lowered):
        return "pinyin"
    if all(_JYUTPING_SYLLABLE.match(t) for t in lowered):
        return "jyutping"
    return "respelling"


def _pause_seconds(value: str, unit: str | None) -> float:
    seconds = float(value) / 1000.0 if (unit or "").lower() == "ms" else float(value)
    if seconds > MAX_PAUSE_SECONDS:
        raise TextError(
            f"pause of {seconds:g} s is longer than the {MAX_PAUSE_SECONDS:g} s allowed; use a shorter [pause:...]"
        )
    return seconds


def parse_markup(text: str) -> list[Chunk]:
    """Split `text` into plain text, overrides and pauses (in order)."""
    chunks: list[Chunk] = []
    pos = 0
    for m in _MARKUP.finditer(text):
        if m.start() > pos:
            chunks.append(TextChunk(text[pos : m.start()]))
        if m.group(1) is not None:
            chunks.append(OverrideChunk(m.group(1).strip(), m.group(2).strip()))
        else:
            chunks.append(PauseChunk(_pause_seconds(m.group(3), m.group(4))))
        pos = m.end()
    if pos < len(text):
        chunks.append(TextChunk(text[pos:]))
    return chunks


@dataclass
class UserDictionary:
    """Words with user-given pronunciations (pinyin, ARPAbet, jyutping or a respelling).

    English entries match whole words case-insensitively; Chinese/Japanese entries match anywhere.
    Longer entries win over shorter ones.
    """

    entries: dict[str, str] = field(default_factory=dict)

    def add(self, word: str, pronunciation: str) -> None:
        """Add or replace one entry."""
        word, pronunciation = word.strip(), pronunciation.strip()
        if not word or not pronunciation:
            raise TextError("a user dictionary entry needs a word and a pronunciation")
        if "|" in word or "{" in word or "}" in word:
            raise TextError(f"user dictionary word {word!r} may not contain '|', '{{' or '}}'")
        self.entries[word] = pronunciation
        self._pattern = None

    @classmethod
    def load(cls, path: str | Path) -> UserDictionary:
        """Read a dictionary file: JSON object {word: pronunciation}, or lines "word<TAB>pronunciation".

        Lines starting with "#" and blank lines are ignored in the text format.
        """
        path = Path(path)
        try:
            raw = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TextError(f"cannot read user dictionary {path}: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise TextError(f"user dictionary {path} is not UTF-8 text; save it as UTF-8") from exc
        result = cls()
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise TextError(f"user dictionary {path} is not valid JSON: {exc}") from exc
            if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
                raise TextError(
                    f"user dictionary {path} must be a JSON object of word -> pronunciation strings"
                )
            for word, pron in data.items():
                result.add(word, pron)
            return result
        for number, line in enumerate(raw.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            word, sep, pron = line.partition("\t")
            if not sep:
                raise TextError(f"{path}:{number}: expected 'word<TAB>pronunciation', got {line!r}")
            result.add(word, pron)
        return result

    _pattern: re.Pattern | None = field(default=None, init=False, repr=False, compare=False)

    def _compiled(self) -> re.Pattern | None:
        if self._pattern is None and self.entries:
            alternatives = []
            for word in sorted(self.entries, key=len, reverse=True):
                escaped = re.escape(word)
                if word.isascii():
                    escaped = rf"(?<![A-Za-z0-9']){escaped}(?![A-Za-z0-9'])"
                alternatives.append(escaped)
            self._pattern = re.compile("|".join(alternatives), re.IGNORECASE)
        return self._pattern

    def _lookup(self, matched: str) -> str:
        if matched in self.entries:
            return self.entries[matched]
        lowered = matched.lower()
        return next(p for w, p in self.entries.items() if w.lower() == lowered)

    def apply(self, chunks: list[Chunk]) -> list[Chunk]:
        """Turn every dictionary word inside plain-text chunks into an override chunk."""
        pattern = self._compiled()
        if pattern is None:
            return chunks
        out: list[Chunk] = []
        for chunk in chunks:
            if not isinstance(chunk, TextChunk):
                out.append(chunk)
                continue
            pos = 0
            for m in pattern.finditer(chunk.text):
                if m.start() > pos:
                    out.append(TextChunk(chunk.text[pos : m.start()]))
                out.append(OverrideChunk(m.group(0), self._lookup(m.group(0))))
                pos = m.end()
            if pos < len(chunk.text):
                out.append(TextChunk(chunk.text[pos:]))
        return out
