"""GPT decode benchmark on a full-size random V2 GPT (24 layers x 512): speed and int8 fidelity.

Builds (or reuses, in --work-dir) a random-weight full-size GPT, exports the two graphs, makes the
requested precision variants, then for each precision and thread count reports:

* prefill time for a ~200-position input (120 text phones + 80 prompt codes),
* decode ms/token (median, p90) over `--tokens` greedy steps after that prefill,
* decode ms/token with the cache at ~200 / ~700 / ~1200 positions (a prefill of that length,
  then `--probe-steps` timed steps),
* the Python side of a step (binding the 2L cache inputs; nothing for the default GQA graph),
* the bare stack of the step's matmuls (fp32 and int8), the floor a step is compared with,

and, for every precision other than fp32, its fidelity against fp32 over `--fidelity-steps`
steps: teacher-forced greedy agreement (both fed fp32's greedy tokens), first divergence of a
free-running greedy decode, and the logit error.

    python benchmarks/gpt_decode.py --precisions fp32,int8 --threads 1,2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from gsv_onnx.runtime.decoder import GptDecoder
from gsv_onnx.runtime.options import RuntimeOptions


def build_graphs(
    work_dir: Path, precisions: list[str], decode_attention: str = "cache_read"
) -> dict[str, dict[str, Path]]:
    from gsv_onnx.convert.export_gpt import export_gpt
    from gsv_onnx.convert.gpt import Text2SemanticDecoder, random_init_
    from gsv_onnx.convert.quantize import quantize_gpt

    fp32_dir = work_dir / "fp32"
    paths = {
        "gpt_prefill": fp32_dir / "gpt_prefill.onnx",
        "gpt_decode": fp32_dir / "gpt_decode.onnx",
        "gpt_data": fp32_dir / "gpt.onnx.data",
    }
    if not paths["gpt_decode"].exists():
        start = time.perf_counter()
        model = random_init_(Text2SemanticDecoder(), seed=0).eval()
        paths = export_gpt(model, fp32_dir, decode_attention=decode_attention)
        print(f"exported full-size fp32 GPT in {time.perf_counter() - start:.1f} s")
        del model
    out = {"fp32": paths}
    for precision in precisions:
        if precision == "fp32":
            continue
        variant = {k: v.with_name(f"{v.stem}.{precision}.onnx") for k, v in paths.items() if k != "gpt_data"}
        variant["gpt_data"] = fp32_dir / f"gpt.{precision}.onnx.data"
        if not variant["gpt_decode"].exists():
            start = time.perf_counter()
            variant = quantize_gpt(paths, precision)
            print(f"made {precision} variant in {time.perf_counter() - start:.1f} s")
        out[precision] = variant
    return out


def inputs(text_len: int, prompt_len: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 732, (1, text_len)),
        rng.standard_normal((1, 1024, text_len)).astype(np.float32) * 0.5,
        rng.integers(0, 1024, (1, prompt_len)),
    )


def greedy(logits: np.ndarray) -> int:
    return int(np.argmax(logits[:-1]))  # EOS excluded so every run decodes the full length


def time_steps(decoder: GptDecoder, logits: np.ndarray, steps: int, cpu: list | None = None):
    """Wall ms per step; with `cpu`, also append this process's CPU ms per step (all threads).

    On a shared machine the CPU time of a 1-thread run is the better estimate of the step's cost.
    """
    times = []
    for _ in range(steps):
        token = greedy(logits)
        start, start_cpu = time.perf_counter(), time.process_time()
        logits = decoder.step(token)
        times.append((time.perf_counter() - start) * 1000)
        if cpu is not None:
            cpu.append((time.process_time() - start_cpu) * 1000)
    return times, logits


def speed(paths: dict[str, Path], threads: int, tokens: int, probe_steps: int, spin: bool = False) -> dict:
    options = RuntimeOptions(intra_op_threads=threads, allow_spinning=spin)
    decoder = GptDecoder(paths["gpt_prefill"], paths["gpt_decode"], options)
    result: dict = {}
    phone_ids, bert, codes = inputs(120, 80)
    decoder.prefill(phone_ids, bert, codes)  # warm-up
    start = time.perf_counter()
    logits = decoder.prefill(phone_ids, bert, codes)
    result["prefill_ms_200"] = (time.perf_counter() - start) * 1000
    time_steps(decoder, logits, 5)
    logits = decoder.prefill(phone_ids, bert, codes)
    cpu: list[float] = []
    times, _ = time_steps(decoder, logits, tokens, cpu)
    result["decode_cpu_ms_median"] = float(np.median(cpu))
    result["decode_ms_median"] = float(np.median(times))
    result["decode_ms_p90"] = float(np.percentile(times, 90))
    result["decode_ms_min"] = float(np.min(times))  # on a shared machine: the least disturbed step
    start = time.perf_counter()
    for _ in range(200):
        decoder.bind_cache()
    result["bind_ms_per_step"] = (time.perf_counter() - start) * 1000 / 200
    result["decode_ms_at"], result["decode_cpu_ms_at"] = {}, {}
    for positions in (200, 700, 1200):
        phone_ids, bert, codes = inputs(positions - 80, 80, seed=positions)
        logits = decoder.prefill(phone_ids, bert, codes)
        time_steps(decoder, logits, 3)
        cpu = []
        times, _ = time_steps(decoder, logits, probe_steps, cpu)
        result["decode_ms_at"][str(positions)] = float(np.median(times))
        result["decode_cpu_ms_at"][str(positions)] = float(np.median(cpu))
    return result


def fidelity(reference: dict[str, Path], variant: dict[str, Path], steps: int) -> dict:
    options = RuntimeOptions(intra_op_threads=2)
    ref = GptDecoder(reference["gpt_prefill"], reference["gpt_decode"], options)
    var = GptDecoder(variant["gpt_prefill"], variant["gpt_decode"], options)
    phone_ids, bert, codes = inputs(120, 80, seed=7)
    ref_logits = ref.prefill(phone_ids, bert, codes)
    var_logits = var.prefill(phone_ids, bert, codes)
    agree, max_err, rel_errs, first_divergence = 0, 0.0, [], None
    free_var = GptDecoder(variant["gpt_prefill"], variant["gpt_decode"], options)
    free_logits = free_var.prefill(phone_ids, bert, codes)
    for step in range(steps):
        token = greedy(ref_logits)
        agree += int(greedy(var_logits) == token)
        err = np.abs(var_logits - ref_logits)
        max_err = max(max_err, float(err.max()))
        rel_errs.append(float(err.max() / ref_logits.std()))
        free_token = greedy(free_logits)
        if first_divergence is None and free_token != token:
            first_divergence = step
        ref_logits = ref.step(token)
        var_logits = var.step(token)  # teacher-forced on fp32's tokens
        free_logits = free_var.step(free_token)
    return {
        "teacher_forced_greedy_agreement": agree / steps,
        "free_running_first_divergence": first_divergence if first_divergence is not None else steps,
        "logit_max_abs_err": max_err,
        "logit_max_err_over_std_median": float(np.median(rel_errs)),
    }


def bare_stack(work_dir: Path, threads: int, runs: int = 60, spin: bool = False) -> dict[str, float]:
    """CPU and wall ms of the decode step's matmuls alone (24 x [512x1536, 512x512, 512x2048,
    2048x512] + 512x1025, one row): fp32, int8 (DynamicQuantizeMatMul, the prefill's kernel) and
    int8_nbits (8-bit MatMulNBits, the int8 decode graph's kernel): the floor a step is compared with."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from gsv_onnx.convert.quantize import _weight_only_int8, quantize_graph

    path = work_dir / "bare_matmuls.onnx"
    if not path.exists():
        rng = np.random.default_rng(0)
        nodes, weights, x = [], [], "x"
        for i in range(24):
            for j, (rows, cols) in enumerate(((512, 1536), (512, 512), (512, 2048), (2048, 512))):
                weights.append(
                    numpy_helper.from_array(
                        (rng.standard_normal((rows, cols)) / rows**0.5).astype(np.float32), f"w{i}_{j}"
                    )
                )
            nodes += [
                helper.make_node("MatMul", [x, f"w{i}_0"], [f"qkv{i}"]),
                helper.make_node("MatMul", [x, f"w{i}_1"], [f"o{i}"]),
                helper.make_node("MatMul", [f"o{i}", f"w{i}_2"], [f"f{i}"]),
                helper.make_node("MatMul", [f"f{i}", f"w{i}_3"], [f"g{i}"]),
                helper.make_node("Add", [f"g{i}", x], [f"x{i}"]),
            ]
            x = f"x{i}"
        weights.append(
            numpy_helper.from_array((rng.standard_normal((512, 1025)) / 22.6).astype(np.float32), "head")
        )
        nodes.append(helper.make_node("MatMul", [x, "head"], ["logits"]))
        outputs = ["logits"] + [f"qkv{i}" for i in range(24)]
        graph = helper.make_graph(
            nodes,
            "bare",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 512])],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
            weights,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        work_dir.mkdir(parents=True, exist_ok=True)
        onnx.save_model(model, str(path))
        quantize_graph(path, "int8")
    nbits_path = path.with_name("bare_matmuls.nbits8.onnx")
    if not nbits_path.exists():
        _weight_only_int8(path, nbits_path)
    result = {}
    feed = {"x": np.random.default_rng(1).standard_normal((1, 512)).astype(np.float32)}
    variants = (
        ("fp32", path),
        ("int8", path.with_name("bare_matmuls.int8.onnx")),
        ("int8_nbits", nbits_path),
    )
    for precision, graph_path in variants:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        session = ort.InferenceSession(str(graph_path), options, providers=["CPUExecutionProvider"])
        for _ in range(5):
            session.run(None, feed)
        wall, cpu = [], []
        for _ in range(runs):
            start, start_cpu = time.perf_counter(), time.process_time()
            session.run(None, feed)
            wall.append((time.perf_counter() - start) * 1000)
            cpu.append((time.process_time() - start_cpu) * 1000)
        result[f"{precision}_ms"] = float(np.median(wall))
        result[f"{precision}_cpu_ms"] = float(np.median(cpu))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--work-dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "gsv-bench-gpt"
    )
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--tokens", type=int, default=250)
    parser.add_argument("--probe-steps", type=int, default=20)
    parser.add_argument("--fidelity-steps", type=int, default=200)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--decode-attention",
        default="gqa",
        choices=("cache_read", "gqa"),
        help="decode graph variant (gqa: GroupQueryAttention on shared in-place buffers)",
    )
    parser.add_argument(
        "--spin",
        action="store_true",
        help="let ONNX Runtime's idle threads spin-wait (RuntimeOptions.allow_spinning; off by default)",
    )
    args = parser.parse_args()
    precisions = args.precisions.split(",")
    graphs = build_graphs(args.work_dir / args.decode_attention, precisions, args.decode_attention)
    report = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load": os.getloadavg(),
        },
        "speed": {},
        "fidelity": {},
    }
    for threads in (int(t) for t in args.threads.split(",")):
        bare = bare_stack(args.work_dir, threads, spin=args.spin)
        report["speed"][f"bare_matmuls/{threads}t"] = bare
        print(
            f"bare matmul stack {threads}t: fp32 {bare['fp32_ms']:.2f} ms (cpu {bare['fp32_cpu_ms']:.2f}), "
            f"int8 {bare['int8_ms']:.2f} ms (cpu {bare['int8_cpu_ms']:.2f}), "
            f"int8 MatMulNBits {bare['int8_nbits_ms']:.2f} ms (cpu {bare['int8_nbits_cpu_ms']:.2f})",
            flush=True,
        )
    for precision in precisions:
        sizes = sum(p.stat().st_size for p in graphs[precision].values())
        print(f"{precision}: graphs + data {sizes / 1e6:.0f} MB")
        for threads in (int(t) for t in args.threads.split(",")):
            result = speed(graphs[precision], threads, args.tokens, args.probe_steps, spin=args.spin)
            report["speed"][f"{precision}/{threads}t"] = result
            at, cpu_at = result["decode_ms_at"], result["decode_cpu_ms_at"]
            print(
                f"{precision:5s} {threads}t  prefill(200) {result['prefill_ms_200']:7.1f} ms  "
                f"decode median {result['decode_ms_median']:6.2f} p90 {result['decode_ms_p90']:6.2f} ms/token "
                f"(min {result['decode_ms_min']:.2f}, cpu {result['decode_cpu_ms_median']:.2f})  at 200/700/1200: {at['200']:.2f} / {at['700']:.2f} / "
                f"{at['1200']:.2f} ms (1200/200 = {at['1200'] / at['200']:.2f}x; cpu {cpu_at['200']:.2f} / "
                f"{cpu_at['700']:.2f} / {cpu_at['1200']:.2f})  bind {result['bind_ms_per_step']:.3f} ms",
                flush=True,
            )
        if precision != "fp32" and args.fidelity_steps > 0:
            fid = fidelity(graphs["fp32"], graphs[precision], args.fidelity_steps)
            report["fidelity"][precision] = fid
            print(f"{precision} vs fp32: {json.dumps(fid)}", flush=True)
    report["machine"]["load_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
