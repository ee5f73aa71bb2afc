"""PyTorch modules of our own for the SoVITS V2 inference path (SynthesizerTrn, spec §3).

The module tree mirrors upstream's so that `state_dict()` has exactly upstream's keys (without the
training-only posterior encoder `enc_q.*`) and a checkpoint loads strictly:

- `enc_p`     TextEncoder: ssl_proj, encoder_ssl, text_embedding, encoder_text, MRTE, encoder2, proj
- `dec`       HiFi-GAN generator (weight-normed upsamplers and resblocks)
- `flow`      4 mean-only coupling layers, run in reverse at inference
- `ref_enc`   MelStyleEncoder: reference spectrogram (704 bins) -> timbre vector `ge`
- `ssl_proj`  Conv1d 768 -> 768, kernel 2, stride 2 (HuBERT 50 Hz -> 25 Hz, for prompt codes)
- `quantizer` residual VQ with one 1024 x 768 codebook (training buffers kept so keys match)

Everything runs at batch size 1 with full-length sequences, so upstream's sequence masks are all
ones and are left out (multiplying by them changes nothing). The same code is traced for ONNX
export (`export_sovits.py`), so shapes are taken from tensors and no Python branches depend on data.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gsv_onnx.convert import require_torch
from gsv_onnx.errors import CheckpointError

torch = require_torch()
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

# Sizes upstream hard-codes (spec §1.3).
SSL_DIM = 768
CODEBOOK_SIZE = 1024
REF_ENC_BINS = 704
REF_ENC_HIDDEN = 128
REF_ENC_HEADS = 2
REF_ENC_KERNEL = 5
MRTE_HIDDEN = 512
MRTE_HEADS = 4
MRTE_CONTENT_CHANNELS = 192
REL_WINDOW = 4
FLOW_LAYERS = 4
FLOW_WN_LAYERS = 4
FLOW_KERNEL = 5
LRELU_SLOPE = 0.1
PHONE_VOCAB_V2 = 732


# --------------------------------------------------------------------------------------------------
# Configuration


def _section(config: Any, name: str) -> Mapping:
    """Return section `name` of a config that is a dict or an attribute container (HParams)."""
    if isinstance(config, Mapping):
        value = config.get(name)
    else:
        value = getattr(config, name, None)
    if value is None:
        raise CheckpointError(
            f"SoVITS config has no '{name}' section; the file is not a GPT-SoVITS V2 SoVITS checkpoint."
        )
    if not isinstance(value, Mapping):
        value = dict(vars(value))
    return value


def _get(section: Mapping, key: str, where: str) -> Any:
    if key not in section:
        raise CheckpointError(
            f"SoVITS config section '{where}' lacks '{key}'; the file is not a complete V2 SoVITS checkpoint."
        )
    return section[key]


@dataclass(frozen=True)
class SovitsConfig:
    """The hyperparameters that shape SynthesizerTrn V2 (spec §3.1); the rest is hard-coded."""

    inter_channels: int
    hidden_channels: int
    filter_channels: int
    n_heads: int
    n_layers: int
    kernel_size: int
    resblock_kernel_sizes: tuple[int, ...]
    resblock_dilation_sizes: tuple[tuple[int, ...], ...]
    upsample_rates: tuple[int, ...]
    upsample_initial_channel: int
    upsample_kernel_sizes: tuple[int, ...]
    gin_channels: int
    sampling_rate: int
    filter_length: int
    hop_length: int
    win_length: int
    phone_vocab_size: int = PHONE_VOCAB_V2

    @classmethod
    def from_config(cls, config: Any) -> SovitsConfig:
        """Build from a checkpoint config (dict or HParams-like, sections `model` and `data`)."""
        model = _section(config, "model")
        data = _section(config, "data")
        resblock = str(model.get("resblock", "1"))
        if resblock != "1":
            raise CheckpointError(
                f"SoVITS config uses resblock type '{resblock}'; only type '1' (the V2 default) is supported."
            )
        cfg = cls(
            inter_channels=int(_get(model, "inter_channels", "model")),
            hidden_channels=int(_get(model, "hidden_channels", "model")),
            filter_channels=int(_get(model, "filter_channels", "model")),
            n_heads=int(_get(model, "n_heads", "model")),
            n_layers=int(_get(model, "n_layers", "model")),
            kernel_size=int(_get(model, "kernel_size", "model")),
            resblock_kernel_sizes=tuple(int(k) for k in _get(model, "resblock_kernel_sizes", "model")),
            resblock_dilation_sizes=tuple(
                tuple(int(d) for d in ds) for ds in _get(model, "resblock_dilation_sizes", "model")
            ),
            upsample_rates=tuple(int(u) for u in _get(model, "upsample_rates", "model")),
            upsample_initial_channel=int(_get(model, "upsample_initial_channel", "model")),
            upsample_kernel_sizes=tuple(int(k) for k in _get(model, "upsample_kernel_sizes", "model")),
            gin_channels=int(_get(model, "gin_channels", "model")),
            sampling_rate=int(_get(data, "sampling_rate", "data")),
            filter_length=int(_get(data, "filter_length", "data")),
            hop_length=int(_get(data, "hop_length", "data")),
            win_length=int(_get(data, "win_length", "data")),
        )
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Reject configs the V2 architecture cannot have (upstream hard-codes these couplings)."""
        problems = []
        if self.hidden_channels != MRTE_CONTENT_CHANNELS:
            problems.append(f"hidden_channels {self.hidden_channels} (MRTE needs {MRTE_CONTENT_CHANNELS})")
        if self.gin_channels != MRTE_HIDDEN:
            problems.append(
                f"gin_channels {self.gin_channels} (V2 needs {MRTE_HIDDEN}; 1024 means v2Pro/v2ProPlus)"
            )
        if self.hidden_channels % self.n_heads:
            problems.append(f"hidden_channels {self.hidden_channels} not divisible by n_heads {self.n_heads}")
        if self.inter_channels % 2:
            problems.append(f"inter_channels {self.inter_channels} is odd")
        if math.prod(self.upsample_rates) != self.hop_length:
            problems.append(
                f"product of upsample_rates {self.upsample_rates} != hop_length {self.hop_length}"
            )
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            problems.append("upsample_rates and upsample_kernel_sizes differ in length")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            problems.append("resblock_kernel_sizes and resblock_dilation_sizes differ in length")
        if problems:
            raise CheckpointError(
                "SoVITS config is not a GPT-SoVITS V2 configuration: " + "; ".join(problems) + "."
            )

    def manifest_hparams(self) -> dict[str, int]:
        """The `hparams.sovits` block of the bundle manifest (design.md)."""
        return {
            "sampling_rate": self.sampling_rate,
            "filter_length": self.filter_length,
            "hop_length": self.hop_length,
            "win_length": self.win_length,
            "inter_channels": self.inter_channels,
            "gin_channels": self.gin_channels,
            "ref_enc_bins": REF_ENC_BINS,
            "samples_per_token": 2 * self.hop_length,
        }


