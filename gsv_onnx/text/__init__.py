"""Text frontend of gsv-onnx: `phonemize(text, lang)` -> V2 phones, word2ph and normalized text."""

from .frontend import LANGUAGES, phonemize, segment_text
from .markup import UserDictionary
from .symbols import SYMBOLS, symbol_to_id
from .types import G2PResult, Pause, PhonemizeResult, Segment

__all__ = [
    "LANGUAGES",
    "SYMBOLS",
    "G2PResult",
    "Pause",
    "PhonemizeResult",
    "Segment",
    "UserDictionary",
    "phonemize",
    "segment_text",
    "symbol_to_id",
]
