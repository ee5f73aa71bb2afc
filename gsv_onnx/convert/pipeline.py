"""`convert()`: upstream V2 checkpoints -> a gsv-onnx bundle directory.

Stages: read (checkpoints and model folders) -> build (our PyTorch modules, strict loading) ->
export (ONNX graphs, tokenizer, optional quantization) -> verify (ONNX Runtime against PyTorch,
then the manifest is written and the bundle re-loaded and validated). Everything is written into a
temporary directory next to the output and renamed at the end, so a failure leaves nothing
half-written behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gsv_onnx.bundle import GRAPH_NAMES, PRECISIONS, Bundle, sha256_file, write_manifest
from gsv_onnx.convert.checkpoints import (
    GptCheckpoint,
    SovitsCheckpoint,
    load_gpt_checkpoint,
    load_sovits_checkpoint,
)
from gsv_onnx.errors import GsvError

log = logging.getLogger(__name__)

STAGES = ("read", "build", "export", "verify")
BERT_DIM = 1024  # the GPT's bert_proj input is hard-coded to 1024 (spec §1.3)
REF_ENC_BINS = 704  # spectrogram bins fed to ref_enc (spec §3.3a)
HUBERT_RATE = 16000
GPT_FP32_TOLERANCE = 1e-2  # max abs logit / cache difference, ORT vs PyTorch, fp32 graphs
GPT_REDUCED_WARNING = 1.0  # quantized graphs: warn above this logit difference

# progress(stage, message, seconds since the conversion started)
ProgressCallback = Callable[[str, str, float], None]


class ConvertError(GsvError):
    """The conversion cannot start or finish (output exists, unknown precision, a stage failed)."""


@dataclass
class ConvertSummary:
    """What `convert()` produced: per-graph file sizes, seconds per stage, total size, warnings."""

    out_dir: Path
    model_version: str
    precision: str
    graph_sizes: dict[str, int]
    stage_seconds: dict[str, float]
    total_bytes: int
    bundle_id: str
    warnings: list[str] = field(default_factory=list)
    verify_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        return sum(self.stage_seconds.values())

    def format(self) -> str:
        """A human-readable table for the end of `gsv convert`."""
        lines = [f"bundle {self.out_dir} ({self.model_version}, {self.precision}, id {self.bundle_id})"]
        for name, size in self.graph_sizes.items():
            lines.append(f"  {name:<20} {_mib(size):>10}")
        lines.append(f"  {'total':<20} {_mib(self.total_bytes):>10}")
        stages = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in self.stage_seconds.items())
        lines.append(f"time: {stages}; total {self.total_seconds:.1f} s")
        if self.verify_metrics:
            worst = ", ".join(f"{k} {v:.3g}" for k, v in self.verify_metrics.items() if "total" not in k)
            lines.append(f"verify (ONNX Runtime vs PyTorch): {worst}")
        lines.extend(f"warning: {warning}" for warning in self.warnings)
        return "\n".join(lines)


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 1024:.1f} KiB"


class _Stages:
    """Runs the stages in order, timing each and reporting to the progress callback."""

    def __init__(self, progress: ProgressCallback | None) -> None:
        self.progress = progress
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self.current: str | None = None
        self.stage_start = self.start

    def begin(self, stage: str) -> None:
        self.end()
        self.current = stage
        self.stage_start = time.perf_counter()
        self.say(f"stage {STAGES.index(stage) + 1}/{len(STAGES)}")

    def say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(self.current or "", message, time.perf_counter() - self.start)

    def end(self) -> None:
        if self.current is not None:
            self.seconds[self.current] = time.perf_counter() - self.stage_start
            self.current = None


def convert(
    gpt_path: str | os.PathLike,
    sovits_path: str | os.PathLike,
    hubert_dir: str | os.PathLike,
    bert_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    precision: str = "fp32",
    progress: ProgressCallback | None = None,
    force: bool = False,
    verify: bool = True,
) -> ConvertSummary:
    """Convert upstream V2 checkpoints into a bundle at `out_dir` and return a summary.

    `gpt_path` is the GPT `.ckpt`, `sovits_path` the SoVITS `.pth`, `hubert_dir` and `bert_dir` the
    chinese-hubert-base and chinese-roberta-wwm-ext-large folders. `precision` is fp32 (default),
    fp16, int8 or int4 (the last three need the quantizer). An existing non-empty `out_dir` is
    replaced only with `force=True`. `verify=False` skips the ONNX Runtime vs PyTorch comparison
    (the bundle is still validated).
    """
    if precision not in PRECISIONS:
        raise ConvertError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    out_dir = Path(out_dir)
    _check_output(out_dir, force)
    quantizer = _quantizer(precision)
    stages = _Stages(progress)
    warnings: list[str] = []
    verify_metrics: dict[str, float] = {}

    # -- read ------------------------------------------------------------------------------------
    stages.begin("read")
    stages.say(f"GPT checkpoint {gpt_path}")
    gpt_ckpt = load_gpt_checkpoint(gpt_path)
    stages.say(f"SoVITS checkpoint {sovits_path}")
    sovits_ckpt = load_sovits_checkpoint(sovits_path)
    stages.say(f"SoVITS version {sovits_ckpt.version} (header {sovits_ckpt.header!r})")
    from gsv_onnx.convert import ssl_bert

    stages.say(f"HuBERT {hubert_dir}")
    hubert = ssl_bert.load_hubert(hubert_dir)
    stages.say(f"BERT {bert_dir}")
    bert = ssl_bert.load_bert(bert_dir)
    bert_hidden = _bert_hidden_size(Path(bert_dir))
    if bert_hidden != BERT_DIM:
        warnings.append(
            f"the BERT model is {bert_hidden}-dimensional but the GPT takes {BERT_DIM}-dimensional BERT "
            "features: Chinese BERT features cannot feed this GPT (other languages use zeros and work); "
            "use the real chinese-roberta-wwm-ext-large"
        )

    # -- build -----------------------------------------------------------------------------------
    stages.begin("build")
    from gsv_onnx.convert import gpt as gpt_module
    from gsv_onnx.convert import sovits as sovits_module

    stages.say("GPT (Text2SemanticDecoder)")
    gpt_model = gpt_module.build_gpt(
        gpt_ckpt.model_config, gpt_ckpt.state_dict, f"GPT checkpoint {gpt_ckpt.path}"
    )
    stages.say("SoVITS decoder, ref_enc and prompt extractor")
    sovits_model = sovits_module.build_sovits(
        sovits_ckpt.config, sovits_ckpt.state_dict, f"SoVITS checkpoint {sovits_ckpt.path}"
    )

    tmp_dir = _temp_dir_for(out_dir)
    stack = contextlib.ExitStack()
    try:
        # -- export ------------------------------------------------------------------------------
        stages.begin("export")
        from gsv_onnx.convert import export_gpt, export_sovits, export_ssl_bert

        graphs: dict[str, Path] = {}
        stages.say("GPT prefill and decode graphs")
        graphs.update(_as_graph_dict(export_gpt.export_gpt(gpt_model, tmp_dir), "export_gpt"))
        stages.say("SoVITS decoder and ref_enc graphs")
        graphs.update(_as_graph_dict(export_sovits.export_sovits(sovits_model, tmp_dir), "export_sovits"))
        stages.say("reference encoder graph (HuBERT + prompt extractor)")
        graphs.update(
            _as_graph_dict(
                export_ssl_bert.export_reference_encoder(hubert, sovits_model, tmp_dir),
                "export_reference_encoder",
                "reference_encoder",
            )
        )
        stages.say("BERT graph")
        graphs.update(_as_graph_dict(export_ssl_bert.export_bert(bert, tmp_dir), "export_bert", "bert"))
        tokenizer_path = Path(export_ssl_bert.write_tokenizer(bert_dir, tmp_dir))
        missing = [name for name in GRAPH_NAMES if name not in graphs]
        if missing:
            raise ConvertError(f"the exporters did not produce graph(s) {', '.join(missing)}")
        graph_precisions = precision_plan(precision)
        if quantizer is not None:
            stack.enter_context(_quiet_root_logger())  # onnxruntime.quantization logs through root
            gpt_precision = graph_precisions["gpt_prefill"]
            if gpt_precision != "fp32":
                stages.say(f"GPT graphs to {gpt_precision}")
                quantized = quantizer.quantize_gpt(
                    _subset(graphs, "gpt_prefill", "gpt_decode"), gpt_precision
                )
                graphs.update(_as_graph_dict(quantized, "quantize_gpt"))
            for name in ("sovits_decoder", "ref_enc", "reference_encoder", "bert"):
                precision_of_graph = graph_precisions[name]
                if precision_of_graph == "fp32":
                    continue
                stages.say(f"{name} to {precision_of_graph}")
                if name == "sovits_decoder":
                    # static int8 convs calibrated with the model's own ref_enc (2.8x less CPU than fp32)
                    quantized_path = quantizer.quantize_sovits_graph(
                        graphs[name], precision_of_graph, ref_enc_path=graphs["ref_enc"]
                    )
                elif name == "bert":
                    quantized_path = quantizer.quantize_bert(graphs[name], precision_of_graph)
                elif name == "reference_encoder":
                    quantized_path = quantizer.quantize_reference_encoder(graphs[name], precision_of_graph)
                else:
                    quantized_path = quantizer.quantize_graph(graphs[name], precision_of_graph)
                graphs[name] = Path(quantized_path)
        # Every precision: the large graphs keep their weights in external data, which ONNX Runtime
        # memory-maps instead of copying out of a parsed protobuf (see `store_weights_externally`).
        # The GPT graphs already share one file.
        from gsv_onnx.convert.quantize import store_weights_externally

        for name in ("sovits_decoder", "reference_encoder", "bert"):
            graphs[name] = Path(store_weights_externally(graphs[name]))

        stack.close()

        # -- verify ------------------------------------------------------------------------------
        stages.begin("verify")
        if verify:
            stages.say("GPT graphs against PyTorch")
            gpt_errors = export_gpt.verify_gpt(gpt_model, _subset(graphs, "gpt_prefill", "gpt_decode"))
            _check_gpt_errors(gpt_errors, graph_precisions, warnings)
            verify_metrics.update({f"gpt.{k}": float(v) for k, v in gpt_errors.items()})
            stages.say("SoVITS graphs against PyTorch")
            sovits_errors = export_sovits.verify_sovits(
                sovits_model, _subset(graphs, "sovits_decoder", "ref_enc")
            )
            verify_metrics.update({f"sovits.{k}": float(v) for k, v in (sovits_errors or {}).items()})
            stages.say("reference encoder against PyTorch")
            # reduced-precision graphs are measured, not held to the fp32 tolerance
            ref_errors = export_ssl_bert.verify_reference_encoder(
                hubert,
                sovits_model,
                graphs["reference_encoder"],
                check=graph_precisions["reference_encoder"] == "fp32",
            )
            verify_metrics.update({f"reference_encoder.{k}": float(v) for k, v in (ref_errors or {}).items()})
            stages.say("BERT against PyTorch")
            bert_errors = export_ssl_bert.verify_bert(
                bert, graphs["bert"], check=graph_precisions["bert"] == "fp32"
            )
            verify_metrics.update({f"bert.{k}": float(v) for k, v in (bert_errors or {}).items()})
        else:
            stages.say("skipped the ONNX Runtime vs PyTorch comparison (--no-verify)")
        stages.say("writing and validating the manifest")
        write_manifest(
            tmp_dir,
            model_version=sovits_ckpt.version,
            symbol_version="v2",
            precision=precision,
            sources=_sources(gpt_ckpt, sovits_ckpt, Path(hubert_dir), Path(bert_dir)),
            hparams=_hparams(gpt_ckpt, sovits_ckpt, bert_hidden),
            graphs=graphs,
            tokenizer=tokenizer_path,
            graph_precisions=graph_precisions,
            warnings=warnings,
        )
        _remove_strays(tmp_dir, graphs, tokenizer_path)
        _normalize_permissions(tmp_dir)
        bundle = Bundle.load(tmp_dir, verify=True)
        _check_loads_in_ort(bundle, stages)
        stages.end()
        _move_into_place(tmp_dir, out_dir, force)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    finally:
        stack.close()
        stages.end()

    bundle = Bundle.load(out_dir, verify=False)
    graph_sizes = {}
    counted: set[str] = set()  # external data shared by two graphs (GPT) is counted once
    for name in GRAPH_NAMES:
        entry = bundle.manifest["graphs"][name]
        files = [entry["file"], *(d["file"] for d in entry.get("external_data", []))]
        graph_sizes[name] = sum((out_dir / f).stat().st_size for f in files if f not in counted)
        counted.update(files)
    return ConvertSummary(
        out_dir=out_dir,
        model_version=bundle.model_version,
        precision=precision,
        graph_sizes=graph_sizes,
        stage_seconds=dict(stages.seconds),
        total_bytes=bundle.total_size(),
        bundle_id=bundle.bundle_id,
        warnings=warnings,
        verify_metrics=verify_metrics,
    )


# ---------------------------------------------------------------------------------------------
# Helpers


def _check_output(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConvertError(f"output {out_dir} exists and is not a directory; choose another -o path")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise ConvertError(f"output directory {out_dir} is not empty; pass --force to replace it")
    parent = out_dir.resolve().parent
    if not parent.is_dir():
        raise ConvertError(f"the parent directory of {out_dir} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise ConvertError(f"cannot write into {parent}; choose an output directory you can write")


def _temp_dir_for(out_dir: Path) -> Path:
    """A fresh directory next to `out_dir` (same file system, so the final rename is atomic)."""
    parent = out_dir.resolve().parent
    for attempt in range(1000):
        candidate = parent / f".{out_dir.name}.partial-{os.getpid()}-{attempt}"
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise ConvertError(f"cannot create a temporary directory in {parent}")


def _move_into_place(tmp_dir: Path, out_dir: Path, force: bool) -> None:
    """Rename the finished bundle to `out_dir`, replacing an existing one only with `force`."""
    old: Path | None = None
    if out_dir.exists():
        if any(out_dir.iterdir()) and not force:
            raise ConvertError(f"output directory {out_dir} is not empty; pass --force to replace it")
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    try:
        os.replace(tmp_dir, out_dir)
    except OSError:
        if old is not None:
            os.replace(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def precision_plan(precision: str) -> dict[str, str]:
    """The precision each graph gets for a requested bundle precision.

    fp32 and fp16 apply to every graph. int8 quantizes the matrix-heavy GPT and BERT graphs
    (int8 MatMuls with VNNI kernels; BERT's embedding table stored fp16), HuBERT's MatMuls in the
    reference encoder (98.2% of prompt codes equal fp32's, the others near-ties; 200 MB less) and
    every SoVITS decoder convolution with >= 32 output channels, the upsamplers as polyphase convs
    (static int8, 39-52 dB SNR against fp32 on the random full-size models, 2.8x less CPU); ref_enc
    stays fp32 (tiny). int4 is the smallest bundle: BERT's weights in 4-bit blocks
    (feature error ~8x int8's on the random full-size model), the rest as int8; the GPT stays int8
    (4-bit GPT blocks either lost the greedy argmax or were no faster). The SoVITS decoder, BERT
    and the reference encoder keep their weights in external data files (memory-mapped at load)
    in every precision.
    """
    if precision not in PRECISIONS:
        raise ConvertError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision in ("fp32", "fp16"):
        return dict.fromkeys(GRAPH_NAMES, precision)
    plan = dict.fromkeys(GRAPH_NAMES, "fp16")
    plan.update(
        gpt_prefill="int8",
        gpt_decode="int8",
        bert=precision,
        sovits_decoder="int8",
        ref_enc="fp32",
        reference_encoder="int8",
    )
    return plan


def _quantizer(precision: str):
    """The quantize module for `precision`, or None for fp32; a clear error if unavailable."""
    if precision == "fp32":
        return None
    try:
        from gsv_onnx.convert import quantize
    except ModuleNotFoundError as exc:
        if exc.name == "gsv_onnx.convert.quantize":
            raise ConvertError(
                f"precision {precision} is not available in this build (no quantizer yet); use --precision fp32"
            ) from exc
        raise
    return quantize


def _as_graph_dict(result: Any, producer: str, single_name: str | None = None) -> dict[str, Path]:
    """Normalise an exporter's return value (a path or a name -> path mapping)."""
    if isinstance(result, dict):
        # exporters may also return auxiliary files (e.g. shared external data): the manifest
        # finds those through the graphs themselves
        return {str(k): Path(v) for k, v in result.items() if k in GRAPH_NAMES}
    if isinstance(result, (str, os.PathLike)) and single_name is not None:
        return {single_name: Path(result)}
    raise ConvertError(f"{producer} returned {type(result).__name__}, expected graph paths")


@contextlib.contextmanager
def _quiet_root_logger():
    """Silence INFO/WARNING chatter that onnxruntime.quantization sends to the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _check_gpt_errors(
    errors: dict[str, float], graph_precisions: dict[str, str], warnings: list[str]
) -> None:
    """fp32 GPT graphs must match PyTorch closely; reduced-precision ones only get a warning."""
    worst_name, worst = max(errors.items(), key=lambda item: item[1])
    reduced = any(graph_precisions.get(name, "fp32") != "fp32" for name in ("gpt_prefill", "gpt_decode"))
    if worst <= GPT_FP32_TOLERANCE:
        return
    if reduced:
        if worst > GPT_REDUCED_WARNING:
            warnings.append(f"quantized GPT differs from PyTorch by up to {worst:.3g} ({worst_name})")
        return
    raise ConvertError(
        f"the exported GPT differs from PyTorch by {worst:.3g} ({worst_name}, allowed "
        f"{GPT_FP32_TOLERANCE:g}); this is a converter bug, please report it"
    )


def _subset(graphs: dict[str, Path], *names: str) -> dict[str, Path]:
    return {name: graphs[name] for name in names}


def _bert_hidden_size(bert_dir: Path) -> int:
    import json

    try:
        return int(json.loads((bert_dir / "config.json").read_text(encoding="utf-8"))["hidden_size"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConvertError(f"BERT directory {bert_dir}: config.json lacks a valid hidden_size") from exc


def _hubert_hidden_size(hubert_dir: Path) -> int | None:
    import json

    try:
        return int(json.loads((hubert_dir / "config.json").read_text(encoding="utf-8"))["hidden_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _dir_digest(directory: Path) -> str:
    """sha256 over the (name, sha256) pairs of the files of a model directory."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        digest.update(f"{path.name}:{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def _sources(gpt: GptCheckpoint, sovits: SovitsCheckpoint, hubert_dir: Path, bert_dir: Path) -> dict:
    return {
        "gpt": {"file": gpt.path.name, "sha256": gpt.sha256, "info": _plain(gpt.info)},
        "sovits": {
            "file": sovits.path.name,
            "sha256": sovits.sha256,
            "info": _plain(sovits.info),
            "header": sovits.header.decode("latin-1"),
        },
        "hubert": {"file": hubert_dir.name, "sha256": _dir_digest(hubert_dir)},
        "bert": {"file": bert_dir.name, "sha256": _dir_digest(bert_dir)},
    }


def _plain(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, type(None))) else str(value)


def _hparams(gpt: GptCheckpoint, sovits: SovitsCheckpoint, bert_hidden: int) -> dict:
    """The hyperparameters the runtime needs (design.md), from the checkpoint configs."""
    gpt_model = gpt.model_config
    data = sovits.config["data"]
    model = sovits.model_config
    hop = int(data["hop_length"])
    return {
        "gpt": {
            "n_layer": int(gpt_model["n_layer"]),
            "hidden_dim": int(gpt_model["hidden_dim"]),
            "head": int(gpt_model["head"]),
            "vocab_size": int(gpt_model["vocab_size"]),
            "phoneme_vocab_size": int(gpt_model["phoneme_vocab_size"]),
            "eos": int(gpt_model.get("EOS", int(gpt_model["vocab_size"]) - 1)),
            "bert_dim": BERT_DIM,
            "max_sec": int((gpt.config.get("data") or {}).get("max_sec", 54)),
        },
        "sovits": {
            "sampling_rate": int(data["sampling_rate"]),
            "filter_length": int(data["filter_length"]),
            "hop_length": hop,
            "win_length": int(data.get("win_length", data["filter_length"])),
            "inter_channels": int(model["inter_channels"]),
            "gin_channels": int(model["gin_channels"]),
            "ref_enc_bins": REF_ENC_BINS,
            "samples_per_token": 2 * hop,
        },
        "hubert": {"sampling_rate": HUBERT_RATE},
        "bert": {"hidden_size": bert_hidden},
    }


def _remove_strays(tmp_dir: Path, graphs: dict[str, Path], tokenizer: Path) -> None:
    """Drop files exporters left behind that the manifest does not list (e.g. pre-quantization copies)."""
    import json

    manifest = json.loads((tmp_dir / "manifest.json").read_text(encoding="utf-8"))
    keep = {"manifest.json", manifest["tokenizer"]["file"]}
    for entry in manifest["graphs"].values():
        keep.add(entry["file"])
        keep.update(d["file"] for d in entry.get("external_data", []))
    for path in tmp_dir.iterdir():
        if path.name not in keep:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


def _normalize_permissions(directory: Path) -> None:
    """Give the bundle ordinary permissions (rw-r--r-- under the usual umask, dir rwxr-xr-x).

    Exporters write through `mkstemp`, whose files are private (0600); a bundle is shared data.
    """
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for path in directory.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)


def _check_loads_in_ort(bundle: Bundle, stages: _Stages) -> None:
    """Every graph must open in ONNX Runtime (catches graphs a verifier skipped)."""
    import onnxruntime as ort

    for name in GRAPH_NAMES:
        stages.say(f"loading {name} in ONNX Runtime")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            ort.InferenceSession(str(bundle.graph_path(name)), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ConvertError(f"graph {name} does not load in ONNX Runtime: {str(exc)[:300]}") from exc