# --------------------------------------------------------------------------------------------------
# Building blocks


class WeightNormConv1d(nn.Module):
    """Conv1d / ConvTranspose1d with upstream's old-style weight norm (`weight_g`, `weight_v`, dim 0).

    w = g * v / ||v||, the norm over every dim but 0, separately per index of dim 0; for a transposed
    conv dim 0 is the input channel (weight shape (in, out, k)), as in PyTorch's weight_norm.
    `fold_()` replaces g and v by the plain `weight` for export.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        transposed: bool = False,
    ) -> None:
        super().__init__()
        self.transposed = transposed
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        shape = (
            (in_channels, out_channels, kernel_size)
            if transposed
            else (out_channels, in_channels, kernel_size)
        )
        # Registration order bias, g, v matches upstream's state-dict order after weight_norm().
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_g = nn.Parameter(torch.ones(shape[0], 1, 1))
        self.weight_v = nn.Parameter(torch.empty(shape))
        self.folded = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default conv init for v; g = ||v|| as weight_norm() initialises it."""
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(self.weight_v)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        nn.init.uniform_(self.bias, -bound, bound)
        with torch.no_grad():
            self.weight_g.copy_(_norm_except_dim0(self.weight_v))

    def effective_weight(self):
        """The convolution weight g * v / ||v||."""
        if self.folded:
            return self.weight
        return self.weight_v * (self.weight_g / _norm_except_dim0(self.weight_v))

    def fold_(self) -> None:
        """Replace `weight_g`/`weight_v` by the plain weight (changes the state-dict keys)."""
        if self.folded:
            return
        with torch.no_grad():
            weight = self.effective_weight().detach().clone()
        del self.weight_g
        del self.weight_v
        self.weight = nn.Parameter(weight)
        self.folded = True

    def forward(self, x):
        weight = self.effective_weight()
        if self.transposed:
            return F.conv_transpose1d(x, weight, self.bias, self.stride, self.padding, 0, 1, self.dilation)
        return F.conv1d(x, weight, self.bias, self.stride, self.padding, self.dilation)


