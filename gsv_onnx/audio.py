"""Audio input and output for the runtime: decode, resample, spectrogram, encode, reference preparation.

No torch here (the runtime never imports it): decoding and encoding use soundfile (libsndfile with
FLAC, Vorbis, Opus and MP3), resampling uses soxr at quality "HQ" (bit-identical to librosa's
default resampler, which upstream uses for the 16 kHz HuBERT input, spec §4.1), and the linear
spectrogram is a few lines of numpy reproducing upstream's ``spectrogram_torch`` (spec §4.2).
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from gsv_onnx.errors import AudioError
from gsv_onnx.fileio import write_bytes_atomic

HUBERT_RATE = 16000
SOVITS_RATE = 32000
# Upstream sizes the pad with the 32 kHz rate but appends it to the 16 kHz signal: 0.6 s (spec §4.1).
REFERENCE_PAD_SAMPLES = int(SOVITS_RATE * 0.3)
REFERENCE_MIN_SAMPLES = 48_000  # 3 s at 16 kHz
REFERENCE_MAX_SAMPLES = 160_000  # 10 s at 16 kHz
# A reference whose peak stays below -60 dBFS carries no usable voice (upstream has no such check).
SILENCE_PEAK = 10 ** (-60 / 20)

N_FFT = 2048
HOP_LENGTH = 640
WIN_LENGTH = 2048
SPEC_PAD = (N_FFT - HOP_LENGTH) // 2  # 704 reflected samples on each side
SPEC_EPS = 1e-8  # under the square root, as upstream's PyTorch path (its ONNX export used 1e-6)

AudioSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO

# Output formats -> (soundfile container, subtype); "pcm" is raw int16 little-endian, no header.
FORMATS = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "opus": ("OGG", "OPUS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "pcm": (None, None),
}
_SUFFIXES = {
    ".wav": "wav",
    ".flac": "flac",
    ".ogg": "ogg",
    ".oga": "ogg",
    ".opus": "opus",
    ".mp3": "mp3",
    ".pcm": "pcm",
    ".raw": "pcm",
}
# libsndfile's Opus encoder accepts only these rates; other rates are resampled to 48 kHz first.
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


# --------------------------------------------------------------------------------------------------
# Decoding


def load_audio(source: AudioSource) -> tuple[np.ndarray, int]:
    """Decode an audio file (wav/flac/ogg/mp3/... as libsndfile reads it) to float32 mono.

    ``source`` is a path, the file's bytes, or a binary file-like object. Multi-channel audio is
    averaged to mono (as librosa does). Returns (samples float32 [N], sample_rate). Raises
    AudioError when the file is missing, not audio, corrupt, empty, or holds NaN/inf samples.
    """
    name = _source_name(source)
    handle: object = source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise AudioError(f"audio file {path} does not exist: check the path")
        if path.is_dir():
            raise AudioError(f"audio path {path} is a directory: pass an audio file (wav, flac, ogg or mp3)")
        handle = str(path)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise AudioError(
                "audio data is empty (0 bytes): pass the contents of a wav, flac, ogg or mp3 file"
            )
        handle = io.BytesIO(bytes(source))
    elif not hasattr(source, "read"):
        raise AudioError(
            f"cannot read audio from a {type(source).__name__}: pass a path, bytes or a binary file object"
        )
    try:
        data, sample_rate = sf.read(handle, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as exc:
        raise AudioError(
            f"cannot decode audio {name}: {exc}. The file is corrupt or in an unsupported format; "
            "convert it to wav, flac, ogg or mp3"
        ) from exc
    if data.shape[0] == 0:
        raise AudioError(f"audio {name} contains no samples: record or export it again")
    samples = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    _check_finite(samples, f"audio {name}")
    return samples, int(sample_rate)


def _source_name(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return str(getattr(source, "name", "<file object>"))


def _check_finite(samples: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(samples)):
        bad = int(np.count_nonzero(~np.isfinite(samples)))
        raise AudioError(
            f"{what} contains {bad} NaN or infinite sample(s): the file is damaged; export it again"
        )


def _as_mono(samples: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(samples)
    if array.ndim != 1:
        raise AudioError(
            f"{what} must be a 1-D mono array, got shape {array.shape}: average the channels first"
        )
    if array.size == 0:
        raise AudioError(f"{what} is empty: pass at least one sample")
    if not np.issubdtype(array.dtype, np.floating):
        raise AudioError(f"{what} must be floating point in [-1, 1], got {array.dtype}")
    return array.astype(np.float32, copy=False)


def _check_rate(sample_rate: int, what: str) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise AudioError(f"{what} sample rate must be a positive integer, got {sample_rate!r}")
    return int(sample_rate)


# --------------------------------------------------------------------------------------------------
# Resampling and spectrogram


def resample(samples: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample mono float32 audio with soxr "HQ", reproducing ``librosa.resample`` (res_type soxr_hq).

    As librosa does, the result is fixed to ceil(N * sr_out / sr_in) samples (zero-padded or
    trimmed). Same rate: a float32 copy.
    """
    samples = _as_mono(samples, "audio to resample")
    sr_in = _check_rate(sr_in, "input")
    sr_out = _check_rate(sr_out, "output")
    if sr_in == sr_out:
        return samples.copy()
    out = soxr.resample(samples, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)
    target = int(np.ceil(samples.shape[-1] * (float(sr_out) / sr_in)))
    if out.shape[0] > target:
        out = out[:target]
    elif out.shape[0] < target:
        out = np.pad(out, (0, target - out.shape[0]))
    return np.ascontiguousarray(out, dtype=np.float32)


