"""The GPT's token sampler and decode loop in numpy, in upstream's exact order (spec §2.5, §2.6).

Per step, with `logits` the GPT's output for the current position and the previous tokens being
the prompt codes followed by every token generated so far:

0. steps 0..10: the EOS column is dropped, so EOS can neither be sampled nor be the argmax;
1. repetition penalty, once per distinct previous id, in place (the stop test sees it);
2. top_p (only when < 1): cumulative softmax over the sorted logits, every token whose cumulative
   probability *including itself* exceeds top_p is removed, the first is always kept;
3. temperature: divide by max(temperature, 1e-5);
4. top_k: keep logits >= the k-th largest (ties kept);
5. softmax;
6. draw: argmax(probs / q) with q ~ Exp(1) i.i.d. (equivalent to multinomial sampling);
7. stop when the drawn token is EOS or the argmax of the penalized logits is EOS; the token drawn
   at the stopping step is discarded.

The loop stops after `max_steps` (1500) at the latest. The exponential noise comes from a numpy
`Generator` or any callable `noise(size) -> float32 array`, so tests can inject upstream's noise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from gsv_onnx.runtime.options import EOS_MASKED_STEPS, EOS_TOKEN, MAX_DECODE_STEPS

#: A source of Exp(1) noise: called with the number of candidates, returns float32 values.
NoiseSource = Callable[[int], np.ndarray]


def exponential_noise(rng: np.random.Generator) -> NoiseSource:
    """A `NoiseSource` drawing float32 Exp(1) values from `rng`."""

    def draw(size: int) -> np.ndarray:
        return rng.standard_exponential(size, dtype=np.float32)

    return draw


@dataclass(frozen=True)
class SamplingParams:
    """The four sampling knobs of upstream's `sample` (API defaults)."""

    top_k: int = 15
    top_p: float = 1.0
    temperature: float = 1.0
    repetition_penalty: float = 1.35


def _softmax(values: np.ndarray) -> np.ndarray:
    shifted = values - np.max(values)
    exp = np.exp(shifted, dtype=np.float32)
    return exp / np.sum(exp, dtype=np.float32)


def apply_repetition_penalty(logits: np.ndarray, seen: np.ndarray, penalty: float) -> None:
    """Penalize, in place, the logits of the ids marked in `seen` (once per id, spec §2.5 step 1)."""
    if penalty == 1.0:
        return
    ids = np.flatnonzero(seen[: logits.shape[0]])
    values = logits[ids]
    logits[ids] = np.where(values < 0, values * np.float32(penalty), values / np.float32(penalty))


def top_p_filter(logits: np.ndarray, top_p: float) -> np.ndarray:
    """Upstream's top_p: removes the tokens whose inclusive cumulative probability exceeds top_p.

    The token that crosses the threshold is removed too (0.5, 0.3, 0.2 with top_p 0.6 keep only
    the first); the most likely token always stays. Returns a new array.
    """
    if top_p >= 1.0:
        return logits
    order = np.argsort(-logits, kind="stable")
    cumulative = np.cumsum(_softmax(logits[order]), dtype=np.float32)
    remove_sorted = cumulative > np.float32(top_p)
    remove_sorted[0] = False
    filtered = logits.copy()
    filtered[order[remove_sorted]] = -np.inf
    return filtered


def top_k_filter(logits: np.ndarray, top_k: int) -> np.ndarray:
    """Keep logits >= the k-th largest (ties at the pivot kept); k is clamped to the size."""
    k = min(max(int(top_k), 1), logits.shape[0])
    pivot = np.partition(logits, logits.shape[0] - k)[logits.shape[0] - k]
    return np.where(logits < pivot, np.float32(-np.inf), logits).astype(np.float32, copy=False)


def probabilities(logits: np.ndarray, seen: np.ndarray, params: SamplingParams) -> np.ndarray:
    """Steps 1-5 of spec §2.5. Penalizes `logits` in place and returns the probabilities."""
    apply_repetition_penalty(logits, seen, params.repetition_penalty)
    filtered = top_p_filter(logits, params.top_p)
    filtered = filtered / np.float32(max(params.temperature, 1e-5))
    filtered = top_k_filter(filtered.astype(np.float32, copy=False), params.top_k)
    return _softmax(filtered)


@dataclass
class StepResult:
    """One sampling step: the drawn token and whether decoding stops here."""

    token: int
    stop: bool
    argmax: int


