"""Reference processing (spec §4): audio -> prompt codes and timbre vector `ge`.

- Prompt codes (§4.1): mono, soxr-HQ resampling to 16 kHz, the 3-10 s rule, 0.6 s of zeros
  appended (all in `audio.prepare_reference`), then `reference_encoder.onnx` (HuBERT + ssl_proj +
  nearest codebook entry).
- Timbre (§4.2): the 32 kHz reference with upstream's peak guard, the linear spectrogram (numpy),
  bins 0..703 into `ref_enc.onnx`; with extra references, `ge` is the mean over all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from gsv_onnx import audio as audio_io
from gsv_onnx.errors import AudioError

#: Spectrogram bins that ref_enc reads (spec §3.3a).
REF_ENC_BINS = 704


@dataclass
class ReferenceFeatures:
    """What the audio of a reference contributes to a voice."""

    prompt_codes: np.ndarray  # int64 [T_prompt]
    ge: np.ndarray  # float32 [1, gin_channels, 1]
    duration: float  # seconds of the main reference
    sample_rate: int  # its original rate
    n_references: int  # 1 + extra references averaged into ge


def _load(source: audio_io.AudioSource, what: str) -> tuple[np.ndarray, int]:
    samples, sample_rate = audio_io.load_audio(source)
    if samples.size == 0:
        raise AudioError(f"{what} has no samples: choose a 3-10 s clip of the speaker")
    return samples, sample_rate


def timbre_vector(ref_enc: ort.InferenceSession, wav32k: np.ndarray, bins: int = REF_ENC_BINS) -> np.ndarray:
    """`ge` [1, gin, 1] for one 32 kHz reference: spectrogram bins 0..bins-1 through ref_enc."""
    spec = audio_io.spectrogram(wav32k)[:bins]
    (ge,) = ref_enc.run(["ge"], {"ref_spec": np.ascontiguousarray(spec[None], dtype=np.float32)})
    ge = np.asarray(ge, dtype=np.float32)
    if not np.isfinite(ge).all():
        raise AudioError("the reference gives a non-finite timbre vector; choose another clip")
    return ge


def prompt_codes(reference_encoder: ort.InferenceSession, wav16k_padded: np.ndarray) -> np.ndarray:
    """Prompt semantic codes int64 [T] from the padded 16 kHz reference."""
    (codes,) = reference_encoder.run(
        ["prompt_codes"], {"wav16k": np.ascontiguousarray(wav16k_padded[None], dtype=np.float32)}
    )
    return np.asarray(codes, dtype=np.int64).reshape(-1)


def encode_reference(
    reference: audio_io.AudioSource,
    reference_encoder: ort.InferenceSession,
    ref_enc: ort.InferenceSession,
    aux_references: Sequence[audio_io.AudioSource] = (),
    bins: int = REF_ENC_BINS,
) -> ReferenceFeatures:
    """Prompt codes and `ge` for a reference (path, bytes or file object) and optional extra ones.

    Raises `AudioError` for unreadable, corrupt, NaN, silent, too short or too long references.
    """
    samples, sample_rate = _load(reference, "the reference audio")
    wav16k_padded, wav32k = audio_io.prepare_reference(samples, sample_rate)
    codes = prompt_codes(reference_encoder, wav16k_padded)
    if codes.size == 0:
        raise AudioError("the reference encoder returned no prompt codes; choose a longer clip")
    ges = [timbre_vector(ref_enc, wav32k, bins)]
    for index, aux in enumerate(aux_references):
        aux_samples, aux_rate = _load(aux, f"extra reference {index + 1}")
        ges.append(timbre_vector(ref_enc, audio_io.reference_wav32k(aux_samples, aux_rate), bins))
    ge = np.mean(np.stack(ges, axis=0), axis=0).astype(np.float32)
    return ReferenceFeatures(
        prompt_codes=codes,
        ge=ge,
        duration=samples.shape[0] / sample_rate,
        sample_rate=int(sample_rate),
        n_references=len(ges),
    )
