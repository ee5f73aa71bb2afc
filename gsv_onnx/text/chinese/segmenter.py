"""Word segmentation with part-of-speech tags (jieba_fast when installed, else jieba).

Both packages ship the same dictionary and HMM tables and give identical posseg output; jieba_fast
is a C port that starts about twice as fast. Dictionaries load lazily on the first call.
"""

from __future__ import annotations

import logging
import threading
from functools import lru_cache
from types import ModuleType

_lock = threading.Lock()
_modules: tuple[ModuleType, ModuleType] | None = None


def _load() -> tuple[ModuleType, ModuleType]:
    global _modules
    if _modules is None:
        with _lock:
            if _modules is None:
                try:
                    import jieba_fast as jieba
                    import jieba_fast.posseg as posseg
                except ImportError:
                    import jieba
                    import jieba.posseg as posseg
                jieba.setLogLevel(logging.CRITICAL)
                jieba.initialize()
                _modules = (jieba, posseg)
    return _modules


def backend_name() -> str:
    """Name of the segmentation package in use ("jieba_fast" or "jieba")."""
    return _load()[0].__name__


def cut_with_pos(sentence: str) -> list[tuple[str, str]]:
    """Segment `sentence` into (word, part-of-speech) pairs."""
    _, posseg = _load()
    return [(pair.word, pair.flag) for pair in posseg.lcut(sentence)]


@lru_cache(maxsize=65536)
def _cut_for_search_cached(word: str) -> tuple[str, ...]:
    jieba, _ = _load()
    return tuple(jieba.cut_for_search(word))


def cut_for_search(word: str) -> list[str]:
    """jieba's search-mode cut (the word and its dictionary sub-words)."""
    return list(_cut_for_search_cached(word))


def add_word(word: str, pos: str | None = None) -> None:
    """Teach the segmenter a word (used for user dictionary entries so they stay one token)."""
    jieba, _ = _load()
    jieba.add_word(word, tag=pos)
    _cut_for_search_cached.cache_clear()
