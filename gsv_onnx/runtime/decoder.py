"""The GPT decode loop's engine: prefill once, then one ONNX Runtime call per token, no cache copies.

`GptDecoder` owns the two sessions (`gpt_prefill.onnx`, `gpt_decode.onnx`, design.md (a)/(b)) and
one pre-allocated K and one V buffer for all layers; the buffers' pages become resident only as
rows are written, so a large capacity costs no memory until used. It runs both decode-graph forms
the converter writes:

* "gqa" (default; the graph has a `cache_len` input): buffers [L, heads, capacity, head_dim];
  layer i's slice is bound once, through an `IOBinding` with its address, as both the past input
  `k_cache_{i}` and the present output `k_present_{i}` of GroupQueryAttention, which writes the
  new row in place. Per step only the small token/position/cache_len arrays change: nothing is
  rebound, allocated or copied.
* "cache_read": buffers [L, capacity, H]; layer i's input is bound as the contiguous prefix
  `buffer[i, :P]` ([1, P, H], same memory) each step; the graph only reads it and returns the new
  rows, which are written at row P.

Sampling is not done here (see the sampler module); `prefill` and `step` return logits.

Several decoders may share one pair of sessions (`GptDecoder(prefill_session, decode_session)`
or `decoder.sibling()`): ONNX Runtime sessions may `run` from several threads at once, and all
per-decode state (KV buffers, I/O binding, small input/output arrays) belongs to the decoder.
`DecoderPool` hands such decoders to threads, one decode each, creating them on first need.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from gsv_onnx.errors import GsvError
from gsv_onnx.runtime.options import MAX_DECODE_STEPS, RuntimeOptions
from gsv_onnx.runtime.sessions import create_session, lazy_zeros

BERT_DIM = 1024
#: Rows of the decode graph's sinusoidal table when the graph carries no `max_positions` metadata.
DEFAULT_MAX_POSITIONS = 4000


class DecodeLimitError(GsvError):
    """A decode would run past the cache capacity or the positional table of the GPT graphs."""


class GptDecoder:
    """Prefill + cached decode steps of the GPT, with zero-copy cache binding.

    Usage::

        decoder = GptDecoder(bundle_dir / "gpt_prefill.onnx", bundle_dir / "gpt_decode.onnx", options)
        logits = decoder.prefill(phone_ids, bert_features, prompt_codes)   # [vocab]
        logits = decoder.step(token)                                       # [vocab], repeat

    `max_new_tokens` bounds the number of `step` calls after a prefill (upstream's 1500 by default);
    the buffers are sized for the prompt plus that many rows.

    `prefill_path` / `decode_path` may also be already created `onnxruntime.InferenceSession`s
    (shared with other decoders; `runtime_options` is then unused). One decoder serves one
    thread at a time; use one decoder per concurrent decode (`sibling()`, `DecoderPool`).
    """

    def __init__(
        self,
        prefill_path: str | Path | Any,
        decode_path: str | Path | Any,
        runtime_options: RuntimeOptions | None = None,
        max_new_tokens: int = MAX_DECODE_STEPS,
    ):
        self.prefill_session = _session(prefill_path, runtime_options)
        self.decode_session = _session(decode_path, runtime_options)
        if isinstance(decode_path, (str, os.PathLike)):
            decode_path = Path(decode_path)
        else:
            decode_path = "gpt_decode session"
        self.max_new_tokens = int(max_new_tokens)
        meta = self.decode_session.get_modelmeta().custom_metadata_map
        input_names = [i.name for i in self.decode_session.get_inputs()]
        cache_inputs = [i for i in self.decode_session.get_inputs() if i.name.startswith("k_cache_")]
        self.n_layer = len(cache_inputs)
        if self.n_layer == 0 or int(meta.get("n_layer", self.n_layer)) != self.n_layer:
            raise DecodeLimitError(f"{decode_path}: cache inputs do not match n_layer; re-run `gsv convert`")
        #: "gqa": buffers shared by GroupQueryAttention's past input and present output
        self.in_place = "cache_len" in input_names
        if self.in_place:
            cache_shape = cache_inputs[0].shape  # [1, heads, "C", head_dim]
            self.heads, self.head_dim = int(cache_shape[1]), int(cache_shape[3])
            self.hidden_dim = self.heads * self.head_dim
        else:
            self.hidden_dim = int(cache_inputs[0].shape[2])
        self.vocab_size = int(self.decode_session.get_outputs()[0].shape[1])
        self.max_positions = int(meta.get("max_positions", DEFAULT_MAX_POSITIONS))
        # Buffers, allocated at the first prefill and reused while large enough.
        self.k_buffer: np.ndarray | None = None
        self.v_buffer: np.ndarray | None = None
        self._cache_len = 0
        self._position = 0
        self._steps_left = 0
        self._token = np.zeros((1, 1), dtype=np.int64)
        self._position_array = np.zeros((1,), dtype=np.int64)
        self._cache_len_array = np.zeros((1,), dtype=np.int64)
        self._logits = np.zeros((1, self.vocab_size), dtype=np.float32)
        self._k_new = np.zeros((self.n_layer, 1, 1, self.hidden_dim), dtype=np.float32)
        self._v_new = np.zeros_like(self._k_new)
        self._binding = self.decode_session.io_binding()
        self._k_names = [f"k_cache_{i}" for i in range(self.n_layer)]
        self._v_names = [f"v_cache_{i}" for i in range(self.n_layer)]
        self._bind_fixed()

    def sibling(self) -> GptDecoder:
        """Another decoder over the same two sessions, with its own (not yet allocated) buffers."""
        return GptDecoder(self.prefill_session, self.decode_session, max_new_tokens=self.max_new_tokens)

    # -- state -----------------------------------------------------------------------------------

    @property
    def cache_len(self) -> int:
        """Rows held in the cache: text + prompt + tokens fed by `step` so far."""
        return self._cache_len

    @property
    def position(self) -> int:
        """Semantic-stream position the next `step` token takes (T_prompt + steps done)."""
        return self._position

    # -- prefill ---------------------------------------------------------------------------------

    def prefill(self, phone_ids, bert_features, prompt_codes=None) -> np.ndarray:
        """Run the prefill graph and fill the cache; returns the logits of the last position [vocab].

        phone_ids: [T_text] or [1, T_text] ints (prompt phones then target phones); bert_features:
        [1024, T_text] or [1, 1024, T_text]; prompt_codes: [T_prompt] or [1, T_prompt] ints, or
        None / empty for reference-free mode.
        """
        phone_ids = np.ascontiguousarray(np.asarray(phone_ids, dtype=np.int64).reshape(1, -1))
        text_len = phone_ids.shape[1]
        bert_features = np.asarray(bert_features, dtype=np.float32)
        if bert_features.size != BERT_DIM * text_len:
            raise ValueError(f"bert_features must be [1, {BERT_DIM}, {text_len}], got {bert_features.shape}")
        bert_features = np.ascontiguousarray(bert_features.reshape(1, BERT_DIM, text_len))
        if prompt_codes is None:
            prompt_codes = np.zeros((1, 0), dtype=np.int64)
        prompt_codes = np.ascontiguousarray(np.asarray(prompt_codes, dtype=np.int64).reshape(1, -1))
        if text_len == 0:
            raise ValueError("phone_ids is empty: the GPT needs at least one phone")
        prompt_len = prompt_codes.shape[1]
        if prompt_len + self.max_new_tokens > self.max_positions:
            raise DecodeLimitError(
                f"{prompt_len} prompt codes + {self.max_new_tokens} decode steps exceed the GPT's "
                f"{self.max_positions} positions; use a shorter reference audio or fewer steps"
            )
        logits, k_cache, v_cache = self.prefill_session.run(
            None, {"phone_ids": phone_ids, "bert_features": bert_features, "prompt_codes": prompt_codes}
        )
        seq = k_cache.shape[2]
        capacity = seq + self.max_new_tokens
        if self.in_place:
            if self.k_buffer is None or self.k_buffer.shape[2] < capacity:
                # lazy_zeros: pages become resident only when rows are written (4 KiB pages, not
                # numpy's huge pages, which made the whole [layer, head, capacity] buffer resident)
                shape = (self.n_layer, self.heads, capacity, self.head_dim)
                self.k_buffer = lazy_zeros(shape, np.float32)
                self.v_buffer = lazy_zeros(shape, np.float32)
                self._bind_in_place_buffers()
            split = (self.n_layer, seq, self.heads, self.head_dim)
            self.k_buffer[:, :, :seq] = k_cache[:, 0].reshape(split).transpose(0, 2, 1, 3)
            self.v_buffer[:, :, :seq] = v_cache[:, 0].reshape(split).transpose(0, 2, 1, 3)
        else:
            if self.k_buffer is None or self.k_buffer.shape[1] < capacity:
                self.k_buffer = np.zeros((self.n_layer, capacity, self.hidden_dim), dtype=np.float32)
                self.v_buffer = np.zeros(self.k_buffer.shape, dtype=np.float32)
            self.k_buffer[:, :seq] = k_cache[:, 0]
            self.v_buffer[:, :seq] = v_cache[:, 0]
        self._cache_len = seq
        self._position = prompt_len
        self._steps_left = self.max_new_tokens
        return logits[0].copy()

    # -- decode ----------------------------------------------------------------------------------

    def _bind_fixed(self) -> None:
        """Bind the inputs and outputs whose memory never changes: token, position, outputs."""
        binding = self._binding
        small_inputs = [("token", self._token), ("position", self._position_array)]
        outputs = [("logits", self._logits), ("k_new", self._k_new), ("v_new", self._v_new)]
        if self.in_place:
            small_inputs.append(("cache_len", self._cache_len_array))
        for name, array in small_inputs:
            binding.bind_input(name, "cpu", 0, np.int64, list(array.shape), array.ctypes.data)
        for name, array in outputs:
            binding.bind_output(name, "cpu", 0, np.float32, list(array.shape), array.ctypes.data)

    def _bind_in_place_buffers(self) -> None:
        """GQA graphs: layer i's buffer is both its past input and its present output."""
        shape = list(self.k_buffer.shape[1:])
        shape.insert(0, 1)
        layer_bytes = self.k_buffer.strides[0]
        binding = self._binding
        for i in range(self.n_layer):
            for buffer, direction in ((self.k_buffer, "k"), (self.v_buffer, "v")):
                address = buffer.ctypes.data + i * layer_bytes
                binding.bind_input(f"{direction}_cache_{i}", "cpu", 0, np.float32, shape, address)
                binding.bind_output(f"{direction}_present_{i}", "cpu", 0, np.float32, shape, address)

    def bind_cache(self) -> None:
        """Bind layer i's K/V input to the prefix [1, cache_len, H] of the buffers (no copy).

        GQA graphs bind their buffers once per allocation, so this does nothing for them.
        """
        if self.in_place:
            return
        shape = [1, self._cache_len, self.hidden_dim]
        row_bytes = self.k_buffer.strides[0]
        k_base, v_base = self.k_buffer.ctypes.data, self.v_buffer.ctypes.data
        binding = self._binding
        for i in range(self.n_layer):
            binding.bind_input(self._k_names[i], "cpu", 0, np.float32, shape, k_base + i * row_bytes)
            binding.bind_input(self._v_names[i], "cpu", 0, np.float32, shape, v_base + i * row_bytes)

    def step(self, token: int) -> np.ndarray:
        """Feed the token sampled at the previous step; returns the next logits [vocab].

        The token takes position `self.position`; its K/V rows are written at row `cache_len`.
        """
        if self.k_buffer is None:
            raise DecodeLimitError("GptDecoder.step called before prefill")
        if self._steps_left <= 0:
            raise DecodeLimitError(
                f"more than max_new_tokens={self.max_new_tokens} decode steps after one prefill; "
                "create the decoder with a larger max_new_tokens"
            )
        self._token[0, 0] = token
        self._position_array[0] = self._position
        if self.in_place:
            self._cache_len_array[0] = self._cache_len
            self.decode_session.run_with_iobinding(self._binding)  # writes row cache_len in place
        else:
            self.bind_cache()
            self.decode_session.run_with_iobinding(self._binding)
            row = self._cache_len
            self.k_buffer[:, row] = self._k_new[:, 0, 0]
            self.v_buffer[:, row] = self._v_new[:, 0, 0]
        self._cache_len += 1
        self._position += 1
        self._steps_left -= 1
        return self._logits[0].copy()

    def cache_view(self) -> tuple[np.ndarray, np.ndarray]:
        """The filled part of the cache as [L, cache_len, H]: views of the buffers (no copy), or
        for GQA graphs (head-major buffers) merged copies, for inspection and tests."""
        if not self.in_place:
            return self.k_buffer[:, : self._cache_len], self.v_buffer[:, : self._cache_len]
        merged = (self.n_layer, self._cache_len, self.hidden_dim)
        return tuple(
            buffer[:, :, : self._cache_len].transpose(0, 2, 1, 3).reshape(merged)
            for buffer in (self.k_buffer, self.v_buffer)
        )


def _session(graph: str | Path | Any, runtime_options: RuntimeOptions | None) -> Any:
    """A session for a graph path, or the given (shared) session itself."""
    if isinstance(graph, (str, os.PathLike)):
        return create_session(graph, runtime_options)
    if not (hasattr(graph, "run") and hasattr(graph, "get_inputs") and hasattr(graph, "io_binding")):
        raise TypeError(
            f"expected a graph path or an onnxruntime.InferenceSession, got {type(graph).__name__}"
        )
    return graph


class DecoderPool:
    """Up to `size` GPT decoders that threads borrow, one decode each (`with pool.acquire() as d`).

    The first decoder is given; the others are made by `factory` (by default `first.sibling()`:
    the same sessions, their own KV buffers) when a thread finds every existing decoder busy and
    the pool is not full, so a pool that never sees concurrent decodes stays at one decoder. When
    all `size` decoders are busy, `acquire` waits. The most recently returned decoder is handed
    out first (its cache pages are already resident).
    """

    def __init__(
        self, first: GptDecoder, size: int = 1, factory: Callable[[], GptDecoder] | None = None
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"pool size must be an integer >= 1, got {size!r}")
        self.size = size
        self._factory = factory or first.sibling
        self._decoders: list[Any] = [first]
        self._free: list[Any] = [first]
        self._creating = 0
        self._condition = threading.Condition()

    @property
    def first(self) -> Any:
        """The pool's first decoder (the one a pool of size 1 always hands out)."""
        return self._decoders[0]

    def replace_first(self, decoder: Any) -> None:
        """Put `decoder` (e.g. a wrapper of the first one) in the first decoder's place."""
        with self._condition:
            old = self._decoders[0]
            self._decoders[0] = decoder
            self._free = [decoder if d is old else d for d in self._free]

    def grow(self, size: int) -> None:
        """Allow at least `size` decoders (a pool never shrinks)."""
        with self._condition:
            if size > self.size:
                self.size = int(size)
                self._condition.notify_all()

    @property
    def created(self) -> int:
        """Decoders created so far (1..size)."""
        with self._condition:
            return len(self._decoders)

    @contextmanager
    def acquire(self) -> Iterator[Any]:
        """Borrow a decoder for one decode (prefill + steps); waits while all `size` are busy."""
        with self._condition:
            while not self._free and len(self._decoders) + self._creating >= self.size:
                self._condition.wait()
            decoder = self._free.pop() if self._free else None
            if decoder is None:
                self._creating += 1
        if decoder is None:
            try:
                decoder = self._factory()  # outside the lock: other threads keep borrowing
            finally:
                with self._condition:
                    self._creating -= 1
                    if decoder is not None:
                        self._decoders.append(decoder)
                    else:
                        self._condition.notify()
        try:
            yield decoder
        finally:
            with self._condition:
                if not any(decoder is d for d in self._decoders):
                    decoder = self._decoders[0]  # the first decoder was replaced while borrowed
                if not any(decoder is d for d in self._free):
                    self._free.append(decoder)
                self._condition.notify()
