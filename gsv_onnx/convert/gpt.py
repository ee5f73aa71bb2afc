"""Our own PyTorch Text2SemanticDecoder (the GPT of GPT-SoVITS V2) for inference (spec §2).

The module's `state_dict()` keys are exactly upstream's without the `model.` prefix (spec §1.1),
so `build_gpt` loads an upstream checkpoint strictly. It provides:

* `prefill(phone_ids, bert_features, prompt_codes)`: the first pass over [text ; prompt codes] with
  upstream's mask (spec §2.3) -> logits of the last position and the per-layer K/V caches.
* `decode_step(token, position, k_caches, v_caches)`: one token against the cache; only the new
  K/V rows come back. Exported ("cache_read" form) it only *reads* the cache (scores over the
  cache plus the score of the new row, a joint softmax, weighted sums).
* `reference_sample` / `reference_generate`: a faithful port of upstream's sampling rule and
  naive decode loop (spec §2.5, §2.6), used to test the runtime's numpy sampler and loop.
* `random_init_`: random weights whose decode gives varied, non-degenerate logits (test models).

Everything is float32; fp16 checkpoints are cast on load like upstream does on CPU.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from gsv_onnx.convert import require_torch
from gsv_onnx.convert.strict import load_strict
from gsv_onnx.errors import CheckpointError

torch = require_torch()
nn = torch.nn
F = torch.nn.functional

#: Rows of the sinusoidal table upstream precomputes; the decode step indexes it directly, so
#: prompt length + decode steps must stay below this (spec §2.1).
PE_TABLE_ROWS = 4000
#: BERT feature width (chinese-roberta-wwm-ext-large hidden size), hard-coded upstream.
BERT_DIM = 1024
#: Steps 0..10 drop the EOS column (spec §2.5 step 0).
EOS_MASKED_STEPS = 11
#: Upstream's hard cap on decode steps (spec §2.6).
MAX_DECODE_STEPS = 1500
#: Upstream wraps the decoder as attribute `model` of its Lightning module.
CHECKPOINT_PREFIX = "model."


def sinusoidal_pe(positions, dim: int):
    """Upstream's interleaved sinusoidal table for float32 `positions` [T] -> [T, dim].

    PE[n, 2i] = sin(n * w_i), PE[n, 2i+1] = cos(n * w_i), w_i = exp(-2i * ln(10000) / dim),
    computed in float32 with the same expression order as upstream, so values match bit for bit.
    """
    div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * -(math.log(10000.0) / dim))
    angles = positions.to(torch.float32).unsqueeze(1) * div_term.unsqueeze(0)
    return torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).reshape(-1, dim)


class TokenEmbedding(nn.Module):
    """An embedding table under upstream's attribute name `word_embeddings`."""

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, dim)

    def forward(self, ids):
        return self.word_embeddings(ids)


class PositionScale(nn.Module):
    """The learned scalar `alpha` that multiplies the sinusoidal table (one per stream)."""

    def __init__(self):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1))