def _norm_except_dim0(v):
    return v.pow(2).sum(dim=tuple(range(1, v.dim())), keepdim=True).sqrt()


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of a (B, C, T) tensor; parameters named gamma/beta."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        x = x.transpose(1, -1)
        x = F.layer_norm(x, (self.channels,), self.gamma, self.beta, self.eps)
        return x.transpose(1, -1)


def _band_to_full(rel, window: int):
    """(B, H, L, 2w+1) relative logits -> (B, H, L, L): out[i, j] = rel[i, j - i + w] if |j - i| <= w."""
    length = rel.shape[2]
    pos = torch.arange(length, device=rel.device)
    offset = pos[None, :] - pos[:, None]
    index = (offset.clamp(-window, window) + window).expand(rel.shape[0], rel.shape[1], -1, -1)
    inside = (offset.abs() <= window).to(rel.dtype)
    return torch.gather(rel, 3, index) * inside


def _full_to_band(weights, window: int):
    """(B, H, L, L) attention weights -> (B, H, L, 2w+1): out[i, o] = p[i, i + o - w] (0 outside)."""
    length = weights.shape[2]
    pos = torch.arange(length, device=weights.device)
    offs = torch.arange(2 * window + 1, device=weights.device) - window
    key = pos[:, None] + offs[None, :]
    inside = ((key >= 0) & (key < length)).to(weights.dtype)
    # Clamp with a tensor (not a Python int) so the traced graph stays valid for every length.
    index = torch.minimum(key.clamp(min=0), pos[-1:]).expand(weights.shape[0], weights.shape[1], -1, -1)
    return torch.gather(weights, 3, index) * inside


class RelativeMultiHeadAttention(nn.Module):
    """Upstream's attentions.MultiHeadAttention: 1x1 conv Q/K/V/O, optional relative positions.

    With `window_size` the keys and values get shared (1, 2w+1, d_head) relative embeddings
    (`emb_rel_k`, `emb_rel_v`, spec §3.3c): score(i, j) += (q_i / sqrt(d)) . Ek[j - i + w] and
    out_i += sum_j p_ij Ev[j - i + w] for |j - i| <= w. Masked scores would be filled with -1e4.
    """

    def __init__(
        self, channels: int, out_channels: int, n_heads: int, window_size: int | None = None
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.k_channels = channels // n_heads
        self.window_size = window_size
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, out_channels, 1)
        if window_size is not None:
            rel_stddev = self.k_channels**-0.5
            self.emb_rel_k = nn.Parameter(torch.randn(1, 2 * window_size + 1, self.k_channels) * rel_stddev)
            self.emb_rel_v = nn.Parameter(torch.randn(1, 2 * window_size + 1, self.k_channels) * rel_stddev)

    def forward(self, x, c, attn_mask=None):
        q = self.conv_q(x)
        k = self.conv_k(c)
        v = self.conv_v(c)
        batch, channels = k.shape[0], k.shape[1]
        q = q.view(batch, self.n_heads, self.k_channels, -1).transpose(2, 3)
        k = k.view(batch, self.n_heads, self.k_channels, -1).transpose(2, 3)
        v = v.view(batch, self.n_heads, self.k_channels, -1).transpose(2, 3)
        q = q / math.sqrt(self.k_channels)
        scores = torch.matmul(q, k.transpose(-2, -1))
        if self.window_size is not None:
            # Only self-attention uses relative positions upstream (query length == key length).
            rel_logits = torch.matmul(q, self.emb_rel_k.transpose(1, 2).unsqueeze(0))
            scores = scores + _band_to_full(rel_logits, self.window_size)
        if attn_mask is not None:
            scores = scores.masked_fill(attn_mask == 0, -1e4)
        p_attn = torch.softmax(scores, dim=-1)
        out = torch.matmul(p_attn, v)
        if self.window_size is not None:
            band = _full_to_band(p_attn, self.window_size)
            out = out + torch.matmul(band, self.emb_rel_v.unsqueeze(0))
        out = out.transpose(2, 3).reshape(batch, channels, -1)
        return self.conv_o(out)


