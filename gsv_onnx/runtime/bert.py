"""BERT features per phone (spec §5): bert.onnx for Chinese segments, zeros elsewhere.

For a `zh` segment, its normalized text is tokenized as [CLS] + one token per character + [SEP],
run through `bert.onnx` (hidden state of layer 22 of 24), [CLS]/[SEP] are stripped and each
character's vector is repeated `word2ph[i]` times. Every other language (yue included) gets zeros.
Blocks are concatenated along time in segment order: the result is [bert_dim, n_phones].
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from gsv_onnx.errors import BundleError, TextError

#: Characters per BERT call: 512 positions minus [CLS] and [SEP].
MAX_BERT_CHARS = 510


def load_tokenizer(path: str | Path) -> Any:
    """A `tokenizers` tokenizer from a tokenizer.json or a BERT vocab.txt (never from the hub)."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"BERT tokenizer {path} does not exist; convert the bundle again")
    try:
        if path.suffix == ".json":
            from tokenizers import Tokenizer

            return Tokenizer.from_file(str(path))
        from tokenizers import BertWordPieceTokenizer

        return BertWordPieceTokenizer(str(path), lowercase=True)
    except Exception as exc:  # tokenizers raises plain Exception subclasses from Rust
        raise BundleError(f"cannot read the BERT tokenizer {path}: {exc}; convert the bundle again") from exc


class BertFeaturizer:
    """Turns frontend segments into the GPT's per-phone BERT features."""

    def __init__(self, session: ort.InferenceSession, tokenizer: Any, bert_dim: int = 1024) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.bert_dim = int(bert_dim)
        vocab = tokenizer.get_vocab()
        self.cls_id = vocab.get("[CLS]", 101)
        self.sep_id = vocab.get("[SEP]", 102)
        self.unk_id = vocab.get("[UNK]", 100)
        self._char_ids: dict[str, int] = {}

    def _char_id(self, char: str) -> int:
        cached = self._char_ids.get(char)
        if cached is None:
            ids = self.tokenizer.encode(char, add_special_tokens=False).ids
            cached = ids[0] if len(ids) == 1 else self.unk_id
            self._char_ids[char] = cached
        return cached

    def token_ids(self, text: str) -> np.ndarray:
        """[CLS] + one id per character + [SEP] (a character the vocabulary lacks is [UNK])."""
        encoded = self.tokenizer.encode(text).ids
        if len(encoded) == len(text) + 2 and encoded[0] == self.cls_id and encoded[-1] == self.sep_id:
            ids = encoded
        else:  # the tokenizer merged or dropped characters: look them up one by one
            ids = [self.cls_id, *(self._char_id(c) for c in text), self.sep_id]
        return np.asarray(ids, dtype=np.int64)[None, :]

    def char_features(self, text: str) -> np.ndarray:
        """Hidden vectors per character, [len(text), bert_dim]; long text runs in 510-char windows."""
        blocks = []
        for start in range(0, len(text), MAX_BERT_CHARS):
            window = text[start : start + MAX_BERT_CHARS]
            input_ids = self.token_ids(window)
            (hidden,) = self.session.run(
                ["hidden"],
                {
                    "input_ids": input_ids,
                    "attention_mask": np.ones_like(input_ids),
                    "token_type_ids": np.zeros_like(input_ids),
                },
            )
            blocks.append(np.asarray(hidden[0, 1:-1], dtype=np.float32))
        if not blocks:
            return np.zeros((0, self.bert_dim), dtype=np.float32)
        features = np.concatenate(blocks, axis=0)
        if features.shape[1] != self.bert_dim:
            raise BundleError(
                f"bert.onnx returns {features.shape[1]}-dimensional features but the GPT expects "
                f"{self.bert_dim}; the bundle mixes models, convert it again with a matching BERT"
            )
        return features

    def segment_features(self, norm_text: str, word2ph: Sequence[int]) -> np.ndarray:
        """[bert_dim, sum(word2ph)] for one Chinese segment."""
        if len(word2ph) != len(norm_text):
            raise TextError(
                f"the frontend gave {len(word2ph)} word2ph entries for {len(norm_text)} characters "
                f"of {norm_text!r}; this is a frontend bug, please report it"
            )
        per_char = self.char_features(norm_text)
        repeats = np.asarray(word2ph, dtype=np.int64)
        return np.repeat(per_char, repeats, axis=0).T.copy()

    def features(self, segments: Sequence[Any]) -> np.ndarray:
        """[bert_dim, n_phones] for frontend segments (each with lang, norm_text, word2ph, phone_ids)."""
        blocks = []
        for segment in segments:
            n_phones = len(segment.phone_ids)
            if segment.lang == "zh" and segment.word2ph is not None and n_phones:
                block = self.segment_features(segment.norm_text, segment.word2ph)
                if block.shape[1] != n_phones:
                    raise TextError(
                        f"word2ph of {segment.norm_text!r} sums to {block.shape[1]} but the segment has "
                        f"{n_phones} phones; this is a frontend bug, please report it"
                    )
            else:
                block = np.zeros((self.bert_dim, n_phones), dtype=np.float32)
            blocks.append(block)
        if not blocks:
            return np.zeros((self.bert_dim, 0), dtype=np.float32)
        return np.concatenate(blocks, axis=1)
