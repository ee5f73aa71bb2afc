"""The text frontend as a loaded `TTS` runs it: user dictionary, markup switch, optional g2pW.

`Frontend.load(FrontendOptions(...))` reads the dictionary file and loads the g2pW model once,
when the bundle is loaded, so a bad file or directory fails there (a `GsvError` naming it) and
never in the middle of a synthesis. `phonemize(text, lang)` then calls `gsv_onnx.text.phonemize`
with them. The frontend package is imported late so that `import gsv_onnx` stays cheap.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gsv_onnx.errors import GsvError, OptionsError, TextError
from gsv_onnx.runtime.options import FrontendOptions

_G2PW_FILES = ("g2pW.onnx", "g2pw.onnx")
_G2PW_VOCABS = ("vocab.txt", "tokenizer.json")


def load_user_dictionary(source: Any) -> Any:
    """A `UserDictionary` from a path (.tsv or .json) or an already loaded one; None for None/"".

    Raises `TextError` naming the file and the problem (missing, not UTF-8, bad JSON, a line
    without a tab, an empty entry).
    """
    if source is None or (isinstance(source, str) and not source.strip()):
        return None
    from gsv_onnx.text.markup import UserDictionary

    if isinstance(source, UserDictionary):
        return source
    path = Path(os.fspath(source))
    if not path.is_file():
        raise TextError(
            f"user dictionary {path} does not exist or is not a file; give a .tsv "
            "(word<TAB>pronunciation per line) or .json ({word: pronunciation}) file"
        )
    return UserDictionary.load(path)


def load_g2pw(
    model_dir: str | os.PathLike | None,
    vocab: str | os.PathLike | None = None,
    fallback_vocab: str | os.PathLike | None = None,
    threads: int = 2,
) -> Any:
    """The g2pW model of `model_dir` (None for None/""), tokenizing with `vocab`, else the
    directory's own vocab.txt/tokenizer.json, else `fallback_vocab` (the bundle's BERT tokenizer).

    Raises `TextError` when the directory is not a G2PWModel or its graph cannot be loaded,
    `MissingDependencyError` when the `g2pw` extra (OpenCC) is missing.
    """
    if model_dir is None or (isinstance(model_dir, str) and not model_dir.strip()):
        return None
    model_dir = Path(os.fspath(model_dir))
    if vocab is None and not any((model_dir / name).is_file() for name in _G2PW_VOCABS):
        vocab = fallback_vocab
    from gsv_onnx.text.chinese.g2pw import G2PW

    try:
        return G2PW(model_dir, vocab=vocab, threads=threads)
    except GsvError:
        raise
    except Exception as exc:  # onnxruntime/tokenizers/json errors on a damaged model directory
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        graph = next((model_dir / n for n in _G2PW_FILES if (model_dir / n).is_file()), model_dir)
        raise TextError(
            f"g2pW model directory {model_dir} cannot be loaded ({graph.name}: {detail}); "
            "point to an unpacked G2PWModel (g2pW.onnx, POLYPHONIC_CHARS.txt, ...)"
        ) from exc


class Frontend:
    """Text -> phones with the user's dictionary, markup setting and optional g2pW model."""

    def __init__(self, options: FrontendOptions, user_dict: Any = None, g2pw: Any = None) -> None:
        self.options = options
        self.user_dict = user_dict
        self.g2pw = g2pw

    @classmethod
    def load(
        cls,
        options: FrontendOptions | None = None,
        fallback_vocab: str | os.PathLike | None = None,
        threads: int = 2,
    ) -> Frontend:
        """Read the dictionary and load g2pW of `options` (see `load_user_dictionary`, `load_g2pw`)."""
        options = options or FrontendOptions()
        if not isinstance(options, FrontendOptions):
            raise OptionsError(f"frontend options must be a FrontendOptions, got {type(options).__name__}")
        user_dict = load_user_dictionary(options.user_dict)
        if user_dict is not None:
            user_dict._compiled()  # build the match pattern now, not lazily from several threads
        g2pw = load_g2pw(options.g2pw_dir, options.g2pw_vocab, fallback_vocab, threads)
        return cls(options, user_dict, g2pw)

    @property
    def markup(self) -> bool:
        """Whether `{word|pron}` and `[pause:x]` marks are read."""
        return self.options.markup

    def phonemize(self, text: str, lang: str) -> Any:
        """`gsv_onnx.text.phonemize(text, lang)` with this frontend's controls."""
        from gsv_onnx.text import phonemize

        return phonemize(text, lang, user_dict=self.user_dict, markup_enabled=self.markup, g2pw=self.g2pw)

    def markup_pattern(self) -> Any:
        """The markup pattern ({word|pron}, [pause:..]) that text splitting keeps whole; None when
        markup is off (braces are then plain text)."""
        if not self.markup:
            return None
        try:
            from gsv_onnx.text.markup import _MARKUP
        except ImportError:  # a frontend without markup
            return None
        return _MARKUP