class SelfAttention(nn.Module):
    """Multi-head self-attention with upstream's fused `in_proj` (rows Q, K, V) and `out_proj`."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise CheckpointError(f"GPT hidden_dim {dim} is not divisible by head {heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        # Helpers of the cache-reading decode step; not part of the state dict.
        scaled_eye = torch.eye(heads).reshape(heads, 1, heads) / math.sqrt(self.head_dim)
        self.register_buffer("scaled_eye", scaled_eye, persistent=False)
        self.register_buffer("diag_rows", torch.arange(heads) * (heads + 1), persistent=False)


def _linear(x, weight, bias=None):
    """x @ W^T (+ b). Exported as MatMul with the transposed weight (+ Add) for 2-D and 3-D inputs
    alike, so the prefill and decode graphs hold byte-identical weights that are stored once."""
    out = torch.matmul(x, weight.t())
    return out if bias is None else out + bias


class TransformerLayer(nn.Module):
    """One post-norm block: h = LN1(h + attn(h)); h = LN2(h + FFN(h)) (spec §2.2)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.self_attn = SelfAttention(dim, heads)
        self.linear1 = nn.Linear(dim, 4 * dim)
        self.linear2 = nn.Linear(4 * dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)

    def _finish(self, h, attended):
        out_proj = self.self_attn.out_proj
        h = self.norm1(h + _linear(attended, out_proj.weight, out_proj.bias))
        hidden = F.relu(_linear(h, self.linear1.weight, self.linear1.bias))
        return self.norm2(h + _linear(hidden, self.linear2.weight, self.linear2.bias))

    def forward_full(self, h, hidden_mask):
        """All positions at once. h [1, S, H]; hidden_mask [S, S] bool, True = key hidden.

        Returns (h, k, v) with k, v [1, S, H] (heads merged, as upstream caches them).
        """
        attn = self.self_attn
        seq, dim = h.shape[1], h.shape[2]
        q, k, v = _linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)

        def split(t):  # [1, S, H] -> [heads, S, head_dim]
            return t.reshape(seq, attn.heads, attn.head_dim).transpose(0, 1)

        scores = torch.matmul(split(q), split(k).transpose(1, 2)) / math.sqrt(attn.head_dim)
        scores = scores.masked_fill(hidden_mask.unsqueeze(0), float("-inf"))
        attended = torch.matmul(torch.softmax(scores, dim=-1), split(v))
        attended = attended.transpose(0, 1).reshape(1, seq, dim)
        return self._finish(h, attended), k, v

    def forward_step(self, x, k_cache, v_cache):
        """One new position against the cache. x [1, H]; k_cache, v_cache [1, P, H].

        Returns (x, k_new, v_new), the new rows [1, H]. In eager mode this is plain attention
        over [cache ; new row] (PyTorch's scaled_dot_product_attention, as upstream); while
        exporting to ONNX it is the cache-reading form of `_attend_reading_cache`. Tests compare
        the two through ONNX Runtime.
        """
        attn = self.self_attn
        heads, head_dim = attn.heads, attn.head_dim
        dim = heads * head_dim
        q, k_new, v_new = _linear(x, attn.in_proj_weight, attn.in_proj_bias).split(dim, dim=1)
        if torch.onnx.is_in_onnx_export():
            attended = self._attend_reading_cache(q, k_new, v_new, k_cache, v_cache)
        else:

            def split(t):  # [rows, H] -> [1, heads, rows, head_dim]
                return t.reshape(-1, heads, head_dim).transpose(0, 1).unsqueeze(0)

            keys = torch.cat([k_cache.reshape(-1, dim), k_new], dim=0)
            values = torch.cat([v_cache.reshape(-1, dim), v_new], dim=0)
            attended = F.scaled_dot_product_attention(split(q), split(keys), split(values)).reshape(1, dim)
        return self._finish(x, attended), k_new, v_new

    def _attend_reading_cache(self, q, k_new, v_new, k_cache, v_cache):
        """Attention for one query that reads the [1, P, H] cache without copying it.

        Splitting the cache into heads would need a transpose (a full copy), so both products run
        on the cache as a plain [P, H] matrix: scores = K [P, H] @ Qblk [H, heads], Qblk
        block-diagonal (head h's scaled query in the rows of head h, zeros elsewhere); then
        (softmax weights)^T [heads, P] @ V [P, H], whose diagonal blocks are the per-head
        results. The new row's score and value enter apart, so the cache is never concatenated.
        """
        attn = self.self_attn
        heads, head_dim = attn.heads, attn.head_dim
        dim = heads * head_dim
        q_block = (q.reshape(heads, head_dim, 1) * attn.scaled_eye).reshape(dim, heads)
        scores_cache = torch.matmul(k_cache.reshape(-1, dim), q_block)  # [P, heads]
        score_new = torch.matmul(k_new, q_block)  # [1, heads]
        weights = torch.softmax(torch.cat([scores_cache, score_new], dim=0), dim=0)  # [P+1, heads]
        mixed = torch.matmul(weights[:-1].transpose(0, 1), v_cache.reshape(-1, dim))  # [heads, H]
        mixed = mixed + torch.matmul(weights[-1:].transpose(0, 1), v_new)
        return mixed.reshape(heads * heads, head_dim).index_select(0, attn.diag_rows).reshape(1, dim)


class TransformerStack(nn.Module):
    """The 24 (n_layer) blocks under upstream's attribute path `h.layers.N`; no final norm."""

    def __init__(self, dim: int, heads: int, n_layer: int):
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(dim, heads) for _ in range(n_layer))


