"""Build gsv_onnx/data/zh/paddlespeech_frontend.json from the PaddleSpeech wheel on PyPI.

The Mandarin frontend upstream GPT-SoVITS uses descends from PaddleSpeech (Apache-2.0). Its word
lists and traditional->simplified character table are data we need for parity; this script reads
them out of the published wheel (literals only, parsed with `ast`, no code executed) and writes a
JSON file with the license notice. Run:

    pip download paddlespeech==1.5.0 --no-deps -d /tmp/ps
    python scripts/build_zh_data.py /tmp/ps/paddlespeech-1.5.0-py3-none-any.whl
"""

from __future__ import annotations

import ast
import json
import re
import sys
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "gsv_onnx" / "data" / "zh" / "paddlespeech_frontend.json"
PREFIX = "paddlespeech/t2s/frontend/"


def _literals(source: str) -> dict[str, object]:
    """Every `name = <literal>` / `self.name = <literal>` assignment in a module."""
    found: dict[str, object] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            name = getattr(target, "attr", None) or getattr(target, "id", None)
            try:
                found[name] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return found


def _split_top_level(text: str) -> list[str]:
    """`text` split at the `|` characters outside parentheses."""
    depth, start, parts = 0, 0, []
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _quantifier_words(pattern: str) -> list[str]:
    """Expand the measure-word alternation into plain words, longest first (order kept otherwise)."""

    def expand(part: str) -> list[str]:
        m = re.search(r"\(([^()]*(?:\([^()]*\)[^()]*)*)\)", part)
        if not m:
            return [part]
        out = []
        for option in _split_top_level(m.group(1)):
            out += expand(part[: m.start()] + option + part[m.end() :])
        return out

    words: list[str] = []
    for part in _split_top_level(pattern.strip()[1:-1]):
        for word in expand(part):
            if word and word not in words:
                words.append(word)
    return words


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as zf:
        read = lambda name: zf.read(PREFIX + name).decode("utf-8")  # noqa: E731
        license_text = next(
            zf.read(n).decode("utf-8") for n in zf.namelist() if n.endswith("LICENSE") and "dist-info" in n
        )
        version = (
            next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
            .split("-")[1]
            .split(".dist")[0]
        )
        sandhi = _literals(read("tone_sandhi.py"))
        frontend = _literals(read("zh_frontend.py"))
        chars = _literals(read("zh_normalization/char_convert.py"))
        num = _literals(read("zh_normalization/num.py"))
    data = {
        "source": f"PaddleSpeech {version} (PyPI wheel), paddlespeech/t2s/frontend",
        "license": "Apache-2.0",
        "copyright": "Copyright (c) 2021 PaddlePaddle Authors. All Rights Reserved.",
        "license_head": license_text.strip().splitlines()[0],
        "must_neutral_tone_words": sorted(sandhi["must_neural_tone_words"]),
        "must_not_neutral_tone_words": sorted(sandhi["must_not_neural_tone_words"]),
        "must_erhua": sorted(frontend["must_erhua"]),
        "not_erhua": sorted(frontend["not_erhua"]),
        "simplified_chars": chars["simplified_charcters"],
        "traditional_chars": chars["traditional_characters"],
        "quantifiers": _quantifier_words(num["COM_QUANTIFIERS"]),
    }
    assert len(data["simplified_chars"]) == len(data["traditional_chars"])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
