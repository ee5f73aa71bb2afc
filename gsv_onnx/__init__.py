"""gsv-onnx: GPT-SoVITS V2 voices on ordinary CPUs through ONNX Runtime.

Public API (imported lazily so `import gsv_onnx` stays cheap)::

    from gsv_onnx import TTS, Voice
    tts = TTS.load("my_voice.gsv")
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "TTS": "gsv_onnx.runtime.tts",
    "Voice": "gsv_onnx.runtime.voice",
    "SynthesisOptions": "gsv_onnx.runtime.options",
    "RuntimeOptions": "gsv_onnx.runtime.options",
    "Audio": "gsv_onnx.audio",
    "GsvError": "gsv_onnx.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gsv_onnx' has no attribute {name!r}")
