"""Optional g2pW polyphone model for Mandarin, run with onnxruntime + tokenizers (spec §6.2 g2pW).

The user points to a G2PWModel directory (the one upstream downloads: g2pW.onnx,
POLYPHONIC_CHARS.txt, MONOPHONIC_CHARS.txt, bopomofo_to_pinyin_wo_tune_dict.json,
char_bopomofo_dict.json, config.py) and to the chinese-roberta vocabulary (vocab.txt or
tokenizer.json, shipped with the BERT model). Nothing is downloaded; config.py is read as data
(literal assignments), never executed.

Per call, every polyphonic character of every sentence becomes one row of a single batched
session run: [CLS] context [SEP] token ids (context = 16 characters either side of the sentence's
first/last polyphonic character, lower-cased, traditional characters via OpenCC s2tw), the mask of
the character's candidate readings, its index in the sorted polyphonic list and its token
position. The arg-max label (bopomofo + tone) is converted to TONE3 pinyin. Other characters take
the monophonic table or pypinyin.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np

from ...errors import MissingDependencyError, TextError

_DEFAULT_CONFIG = {"use_mask": True, "use_char_phoneme": False}
# Characters upstream always reads without the model (their dictionary reading or pypinyin).
NON_POLYPHONIC = frozenset("一不和咋嗲剖差攢倒難奔勁拗肖瘙誒泊听噢")
NON_MONOPHONIC = frozenset("似攢")
CONTEXT_CHARS = 16
MAX_TOKENS = 512
_WORD_RE = re.compile(r" +|[a-zA-Z0-9]+|.", re.DOTALL)


def _read_config(path: Path) -> dict:
    """Literal top-level assignments of config.py (the file is not executed)."""
    config = dict(_DEFAULT_CONFIG)
    if not path.is_file():
        return config
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError) as exc:
        raise TextError(f"g2pW config {path} cannot be read: {exc}") from exc
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                config[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return config


def _read_pairs(path: Path) -> list[tuple[str, str]]:
    pairs = []
    for line in path.read_text(encoding="utf-8").strip().split("\n"):
        parts = line.split("\t")
        if len(parts) >= 2:
            pairs.append((parts[0], parts[1]))
    return pairs


class _Tokenizer:
    """WordPiece tokenizer of the BERT vocabulary (tokenizers library, no hub access)."""

    def __init__(self, path: Path):
        try:
            from tokenizers import BertWordPieceTokenizer, Tokenizer
        except ImportError as exc:  # pragma: no cover - tokenizers is a core dependency
            raise MissingDependencyError("g2pW needs the 'tokenizers' package") from exc
        if path.suffix == ".json":
            self._tok = Tokenizer.from_file(str(path))
        else:
            self._tok = BertWordPieceTokenizer(str(path), lowercase=True)
        self.unk_id = self._tok.token_to_id("[UNK]") or 0

    def tokenize(self, word: str) -> list[str]:
        return list(self._tok.encode(word, add_special_tokens=False).tokens)

    def ids(self, tokens: list[str]) -> list[int]:
        out = []
        for token in tokens:
            idx = self._tok.token_to_id(token)
            out.append(self.unk_id if idx is None else idx)
        return out


class G2PW:
    """A loaded g2pW model; call `predict(sentences)` for per-character TONE3 pinyin."""

    def __init__(self, model_dir: str | Path, vocab: str | Path | None = None, threads: int = 2):
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise TextError(
                f"g2pW model directory {model_dir} does not exist; point to an unpacked G2PWModel"
            )
        onnx_path = next((p for p in (model_dir / "g2pW.onnx", model_dir / "g2pw.onnx") if p.is_file()), None)
        needed = ["POLYPHONIC_CHARS.txt", "MONOPHONIC_CHARS.txt", "bopomofo_to_pinyin_wo_tune_dict.json"]
        missing = [name for name in needed if not (model_dir / name).is_file()]
        if onnx_path is None or missing:
            raise TextError(f"g2pW model directory {model_dir} lacks {missing or ['g2pW.onnx']}")
        vocab_path = Path(vocab) if vocab else None
        if vocab_path is None:
            vocab_path = next(
                (p for p in (model_dir / "vocab.txt", model_dir / "tokenizer.json") if p.is_file()), None
            )
        if vocab_path is None or not vocab_path.is_file():
            raise TextError(
                "g2pW needs the chinese-roberta vocabulary: pass vocab= (vocab.txt or tokenizer.json of the BERT model)"
            )
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - onnxruntime is a core dependency
            raise MissingDependencyError("g2pW needs onnxruntime") from exc
        try:
            import opencc
        except ImportError as exc:
            raise MissingDependencyError(
                "g2pW needs OpenCC; install it with pip install 'gsv-onnx[g2pw]'"
            ) from exc
        try:
            self._s2tw = opencc.OpenCC("s2tw.json")
        except Exception:  # noqa: BLE001 - opencc-python-reimplemented names configs without .json
            self._s2tw = opencc.OpenCC("s2tw")

        self.config = _read_config(model_dir / "config.py")
        self.tokenizer = _Tokenizer(vocab_path)
        polyphonic = _read_pairs(model_dir / "POLYPHONIC_CHARS.txt")
        if self.config.get("use_char_phoneme"):
            self.labels = sorted({f"{c} {p}" for c, p in polyphonic})
            label_of = {(c, p): self.labels.index(f"{c} {p}") for c, p in set(polyphonic)}
        else:
            self.labels = sorted({p for _, p in polyphonic})
            index = {label: i for i, label in enumerate(self.labels)}
            label_of = {(c, p): index[p] for c, p in set(polyphonic)}
        self.char2phonemes: dict[str, list[int]] = {}
        for c, p in polyphonic:
            self.char2phonemes.setdefault(c, []).append(label_of[(c, p)])
        self.chars = sorted(self.char2phonemes)
        self.char2id = {c: i for i, c in enumerate(self.chars)}
        self.polyphonic = set(self.chars) - NON_POLYPHONIC
        self.monophonic = {
            c: p for c, p in _read_pairs(model_dir / "MONOPHONIC_CHARS.txt") if c not in NON_MONOPHONIC
        }
        with open(model_dir / "bopomofo_to_pinyin_wo_tune_dict.json", encoding="utf-8") as handle:
            self.bopomofo_to_pinyin: dict[str, str] = json.load(handle)

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.runs = 0  # session calls made (one per predict() with polyphonic characters)

    # -- helpers --------------------------------------------------------------------------

    def _to_pinyin(self, bopomofo: str) -> str | None:
        tone = bopomofo[-1:]
        if tone not in ("1", "2", "3", "4", "5"):
            return None
        base = self.bopomofo_to_pinyin.get(bopomofo[:-1])
        return base + tone if base else None

    def _tokenize_with_map(self, text: str) -> tuple[list[str], list[int | None]]:
        """Tokens of `text` and, per character, the index of its token (None for spaces).

        Words are space runs (no token), ASCII alphanumeric runs and single other characters, as
        in g2pW; a character no token covers keeps its word index, as upstream's mapping does.
        """
        tokens: list[str] = []
        char_to_token: list[int | None] = []
        spans: list[tuple[int, int]] = []
        for m in _WORD_RE.finditer(text):
            word = m.group(0)
            if word.startswith(" "):
                char_to_token += [None] * len(word)
                continue
            char_to_token += [len(spans) + 0] * len(word)  # word index, replaced below
            spans.append((m.start(), m.end()))
        token_spans: list[tuple[int, int]] = []
        for start, end in spans:
            pieces = self.tokenizer.tokenize(text[start:end])
            if not pieces or pieces == ["[UNK]"]:
                token_spans.append((start, end))
                tokens.append("[UNK]")
                continue
            pos = start
            for piece in pieces:
                n = len(piece[2:] if piece.startswith("##") else piece)
                token_spans.append((pos, pos + n))
                pos += n
                tokens.append(piece)
        for t, (start, end) in enumerate(token_spans):
            for i in range(start, min(end, len(char_to_token))):
                char_to_token[i] = t
        return tokens, char_to_token

    def _row(self, text: str, query: int, cache: dict) -> tuple[list[int], int, str]:
        if text not in cache:
            cache[text] = self._tokenize_with_map(text)
        tokens, char_to_token = cache[text]
        position = char_to_token[query] if char_to_token[query] is not None else 0
        limit = MAX_TOKENS - 2
        if len(tokens) > limit:  # keep a window of tokens around the query
            start = min(max(0, position - limit // 2), len(tokens) - limit)
            tokens = tokens[start : start + limit]
            position -= start
        ids = self.tokenizer.ids(["[CLS]", *tokens, "[SEP]"])
        return ids, position + 1, text[query]

    # -- prediction ---------------------------------------------------------------------------

    def predict(self, sentences: list[str]) -> list[list[str | None]]:
        """TONE3 pinyin per character of each sentence (None where neither model nor tables know it)."""
        from pypinyin import Style, pinyin

        from .normalization import to_simplified

        results: list[list[str | None]] = []
        rows: list[tuple[int, int, str, int]] = []  # (sentence, char index, context text, query)
        for sent_id, sentence in enumerate(sentences):
            traditional = self._s2tw.convert(sentence)
            if len(traditional) != len(sentence):
                traditional = sentence
            simplified = to_simplified(traditional)
            fallback = pinyin(simplified, neutral_tone_with_five=True, style=Style.TONE3)
            per_char = (
                [item[0] for item in fallback] if len(fallback) == len(sentence) else [None] * len(sentence)
            )
            result: list[str | None] = [None] * len(sentence)
            polyphonic_at = []
            for i, ch in enumerate(traditional):
                if ch in self.polyphonic:
                    polyphonic_at.append(i)
                elif ch in self.monophonic:
                    result[i] = self._to_pinyin(self.monophonic[ch]) or per_char[i]
                else:
                    result[i] = per_char[i]
            if polyphonic_at:
                left = max(0, polyphonic_at[0] - CONTEXT_CHARS)
                right = min(len(traditional), polyphonic_at[-1] + CONTEXT_CHARS + 1)
                context = traditional[left:right].lower()
                for i in polyphonic_at:
                    rows.append((sent_id, i, context, i - left))
                    result[i] = per_char[i]  # replaced by the model below
            results.append(result)
        if not rows:
            return results

        cache: dict = {}
        built = [self._row(context, query, cache) for _, _, context, query in rows]
        width = max(len(ids) for ids, _, _ in built)
        n_labels = len(self.labels)
        input_ids = np.zeros((len(built), width), dtype=np.int64)
        attention = np.zeros((len(built), width), dtype=np.int64)
        masks = np.ones((len(built), n_labels), dtype=np.float32)
        char_ids = np.zeros((len(built),), dtype=np.int64)
        positions = np.zeros((len(built),), dtype=np.int64)
        for r, (ids, position, ch) in enumerate(built):
            input_ids[r, : len(ids)] = ids
            attention[r, : len(ids)] = 1
            if self.config.get("use_mask", True):
                masks[r] = 0.0
                masks[r, self.char2phonemes[ch]] = 1.0
            char_ids[r] = self.char2id[ch]
            positions[r] = position
        feeds = {
            "input_ids": input_ids,
            "token_type_ids": np.zeros_like(input_ids),
            "attention_mask": attention,
            "phoneme_mask": masks,
            "char_ids": char_ids,
            "position_ids": positions,
        }
        wanted = {i.name for i in self.session.get_inputs()}
        probs = self.session.run(None, {k: v for k, v in feeds.items() if k in wanted})[0]
        self.runs += 1
        for (sent_id, index, _, _), label_id in zip(rows, np.argmax(probs, axis=1).tolist(), strict=True):
            label = self.labels[label_id]
            if self.config.get("use_char_phoneme"):
                label = label.split(" ")[1]
            reading = self._to_pinyin(label)
            if reading is not None:
                results[sent_id][index] = reading
        return results