class Text2SemanticDecoder(nn.Module):
    """The V2 GPT for inference (spec §2). State-dict keys = upstream's minus `model.`."""

    def __init__(
        self,
        vocab_size: int = 1025,
        phoneme_vocab_size: int = 732,
        hidden_dim: int = 512,
        head: int = 16,
        n_layer: int = 24,
        eos: int | None = None,
    ):
        super().__init__()
        self.vocab_size = vocab_size
        self.phoneme_vocab_size = phoneme_vocab_size
        self.hidden_dim = hidden_dim
        self.head = head
        self.n_layer = n_layer
        self.eos = vocab_size - 1 if eos is None else eos
        if self.eos != vocab_size - 1:
            raise CheckpointError(
                f"GPT EOS {self.eos} must be vocab_size - 1 = {vocab_size - 1} (upstream asserts it)"
            )
        self.bert_proj = nn.Linear(BERT_DIM, hidden_dim)
        self.ar_text_embedding = TokenEmbedding(phoneme_vocab_size, hidden_dim)
        self.ar_text_position = PositionScale()
        self.ar_audio_embedding = TokenEmbedding(vocab_size, hidden_dim)
        self.ar_audio_position = PositionScale()
        self.h = TransformerStack(hidden_dim, head, n_layer)
        self.ar_predict_layer = nn.Linear(hidden_dim, vocab_size, bias=False)
        positions = torch.arange(PE_TABLE_ROWS, dtype=torch.float32)
        self.register_buffer("pe_table", sinusoidal_pe(positions, hidden_dim), persistent=False)

    @classmethod
    def from_config(cls, model_config: Mapping[str, Any]) -> Text2SemanticDecoder:
        """Build from a checkpoint's `config["model"]` (vocab_size, phoneme_vocab_size, hidden_dim, head, n_layer, EOS)."""
        try:
            hidden = int(model_config["hidden_dim"])
            embedding = int(model_config.get("embedding_dim", hidden))
            if embedding != hidden:
                raise CheckpointError(
                    f"GPT config has embedding_dim {embedding} != hidden_dim {hidden}; V2 GPTs use equal sizes"
                )
            return cls(
                vocab_size=int(model_config["vocab_size"]),
                phoneme_vocab_size=int(model_config["phoneme_vocab_size"]),
                hidden_dim=hidden,
                head=int(model_config["head"]),
                n_layer=int(model_config["n_layer"]),
                eos=int(model_config["EOS"]) if "EOS" in model_config else None,
            )
        except KeyError as exc:
            raise CheckpointError(
                f"GPT config.model lacks {exc.args[0]!r}; is this a GPT-SoVITS GPT checkpoint?"
            ) from exc

    # -- embeddings ------------------------------------------------------------------------------

    def embed_text(self, phone_ids, bert_features):
        """phone_ids [1, T] int64, bert_features [1, 1024, T] -> [1, T, H] (spec §2.1)."""
        x = self.ar_text_embedding(phone_ids) + self.bert_proj(bert_features.transpose(1, 2))
        positions = torch.arange(phone_ids.shape[1], dtype=torch.float32)
        return x + self.ar_text_position.alpha * sinusoidal_pe(positions, self.hidden_dim)

    def embed_codes(self, codes):
        """Prompt codes [1, T] int64 -> [1, T, H]; semantic positions restart at 0."""
        y = self.ar_audio_embedding(codes)
        positions = torch.arange(codes.shape[1], dtype=torch.float32)
        return y + self.ar_audio_position.alpha * sinusoidal_pe(positions, self.hidden_dim)

    # -- inference -------------------------------------------------------------------------------

    def prefill(self, phone_ids, bert_features, prompt_codes=None):
        """First pass over [text ; prompt codes] (spec §2.3, §2.4).

        phone_ids [1, T_text] int64, bert_features [1, 1024, T_text] float32, prompt_codes
        [1, T_prompt] int64 (T_prompt may be 0, or None: reference-free mode).
        Returns (logits [1, vocab] of the last position, k_cache, v_cache [L, 1, S, H]),
        S = T_text + T_prompt. Text rows see all text and no semantic column; semantic row i sees
        all text and semantic columns <= i.
        """
        if prompt_codes is None:
            prompt_codes = torch.zeros((1, 0), dtype=torch.int64)
        text_len = phone_ids.shape[1]
        h = torch.cat([self.embed_text(phone_ids, bert_features), self.embed_codes(prompt_codes)], dim=1)
        index = torch.arange(h.shape[1])
        keys, queries = index.unsqueeze(0), index.unsqueeze(1)
        hidden_mask = (keys > queries) & (keys >= text_len)
        k_layers, v_layers = [], []
        for layer in self.h.layers:
            h, k, v = layer.forward_full(h, hidden_mask)
            k_layers.append(k)
            v_layers.append(v)
        logits = _linear(h[:, -1], self.ar_predict_layer.weight)
        return logits, torch.stack(k_layers), torch.stack(v_layers)

    def decode_step(self, token, position, k_caches, v_caches):
        """One decode step (spec §2.4).

        token [1, 1] int64 (the token sampled at the previous step), position [1] int64 (its
        position in the semantic stream: T_prompt + that step's index), k_caches / v_caches:
        sequences of L tensors [1, P, H] or tensors [L, 1, P, H]. The caches are only read.
        Returns (logits [1, vocab], k_new, v_new [L, 1, 1, H]).
        """
        pe_row = self.pe_table.index_select(0, position.reshape(1))
        x = self.ar_audio_embedding(token.reshape(1)) + self.ar_audio_position.alpha * pe_row  # [1, H]
        k_rows, v_rows = [], []
        for index, layer in enumerate(self.h.layers):
            x, k_new, v_new = layer.forward_step(x, k_caches[index], v_caches[index])
            k_rows.append(k_new)
            v_rows.append(v_new)
        shape = (self.n_layer, 1, 1, self.hidden_dim)
        logits = _linear(x, self.ar_predict_layer.weight)
        return logits, torch.stack(k_rows).reshape(shape), torch.stack(v_rows).reshape(shape)