class TokenSampler:
    """Stateful sampler for one segment: it tracks the ids seen so far (prompt + generated)."""

    def __init__(
        self,
        prompt_tokens: Sequence[int] | np.ndarray,
        params: SamplingParams,
        noise: NoiseSource,
        vocab_size: int = EOS_TOKEN + 1,
        eos_token: int = EOS_TOKEN,
    ) -> None:
        self.params = params
        self.noise = noise
        self.eos_token = eos_token
        self.seen = np.zeros(vocab_size, dtype=bool)
        prompt = np.asarray(prompt_tokens, dtype=np.int64).reshape(-1)
        if prompt.size:
            self.seen[prompt] = True
        self.step_index = 0

    def step(self, logits: np.ndarray) -> StepResult:
        """Sample one token from `logits` (shape [vocab] or [1, vocab]); advances the step."""
        row = np.array(logits, dtype=np.float32).reshape(-1)  # a copy: penalized in place below
        if self.step_index < EOS_MASKED_STEPS:
            row = row[: self.eos_token]  # EOS can neither be drawn nor be the argmax
        probs = probabilities(row, self.seen, self.params)
        q = np.asarray(self.noise(probs.shape[0]), dtype=np.float32).reshape(-1)
        if q.shape[0] != probs.shape[0]:
            raise ValueError(f"noise source returned {q.shape[0]} values for {probs.shape[0]} candidates")
        with np.errstate(divide="ignore", invalid="ignore"):
            token = int(np.argmax(probs / q))
        argmax = int(np.argmax(row))  # the penalized logits, as upstream's in-place penalty has it
        stop = token == self.eos_token or argmax == self.eos_token
        self.step_index += 1
        if not stop:
            self.seen[token] = True
        return StepResult(token=token, stop=stop, argmax=argmax)


@dataclass
class DecodeResult:
    """Tokens generated for one segment and why decoding ended.

    `stop_reason`: "eos" (EOS drawn or argmax), "max_steps" (the 1500-step cap or the given
    `max_steps`), "max_tokens" (the per-segment token bound), or "cancelled".
    """

    tokens: np.ndarray
    stop_reason: str
    steps: int
    bad_zero_prediction: bool = False
    extra: dict = field(default_factory=dict)


def iter_decode(
    first_logits: np.ndarray,
    step_fn: Callable[[int, int], np.ndarray],
    prompt_tokens: Sequence[int] | np.ndarray,
    params: SamplingParams,
    noise: NoiseSource,
    max_steps: int = MAX_DECODE_STEPS,
    max_tokens: int | None = None,
    outcome: dict | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Iterator[int]:
    """Yield generated tokens one by one (upstream's naive loop, spec §2.5-2.6).

    `first_logits`: the prefill's logits (last prompt position). `step_fn(token, position)` feeds
    the token drawn at a step (at semantic position `len(prompt) + step`) and returns the next
    logits. The token drawn at the stopping step is not yielded. `outcome`, when given, receives
    "stop_reason" and "steps" once the generator ends (also when the consumer stops early).
    `cancel`, when given, is polled before every step; once it returns True decoding ends with
    stop_reason "cancelled".
    """
    prompt = np.asarray(prompt_tokens, dtype=np.int64).reshape(-1)
    sampler = TokenSampler(
        prompt, params, noise, vocab_size=max(EOS_TOKEN + 1, int(np.shape(first_logits)[-1]))
    )
    logits = first_logits
    generated = 0
    stop_reason = "cancelled"
    steps = 0
    try:
        stop_reason = "max_steps"
        for idx in range(max_steps):
            if cancel is not None and cancel():
                stop_reason = "cancelled"
                break
            result = sampler.step(logits)
            steps = idx + 1
            if result.stop:
                stop_reason = "eos"
                break
            generated += 1
            yield result.token
            if max_tokens is not None and generated >= max_tokens:
                stop_reason = "max_tokens"
                break
            if idx + 1 < max_steps:
                logits = step_fn(result.token, int(prompt.shape[0]) + idx)
    except GeneratorExit:
        stop_reason = "cancelled"
        raise
    finally:
        if outcome is not None:
            outcome["stop_reason"] = stop_reason
            outcome["steps"] = steps
            outcome["generated"] = generated


def decode(
    first_logits: np.ndarray,
    step_fn: Callable[[int, int], np.ndarray],
    prompt_tokens: Sequence[int] | np.ndarray,
    params: SamplingParams,
    noise: NoiseSource,
    max_steps: int = MAX_DECODE_STEPS,
    max_tokens: int | None = None,
    cancel: Callable[[], bool] | None = None,
) -> DecodeResult:
    """Run `iter_decode` to the end, with upstream's handling of the result (spec §2.6).

    At the step cap with a prompt, upstream's caller keeps the last `max_steps - 1` tokens (the
    first generated one is dropped); that is reproduced here. An empty result becomes one token 0
    ("bad zero prediction").
    """
    outcome: dict = {}
    tokens = list(
        iter_decode(
            first_logits, step_fn, prompt_tokens, params, noise, max_steps, max_tokens, outcome, cancel
        )
    )
    if outcome["stop_reason"] == "max_steps" and len(np.asarray(prompt_tokens).reshape(-1)) and tokens:
        tokens = tokens[1:]
    bad_zero = not tokens
    if bad_zero:
        tokens = [0]
    return DecodeResult(
        tokens=np.asarray(tokens, dtype=np.int64),
        stop_reason=outcome["stop_reason"],
        steps=outcome["steps"],
        bad_zero_prediction=bad_zero,
    )
