"""Text frontend speed: time per 100 characters per language, and cold-start cost.

Cold start is measured in a fresh interpreter per language: importing `gsv_onnx.text`, then the
first `phonemize` call (which imports the language module and loads its dictionaries/models),
then a second call of the same text for comparison. Steady state is the median over repeats of
phonemizing a paragraph, reported per 100 input characters.

    python benchmarks/bench_frontend.py            # all languages whose pack is installed
    python benchmarks/bench_frontend.py --langs zh en --repeats 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

SAMPLES = {
    "zh": (
        "今天是2024年3月15日，天气晴朗，气温在15到20摄氏度之间。银行行长说这件事情很重要，"
        "我们一定要在下午3:30之前完成报告。小明买了3斤苹果和2个西瓜，一共花了45.5元。"
        "他一边看书一边听音乐，不知不觉就到了晚上。你觉得这个方案怎么样？我觉得还不错！"
    ),
    "en": (
        "On March 15th, 2024, the weather was clear and the temperature stayed between 59 and 68 degrees. "
        "The bank manager said this matter was important, and we had to finish the report before 3:30 pm. "
        "Dr. Smith bought 3 apples for $4.50 and read the record of the meeting twice."
    ),
    "ja": (
        "今日は二〇二四年三月十五日で、天気は晴れです。銀行の支店長はこの件がとても重要だと言いました。"
        "私たちは午後三時半までに報告書を仕上げなければなりません。東京の桜はもうすぐ満開になります。"
    ),
    "ko": (
        "오늘은 2024년 3월 15일이고 날씨가 맑습니다. 은행 지점장은 이 일이 매우 중요하다고 말했습니다. "
        "우리는 오후 세 시 반까지 보고서를 끝내야 합니다. 서울의 벚꽃이 곧 만개할 것입니다."
    ),
    "yue": (
        "我哋今日去飲茶，天氣好好，大概二十度左右。銀行經理話呢件事好重要，"
        "我哋一定要喺下晝三點半之前做完份報告。你覺得呢個方案點樣？我覺得幾好！"
    ),
    "auto": (
        "我今天用ChatGPT写了一段Python代码，效率提高了50%。The meeting was moved to 3 pm，"
        "大家记得带上laptop。明天我们去Starbucks喝咖啡吧！"
    ),
}

_COLD = r"""
import json, sys, time
t0 = time.perf_counter()
from gsv_onnx.text import phonemize
t1 = time.perf_counter()
text, lang = sys.argv[1], sys.argv[2]
phonemize(text, lang)
t2 = time.perf_counter()
phonemize(text, lang)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_call_s": t2 - t1, "second_call_s": t3 - t2}))
"""


def cold_start(lang: str) -> dict:
    """Import and first-call cost of `lang` in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", _COLD, SAMPLES[lang], lang],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def steady(lang: str, repeats: int) -> dict:
    """Median seconds per call and per 100 characters once everything is loaded."""
    from gsv_onnx.text import phonemize

    text = SAMPLES[lang]
    result = phonemize(text, lang)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        phonemize(text, lang)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "chars": len(text),
        "phones": len(result.phones),
        "median_call_s": median,
        "ms_per_100_chars": 1000.0 * median * 100.0 / len(text),
    }


def available(lang: str) -> bool:
    """True when the language's pack can be used here."""
    from gsv_onnx.errors import GsvError
    from gsv_onnx.text import phonemize

    try:
        phonemize(SAMPLES[lang][:20], lang)
    except GsvError as exc:
        print(f"skip {lang}: {exc}", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--langs", nargs="*", default=list(SAMPLES), choices=list(SAMPLES))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    rows = {}
    for lang in args.langs:
        cold = cold_start(lang)
        if not available(lang):
            continue
        rows[lang] = {**cold, **steady(lang, args.repeats)}

    print("| lang | chars | import s | first call s | 2nd call s | steady ms/100 chars |")
    print("|---|---|---|---|---|---|")
    for lang, row in rows.items():
        print(
            f"| {lang} | {row['chars']} | {row['import_s']:.2f} | {row['first_call_s']:.2f} | "
            f"{row['second_call_s'] * 1000:.0f} ms | {row['ms_per_100_chars']:.1f} |"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