def build_gpt(model_config: Mapping[str, Any], state_dict: Mapping, what: str) -> Text2SemanticDecoder:
    """Our decoder for a checkpoint: `model_config` = ckpt["config"]["model"], `state_dict` with or
    without the `model.` prefix (it is stripped), loaded strictly (CheckpointError names any missing,
    unexpected or mis-shaped key; fp16 tensors become fp32). `what` names the file in messages.
    Returns the module in eval mode.
    """
    model = Text2SemanticDecoder.from_config(model_config)
    stripped = {
        (k[len(CHECKPOINT_PREFIX) :] if k.startswith(CHECKPOINT_PREFIX) else k): v
        for k, v in state_dict.items()
    }
    load_strict(model, stripped, what)
    return model.eval()


@torch.no_grad()
def random_init_(model: Text2SemanticDecoder, seed: int = 0, fp16_exact: bool = True) -> Text2SemanticDecoder:
    """Fill `model` with random weights whose decode gives varied, non-degenerate logits.

    Scales keep activations O(1) through the post-norm stack, the attention non-uniform and the
    logits spread (std about 2), so greedy decoding does not collapse to one token and EOS is not
    always the argmax. With `fp16_exact` every value is rounded to float16, so a checkpoint saved
    in fp16 (as upstream's trainer does) reloads to exactly these weights. Returns `model`.
    """
    gen = torch.Generator().manual_seed(seed)
    dim = model.hidden_dim

    def normal_(tensor, std, mean=0.0):
        tensor.copy_(torch.randn(tensor.shape, generator=gen) * std + mean)

    for name, param in model.named_parameters():
        if name.endswith("alpha"):
            normal_(param, 0.1, mean=1.0)
        elif "word_embeddings" in name:
            normal_(param, 1.0)
        elif name.startswith("ar_predict_layer"):
            normal_(param, 2.0 / math.sqrt(dim))
        elif ".norm" in name:
            normal_(param, 0.05, mean=1.0 if name.endswith("weight") else 0.0)
        elif name.endswith("bias"):
            normal_(param, 0.02)
        else:  # projection matrices: variance-preserving for their fan-in
            normal_(param, 1.0 / math.sqrt(param.shape[1]))
        if fp16_exact:
            param.copy_(param.half().float())
    return model


# ---------------------------------------------------------------------------------------------
# Upstream's sampling rule and naive decode loop, as a reference for the runtime's numpy sampler.


