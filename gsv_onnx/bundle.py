"""The bundle directory: writing, loading and validating `manifest.json` (design.md, format_version 1).

A bundle is a directory of ONNX graphs plus the BERT tokenizer, described by `manifest.json`. Loading
checks that the directory and manifest exist and parse, that the format and version are known, that
every listed file exists and matches its sha256 (skippable with `verify=False`), and that every
graph declares the inputs and outputs of the contract. Each failure raises `BundleError` naming
the file and the fix.

This module is part of the runtime: it never imports torch or `gsv_onnx.convert`. Only
`describe_onnx` (used at conversion time) reads ONNX files, with `onnx` when it is installed and
onnxruntime otherwise.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gsv_onnx import __version__
from gsv_onnx.errors import BundleError

FORMAT = "gsv-onnx-bundle"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
PRECISIONS = ("fp32", "fp16", "int8", "int4")

# Graph name -> required (input name, dtype) and (output name, dtype). `gpt_decode`'s per-layer
# cache inputs k_cache_{i}/v_cache_{i} depend on n_layer and are added by `graph_contract`.
GRAPH_CONTRACTS: dict[str, dict[str, list[tuple[str, str]]]] = {
    "gpt_prefill": {
        "inputs": [("phone_ids", "int64"), ("bert_features", "float32"), ("prompt_codes", "int64")],
        "outputs": [("logits", "float32"), ("k_cache", "float32"), ("v_cache", "float32")],
    },
    "gpt_decode": {
        "inputs": [("token", "int64"), ("position", "int64")],
        "outputs": [("logits", "float32"), ("k_new", "float32"), ("v_new", "float32")],
    },
    "sovits_decoder": {
        "inputs": [
            ("semantic_codes", "int64"),
            ("phone_ids", "int64"),
            ("ge", "float32"),
            ("speed", "float32"),
            ("noise", "float32"),
        ],
        "outputs": [("audio", "float32")],
    },
    "ref_enc": {"inputs": [("ref_spec", "float32")], "outputs": [("ge", "float32")]},
    "reference_encoder": {"inputs": [("wav16k", "float32")], "outputs": [("prompt_codes", "int64")]},
    "bert": {
        "inputs": [("input_ids", "int64"), ("attention_mask", "int64"), ("token_type_ids", "int64")],
        "outputs": [("hidden", "float32")],
    },
}
GRAPH_NAMES = tuple(GRAPH_CONTRACTS)
# Inputs a graph may declare beyond its contract: the GroupQueryAttention decode graph (the
# converter's default, design.md (b)) also takes the cache length.
OPTIONAL_INPUTS: dict[str, list[tuple[str, str]]] = {"gpt_decode": [("cache_len", "int64")]}

# ONNX TensorProto element types -> numpy-style names used in the manifest
_ONNX_DTYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    16: "bfloat16",
}
_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def graph_contract(name: str, n_layer: int | None = None) -> dict[str, list[tuple[str, str]]]:
    """The required inputs/outputs of graph `name`; `n_layer` completes gpt_decode's cache inputs."""
    contract = {k: list(v) for k, v in GRAPH_CONTRACTS[name].items()}
    if name == "gpt_decode" and n_layer is not None:
        for i in range(n_layer):
            contract["inputs"] += [(f"k_cache_{i}", "float32"), (f"v_cache_{i}", "float32")]
    return contract


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Describing ONNX graphs (conversion time)


