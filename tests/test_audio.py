"""gsv_onnx.audio: decoding, resampling, spectrogram, encoding, atomic save, reference preparation."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from gsv_onnx import audio
from gsv_onnx.audio import Audio, AudioError

SR = 32000


def sine(seconds: float, sr: int = SR, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def wav_bytes(data: np.ndarray, sr: int, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, data, sr, format="WAV", subtype=subtype)
    return buffer.getvalue()


def dominant_frequency(samples: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * sr / len(samples))


# ------------------------------------------------------------------------------------------ decode


def test_load_from_path_bytes_and_file_object(tmp_path):
    x = sine(0.5)
    path = tmp_path / "a.wav"
    sf.write(path, audio.to_int16(x), SR, subtype="PCM_16")
    expected = audio.to_int16(x) / 32768
    for source in (path, str(path), path.read_bytes(), open(path, "rb")):
        samples, rate = audio.load_audio(source)
        assert rate == SR and samples.dtype == np.float32 and samples.ndim == 1
        np.testing.assert_allclose(samples, expected, atol=1e-6)


def test_stereo_is_averaged():
    left, right = sine(0.25, amp=0.5), sine(0.25, freq=1000.0, amp=0.25)
    samples, rate = audio.load_audio(wav_bytes(np.stack([left, right], axis=1), 44100, "FLOAT"))
    assert rate == 44100
    np.testing.assert_allclose(samples, (left + right) / 2, atol=1e-7)


@pytest.mark.parametrize(
    "data, match",
    [
        (b"", "empty"),
        (b"this is not audio at all" * 20, "cannot decode"),
        (bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)), "cannot decode"),
    ],
)
def test_bad_bytes(data, match):
    with pytest.raises(AudioError, match=match):
        audio.load_audio(data)


def test_truncated_and_empty_files(tmp_path):
    good = wav_bytes(sine(0.5), SR)
    with pytest.raises(AudioError):
        audio.load_audio(good[:30])  # header cut in the middle
    with pytest.raises(AudioError, match="no samples"):
        audio.load_audio(wav_bytes(np.zeros(0, dtype=np.float32), SR))
    with pytest.raises(AudioError, match="does not exist"):
        audio.load_audio(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="directory"):
        audio.load_audio(tmp_path)
    with pytest.raises(AudioError, match="cannot read audio"):
        audio.load_audio(12345)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_rejected(bad):
    x = sine(0.2)
    x[100] = bad
    with pytest.raises(AudioError, match="NaN or infinite"):
        audio.load_audio(wav_bytes(x, SR, "FLOAT"))


# ---------------------------------------------------------------------------------------- resample


def test_resample_length_and_content():
    x = sine(1.0, sr=44100, freq=1000.0)
    y = audio.resample(x, 44100, 16000)
    assert y.dtype == np.float32 and y.shape == (int(np.ceil(44100 * 16000 / 44100)),)
    assert abs(dominant_frequency(y, 16000) - 1000.0) < 2.0
    assert abs(np.abs(y[1000:-1000]).max() - 0.5) < 0.01
    odd = audio.resample(np.ones(12345, dtype=np.float32), 22050, 32000)
    assert odd.shape == (int(np.ceil(12345 * (32000 / 22050))),)
    same = audio.resample(x, 44100, 44100)
    np.testing.assert_array_equal(same, x)
    assert same is not x


def test_resample_matches_plain_soxr_hq():
    import soxr

    x = np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.1
    ours = audio.resample(x, 48000, 16000)
    ref = soxr.resample(x, 48000, 16000, quality="HQ")
    np.testing.assert_array_equal(ours[: len(ref)], ref[: len(ours)])


def test_resample_rejects_bad_rates():
    with pytest.raises(AudioError, match="sample rate"):
        audio.resample(sine(0.1), 0, 16000)


# ------------------------------------------------------------------------------------- spectrogram


def test_spectrogram_shape_and_peak():
    x = sine(1.0, freq=1000.0)
    spec = audio.spectrogram(x)
    assert spec.shape == (1025, len(x) // 640) and spec.dtype == np.float32
    bin_of_1k = 1000 / SR * 2048
    assert abs(int(np.argmax(spec[:, 10])) - bin_of_1k) <= 1
    # Silence gives sqrt(1e-8) everywhere.
    np.testing.assert_allclose(audio.spectrogram(np.zeros(3200, np.float32)), 1e-4, rtol=1e-5)
    with pytest.raises(AudioError, match="more than 704"):
        audio.spectrogram(np.zeros(500, np.float32))


def test_spectrogram_matches_torch_stft():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(2).uniform(-0.8, 0.8, 32000 * 2 + 123).astype(np.float32)
    y = torch.from_numpy(x)[None, None]
    y = torch.nn.functional.pad(y, (704, 704), mode="reflect")[:, 0]
    stft = torch.stft(
        y,
        2048,
        hop_length=640,
        win_length=2048,
        window=torch.hann_window(2048),
        center=False,
        pad_mode="reflect",
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    ref = torch.sqrt(stft.real.pow(2) + stft.imag.pow(2) + 1e-8)[0].numpy()
    ours = audio.spectrogram(x)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 1e-4  # measured 7.6e-6 (peaks ~43)


# ----------------------------------------------------------------------------------------- encode


def test_int16_conversion_clips_instead_of_wrapping():
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 1.5, -2.0, 0.99999, 1e-5], dtype=np.float32)
    np.testing.assert_array_equal(
        audio.to_int16(x), [0, 16384, -16384, 32767, -32768, 32767, -32768, 32767, 0]
    )


@pytest.mark.parametrize("fmt", audio.available_formats())
def test_round_trip_every_format(fmt):
    x = sine(1.0, freq=440.0, amp=0.5)
    data = audio.encode(x, SR, fmt)
    assert isinstance(data, bytes) and len(data) > 0
    if fmt == "pcm":
        assert len(data) == 2 * len(x)
        decoded, rate = np.frombuffer(data, "<i2").astype(np.float32) / 32768, SR
    else:
        decoded, rate = audio.load_audio(data)
    if fmt in ("wav", "flac", "pcm"):
        assert rate == SR
        np.testing.assert_array_equal((decoded * 32768).astype(np.int16), audio.to_int16(x))
    else:  # lossy: same pitch, level and duration
        assert rate == (48000 if fmt == "opus" else SR)
        assert abs(len(decoded) / rate - 1.0) < 0.1
        assert abs(dominant_frequency(decoded, rate) - 440.0) < 3.0
        mid = decoded[len(decoded) // 4 : 3 * len(decoded) // 4]
        assert abs(np.sqrt(np.mean(mid**2)) - 0.5 / np.sqrt(2)) < 0.05


def test_encode_rejects_bad_input():
    with pytest.raises(AudioError, match="unknown audio format"):
        audio.encode(sine(0.1), SR, "aiff2")
    bad = sine(0.1)
    bad[3] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        audio.encode(bad, SR, "wav")
    with pytest.raises(AudioError, match="empty"):
        audio.encode(np.zeros(0, np.float32), SR, "wav")
    with pytest.raises(AudioError, match="1-D"):
        audio.encode(np.zeros((2, 10), np.float32), SR, "wav")


# ------------------------------------------------------------------------------------------- save


def test_audio_dataclass_and_save_by_suffix(tmp_path):
    clip = Audio(sine(0.5), SR)
    assert clip.duration == pytest.approx(0.5)
    for name, rate in (("out.wav", SR), ("out.flac", SR), ("out.ogg", SR), ("out.mp3", SR)):
        path = clip.save(tmp_path / name)
        info = sf.info(path)
        assert info.samplerate == rate and info.channels == 1
    raw = clip.save(tmp_path / "out.pcm")
    assert raw.stat().st_size == 2 * len(clip.samples)
    forced = clip.save(tmp_path / "no_suffix", fmt="flac")
    assert sf.info(forced).format == "FLAC"
    with pytest.raises(AudioError, match="suffix"):
        clip.save(tmp_path / "out.xyz")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["out.wav", "out.flac", "out.ogg", "out.mp3", "out.pcm", "no_suffix"]
    )
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "out.wav").stat().st_mode & 0o777 == 0o666 & ~umask
    loaded = Audio.load(tmp_path / "out.wav")
    np.testing.assert_array_equal(audio.to_int16(loaded.samples), audio.to_int16(clip.samples))


def test_save_to_unwritable_places_names_the_path(tmp_path):
    clip = Audio(sine(0.1), SR)
    missing = tmp_path / "no" / "such" / "dir" / "out.wav"
    with pytest.raises(AudioError, match="does not exist") as info:
        clip.save(missing)
    assert str(missing) in str(info.value)
    with pytest.raises(AudioError, match="is a directory"):
        clip.save(tmp_path, fmt="wav")
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            with pytest.raises(AudioError, match="locked"):
                clip.save(locked / "out.wav")
            assert list(locked.iterdir()) == []
        finally:
            locked.chmod(0o700)
    if sys.platform.startswith("linux"):  # as root too: nothing can be created in /proc
        with pytest.raises(AudioError, match="/proc/out.wav"):
            clip.save("/proc/out.wav")


def test_failed_save_leaves_nothing_partial(tmp_path, monkeypatch):
    target = tmp_path / "keep.wav"
    target.write_bytes(b"old contents")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(audio.os, "replace", broken_replace)
    with pytest.raises(AudioError, match="No space left") as info:
        Audio(sine(0.2), SR).save(target)
    assert str(target) in str(info.value)
    assert target.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.wav"]


# ------------------------------------------------------------------------------------- reference


def test_prepare_reference_shapes_and_padding():
    x = sine(4.0, sr=44100, amp=0.3)
    wav16k, wav32k = audio.prepare_reference(x, 44100)
    n16 = int(np.ceil(len(x) * 16000 / 44100))
    assert wav16k.dtype == np.float32 and wav16k.shape == (n16 + 9600,)
    assert not wav16k[-9600:].any() and np.abs(wav16k[:n16]).max() > 0.25
    assert wav32k.dtype == np.float32 and wav32k.shape == (int(np.ceil(len(x) * 32000 / 44100)),)
    # No loudness normalization: the level is kept.
    assert abs(np.abs(wav32k[1000:-1000]).max() - 0.3) < 0.01


def test_prepare_reference_length_bounds_on_16k_signal():
    audio.prepare_reference(sine(3.0, sr=16000), 16000)  # exactly 48,000 samples: accepted
    audio.prepare_reference(sine(10.0, sr=48000), 48000)  # exactly 160,000 at 16 kHz: accepted
    with pytest.raises(AudioError, match=r"2\.90 s .*between 3 and 10 s"):
        audio.prepare_reference(sine(2.9, sr=32000), 32000)
    with pytest.raises(AudioError, match=r"10\.50 s"):
        audio.prepare_reference(sine(10.5, sr=22050), 22050)


def test_prepare_reference_rejects_silence_nan_and_bad_shapes():
    with pytest.raises(AudioError, match="silent"):
        audio.prepare_reference(np.zeros(5 * SR, np.float32), SR)
    with pytest.raises(AudioError, match="silent"):
        audio.prepare_reference(sine(5.0, amp=1e-4), SR)
    x = sine(5.0)
    x[7] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        audio.prepare_reference(x, SR)
    with pytest.raises(AudioError, match="1-D"):
        audio.prepare_reference(np.zeros((2, 5 * SR), np.float32), SR)
    with pytest.raises(AudioError, match="empty"):
        audio.prepare_reference(np.zeros(0, np.float32), SR)


def test_reference_peak_guard():
    loud = audio.reference_wav32k(sine(1.0, amp=1.5), SR)
    assert abs(np.abs(loud).max() - 1.0) < 1e-3  # divided by the peak
    very_loud = audio.reference_wav32k(sine(1.0, amp=3.0), SR)
    assert abs(np.abs(very_loud).max() - 1.5) < 1e-3  # divided by at most 2
    quiet = audio.reference_wav32k(sine(1.0, amp=0.9), SR)
    np.testing.assert_array_equal(quiet, sine(1.0, amp=0.9))


def test_audio_module_does_not_import_torch():
    code = "import sys, gsv_onnx.audio; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
