"""The numpy sampler follows upstream's order of operations (spec §2.5, §2.6), rule by rule."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from gsv_onnx.runtime.sampler import (
    SamplingParams,
    TokenSampler,
    apply_repetition_penalty,
    decode,
    exponential_noise,
    iter_decode,
    probabilities,
    top_k_filter,
    top_p_filter,
)

EOS = 1024
VOCAB = 1025


def ones_noise(size: int) -> np.ndarray:
    return np.ones(size, dtype=np.float32)


def test_top_p_removes_the_crossing_token():
    logits = np.log(np.array([0.5, 0.3, 0.2], dtype=np.float32))
    kept = np.isfinite(top_p_filter(logits, 0.6))
    assert kept.tolist() == [True, False, False]
    # With top_p 0.85 the second token (cumulative 0.8) stays, the third (1.0) goes.
    assert np.isfinite(top_p_filter(logits, 0.85)).tolist() == [True, True, False]


def test_top_p_always_keeps_the_first_and_ignores_order_of_input():
    logits = np.log(np.array([0.2, 0.7, 0.1], dtype=np.float32))
    assert np.isfinite(top_p_filter(logits, 0.1)).tolist() == [False, True, False]
    assert top_p_filter(logits, 1.0) is logits  # 1 = off


def test_top_k_keeps_ties_at_the_pivot():
    logits = np.array([3.0, 1.0, 2.0, 2.0, 0.5], dtype=np.float32)
    kept = np.isfinite(top_k_filter(logits, 2))
    assert kept.tolist() == [True, False, True, True, False]
    assert np.isfinite(top_k_filter(logits, 100)).all()  # clamped to the vocabulary


def test_repetition_penalty_once_per_id_and_in_place():
    logits = np.array([2.0, -2.0, 1.0, 4.0], dtype=np.float32)
    seen = np.zeros(4, dtype=bool)
    seen[[0, 1]] = True  # id 0 appearing several times in the prompt counts once
    apply_repetition_penalty(logits, seen, 2.0)
    assert logits.tolist() == [1.0, -4.0, 1.0, 4.0]


def test_temperature_applies_after_top_p():
    # top_p works on the untempered logits: with temperature 100 the distribution is almost
    # flat, but the top_p mask computed before it already removed the tail.
    logits = np.log(np.array([0.5, 0.3, 0.2], dtype=np.float32))
    probs = probabilities(logits.copy(), np.zeros(3, bool), SamplingParams(100, 0.6, 100.0, 1.0))
    assert probs.tolist() == [1.0, 0.0, 0.0]
    probs = probabilities(logits.copy(), np.zeros(3, bool), SamplingParams(100, 1.0, 100.0, 1.0))
    assert np.allclose(probs, 1 / 3, atol=0.01)


def test_temperature_zero_is_clamped_not_a_division_by_zero():
    logits = np.array([1.0, 2.0, 0.0], dtype=np.float32)
    probs = probabilities(logits, np.zeros(3, bool), SamplingParams(15, 1.0, 0.0, 1.0))
    assert probs.tolist() == [0.0, 1.0, 0.0]


def test_draw_is_argmax_of_probs_over_noise():
    logits = np.log(np.array([0.6, 0.3, 0.1], dtype=np.float32))
    params = SamplingParams(top_k=3, top_p=1.0, temperature=1.0, repetition_penalty=1.0)
    # probs / q = 0.6/10, 0.3/0.1, 0.1/1 -> token 1 although token 0 is most likely
    sampler = TokenSampler([], params, lambda n: np.array([10.0, 0.1, 1.0], np.float32), vocab_size=3)
    sampler.step_index = 20  # past the EOS-masked steps; EOS id (1024) is outside this toy vocab
    sampler.eos_token = 99
    assert sampler.step(logits).token == 1


def test_eos_is_masked_for_the_first_eleven_steps():
    logits = np.zeros(VOCAB, dtype=np.float32)
    logits[EOS] = 50.0  # EOS overwhelmingly likely and the argmax
    logits[7] = 10.0
    steps = []

    def step_fn(token, position):
        steps.append((token, position))
        return logits

    result = decode(logits, step_fn, [3, 4], SamplingParams(top_k=1), ones_noise)
    assert result.stop_reason == "eos"
    assert result.steps == 12  # steps 0..10 draw, step 11 stops
    assert len(result.tokens) == 11  # the token of the stopping step is discarded
    # positions continue after the prompt: 2 prompt tokens, so the first step's token sits at 2
    assert [p for _, p in steps] == list(range(2, 13))


def test_stop_on_argmax_of_penalized_logits_even_if_drawn_token_differs():
    logits = np.full(VOCAB, -5.0, dtype=np.float32)
    logits[EOS] = 3.0
    logits[5] = 2.9
    params = SamplingParams(top_k=VOCAB, top_p=1.0, temperature=1.0, repetition_penalty=1.0)
    sampler = TokenSampler([], params, lambda n: np.where(np.arange(n) == 5, 1e-6, 1.0).astype(np.float32))
    sampler.step_index = 11
    result = sampler.step(logits)
    assert result.token == 5 and result.argmax == EOS and result.stop


def test_penalty_can_move_the_argmax_off_eos():
    # EOS is the raw argmax, but it was "seen" and the penalty pushes it below token 5: no stop.
    logits = np.full(VOCAB, -5.0, dtype=np.float32)
    logits[EOS] = 3.0
    logits[5] = 2.5
    sampler = TokenSampler([EOS], SamplingParams(top_k=1, repetition_penalty=1.35), ones_noise)
    sampler.step_index = 11
    result = sampler.step(logits)
    assert result.argmax == 5 and not result.stop and result.token == 5


def test_repetition_penalty_counts_prompt_and_generated_tokens():
    logits = np.zeros(VOCAB, dtype=np.float32)
    logits[[1, 2, 3]] = [3.0, 2.9, 2.8]
    sampler = TokenSampler([1], SamplingParams(top_k=1, repetition_penalty=1.35), ones_noise)
    # 1 is in the prompt: 3.0/1.35 < 2.9 -> 2; then 2 is penalized too -> 3
    assert sampler.step(logits).token == 2
    assert sampler.step(logits).token == 3


def test_max_steps_cap_and_max_tokens_bound():
    logits = np.zeros(VOCAB, dtype=np.float32)
    logits[9] = 5.0
    params = SamplingParams(top_k=1, repetition_penalty=1.0)
    capped = decode(logits, lambda t, p: logits, [], params, ones_noise, max_steps=30)
    assert capped.stop_reason == "max_steps" and len(capped.tokens) == 30
    bounded = decode(logits, lambda t, p: logits, [], params, ones_noise, max_tokens=12)
    assert bounded.stop_reason == "max_tokens" and len(bounded.tokens) == 12


def test_bad_zero_prediction_appends_token_zero():
    logits = np.zeros(VOCAB, dtype=np.float32)
    result = decode(logits, lambda t, p: logits, [], SamplingParams(), ones_noise, max_steps=0)
    assert result.bad_zero_prediction and result.tokens.tolist() == [0]


def test_greedy_is_argmax_whatever_the_noise():
    rng = np.random.default_rng(0)
    for _ in range(20):
        logits = rng.normal(size=VOCAB).astype(np.float32)
        sampler = TokenSampler([], SamplingParams(top_k=1, repetition_penalty=1.0), exponential_noise(rng))
        sampler.step_index = 11
        expected = int(np.argmax(logits))
        assert sampler.step(logits).token == expected


def test_seeded_draws_are_reproducible_and_follow_the_distribution():
    logits = np.log(np.array([0.5, 0.3, 0.2], dtype=np.float32))
    params = SamplingParams(top_k=3, repetition_penalty=1.0)

    def draws(seed, n=4000):
        rng = np.random.default_rng(seed)
        noise = exponential_noise(rng)
        out = []
        for _ in range(n):
            sampler = TokenSampler([], params, noise, vocab_size=3, eos_token=99)
            sampler.step_index = 11
            out.append(sampler.step(logits).token)
        return np.array(out)

    first = draws(1)
    assert np.array_equal(first, draws(1))
    freq = np.bincount(first, minlength=3) / len(first)
    assert np.allclose(freq, [0.5, 0.3, 0.2], atol=0.03)


def test_cancelling_the_generator_reports_it():
    logits = np.zeros(VOCAB, dtype=np.float32)
    outcome: dict = {}
    gen = iter_decode(logits, lambda t, p: logits, [], SamplingParams(top_k=1), ones_noise, outcome=outcome)
    next(gen)
    gen.close()
    assert outcome["stop_reason"] == "cancelled" and outcome["generated"] == 1


@pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="torch is not installed (reference comparison)"
)
def test_matches_the_torch_reference_sampler_with_the_same_noise():
    torch = pytest.importorskip("torch")
    gpt = pytest.importorskip("gsv_onnx.convert.gpt")
    rng = np.random.default_rng(1234)
    stops = 0
    for trial in range(300):
        step = int(rng.integers(0, 20))
        vocab = EOS if step < 11 else VOCAB
        logits = (rng.normal(size=VOCAB) * 3).astype(np.float32)
        if trial % 5 == 0:
            logits[EOS] = logits.max() + float(rng.uniform(-0.5, 0.5))  # exercise the stop tests
        previous = rng.integers(0, EOS, size=int(rng.integers(0, 40))).astype(np.int64)
        params = SamplingParams(
            top_k=int(rng.choice([1, 5, 15, 50, 2000])),
            top_p=float(rng.choice([1.0, 0.9, 0.6, 0.3])),
            temperature=float(rng.choice([1.0, 0.7, 1.3, 0.0])),
            repetition_penalty=float(rng.choice([1.0, 1.35, 2.0])),
        )
        q = rng.standard_exponential(vocab, dtype=np.float32)
        sampler = TokenSampler(previous, params, lambda n, q=q: q)
        sampler.step_index = step
        ours = sampler.step(logits)
        token, stop = gpt.reference_sample(
            torch.from_numpy(logits.copy()),
            previous.tolist(),
            step,
            top_k=params.top_k,
            top_p=params.top_p,
            temperature=params.temperature,
            repetition_penalty=params.repetition_penalty,
            exp_noise=torch.from_numpy(q),
        )
        assert (ours.token, ours.stop) == (token, stop), (trial, params, step)
        stops += stop
    assert 0 < stops < 300