class FFN(nn.Module):
    """Conv(k) -> ReLU -> Conv(k) with 'same' padding (left (k-1)//2, right k//2)."""

    def __init__(self, in_channels: int, out_channels: int, filter_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.conv_1 = nn.Conv1d(in_channels, filter_channels, kernel_size)
        self.conv_2 = nn.Conv1d(filter_channels, out_channels, kernel_size)

    def _pad(self, x):
        if self.kernel_size == 1:
            return x
        return F.pad(x, ((self.kernel_size - 1) // 2, self.kernel_size // 2))

    def forward(self, x):
        x = torch.relu(self.conv_1(self._pad(x)))
        return self.conv_2(self._pad(x))


class RelativeEncoder(nn.Module):
    """Post-norm transformer encoder with relative-position self-attention (window 4)."""

    def __init__(
        self, hidden_channels: int, filter_channels: int, n_heads: int, n_layers: int, kernel_size: int
    ) -> None:
        super().__init__()
        self.attn_layers = nn.ModuleList(
            RelativeMultiHeadAttention(hidden_channels, hidden_channels, n_heads, window_size=REL_WINDOW)
            for _ in range(n_layers)
        )
        self.norm_layers_1 = nn.ModuleList(ChannelLayerNorm(hidden_channels) for _ in range(n_layers))
        self.ffn_layers = nn.ModuleList(
            FFN(hidden_channels, hidden_channels, filter_channels, kernel_size) for _ in range(n_layers)
        )
        self.norm_layers_2 = nn.ModuleList(ChannelLayerNorm(hidden_channels) for _ in range(n_layers))

    def forward(self, x):
        for attn, norm1, ffn, norm2 in zip(
            self.attn_layers, self.norm_layers_1, self.ffn_layers, self.norm_layers_2, strict=True
        ):
            x = norm1(x + attn(x, x))
            x = norm2(x + ffn(x))
        return x


class MRTE(nn.Module):
    """Multi-reference timbre encoder: latent frames attend to phones, plus ge (spec §3.3d)."""

    def __init__(self) -> None:
        super().__init__()
        self.cross_attention = RelativeMultiHeadAttention(MRTE_HIDDEN, MRTE_HIDDEN, MRTE_HEADS)
        self.c_pre = nn.Conv1d(MRTE_CONTENT_CHANNELS, MRTE_HIDDEN, 1)
        self.text_pre = nn.Conv1d(MRTE_CONTENT_CHANNELS, MRTE_HIDDEN, 1)
        self.c_post = nn.Conv1d(MRTE_HIDDEN, MRTE_CONTENT_CHANNELS, 1)

    def forward(self, ssl_enc, text_enc, ge):
        ssl_enc = self.c_pre(ssl_enc)
        text_enc = self.text_pre(text_enc)
        x = self.cross_attention(ssl_enc, text_enc) + ssl_enc + ge
        return self.c_post(x)


class TextEncoder(nn.Module):
    """`enc_p`: latent frames + phones + ge -> prior mean m and log-scale logs (spec §3.3c)."""

    def __init__(self, cfg: SovitsConfig) -> None:
        super().__init__()
        hidden = cfg.hidden_channels
        self.out_channels = cfg.inter_channels
        self.ssl_proj = nn.Conv1d(SSL_DIM, hidden, 1)
        self.encoder_ssl = RelativeEncoder(
            hidden, cfg.filter_channels, cfg.n_heads, cfg.n_layers // 2, cfg.kernel_size
        )
        self.encoder_text = RelativeEncoder(
            hidden, cfg.filter_channels, cfg.n_heads, cfg.n_layers, cfg.kernel_size
        )
        self.text_embedding = nn.Embedding(cfg.phone_vocab_size, hidden)
        self.mrte = MRTE()
        self.encoder2 = RelativeEncoder(
            hidden, cfg.filter_channels, cfg.n_heads, cfg.n_layers // 2, cfg.kernel_size
        )
        self.proj = nn.Conv1d(hidden, cfg.inter_channels * 2, 1)

    def encode(self, latent, phone_ids, ge):
        """Steps 1-5: (1, 768, T) latent frames -> (1, hidden, T) before speed and projection."""
        y = self.encoder_ssl(self.ssl_proj(latent))
        text = self.text_embedding(phone_ids).transpose(1, 2)
        text = self.encoder_text(text)
        y = self.mrte(y, text, ge)
        return self.encoder2(y)

    def project(self, y):
        """Step 7: -> (m, logs), each (1, inter_channels, T)."""
        stats = self.proj(y)
        return stats[:, : self.out_channels], stats[:, self.out_channels :]

    def forward(self, latent, phone_ids, ge, speed: float = 1.0):
        y = self.encode(latent, phone_ids, ge)
        if speed != 1:
            # Upstream: F.interpolate(y, size=int(T / speed) + 1, mode="linear") (align_corners False).
            y = F.interpolate(y, size=int(y.shape[-1] / speed) + 1, mode="linear")
        return self.project(y)


class WN(nn.Module):
    """WaveNet-style stack of gated dilated convs conditioned on ge (weight-normed layers)."""

    def __init__(self, hidden_channels: int, kernel_size: int, n_layers: int, gin_channels: int) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.n_layers = n_layers
        self.in_layers = nn.ModuleList(
            WeightNormConv1d(
                hidden_channels, 2 * hidden_channels, kernel_size, padding=(kernel_size - 1) // 2
            )
            for _ in range(n_layers)
        )
        self.res_skip_layers = nn.ModuleList(
            WeightNormConv1d(hidden_channels, 2 * hidden_channels if i < n_layers - 1 else hidden_channels, 1)
            for i in range(n_layers)
        )
        self.cond_layer = WeightNormConv1d(gin_channels, 2 * hidden_channels * n_layers, 1)

    def forward(self, x, g):
        hidden = self.hidden_channels
        cond = self.cond_layer(g)
        output = None
        for i, (in_layer, res_skip) in enumerate(zip(self.in_layers, self.res_skip_layers, strict=True)):
            u = in_layer(x) + cond[:, 2 * hidden * i : 2 * hidden * (i + 1)]
            acts = torch.tanh(u[:, :hidden]) * torch.sigmoid(u[:, hidden:])
            r = res_skip(acts)
            if i < self.n_layers - 1:
                x = x + r[:, :hidden]
                skip = r[:, hidden:]
            else:
                skip = r
            output = skip if output is None else output + skip
        return output


class CouplingLayer(nn.Module):
    """Mean-only residual coupling layer (only the reverse direction is needed)."""

    def __init__(self, channels: int, hidden_channels: int, gin_channels: int) -> None:
        super().__init__()
        self.half = channels // 2
        self.pre = nn.Conv1d(self.half, hidden_channels, 1)
        self.enc = WN(hidden_channels, FLOW_KERNEL, FLOW_WN_LAYERS, gin_channels)
        self.post = nn.Conv1d(hidden_channels, self.half, 1)

    def reverse(self, x, g):
        x0, x1 = x[:, : self.half], x[:, self.half :]
        h = self.enc(self.pre(x0), g)
        mean = self.post(h)
        return torch.cat([x0, x1 - mean], dim=1)


class Flip(nn.Module):
    """Reverse the channel order (parameter-free; occupies the odd indices of `flows`)."""

    def forward(self, x):
        return torch.flip(x, [1])


class ResidualCouplingBlock(nn.Module):
    """`flow`: flows.0, flip, flows.2, flip, ... as upstream stores them."""

    def __init__(self, channels: int, hidden_channels: int, gin_channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(FLOW_LAYERS):
            layers.append(CouplingLayer(channels, hidden_channels, gin_channels))
            layers.append(Flip())
        self.flows = nn.ModuleList(layers)

    def reverse(self, z, g):
        for layer in reversed(self.flows):
            z = layer(z) if isinstance(layer, Flip) else layer.reverse(z, g)
        return z


class ResBlock1(nn.Module):
    """HiFi-GAN residual block type 1: three (dilated conv, conv) pairs with leaky ReLU 0.1."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            WeightNormConv1d(channels, channels, kernel_size, padding=d * (kernel_size - 1) // 2, dilation=d)
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            WeightNormConv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2)
            for _ in dilations
        )

    def forward(self, x):
        for conv1, conv2 in zip(self.convs1, self.convs2, strict=True):
            t = conv1(F.leaky_relu(x, LRELU_SLOPE))
            t = conv2(F.leaky_relu(t, LRELU_SLOPE))
            x = x + t
        return x


class Generator(nn.Module):
    """`dec`: HiFi-GAN, ×prod(upsample_rates) samples per latent frame (spec §3.3g)."""

    def __init__(self, cfg: SovitsConfig) -> None:
        super().__init__()
        uic = cfg.upsample_initial_channel
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        self.conv_pre = nn.Conv1d(cfg.inter_channels, uic, 7, 1, padding=3)
        self.ups = nn.ModuleList(
            WeightNormConv1d(
                uic // 2**i, uic // 2 ** (i + 1), k, stride=u, padding=(k - u) // 2, transposed=True
            )
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes, strict=True))
        )
        blocks = []
        for i in range(len(self.ups)):
            ch = uic // 2 ** (i + 1)
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, strict=True):
                blocks.append(ResBlock1(ch, k, d))
        self.resblocks = nn.ModuleList(blocks)
        self.conv_post = nn.Conv1d(uic // 2 ** len(self.ups), 1, 7, 1, padding=3, bias=False)
        self.cond = nn.Conv1d(cfg.gin_channels, uic, 1)

    def forward(self, x, g):
        x = self.conv_pre(x) + self.cond(g)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            xs = None
            for block in blocks:
                xs = block(x) if xs is None else xs + block(x)
            x = xs / self.num_kernels
        # The last activation uses PyTorch's default slope 0.01, as upstream does.
        x = self.conv_post(F.leaky_relu(x))
        return torch.tanh(x)


class LinearNorm(nn.Module):
    """Linear layer stored under `.fc` (upstream's LinearNorm)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim)

    def forward(self, x):
        return self.fc(x)


class Mish(nn.Module):
    """x * tanh(softplus(x))."""

    def forward(self, x):
        return x * torch.tanh(F.softplus(x))


class ConvNorm(nn.Module):
    """Conv1d stored under `.conv` with 'same' padding for odd kernels."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2)

    def forward(self, x):
        return self.conv(x)


class Conv1dGLU(nn.Module):
    """Residual gated conv: x + a * sigmoid(b) with [a; b] = conv(x)."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.channels = channels
        self.conv1 = ConvNorm(channels, 2 * channels, kernel_size)

    def forward(self, x):
        h = self.conv1(x)
        return x + h[:, : self.channels] * torch.sigmoid(h[:, self.channels :])


class StyleAttention(nn.Module):
    """MelStyleEncoder self-attention: 2 heads of 64, scores / sqrt(128) (d_model, not d_k)."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.temperature = math.sqrt(d_model)
        self.w_qs = nn.Linear(d_model, d_model)
        self.w_ks = nn.Linear(d_model, d_model)
        self.w_vs = nn.Linear(d_model, d_model)
        self.fc = nn.Linear(d_model, d_model)

    def forward(self, x):
        batch = x.shape[0]
        q = self.w_qs(x).view(batch, -1, self.n_heads, self.d_head).transpose(1, 2)
        k = self.w_ks(x).view(batch, -1, self.n_heads, self.d_head).transpose(1, 2)
        v = self.w_vs(x).view(batch, -1, self.n_heads, self.d_head).transpose(1, 2)
        attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) / self.temperature, dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(batch, -1, self.n_heads * self.d_head)
        return self.fc(out) + x


class MelStyleEncoder(nn.Module):
    """`ref_enc`: (1, 704, T) linear spectrogram -> ge (1, gin_channels, 1) (spec §3.3a)."""

    def __init__(self, out_dim: int) -> None:
        super().__init__()
        # Indices 2 and 5 are dropouts upstream (inactive at inference, no parameters).
        self.spectral = nn.Sequential(
            LinearNorm(REF_ENC_BINS, REF_ENC_HIDDEN),
            Mish(),
            nn.Identity(),
            LinearNorm(REF_ENC_HIDDEN, REF_ENC_HIDDEN),
            Mish(),
            nn.Identity(),
        )
        self.temporal = nn.Sequential(
            Conv1dGLU(REF_ENC_HIDDEN, REF_ENC_KERNEL), Conv1dGLU(REF_ENC_HIDDEN, REF_ENC_KERNEL)
        )
        self.slf_attn = StyleAttention(REF_ENC_HIDDEN, REF_ENC_HEADS)
        self.fc = LinearNorm(REF_ENC_HIDDEN, out_dim)

    def forward(self, spec):
        x = self.spectral(spec.transpose(1, 2))
        x = self.temporal(x.transpose(1, 2)).transpose(1, 2)
        x = self.fc(self.slf_attn(x))
        return x.mean(dim=1).unsqueeze(-1)


class Codebook(nn.Module):
    """`_codebook`: the 1024 x 768 `embed` plus upstream's EMA training buffers (kept for key parity)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("inited", torch.ones(1))
        self.register_buffer("cluster_size", torch.ones(CODEBOOK_SIZE))
        self.register_buffer("embed", torch.randn(CODEBOOK_SIZE, SSL_DIM))
        self.register_buffer("embed_avg", self.embed.clone())


class _VQLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self._codebook = Codebook()


class _ResidualVQ(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([_VQLayer()])


class Quantizer(nn.Module):
    """`quantizer`: residual VQ with one layer; only `embed` matters at inference."""

    def __init__(self) -> None:
        super().__init__()
        self.vq = _ResidualVQ()

    @property
    def embed(self):
        return self.vq.layers[0]._codebook.embed

    def decode(self, codes):
        """(1, T) int64 codes -> (1, 768, T) codebook vectors."""
        return F.embedding(codes, self.embed).transpose(1, 2)

    def encode(self, x):
        """(1, 768, T) -> (1, T) nearest code by squared distance ||x||^2 - 2 x.e + ||e||^2."""
        flat = x.transpose(1, 2)
        embed = self.embed
        dist = (
            flat.pow(2).sum(-1, keepdim=True)
            - 2 * torch.matmul(flat, embed.t())
            + embed.pow(2).sum(-1)[None, None, :]
        )
        return torch.argmin(dist, dim=-1)


# --------------------------------------------------------------------------------------------------
# The model


class SovitsV2(nn.Module):
    """SynthesizerTrn V2, inference path only; `state_dict()` keys equal upstream's minus `enc_q.*`."""

    def __init__(self, cfg: SovitsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.enc_p = TextEncoder(cfg)
        self.dec = Generator(cfg)
        self.flow = ResidualCouplingBlock(cfg.inter_channels, cfg.hidden_channels, cfg.gin_channels)
        self.ref_enc = MelStyleEncoder(cfg.gin_channels)
        self.ssl_proj = nn.Conv1d(SSL_DIM, SSL_DIM, 2, stride=2)
        self.quantizer = Quantizer()

    @property
    def samples_per_frame(self) -> int:
        """Waveform samples per 50 Hz latent frame (hop length, 640 for V2)."""
        return self.cfg.hop_length

    def compute_ge(self, ref_spec):
        """(1, 704, T_ref) spectrogram bins 0..703 -> timbre vector ge (1, gin_channels, 1)."""
        if ref_spec.shape[1] != REF_ENC_BINS:
            raise ValueError(f"ref_spec must have {REF_ENC_BINS} bins, got {ref_spec.shape[1]}")
        return self.ref_enc(ref_spec)

    def latent_frames(self, semantic_codes):
        """(1, T) codes -> (1, 768, 2T): codebook lookup, then each vector repeated twice (25 -> 50 Hz)."""
        quantized = self.quantizer.decode(semantic_codes)
        return quantized.unsqueeze(-1).expand(-1, -1, -1, 2).reshape(quantized.shape[0], SSL_DIM, -1)

    def synthesize(self, m, logs, noise, ge):
        """Prior sample z_p = m + noise * exp(logs) (noise already scaled), flow reverse, HiFi-GAN."""
        z_p = m + noise * torch.exp(logs)
        z = self.flow.reverse(z_p, ge)
        return self.dec(z, ge)

    def decode(self, semantic_codes, phone_ids, ge, speed: float, noise):
        """Tokens + target phones + ge + scaled prior noise -> waveform (1, 1, F * hop_length).

        `noise` is ε · noise_scale with shape (1, inter_channels, F), F = 2T at speed 1, else
        floor(2T / speed) + 1 (spec §3.3c step 6).
        """
        latent = self.latent_frames(semantic_codes)
        m, logs = self.enc_p(latent, phone_ids, ge, speed)
        if noise.shape != m.shape:
            raise ValueError(
                f"noise must have shape {tuple(m.shape)} for this input, got {tuple(noise.shape)}"
            )
        return self.synthesize(m, logs, noise, ge)

    def extract_latent(self, ssl_features):
        """(1, 768, T50) HuBERT features -> prompt codes (1, 1, T50 // 2) int64 (spec §3.5)."""
        return self.quantizer.encode(self.ssl_proj(ssl_features)).unsqueeze(1)

    def forward(self, semantic_codes, phone_ids, ge, noise):
        return self.decode(semantic_codes, phone_ids, ge, 1.0, noise)


def frames_for(num_tokens: int, speed: float) -> int:
    """Latent frames (noise length F) for `num_tokens` semantic tokens at `speed` (upstream's rule)."""
    frames = 2 * num_tokens
    return frames if speed == 1 else int(frames / speed) + 1


def create_sovits(config: Any) -> SovitsV2:
    """An (unloaded, randomly initialised) SovitsV2 in eval mode for a checkpoint config."""
    model = SovitsV2(SovitsConfig.from_config(config))
    return model.eval()


def build_sovits(config: Any, state_dict: Mapping, what: str) -> SovitsV2:
    """Build SovitsV2 from a checkpoint's config and load its weights strictly (fp32, eval mode).

    `enc_q.*` (posterior encoder, training only, present in some pretrained files) is ignored; any
    other missing, unexpected or mis-shaped key raises `CheckpointError` naming it.
    """
    from gsv_onnx.convert.strict import load_strict

    model = create_sovits(config)
    load_strict(model, state_dict, what, ignore_prefixes=("enc_q.",))
    return model


def fold_weight_norm(model: SovitsV2) -> SovitsV2:
    """A copy of `model` with every weight-normed conv folded into a plain weight (for export)."""
    folded = copy.deepcopy(model)
    for module in folded.modules():
        if isinstance(module, WeightNormConv1d):
            module.fold_()
    return folded.eval()


@torch.no_grad()
def random_init_(model: SovitsV2, seed: int = 0) -> SovitsV2:
    """Give `model` random weights with scales like upstream's initialisation (deterministic).

    PyTorch default init for convs/linears, g = ||v|| for weight norm, N(0, d^-0.5) relative
    embeddings, N(0, 1) phone embedding; unlike upstream (which zero-initialises it) the flow's
    `post` gets N(0, 0.1) weights so the flow is not an identity, and LayerNorms get gamma ~ 1 ± 0.1,
    beta ~ ±0.1 so tests exercise them. Quantizer buffers: embed N(0, 0.6), embed_avg = embed,
    inited = cluster_size = 1, as a trained file has them.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            if isinstance(module, (nn.Conv1d, nn.Linear)) or isinstance(module, WeightNormConv1d):
                module.reset_parameters()
    for module in model.modules():
        if isinstance(module, ChannelLayerNorm):
            module.gamma.copy_(1 + 0.1 * torch.randn(module.gamma.shape, generator=gen))
            module.beta.copy_(0.1 * torch.randn(module.beta.shape, generator=gen))
        elif isinstance(module, RelativeMultiHeadAttention) and module.window_size is not None:
            std = module.k_channels**-0.5
            module.emb_rel_k.copy_(std * torch.randn(module.emb_rel_k.shape, generator=gen))
            module.emb_rel_v.copy_(std * torch.randn(module.emb_rel_v.shape, generator=gen))
        elif isinstance(module, CouplingLayer):
            module.post.weight.copy_(0.1 * torch.randn(module.post.weight.shape, generator=gen))
            module.post.bias.copy_(0.1 * torch.randn(module.post.bias.shape, generator=gen))
    model.enc_p.text_embedding.weight.copy_(
        torch.randn(model.enc_p.text_embedding.weight.shape, generator=gen)
    )
    codebook = model.quantizer.vq.layers[0]._codebook
    codebook.embed.copy_(0.6 * torch.randn(codebook.embed.shape, generator=gen))
    codebook.embed_avg.copy_(codebook.embed)
    codebook.inited.fill_(1)
    codebook.cluster_size.fill_(1)
    return model.eval()


def spectrogram_torch(wav32k, filter_length: int = 2048, hop_length: int = 640, win_length: int = 2048):
    """Upstream's linear spectrogram (spec §4.2): (1, N) float wave -> (1, filter_length//2+1, N//hop).

    Reflect pad (n_fft - hop)/2 on both sides, periodic Hann, center False, sqrt(re² + im² + 1e-8).
    """
    if wav32k.dim() == 1:
        wav32k = wav32k.unsqueeze(0)
    pad = (filter_length - hop_length) // 2
    y = F.pad(wav32k.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    window = torch.hann_window(win_length, dtype=wav32k.dtype, device=wav32k.device)
    spec = torch.stft(
        y,
        filter_length,
        hop_length=hop_length,
        win_length=win_length,
        window=window,
        center=False,
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    return torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-8)
