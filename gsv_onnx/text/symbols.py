"""The GPT-SoVITS V2 phone symbol table (732 entries), built from its rules (spec §6.1).

The order is upstream's: the V1 set (pad, Mandarin initials and tone-marked finals, Japanese
phones, punctuation/specials, ARPAbet) deduplicated and sorted by code point (ids 0..321), then
"[" and "]", then the Korean jamo plus 停/空 sorted, then the Cantonese phones sorted. The model's
phone embedding is indexed by these ids, so the order must never change.
"""

from __future__ import annotations

PAD = "_"

# Mandarin: 23 consonant initials plus the pseudo-initials of zero-initial syllables and y/w.
ZH_INITIALS = ["AA", "EE", "OO"] + "b c ch d f g h j k l m n p q r s sh t w x y z zh".split()
# The 39 final spellings of the opencpop convention (i0 = apical i after z/c/s, ir = after
# zh/ch/sh/r, v = ü, E/En = the finals of ye/yan).
ZH_FINALS = (
    "E En a ai an ang ao e ei en eng er i i0 ia ian iang iao ie in ing iong ir iu "
    "o ong ou u ua uai uan uang ui un uo v van ve vn"
).split()
ZH_TONED_FINALS = [f + str(tone) for f in ZH_FINALS for tone in range(1, 6)]

JA_PHONES = (
    "I N U a b by ch cl d dy e f g gy h hy i j k ky m my n ny o p py r ry s sh t ts u v w y z"
).split()

PUNCTUATION = ["!", "?", "…", ",", ".", "-"]
SPECIALS = ["SP", "SP2", "SP3", "UNK"]

_ARPA_VOWELS = "AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split()
_ARPA_CONSONANTS = "B CH D DH F G HH JH K L M N NG P R S SH T TH V W Y Z ZH".split()
# Upstream's ARPAbet list carries two unstressed spellings as well (bare ER and IH).
ARPABET = [v + str(stress) for v in _ARPA_VOWELS for stress in range(3)] + _ARPA_CONSONANTS + ["ER", "IH"]

KO_SYMBOLS = list("ㄱㄲㄴㄷㄸㄹㅁㅂㅃㅅㅆㅇㅈㅉㅊㅋㅌㅍㅎㅏㅐㅓㅔㅗㅜㅡㅣ") + ["停", "空"]

# Cantonese: "Y" + jyutping initial or final; finals carry tones 1..6 (a few also appear bare).
_YUE_TONES = {
    "0123456": "a aa ai ak au e g k m n o oi ok on ou p t uk",
    "123456": "aai aak aam aan aang aap aat aau am an ang ap at ei ek eng eoi eon eot i ik im in ing "
    "ip it iu oe oek oeng ong ot u ui un ung ut yu yun yut",
    "0": "b c d f gw h j kw l ng s w z",
}
YUE_SYMBOLS = [
    "Y" + base + (tone if tone != "0" else "")
    for tones, bases in _YUE_TONES.items()
    for base in bases.split()
    for tone in tones
]

_V1 = sorted(set([PAD] + ZH_INITIALS + ZH_TONED_FINALS + JA_PHONES + PUNCTUATION + SPECIALS + ARPABET))
SYMBOLS: list[str] = _V1 + ["[", "]"] + sorted(KO_SYMBOLS) + sorted(YUE_SYMBOLS)

symbol_to_id: dict[str, int] = {s: i for i, s in enumerate(SYMBOLS)}

UNK = "UNK"
UNK_ID = symbol_to_id[UNK]
NUM_SYMBOLS = len(SYMBOLS)

# Sanity checks against the ids the spec lists (§6.1); a wrong rule above fails at import.
assert len(_V1) == 322, len(_V1)
assert NUM_SYMBOLS == 732, NUM_SYMBOLS
assert len(set(SYMBOLS)) == 732
for _sym, _id in {
    "!": 0, ",": 1, "-": 2, ".": 3, "?": 4, "AA": 5, "EE": 33, "OO": 66, "SP": 77, "SP2": 78,
    "SP3": 79, "UNK": 86, "_": 95, "…": 321, "[": 322, "]": 323, "停": 351, "空": 352, "Ya": 353,
    "Yz": 731, "ㄱ": 324, "ㅣ": 350,
}.items():  # fmt: skip
    assert symbol_to_id[_sym] == _id, (_sym, symbol_to_id[_sym], _id)


def phone_to_id(phone: str) -> int:
    """Id of `phone` in the V2 table; anything not in the table maps to "UNK" (86), as upstream."""
    return symbol_to_id.get(phone, UNK_ID)


def phones_to_ids(phones: list[str]) -> list[int]:
    """Ids of a phone sequence (unknown phones -> UNK)."""
    return [symbol_to_id.get(p, UNK_ID) for p in phones]


def normalize_phones(phones: list[str]) -> list[str]:
    """Replace every phone that is not in the table by "UNK" (upstream's end-of-cleaning rule)."""
    return [p if p in symbol_to_id else UNK for p in phones]