_HANN = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(WIN_LENGTH) / WIN_LENGTH)).astype(np.float64)  # periodic


def spectrogram(wav32k: np.ndarray) -> np.ndarray:
    """Linear magnitude spectrogram as upstream's ``spectrogram_torch`` (spec §4.2).

    Reflect-pad 704 samples on each side, frames of 2048 every 640 samples (center False), periodic
    Hann window, one-sided FFT, magnitude sqrt(re^2 + im^2 + 1e-8). Returns float32 [1025, N // 640].
    The input must be longer than 704 samples (the reflection needs them).
    """
    wav = _as_mono(wav32k, "audio for the spectrogram")
    if wav.shape[0] <= SPEC_PAD:
        raise AudioError(
            f"audio for the spectrogram has {wav.shape[0]} samples; it needs more than {SPEC_PAD} (22 ms at 32 kHz)"
        )
    _check_finite(wav, "audio for the spectrogram")
    padded = np.pad(wav.astype(np.float64), (SPEC_PAD, SPEC_PAD), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH]
    spec = np.fft.rfft(frames * _HANN, n=N_FFT, axis=-1)
    magnitude = np.sqrt(spec.real**2 + spec.imag**2 + SPEC_EPS)
    return np.ascontiguousarray(magnitude.T, dtype=np.float32)


# --------------------------------------------------------------------------------------------------
# Reference preparation (V2)


def reference_wav32k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """The 32 kHz reference for the spectrogram / timbre path (spec §4.2), float32 [N32].

    Upstream resamples with torchaudio's windowed-sinc ``Resample`` (Hann, lowpass width 6, rolloff
    0.99); we use soxr HQ, a better-filtered resampler: the spectrogram differs slightly near the
    Nyquist band, below the 704 bins the timbre encoder reads. Then the peak guard: if the peak
    exceeds 1, divide by min(2, peak). Extra (timbre-only) references use this without a length check.
    """
    samples = _as_mono(samples, "reference audio")
    _check_finite(samples, "reference audio")
    wav32k = resample(samples, _check_rate(sample_rate, "reference"), SOVITS_RATE)
    peak = float(np.abs(wav32k).max())
    if peak > 1.0:
        wav32k = (wav32k / min(2.0, peak)).astype(np.float32)
    return wav32k


