"""Korean frontend (gsv_onnx.text.korean): g2pk2 + MeCab, offline, jamo post-processing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gsv_onnx.text import korean
from gsv_onnx.text.symbols import symbol_to_id

if not korean.is_available():
    pytest.skip("Korean pack not installed (pip install 'gsv-onnx[ko]')", allow_module_level=True)

PARITY = Path(__file__).parent / "data" / "frontend_parity.jsonl"


def test_hello_in_jamo_with_final_period() -> None:
    assert korean.g2p("안녕하세요").phones == list("ㅇㅏㄴㄴㅣㅓㅇㅎㅏㅅㅔㅇㅣㅗ") + ["."]


def test_pronunciation_rules_spaces_and_marks() -> None:
    out = korean.g2p("반갑습니다. 국물이!").phones
    # 반갑습니다 -> 반갑씀니다 (g2pk2), 국물이 -> 궁무리; space -> 空; ! kept
    assert out[:14] == list("ㅂㅏㄴㄱㅏㅂㅆㅡㅁㄴㅣㄷㅏ.")
    assert "空" in out and out[-1] == "!"
    assert out[out.index("空") + 1 : out.index("空") + 8] == list("ㄱㅜㅇㅁㅜㄹㅣ")


def test_latin_letters_are_spelled_in_hangul() -> None:
    assert korean.latin_to_hangul("AI") == "에이아이"
    assert korean.latin_to_hangul("gpt") == "지피티"


def test_compound_vowels_split_and_g2pk2_fix() -> None:
    assert korean.divide_hangul("과") == "ㄱㅗㅏ"
    assert korean.divide_hangul("의") == "ㅇㅡㅣ"
    assert korean.fix_g2pk2_error("ㅇㅡㄹ ㄹㅏ") == "ㅇㅡㄹ ㄴㅏ"
    assert korean.fix_g2pk2_error("ㄴㅡㄹ ㄹㅏ") == "ㄴㅡㄹ ㄹㅏ"


def test_unknown_characters_become_stop_symbol() -> None:
    out = korean.g2p("가😀나").phones
    assert "停" in out
    assert all(p in symbol_to_id for p in out)
    # lone surrogates and NUL never reach MeCab; rare jamo do not crash the decomposition
    assert all(p in symbol_to_id for p in korean.g2p("가\ud800나\x00다ퟜ").phones)


def test_loads_offline_without_nltk_download_or_pip() -> None:
    code = (
        "import nltk, subprocess\n"
        "def boom(*a, **k): raise SystemExit('download attempted')\n"
        "nltk.download = boom\n"
        "subprocess.Popen = boom\n"
        "from gsv_onnx.text import korean\n"
        "print(' '.join(korean.g2p('값이 싸요').phones))\n"
        "assert nltk.download is boom\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "ㄱ ㅏ ㅂ ㅆ ㅣ" in done.stdout


def test_parity_with_upstream_korean_segments() -> None:
    if not PARITY.is_file():
        pytest.skip("tests/data/frontend_parity.jsonl is not present")
    rows = [json.loads(line) for line in PARITY.read_text(encoding="utf-8").splitlines() if line.strip()]
    segments = [{"id": r["id"], **seg} for r in rows for seg in r["segments"] if seg["lang"] == "ko"]
    mismatched = [seg["id"] for seg in segments if korean.g2p(seg["text"]).phones != seg["phones"]]
    assert not mismatched, mismatched


def test_prepared_rules_give_g2pk2s_own_output() -> None:
    # our G2p.__call__ (rules compiled once) must equal g2pk2's original method step for step
    import random

    import g2pk2.g2pk2 as g2pk2_module

    model, _ = korean._load()
    rng = random.Random(7)
    common = list("가나다라마바사아자차카타파하는을를이가에서의도고한국어좋아요습니다했었겠값닭읽밟넓젊")
    syllables = [chr(c) for c in range(0xAC00, 0xD7A4)]
    for _ in range(300):
        text = "".join(
            rng.choice(common) if rng.random() < 0.6 else rng.choice(syllables + list(" 0123456789,.!?"))
            for _ in range(rng.randint(1, 20))
        )
        assert model(text) == g2pk2_module.G2p.__call__(model, text), text
