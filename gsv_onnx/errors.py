"""The project's error types: every user-facing failure raises a subclass of `GsvError`.

Messages name the problem and the fix; the CLI prints them as one line and exits non-zero.
"""

from __future__ import annotations


class GsvError(Exception):
    """Base class of every error gsv-onnx raises on purpose."""


class CheckpointError(GsvError):
    """A checkpoint file cannot be read, is of an unsupported version, or does not match the model."""


class GraphMismatchError(CheckpointError):
    """An exported graph disagrees with its PyTorch module beyond tolerance (a converter bug)."""


class UnsupportedVersionError(CheckpointError):
    """The checkpoint is a GPT-SoVITS version other than V2."""


class BundleError(GsvError):
    """A bundle directory is missing, incomplete, corrupted or of an unknown format version."""


class TextError(GsvError):
    """Input text cannot be turned into phones (empty, punctuation only, unknown language, ...)."""


class AudioError(GsvError):
    """Reference or output audio is unusable (unreadable, too short or long, silent, NaN, ...)."""


class VoiceError(GsvError):
    """A prepared voice file is unreadable or belongs to another bundle."""


class MissingDependencyError(GsvError):
    """An optional extra (language pack, converter, server) is not installed."""


class OptionsError(GsvError, ValueError):
    """A synthesis or runtime option is out of range or unknown."""
