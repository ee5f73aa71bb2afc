"""Result types shared by the frontend's language modules and `phonemize`."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class G2PResult:
    """What one language module returns for one piece of text.

    `word2ph` has one entry per character of `norm_text` (zh and yue); other languages return None.
    """

    norm_text: str
    phones: list[str]
    word2ph: list[int] | None = None


@dataclass
class Segment:
    """One language run of the input, with its phones."""

    text: str
    lang: str  # one of "zh", "en", "ja", "ko", "yue"
    norm_text: str
    phones: list[str]
    phone_ids: list[int]
    word2ph: list[int] | None = None
    pause_after: float = 0.0  # seconds of silence the user asked for after this segment


@dataclass
class Pause:
    """Silence requested with a pause mark: insert `seconds` before phone number `phone_index`."""

    phone_index: int
    seconds: float


@dataclass
class PhonemizeResult:
    """The frontend's output for a whole text, in upstream's order."""

    segments: list[Segment] = field(default_factory=list)
    pauses: list[Pause] = field(default_factory=list)  # in phone order; empty without pause marks

    @property
    def phones(self) -> list[str]:
        return [p for seg in self.segments for p in seg.phones]

    @property
    def phone_ids(self) -> list[int]:
        return [i for seg in self.segments for i in seg.phone_ids]

    @property
    def norm_text(self) -> str:
        return "".join(seg.norm_text for seg in self.segments)

    @property
    def word2ph(self) -> list[int] | None:
        """Concatenated word2ph when every segment has one, else None."""
        if not self.segments or any(seg.word2ph is None for seg in self.segments):
            return None
        return [n for seg in self.segments for n in seg.word2ph]
