"""`Voice`: everything a reference clip contributes to synthesis, prepared once and saved to one file.

A voice holds the prompt semantic codes (HuBERT path), the timbre vector `ge` (reference
spectrogram through ref_enc, averaged over extra references), the prompt text's phones and BERT
features, and metadata: the id of the bundle it was made with, when, and the languages of its text.
It is tied to its bundle: the codes and `ge` come from that bundle's graphs, so a voice made for
another bundle is refused with a `VoiceError` naming both.

File format (`.voice`): a numpy `.npz` archive (no pickles) with the arrays below and a UTF-8 JSON
header stored as a uint8 array named `header`. It is written to a temporary file next to the
target and renamed into place, so a failed save leaves nothing behind.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gsv_onnx import __version__
from gsv_onnx.errors import VoiceError
from gsv_onnx.fileio import write_bytes_atomic

VOICE_FORMAT = "gsv-onnx-voice"
VOICE_FORMAT_VERSION = 1

_ARRAYS = ("prompt_codes", "ge", "prompt_phone_ids", "prompt_bert")


@dataclass
class Voice:
    """A prepared reference voice.

    prompt_codes: int64 [T_prompt], the reference's semantic codes (25 per second).
    ge: float32 [1, gin_channels, 1], the timbre vector.
    prompt_phone_ids / prompt_phones: the prompt text's phones (empty in reference-free mode).
    prompt_bert: float32 [bert_dim, len(prompt_phone_ids)].
    prompt_text / prompt_lang / prompt_norm_text: the transcript as given (after upstream's
    closing-mark rule), its language code, and the frontend's normalized text.
    bundle_id: `Bundle.bundle_id` of the bundle whose graphs made the codes and `ge`.
    """

    prompt_codes: np.ndarray
    ge: np.ndarray
    prompt_phone_ids: np.ndarray
    prompt_bert: np.ndarray
    prompt_phones: list[str] = field(default_factory=list)
    prompt_text: str = ""
    prompt_lang: str = "zh"
    prompt_norm_text: str = ""
    bundle_id: str = ""
    created: str = ""
    languages: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.prompt_codes = np.asarray(self.prompt_codes, dtype=np.int64).reshape(-1)
        self.ge = np.asarray(self.ge, dtype=np.float32)
        if self.ge.ndim == 1:
            self.ge = self.ge[None, :, None]
        self.prompt_phone_ids = np.asarray(self.prompt_phone_ids, dtype=np.int64).reshape(-1)
        self.prompt_bert = np.asarray(self.prompt_bert, dtype=np.float32)
        if not self.created:
            self.created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._check()

    def _check(self) -> None:
        if self.ge.ndim != 3 or self.ge.shape[0] != 1 or self.ge.shape[2] != 1:
            raise VoiceError(f"voice timbre vector has shape {self.ge.shape}, expected [1, channels, 1]")
        if not np.isfinite(self.ge).all():
            raise VoiceError("voice timbre vector contains NaN or infinity; prepare the voice again")
        if self.prompt_bert.ndim != 2 or self.prompt_bert.shape[1] != self.prompt_phone_ids.shape[0]:
            raise VoiceError(
                f"voice prompt BERT features have shape {self.prompt_bert.shape} for "
                f"{self.prompt_phone_ids.shape[0]} prompt phones; prepare the voice again"
            )
        if self.prompt_codes.size and (self.prompt_codes.min() < 0 or self.prompt_codes.max() > 1023):
            raise VoiceError("voice prompt codes are outside 0..1023; prepare the voice again")

    @property
    def reference_free(self) -> bool:
        """True when the voice has no prompt text: the GPT then gets no prompt (spec §7.4)."""
        return self.prompt_phone_ids.size == 0

    def check_bundle(self, bundle_id: str, bundle_path: str | os.PathLike | None = None) -> None:
        """Raise `VoiceError` unless this voice was prepared with the bundle `bundle_id`."""
        if self.bundle_id != bundle_id:
            where = f" ({bundle_path})" if bundle_path else ""
            source = self.metadata.get("path")
            made = f"voice {source}" if source else "this voice"
            raise VoiceError(
                f"{made} was prepared with bundle {self.bundle_id or 'unknown'} "
                f"({self.metadata.get('bundle_path', 'path unknown')}) but the loaded bundle is "
                f"{bundle_id}{where}; prepare the voice again with this bundle (gsv voice create)"
            )

    # -- persistence ----------------------------------------------------------------------------

    def header(self) -> dict[str, Any]:
        """The JSON header written with the arrays."""
        return {
            "format": VOICE_FORMAT,
            "format_version": VOICE_FORMAT_VERSION,
            "gsv_onnx_version": __version__,
            "bundle_id": self.bundle_id,
            "created": self.created,
            "languages": list(self.languages),
            "prompt_text": self.prompt_text,
            "prompt_lang": self.prompt_lang,
            "prompt_norm_text": self.prompt_norm_text,
            "prompt_phones": list(self.prompt_phones),
            "metadata": {k: v for k, v in self.metadata.items() if k != "path"},
        }

    def to_bytes(self) -> bytes:
        """The `.voice` file content."""
        buffer = io.BytesIO()
        header = np.frombuffer(json.dumps(self.header(), ensure_ascii=False).encode("utf-8"), dtype=np.uint8)
        np.savez(buffer, header=header, **{name: getattr(self, name) for name in _ARRAYS})
        return buffer.getvalue()

    def save(self, path: str | os.PathLike) -> Path:
        """Write the voice to `path` atomically (temporary file + rename); returns the path."""
        path = Path(path)
        if path.is_dir():
            raise VoiceError(f"cannot save the voice to {path}: it is a directory; give a file name")
        data = self.to_bytes()
        try:
            return write_bytes_atomic(path, data)
        except OSError as exc:
            raise VoiceError(f"cannot write the voice to {path}: {exc.strerror or exc}") from exc

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "voice data") -> Voice:
        """Parse `.voice` content; raises `VoiceError` when it is not a voice file."""
        try:
            archive = np.load(io.BytesIO(data), allow_pickle=False)
            arrays = {name: archive[name] for name in ("header", *_ARRAYS)}
        except Exception as exc:  # zipfile/np raise many kinds on junk input
            raise VoiceError(
                f"{source} is not a gsv-onnx voice file ({type(exc).__name__}); create one with gsv voice create"
            ) from exc
        try:
            header = json.loads(arrays["header"].tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise VoiceError(f"{source}: the voice header is damaged; create the voice again") from exc
        if not isinstance(header, dict) or header.get("format") != VOICE_FORMAT:
            raise VoiceError(f"{source} is not a gsv-onnx voice file; create one with gsv voice create")
        version = header.get("format_version")
        if version != VOICE_FORMAT_VERSION:
            raise VoiceError(
                f"{source} has voice format version {version!r}; this gsv-onnx reads "
                f"{VOICE_FORMAT_VERSION}: create the voice again"
            )
        metadata = dict(header.get("metadata") or {})
        metadata["path"] = source
        return cls(
            prompt_codes=arrays["prompt_codes"],
            ge=arrays["ge"],
            prompt_phone_ids=arrays["prompt_phone_ids"],
            prompt_bert=arrays["prompt_bert"],
            prompt_phones=list(header.get("prompt_phones") or []),
            prompt_text=str(header.get("prompt_text", "")),
            prompt_lang=str(header.get("prompt_lang", "zh")),
            prompt_norm_text=str(header.get("prompt_norm_text", "")),
            bundle_id=str(header.get("bundle_id", "")),
            created=str(header.get("created", "")),
            languages=list(header.get("languages") or []),
            metadata=metadata,
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> Voice:
        """Read a voice saved with `save`; raises `VoiceError` for missing or damaged files."""
        path = Path(path)
        if not path.is_file():
            raise VoiceError(f"voice file {path} does not exist; create it with gsv voice create")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise VoiceError(f"cannot read voice file {path}: {exc.strerror or exc}") from exc
        return cls.from_bytes(data, source=str(path))
