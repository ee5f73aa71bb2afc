"""Audio encoding for HTTP responses: whole files and incremental streams.

Whole responses use `gsv_onnx.audio.encode` (aac through ffmpeg, as upstream). Streamed responses
need one continuous file that a player can decode while it arrives, so each format is encoded
incrementally:

- wav: a header declaring an unknown (maximal) length, then 16-bit PCM per chunk (what players
  and libsndfile read to the end of the stream);
- pcm/raw: 16-bit little-endian samples, no header;
- ogg (Vorbis), opus, mp3, flac: one libsndfile encoder fed chunk by chunk, writing into an
  append-only sink; bytes are sent as the encoder produces them. Encoders rewrite their headers
  when they close (frame counts, checksums); those rewrites cannot reach bytes already sent, so
  they are dropped and the stream's header says "length unknown" instead:
  mp3 is encoded at a constant bit rate and its placeholder tag frame is left out, flac keeps
  "total samples = 0" (unknown, allowed by the FLAC format);
- aac: ADTS frames from ffmpeg per chunk (ADTS is self-framed, so the pieces join up).
"""

from __future__ import annotations

import shutil
import struct
import subprocess

import numpy as np
import soundfile as sf

from gsv_onnx.audio import encode, resample, to_int16
from gsv_onnx.errors import AudioError

CONTENT_TYPES = {
    "wav": "audio/wav",
    "raw": "audio/raw",
    "pcm": "audio/pcm",
    "ogg": "audio/ogg",
    "opus": "audio/ogg; codecs=opus",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "aac": "audio/aac",
}

