"""Reading numbers aloud in Mandarin (cardinals, digit strings, decimals), as upstream verbalizes them."""

from __future__ import annotations

DIGIT_CHARS = "零一二三四五六七八九"
# Unit characters by the power of ten they stand for; 万 and 亿 group four and eight digits.
_UNITS = ((8, "亿"), (4, "万"), (3, "千"), (2, "百"), (1, "十"))


def read_digits(digits: str, alt_one: bool = False) -> str:
    """Digit by digit ("110" -> 一一零; with alt_one, 一 is read 幺 as in phone numbers)."""
    text = "".join(DIGIT_CHARS[int(d)] for d in digits if d.isdigit())
    return text.replace("一", "幺") if alt_one else text


def _cardinal_parts(value: str) -> list[str]:
    # Numbers longer than eight digits are "<head>亿<8 digits>", recursively; peeling the 8-digit
    # groups in a loop gives the same reading without deep recursion on very long digit strings.
    groups: list[str] = []
    while len(value.lstrip("0")) > 8:
        groups.append(value[-8:])
        value = value[:-8]
    parts = _small_cardinal_parts(value)
    for group in reversed(groups):
        parts += ["亿"] + _small_cardinal_parts(group)
    return parts


def _small_cardinal_parts(value: str, use_zero: bool = True) -> list[str]:
    stripped = value.lstrip("0")
    if not stripped:
        return []
    if len(stripped) == 1:
        if use_zero and len(stripped) < len(value):
            return [DIGIT_CHARS[0], DIGIT_CHARS[int(stripped)]]
        return [DIGIT_CHARS[int(stripped)]]
    power, unit = next((p, u) for p, u in _UNITS if p < len(stripped))
    head, tail = value[:-power], value[-power:]
    return _small_cardinal_parts(head) + [unit] + _small_cardinal_parts(tail)


def read_cardinal(value: str) -> str:
    """Cardinal reading of an ASCII digit string ("1050" -> 一千零五十, "12" -> 十二, "0" -> 零)."""
    if not value:
        return ""
    value = value.lstrip("0")
    if not value:
        return DIGIT_CHARS[0]
    parts = _cardinal_parts(value)
    if len(parts) >= 2 and parts[0] == "一" and parts[1] == "十":
        parts = parts[1:]
    return "".join(parts)


def read_number(value: str) -> str:
    """Reading of "123", "3.20" or ".5": cardinal integer part, decimals digit by digit.

    Trailing zeros of the decimals are dropped except one ("3.20" -> 三点二零 keeps the 0 that
    ends it, "3.2" -> 三点二), which is upstream's behaviour.
    """
    integer, _, decimal = value.partition(".")
    if "." in decimal:
        raise ValueError(f"number {value!r} has more than one decimal point")
    result = read_cardinal(integer)
    decimal = decimal.rstrip("0") + "0" if decimal.endswith("0") else decimal.rstrip("0")
    if decimal:
        result = (result or DIGIT_CHARS[0]) + "点" + read_digits(decimal)
    return result