def reference_sample(
    logits,
    previous_tokens: Sequence[int],
    step: int,
    *,
    top_k: int | None = 15,
    top_p: float = 1.0,
    temperature: float = 1.0,
    repetition_penalty: float = 1.35,
    exp_noise=None,
    generator=None,
    eos: int = 1024,
) -> tuple[int, bool]:
    """One draw of upstream's sampler (spec §2.5), in upstream's exact order of operations.

    logits: 1-D [vocab] float logits of this step (not modified; a float32 copy is used).
    previous_tokens: the prompt codes followed by every token generated so far.
    step: the 0-based decode step; steps 0..10 drop the EOS column (logits[:eos]).
    exp_noise: optional 1-D Exp(1) draws q; the token is argmax(probs / q). It must have as many
    entries as the columns in use (eos for steps 0..10, else vocab); a longer vector is cut to the
    first columns. None draws q with `generator` (a torch.Generator or None).
    Ties: top_p sorts with a stable descending sort (lower id first among equal logits); argmax
    takes the lowest id among equal maxima.

    Returns (token, stop): stop is True when the token is EOS or the argmax of the penalized
    logits (before top_p/temperature/top_k) is EOS; upstream then discards that token.
    """
    logits = torch.as_tensor(logits, dtype=torch.float32).reshape(-1).clone()
    if step < EOS_MASKED_STEPS:
        logits = logits[:eos].clone()
    width = logits.shape[0]
    # 1. repetition penalty, in place, once per distinct id (gather then scatter: no compounding)
    previous = torch.as_tensor(list(previous_tokens), dtype=torch.int64)
    if previous.numel() and repetition_penalty != 1.0:
        score = logits.gather(0, previous)
        score = torch.where(score < 0, score * repetition_penalty, score / repetition_penalty)
        logits.scatter_(0, previous, score)
    penalized_argmax = int(torch.argmax(logits))
    # 2. top_p: remove every token whose cumulative probability *including itself* exceeds top_p
    if top_p is not None and top_p < 1.0:
        sorted_logits, sorted_ids = torch.sort(logits, descending=True, stable=True)
        cumulative = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1)
        remove_sorted = cumulative > top_p
        remove_sorted[0] = False
        remove = remove_sorted.scatter(0, sorted_ids, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    # 3. temperature
    logits = logits / max(temperature, 1e-5)
    # 4. top_k with ties at the pivot kept
    if top_k is not None:
        pivot = torch.topk(logits, min(int(top_k), width)).values[-1]
        logits = torch.where(logits < pivot, torch.tensor(float("-inf")), logits)
    # 5. softmax, 6. exponential-race draw (= multinomial)
    probs = torch.softmax(logits, dim=-1)
    if exp_noise is None:
        q = torch.empty_like(probs).exponential_(1, generator=generator)
    else:
        q = torch.as_tensor(exp_noise, dtype=torch.float32).reshape(-1)
        if q.shape[0] < width:
            raise ValueError(f"exp_noise has {q.shape[0]} entries, step {step} needs {width}")
        q = q[:width]
    token = int(torch.argmax(probs / q))
    # 7. the two stop tests
    return token, token == eos or penalized_argmax == eos


@torch.no_grad()
def reference_generate(
    model: Text2SemanticDecoder,
    phone_ids,
    bert_features,
    prompt_codes=None,
    *,
    top_k: int | None = 15,
    top_p: float = 1.0,
    temperature: float = 1.0,
    repetition_penalty: float = 1.35,
    exp_noise=None,
    seed: int = 0,
    max_steps: int = MAX_DECODE_STEPS,
):
    """Upstream's naive decode loop (spec §2.4-2.6) on our module; returns the kept tokens.

    phone_ids [1, T_text], bert_features [1, 1024, T_text], prompt_codes [1, T_prompt] or None
    (reference-free). exp_noise: optional [max_steps, vocab] Exp(1) draws, row `step` used at that
    step (its first 1024 columns while EOS is dropped); None draws them from torch with `seed`.

    Returns a 1-D int64 tensor: the tokens upstream's caller keeps. On a stop the last sampled
    token is discarded; at the cap (`max_steps`, 1500 upstream) the caller keeps the last
    max_steps - 1 tokens with a prompt (the first generated one is dropped) and all of them in
    reference-free mode, as upstream's `y[-idx:]` slicing does.
    """
    if prompt_codes is None:
        prompt_codes = torch.zeros((1, 0), dtype=torch.int64)
    prompt = [int(t) for t in prompt_codes.reshape(-1)]
    generator = torch.Generator().manual_seed(seed)
    logits, k_cache, v_cache = model.prefill(phone_ids, bert_features, prompt_codes)
    generated: list[int] = []
    stopped = False
    for step in range(max_steps):
        if step > 0:
            position = torch.tensor([len(prompt) + step - 1], dtype=torch.int64)
            token = torch.tensor([[generated[-1]]], dtype=torch.int64)
            logits, k_new, v_new = model.decode_step(token, position, k_cache, v_cache)
            k_cache = torch.cat([k_cache, k_new], dim=2)
            v_cache = torch.cat([v_cache, v_new], dim=2)
        noise = None if exp_noise is None else exp_noise[step]
        token, stop = reference_sample(
            logits[0],
            prompt + generated,
            step,
            top_k=top_k,
            top_p=top_p,
            temperature=temperature,
            repetition_penalty=repetition_penalty,
            exp_noise=noise,
            generator=generator,
            eos=model.eos,
        )
        generated.append(token)
        if stop:
            generated.pop()
            stopped = True
            break
    if not stopped and prompt:
        generated = generated[1:]
    if not generated:  # upstream's "bad zero prediction": one token 0
        generated = [0]
    return torch.tensor(generated, dtype=torch.int64)