def describe_onnx(path: str | Path) -> dict[str, Any]:
    """Inputs/outputs (name, dtype, shape with symbolic dims as strings) and external data files.

    Returns `{"inputs": [...], "outputs": [...], "external_data": [relative file names]}`.
    """
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"ONNX graph {path} does not exist")
    try:
        import onnx
    except ModuleNotFoundError:
        return _describe_with_ort(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends on bad files
        raise BundleError(f"{path} is not a readable ONNX model ({exc}); convert again") from exc

    def value_info(values) -> list[dict[str, Any]]:
        described = []
        initializer_names = {init.name for init in model.graph.initializer}
        for value in values:
            if value.name in initializer_names:
                continue  # old exporters list initializers as inputs too
            tensor_type = value.type.tensor_type
            shape: list[int | str] = []
            for dim in tensor_type.shape.dim:
                if dim.HasField("dim_value"):
                    shape.append(int(dim.dim_value))
                else:
                    shape.append(dim.dim_param or "?")
            described.append(
                {
                    "name": value.name,
                    "dtype": _ONNX_DTYPES.get(tensor_type.elem_type, f"onnx:{tensor_type.elem_type}"),
                    "shape": shape,
                }
            )
        return described

    external: list[str] = []
    for tensor in _all_tensors(model.graph):
        if tensor.data_location == 1:  # TensorProto.EXTERNAL
            for entry in tensor.external_data:
                if entry.key == "location" and entry.value not in external:
                    external.append(entry.value)
    return {
        "inputs": value_info(model.graph.input),
        "outputs": value_info(model.graph.output),
        "external_data": external,
    }


def _all_tensors(graph):
    """Every initializer of a graph and of its subgraphs (If/Loop bodies) and Constant nodes."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            if attribute.HasField("g"):
                yield from _all_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _all_tensors(subgraph)


def _describe_with_ort(path: Path) -> dict[str, Any]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise BundleError(f"{path} is not a loadable ONNX model ({exc}); convert again") from exc

    def args(values) -> list[dict[str, Any]]:
        return [
            {
                "name": v.name,
                "dtype": _ORT_DTYPES.get(v.type, v.type),
                "shape": [d if isinstance(d, int) else str(d) for d in v.shape],
            }
            for v in values
        ]

    sibling = path.with_name(path.name + ".data")
    return {
        "inputs": args(session.get_inputs()),
        "outputs": args(session.get_outputs()),
        "external_data": [sibling.name] if sibling.is_file() else [],
    }


# ---------------------------------------------------------------------------------------------
# Writing


def write_manifest(
    bundle_dir: str | Path,
    *,
    model_version: str,
    precision: str,
    sources: Mapping[str, Mapping[str, Any]],
    hparams: Mapping[str, Any],
    graphs: Mapping[str, str | Path],
    tokenizer: str | Path,
    symbol_version: str = "v2",
    graph_precisions: Mapping[str, str] | None = None,
    warnings: list[str] | None = None,
    created: str | None = None,
) -> dict[str, Any]:
    """Describe the files in `bundle_dir` and write its `manifest.json`; return the manifest.

    `graphs` maps each graph name to its file (inside `bundle_dir`); `sources` maps "gpt", "sovits",
    "hubert", "bert" to `{"file": name, "sha256": hex}`; `hparams` holds the sections of design.md.
    Checksums, graph inputs/outputs and external-data files are computed here.
    """
    bundle_dir = Path(bundle_dir)
    if precision not in PRECISIONS:
        raise BundleError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    graph_entries: dict[str, Any] = {}
    for name in GRAPH_NAMES:
        if name not in graphs:
            raise BundleError(f"cannot write the manifest: graph {name!r} was not produced")
    for name, file in graphs.items():
        graph_path = _inside(bundle_dir, file)
        described = describe_onnx(graph_path)
        entry: dict[str, Any] = {
            "file": graph_path.name,
            "sha256": sha256_file(graph_path),
            "precision": (graph_precisions or {}).get(name, precision),
            "inputs": described["inputs"],
            "outputs": described["outputs"],
        }
        if described["external_data"]:
            entry["external_data"] = [
                {"file": data_name, "sha256": sha256_file(bundle_dir / data_name)}
                for data_name in described["external_data"]
            ]
        graph_entries[name] = entry
    tokenizer_path = _inside(bundle_dir, tokenizer)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "converter_version": __version__,
        "model_version": model_version,
        "symbol_version": symbol_version,
        "precision": precision,
        "created": created or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "sources": {k: dict(v) for k, v in sources.items()},
        "hparams": json.loads(json.dumps(hparams)),
        "graphs": graph_entries,
        "tokenizer": {"file": tokenizer_path.name, "sha256": sha256_file(tokenizer_path)},
    }
    if warnings:
        manifest["warnings"] = list(warnings)
    _check_contracts(manifest, bundle_dir / MANIFEST_NAME)
    tmp = bundle_dir / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, bundle_dir / MANIFEST_NAME)
    return manifest


def _inside(bundle_dir: Path, file: str | Path) -> Path:
    path = Path(file)
    if not path.is_absolute():
        path = bundle_dir / path
    if path.parent.resolve() != bundle_dir.resolve():
        raise BundleError(f"{path} is not directly inside the bundle directory {bundle_dir}")
    if not path.is_file():
        raise BundleError(f"cannot write the manifest: {path} does not exist")
    return path


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass
class Bundle:
    """A loaded, validated bundle directory."""

    path: Path
    manifest: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> Bundle:
        """Load and validate the bundle at `path`; `verify=False` skips the sha256 checks."""
        path = Path(path)
        if not path.exists():
            raise BundleError(f"bundle {path} does not exist; create one with `gsv convert ... -o {path}`")
        if not path.is_dir():
            raise BundleError(f"bundle {path} is not a directory; pass the .gsv directory gsv convert wrote")
        manifest_path = path / MANIFEST_NAME
        if not manifest_path.is_file():
            raise BundleError(
                f"{path} has no {MANIFEST_NAME}: it is not a gsv-onnx bundle or its conversion did not "
                "finish; convert again with gsv convert"
            )
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise BundleError(f"{manifest_path} is not UTF-8 text; convert again with gsv convert") from exc
        except json.JSONDecodeError as exc:
            raise BundleError(
                f"{manifest_path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                "convert again with gsv convert"
            ) from exc
        if not isinstance(manifest, dict):
            raise BundleError(f"{manifest_path} is not a JSON object; convert again with gsv convert")
        bundle = cls(path=path, manifest=manifest)
        bundle._validate(verify)
        return bundle

    # -- validation ----------------------------------------------------------------------------

    def _validate(self, verify: bool) -> None:
        manifest, manifest_path = self.manifest, self.path / MANIFEST_NAME
        if manifest.get("format") != FORMAT:
            raise BundleError(
                f"{manifest_path}: unknown format {manifest.get('format')!r} (expected {FORMAT!r}); "
                "this directory was not written by gsv convert"
            )
        version = manifest.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise BundleError(f"{manifest_path}: format_version {version!r} is not an integer; convert again")
        if version != FORMAT_VERSION:
            hint = "upgrade gsv-onnx" if version > FORMAT_VERSION else "convert the model again"
            raise BundleError(
                f"{manifest_path}: unknown format_version {version} (this gsv-onnx reads "
                f"{FORMAT_VERSION}); {hint}"
            )
        for key, kind in (
            ("model_version", str),
            ("precision", str),
            ("hparams", dict),
            ("graphs", dict),
            ("tokenizer", dict),
        ):
            if not isinstance(manifest.get(key), kind):
                raise BundleError(f"{manifest_path}: missing or invalid {key!r}; convert again")
        if manifest["model_version"] != "v2":
            raise BundleError(
                f"{manifest_path}: model_version {manifest['model_version']!r} is not supported (only v2)"
            )
        for section in ("gpt", "sovits"):
            if not isinstance(manifest["hparams"].get(section), dict):
                raise BundleError(f"{manifest_path}: hparams.{section} is missing; convert again")
        for name in GRAPH_NAMES:
            if name not in manifest["graphs"]:
                raise BundleError(f"{manifest_path}: graph {name!r} is not listed; convert again")
        _check_contracts(manifest, manifest_path)
        checked: set[str] = set()  # the GPT graphs share one external data file
        for entry in self._file_entries():
            if str(entry.get("file")) not in checked:
                self._check_file(entry, verify)
                checked.add(str(entry.get("file")))

    def _file_entries(self) -> list[dict[str, Any]]:
        entries = []
        for entry in self.manifest["graphs"].values():
            entries.append(entry)
            entries.extend(entry.get("external_data", []))
        entries.append(self.manifest["tokenizer"])
        return entries

    def _check_file(self, entry: Mapping[str, Any], verify: bool) -> None:
        name = entry.get("file")
        if not isinstance(name, str) or not name or Path(name).name != name:
            raise BundleError(f"{self.path / MANIFEST_NAME}: invalid file name {name!r}; convert again")
        file_path = self.path / name
        if not file_path.is_file():
            raise BundleError(
                f"bundle {self.path} is missing {name}; copy the whole bundle directory again or "
                "convert again"
            )
        if verify:
            actual = sha256_file(file_path)
            if actual != entry.get("sha256"):
                raise BundleError(
                    f"checksum mismatch for {file_path}: the file changed or is damaged since "
                    "conversion; copy the bundle again or convert again"
                )

    # -- access ----------------------------------------------------------------------------------

    @property
    def hparams(self) -> dict[str, Any]:
        """The `hparams` section: gpt, sovits, hubert, bert."""
        return self.manifest["hparams"]

    @property
    def model_version(self) -> str:
        return self.manifest["model_version"]

    @property
    def precision(self) -> str:
        return self.manifest["precision"]

    @property
    def graph_names(self) -> list[str]:
        return list(self.manifest["graphs"])

    def graph_path(self, name: str) -> Path:
        """Path of graph `name` (one of GRAPH_NAMES)."""
        try:
            return self.path / self.manifest["graphs"][name]["file"]
        except KeyError:
            raise BundleError(f"bundle {self.path} has no graph {name!r}") from None

    def graph_io(self, name: str) -> dict[str, list[dict[str, Any]]]:
        """The recorded inputs/outputs (name, dtype, shape) of graph `name`."""
        entry = self.manifest["graphs"].get(name)
        if entry is None:
            raise BundleError(f"bundle {self.path} has no graph {name!r}")
        return {"inputs": entry["inputs"], "outputs": entry["outputs"]}

    @property
    def tokenizer_path(self) -> Path:
        """The BERT tokenizer file (tokenizer.json or vocab.txt)."""
        return self.path / self.manifest["tokenizer"]["file"]

    @property
    def bundle_id(self) -> str:
        """A stable id of this bundle's content: derived from every file's sha256.

        Voices record it so that a voice prepared for one bundle is refused by another.
        """
        digest = hashlib.sha256(f"{FORMAT}:{self.manifest['format_version']}".encode())
        for name in sorted(self.manifest["graphs"]):
            digest.update(f"|{name}:{self.manifest['graphs'][name]['sha256']}".encode())
        digest.update(f"|tokenizer:{self.manifest['tokenizer']['sha256']}".encode())
        return digest.hexdigest()[:32]

    def total_size(self) -> int:
        """Bytes of every file of the bundle, manifest included."""
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())


def _check_contracts(manifest: Mapping[str, Any], manifest_path: Path) -> None:
    """Every graph declares the contract's inputs (exactly) and outputs (at least), with dtypes."""
    n_layer = manifest.get("hparams", {}).get("gpt", {}).get("n_layer")
    if not isinstance(n_layer, int) or n_layer < 1:
        raise BundleError(f"{manifest_path}: hparams.gpt.n_layer is missing or invalid; convert again")
    for name in GRAPH_NAMES:
        entry = manifest["graphs"].get(name)
        if not isinstance(entry, dict):
            raise BundleError(f"{manifest_path}: graph {name!r} is not listed; convert again")
        for key in ("file", "sha256", "inputs", "outputs"):
            if key not in entry:
                raise BundleError(f"{manifest_path}: graph {name!r} lacks {key!r}; convert again")
        contract = graph_contract(name, n_layer)
        declared_inputs = {io["name"]: io.get("dtype") for io in entry["inputs"]}
        declared_outputs = {io["name"]: io.get("dtype") for io in entry["outputs"]}
        required_inputs = dict(contract["inputs"])
        optional_inputs = dict(OPTIONAL_INPUTS.get(name, []))
        problems = []
        missing = [n for n in required_inputs if n not in declared_inputs]
        extra = [n for n in declared_inputs if n not in required_inputs and n not in optional_inputs]
        missing_out = [n for n, _ in contract["outputs"] if n not in declared_outputs]
        if missing:
            problems.append(f"missing inputs {missing}")
        if extra:
            problems.append(f"unexpected inputs {extra}")
        if missing_out:
            problems.append(f"missing outputs {missing_out}")
        for io_name, dtype in [*contract["inputs"], *optional_inputs.items(), *contract["outputs"]]:
            got = declared_inputs.get(io_name, declared_outputs.get(io_name))
            if got is not None and got != dtype:
                problems.append(f"{io_name} is {got}, not {dtype}")
        if problems:
            raise BundleError(
                f"{manifest_path}: graph {name!r} ({entry['file']}) does not match the graph contract: "
                f"{'; '.join(problems)}; convert again with this gsv-onnx version"
            )