def prepare_reference(samples: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Prepare the main reference clip: returns (wav16k_padded float32 [N16 + 9600], wav32k float32).

    Spec §4.1: resample to 16 kHz with soxr HQ (no loudness normalization), require 3-10 s measured
    on the 16 kHz signal (48,000-160,000 samples), reject a silent clip, append 9,600 zeros (what
    ``reference_encoder.onnx`` expects). Spec §4.2: ``reference_wav32k``. Raises AudioError with the
    measured length and the allowed range, or for silent, NaN/inf or empty input.
    """
    samples = _as_mono(samples, "reference audio")
    sample_rate = _check_rate(sample_rate, "reference")
    _check_finite(samples, "reference audio")
    wav16k = resample(samples, sample_rate, HUBERT_RATE)
    n = wav16k.shape[0]
    if not REFERENCE_MIN_SAMPLES <= n <= REFERENCE_MAX_SAMPLES:
        raise AudioError(
            f"reference audio is {n / HUBERT_RATE:.2f} s long ({n} samples at 16 kHz); it must be between "
            f"{REFERENCE_MIN_SAMPLES / HUBERT_RATE:.0f} and {REFERENCE_MAX_SAMPLES / HUBERT_RATE:.0f} s "
            f"({REFERENCE_MIN_SAMPLES}-{REFERENCE_MAX_SAMPLES} samples): trim or choose another clip"
        )
    peak = float(np.abs(wav16k).max())
    if peak < SILENCE_PEAK:
        level = 20 * math.log10(peak) if peak > 0 else float("-inf")
        raise AudioError(
            f"reference audio is silent (peak {level:.1f} dBFS, below -60 dBFS): choose a clip where the speaker is audible"
        )
    wav16k_padded = np.concatenate([wav16k, np.zeros(REFERENCE_PAD_SAMPLES, dtype=np.float32)])
    return wav16k_padded, reference_wav32k(samples, sample_rate)


# --------------------------------------------------------------------------------------------------
# Encoding


def to_int16(samples: np.ndarray) -> np.ndarray:
    """float -> int16 as upstream (x * 32768, truncated toward zero, spec §7.3) but clipped, not wrapped."""
    scaled = np.asarray(samples, dtype=np.float64) * 32768.0
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def encode(samples: np.ndarray, sample_rate: int, fmt: str = "wav") -> bytes:
    """Encode mono float audio to ``fmt``: wav / flac (16-bit PCM), ogg (Vorbis), opus, mp3, pcm.

    "pcm" is raw int16 little-endian without a header. wav, flac and pcm hold exactly ``to_int16``
    of the samples. Opus through libsndfile supports 8/12/16/24/48 kHz only, so other rates are
    resampled to 48 kHz first. Raises AudioError for an unknown format, NaN/inf or empty samples,
    or an encoder the installed libsndfile lacks.
    """
    fmt = _normalize_format(fmt)
    samples = _as_mono(samples, "audio to encode")
    sample_rate = _check_rate(sample_rate, "output")
    _check_finite(samples, "audio to encode")
    if fmt == "pcm":
        return to_int16(samples).astype("<i2").tobytes()
    container, subtype = FORMATS[fmt]
    if not sf.check_format(container, subtype):
        raise AudioError(
            f"this libsndfile ({sf.__libsndfile_version__}) cannot write {fmt}; choose wav, flac or ogg"
        )
    if fmt in ("wav", "flac"):
        data: np.ndarray = to_int16(samples)  # exact bits: our conversion, not libsndfile's
    else:
        data = np.clip(samples, -1.0, 1.0)
        if fmt == "opus" and sample_rate not in _OPUS_RATES:
            data = np.clip(resample(data, sample_rate, 48000), -1.0, 1.0)
            sample_rate = 48000
    buffer = io.BytesIO()
    try:
        sf.write(buffer, data, sample_rate, format=container, subtype=subtype)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AudioError(f"cannot encode {fmt} at {sample_rate} Hz: {exc}; choose wav or flac") from exc
    return buffer.getvalue()


def _normalize_format(fmt: str) -> str:
    key = str(fmt).lower().lstrip(".")
    if key not in FORMATS:
        raise AudioError(f"unknown audio format {fmt!r}: use one of {', '.join(FORMATS)}")
    return key


def available_formats() -> list[str]:
    """Output formats the installed libsndfile can write (pcm always)."""
    return [f for f, (c, s) in FORMATS.items() if c is None or sf.check_format(c, s)]


def format_from_path(path: str | os.PathLike) -> str:
    """Infer the output format from a file suffix (.wav .flac .ogg .oga .opus .mp3 .pcm .raw)."""
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise AudioError(
            f"cannot tell the audio format of {path} from its suffix {suffix or '(none)'!r}: "
            f"use one of {', '.join(sorted(_SUFFIXES))} or pass the format explicitly"
        )
    return _SUFFIXES[suffix]


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same directory, then rename.

    A failure leaves neither a partial file nor the temporary one. Raises AudioError naming the path
    when the directory is missing or not writable.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise AudioError(f"cannot write audio to {target}: it is a directory; give a file name")
    if not directory.is_dir():
        raise AudioError(f"cannot write audio to {target}: directory {directory} does not exist")
    try:
        write_bytes_atomic(target, data)
    except OSError as exc:
        raise AudioError(
            f"cannot write audio to {target}: {exc.strerror or exc}; choose a writable path"
        ) from exc
    return target


@dataclass
class Audio:
    """Mono audio: ``samples`` float32 [N] in [-1, 1] and ``sample_rate`` in Hz."""

    samples: np.ndarray
    sample_rate: int

    def __post_init__(self) -> None:
        self.samples = np.ascontiguousarray(np.asarray(self.samples, dtype=np.float32).reshape(-1))
        self.sample_rate = _check_rate(self.sample_rate, "audio")

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.samples.shape[0] / self.sample_rate

    @classmethod
    def load(cls, source: AudioSource) -> Audio:
        """Decode ``source`` (path, bytes or file object) with ``load_audio``."""
        samples, sample_rate = load_audio(source)
        return cls(samples, sample_rate)

    def to_bytes(self, fmt: str = "wav") -> bytes:
        """Encode to ``fmt`` (see ``encode``)."""
        return encode(self.samples, self.sample_rate, fmt)

    def save(self, path: str | os.PathLike, fmt: str | None = None) -> Path:
        """Write to ``path`` atomically; the format comes from ``fmt`` or else the path's suffix."""
        fmt = _normalize_format(fmt) if fmt is not None else format_from_path(path)
        return write_atomic(path, self.to_bytes(fmt))