# libsndfile container/subtype per streamed format (other formats are handled by hand).
_SNDFILE_FORMATS = {
    "ogg": ("OGG", "VORBIS"),
    "opus": ("OGG", "OPUS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "flac": ("FLAC", "PCM_16"),
}
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
# libsndfile maps compression_level 0..1 to 320..32 kbit/s for constant-rate MP3: 0.5 is ~176k.
_MP3_COMPRESSION = 0.5


def format_available(fmt: str) -> bool:
    """Whether this server can write `fmt` (aac needs ffmpeg; the others the installed libsndfile)."""
    if fmt in ("wav", "pcm", "raw"):
        return True
    if fmt == "aac":
        return shutil.which("ffmpeg") is not None
    container, subtype = _SNDFILE_FORMATS[fmt]
    return bool(sf.check_format(container, subtype))


def encode_all(samples: np.ndarray, rate: int, fmt: str, rate_out: int | None = None) -> bytes:
    """The whole of `samples` (float32 mono at `rate`) as one file of `fmt`, at `rate_out` if given."""
    if rate_out and rate_out != rate:
        samples, rate = resample(samples, rate, rate_out), rate_out
    if fmt == "raw":
        fmt = "pcm"
    if fmt == "aac":
        return ffmpeg_aac(samples, rate)
    return encode(samples, rate, fmt)


def wav_stream_header(sample_rate: int) -> bytes:
    """A 16-bit mono WAV header for a stream of unknown length (sizes set to the maximum)."""
    unknown = 0xFFFFFFFF
    return (
        b"RIFF"
        + struct.pack("<I", unknown)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", unknown)
    )


class _AppendSink:
    """A write-only file object for libsndfile that keeps the bytes not yet sent.

    Writes at or beyond what was sent are kept; writes into bytes already sent (header rewrites
    at close) are dropped.
    """

    def __init__(self) -> None:
        self._pending = bytearray()
        self._sent = 0  # bytes handed out so far
        self._position = 0
        self._length = 0

    def write(self, data) -> int:
        data = bytes(data)
        start, end = self._position, self._position + len(data)
        self._position = end
        self._length = max(self._length, end)
        if end <= self._sent:
            return len(data)
        if start < self._sent:
            data, start = data[self._sent - start :], self._sent
        offset = start - self._sent
        if offset + len(data) > len(self._pending):
            self._pending.extend(b"\0" * (offset + len(data) - len(self._pending)))
        self._pending[offset : offset + len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            self._position = offset
        elif whence == 1:
            self._position += offset
        else:
            self._position = self._length + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def read(self, size: int = -1) -> bytes:  # libsndfile never reads a file opened for writing
        return b""

    def take(self) -> bytes:
        """The bytes written since the last call."""
        data = bytes(self._pending)
        self._sent += len(data)
        self._pending.clear()
        return data


class StreamEncoder:
    """Encodes consecutive chunks of one stream; `feed` and `finish` return the bytes to send."""

    def __init__(self, fmt: str, sample_rate: int) -> None:
        self.fmt = "pcm" if fmt == "raw" else fmt
        self.sample_rate = sample_rate
        self._started = False
        self._file: sf.SoundFile | None = None
        self._sink: _AppendSink | None = None
        self._first_taken = False
        if self.fmt in _SNDFILE_FORMATS:
            container, subtype = _SNDFILE_FORMATS[self.fmt]
            rate = sample_rate
            if self.fmt == "opus" and rate not in _OPUS_RATES:
                rate = 48000
            self._file_rate = rate
            self._sink = _AppendSink()
            extra = {}
            if self.fmt == "mp3":
                extra = {"bitrate_mode": "CONSTANT", "compression_level": _MP3_COMPRESSION}
            try:
                self._file = sf.SoundFile(
                    self._sink, "w", samplerate=rate, channels=1, format=container, subtype=subtype, **extra
                )
            except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
                raise AudioError(f"cannot stream {self.fmt}: {exc}; choose wav or pcm") from exc

    def feed(self, samples: np.ndarray) -> bytes:
        """Encode the next chunk (float32 mono at `sample_rate`)."""
        head = b""
        if not self._started:
            self._started = True
            if self.fmt == "wav":
                head = wav_stream_header(self.sample_rate)
        if self.fmt in ("wav", "pcm"):
            return head + to_int16(samples).astype("<i2").tobytes()
        if self.fmt == "aac":
            return ffmpeg_aac(samples, self.sample_rate)
        data = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
        if self._file_rate != self.sample_rate:
            data = np.clip(resample(data, self.sample_rate, self._file_rate), -1.0, 1.0)
        if self.fmt == "flac":
            data = to_int16(data)
        self._file.write(data)
        return self._take()

    def finish(self) -> bytes:
        """Flush the encoder; the last bytes of the stream."""
        if self._file is None:
            return b""
        self._file.close()
        self._file = None
        return self._take()

    def close(self) -> None:
        """Release the encoder without producing more output (stream abandoned)."""
        if self._file is not None:
            try:
                self._file.close()
            except Exception:  # noqa: BLE001 - nothing to report to a gone client
                pass
            self._file = None

    def _take(self) -> bytes:
        data = self._sink.take()
        if data and not self._first_taken:
            self._first_taken = True
            if self.fmt == "mp3":
                data = _drop_placeholder_frame(data)
        return data


def _drop_placeholder_frame(data: bytes) -> bytes:
    """Leave out the MP3 encoder's first frame when it is the all-zero placeholder of the tag frame.

    LAME reserves one frame for its Xing/Info tag and fills it in when the file closes; in a stream
    it would stay a frame that claims the wrong bit rate and length, so readers cut the audio short.
    """
    if len(data) < 4 or data[0] != 0xFF or (data[1] & 0xE0) != 0xE0:
        return data
    size = _mp3_frame_size(data[:4])
    if size is None or size > len(data) or any(data[4:size]):
        return data
    return data[size:]


_MP3_BITRATES = {  # (version id, layer III) -> kbit/s by index
    3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3_frame_size(header: bytes) -> int | None:
    version = (header[1] >> 3) & 0x3
    layer = (header[1] >> 1) & 0x3
    bitrate_index = header[2] >> 4
    rate_index = (header[2] >> 2) & 0x3
    padding = (header[2] >> 1) & 0x1
    if layer != 1 or version == 1 or rate_index == 3 or bitrate_index in (0, 15):
        return None
    bitrates = _MP3_BITRATES[3 if version == 3 else 2]
    rate = _MP3_RATES[version][rate_index]
    per_frame = 144 if version == 3 else 72
    return per_frame * bitrates[bitrate_index] * 1000 // rate + padding


def ffmpeg_aac(samples: np.ndarray, rate: int) -> bytes:
    """AAC in an ADTS stream at 192 kbit/s through ffmpeg, as upstream does."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioError("aac needs ffmpeg on the server, which is not installed; use wav, ogg, flac or mp3")
    pcm = to_int16(samples).astype("<i2").tobytes()
    command = [
        ffmpeg,
        "-loglevel",
        "error",
        "-f",
        "s16le",
        "-ar",
        str(rate),
        "-ac",
        "1",
        "-i",
        "pipe:0",
        "-c:a",
        "aac",
        "-b:a",
        "192k",
        "-f",
        "adts",
        "pipe:1",
    ]
    result = subprocess.run(command, input=pcm, capture_output=True, timeout=120, check=False)
    if result.returncode != 0:
        raise AudioError(f"ffmpeg failed to encode aac: {result.stderr.decode(errors='replace')[:200]}")
    return result.stdout
