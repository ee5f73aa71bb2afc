"""`gsv bench`: speed and memory of gsv-onnx bundles against the project's PyTorch reference.

The pieces:

* `machine`: a description of the machine (CPU model, cores, ISA flags, memory, library versions);
* `workload`: the fixed workload every engine runs (texts, a synthetic reference clip, GPT inputs
  of a given number of positions, EOS masking so each run decodes the same number of tokens);
* `onnx_worker`: one measurement of one bundle, run in a fresh subprocess (no torch imported, so
  its peak RSS is what a user of the runtime pays);
* `torch_worker`: the same workload through `gsv_onnx.convert.gpt` / `sovits` / `ssl_bert`
  (upstream's naive decode path: the KV cache grows by concatenation every step), in its own
  subprocess with 2 threads;
* `runner`: builds or reuses the full-size random checkpoints and bundles with the project's own
  `make_test_models` and `convert`, runs the workers several times, aggregates medians/min/max,
  prints the table and writes the JSON.
"""

from gsv_onnx.bench.runner import BenchConfig, run_bench

__all__ = ["BenchConfig", "run_bench"]
