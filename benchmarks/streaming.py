"""Token-level streaming benchmark: time to first audio and real-time factor (issue 5).

    python benchmarks/streaming.py models/full-random.gsv [--threads N] [--repeat 3]

Random-weight GPTs never say EOS, so each piece is bounded to about natural speech length with
the token guard (3 tokens per phone, i.e. roughly 6 tokens = 0.24 s per Chinese syllable).
Reports, per text: time from the call to the first audio chunk, total time, audio seconds,
real-time factor, and the worst lag behind real-time playback after the first chunk (a chunk is
late when it arrives after the audio before it has finished playing).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SHORT = "今天天气很好，我们一起去公园散步吧。"  # 18 characters + punctuation
PARAGRAPH = (
    "春天来了，公园里的花都开了。孩子们在草地上奔跑，老人们坐在长椅上聊天。湖边的柳树发出了新芽，"
    "微风吹过，水面泛起一圈圈涟漪。远处传来鸟儿的歌声，让人感到无比轻松。我们沿着小路慢慢地走，"
    "一边欣赏风景，一边谈论最近读过的书。中午的时候，我们在湖边的小餐馆吃了午饭，"
    "点了几道当地的特色菜。下午，天空飘来几朵白云，阳光变得柔和起来。"
    "我们决定再去附近的博物馆看看，那里正在举办一场关于古代丝绸之路的展览。"
)


def reference_clip(path: Path) -> Path:
    rng = np.random.default_rng(1)
    rate = 44100
    t = np.arange(5 * rate) / rate
    phase = 2 * np.pi * np.cumsum(180 + 20 * np.sin(2 * np.pi * 3 * t)) / rate
    wave = sum(0.25 / k * np.sin(k * phase) for k in range(1, 6)) + 0.01 * rng.standard_normal(t.size)
    sf.write(path, wave.astype(np.float32), rate)
    return path


def measure(tts, voice, text: str, streaming) -> dict:
    options = dict(seed=1, max_tokens_per_phone=3.0, min_max_tokens=20, text_split_method="cut5")
    started = time.perf_counter()
    first = None
    played_until = None  # wall time at which the audio received so far finishes playing
    worst_lag = 0.0
    audio = 0
    for chunk in tts.stream(text, voice, streaming=streaming, **options):
        now = time.perf_counter()
        if not chunk.samples.size:
            continue
        if first is None:
            first = now - started
            played_until = now
        else:
            worst_lag = max(worst_lag, now - played_until)
        played_until = max(played_until, now) + chunk.samples.size / tts.sample_rate
        audio += chunk.samples.size
    total = time.perf_counter() - started
    seconds = audio / tts.sample_rate
    return {"first": first, "total": total, "audio": seconds, "rtf": total / seconds, "lag": worst_lag}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--first-chunk", type=int)
    parser.add_argument("--lookahead", type=int)
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    from gsv_onnx.runtime.options import RuntimeOptions, StreamingOptions
    from gsv_onnx.runtime.tts import TTS

    changes = {}
    if args.first_chunk is not None:
        changes["first_chunk_tokens"] = args.first_chunk
    if args.lookahead is not None:
        changes["lookahead_tokens"] = args.lookahead
    streaming = StreamingOptions(**changes)
    tts = TTS.load(args.bundle, RuntimeOptions(intra_op_threads=args.threads))
    ref = reference_clip(Path("/tmp/gsv-bench-ref.wav"))
    voice = tts.prepare_voice(ref, text="这是一段用来测试的参考音频。", lang="zh")
    measure(tts, voice, "预热一下。", streaming)  # sessions, jieba and BERT warm
    print(
        f"bundle {args.bundle} ({tts.bundle.precision}), threads {tts.runtime_options.threads}, {streaming}"
    )
    for name, text in (("20-char sentence", SHORT), ("200-char paragraph", PARAGRAPH)):
        runs = [measure(tts, voice, text, streaming) for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["first"])
        print(
            f"{name:<20} first audio {min(r['first'] for r in runs):.3f} s (median "
            f"{float(np.median([r['first'] for r in runs])):.3f}), total {best['total']:.2f} s for "
            f"{best['audio']:.2f} s of audio, RTF {min(r['rtf'] for r in runs):.3f}, "
            f"worst lag after start {min(r['lag'] for r in runs):.3f} s"
        )


if __name__ == "__main__":
    main()
