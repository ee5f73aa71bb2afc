"""Missing language packs: the Japanese and Korean modules raise MissingDependencyError naming the extra.

Runs whether or not the packs are installed: each check hides the pack in a fresh interpreter.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

_CHECK = """
import sys
sys.modules[{module!r}] = None  # as if the package were not installed
from gsv_onnx.errors import MissingDependencyError
from gsv_onnx.text import {frontend}
try:
    {frontend}.g2p({text!r})
except MissingDependencyError as exc:
    print("MISSING:", exc)
"""


@pytest.mark.parametrize(
    ("frontend", "module", "text", "extra"),
    [
        ("japanese", "pyopenjtalk", "テスト", "gsv-onnx[ja]"),
        ("korean", "g2pk2", "안녕", "gsv-onnx[ko]"),
        ("korean", "mecab", "안녕", "gsv-onnx[ko]"),  # g2pk2 itself would pip-install it
    ],
)
def test_missing_pack_names_the_extra(frontend: str, module: str, text: str, extra: str) -> None:
    code = _CHECK.format(module=module, frontend=frontend, text=text)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "MISSING:" in done.stdout and extra in done.stdout, done.stdout
