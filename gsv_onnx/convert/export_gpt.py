"""ONNX export of the GPT: `gpt_prefill.onnx` and `gpt_decode.onnx` (design.md graphs (a), (b)).

The decode step never copies the KV cache. Default form ("gqa"): per layer one
com.microsoft GroupQueryAttention whose past input and present output are the same pre-allocated
[1, heads, capacity, head_dim] buffer (bound by `GptDecoder`): it writes this step's K/V row in
place and reads each head's cache contiguously, so a step costs the weights plus one read of the
cache. Alternative ("cache_read"): per-layer [1, P, H] cache inputs that are only read (prefixes
of the runtime's buffers), attention over [cache ; new row] without concatenation (see
`TransformerLayer.forward_step`), new rows returned for the runtime to write.

Weights: both graphs keep their initializers in one shared external file, `gpt.onnx.data`, where a
tensor that both graphs use (every weight matrix) is stored once; the two `.onnx` files hold only
the graph structure. ONNX Runtime reads each graph's tensors from that file by offset.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from gsv_onnx.convert import OPSET, export_torchscript, require_torch
from gsv_onnx.convert.gpt import PE_TABLE_ROWS, Text2SemanticDecoder
from gsv_onnx.errors import GsvError

torch = require_torch()

PREFILL_FILE = "gpt_prefill.onnx"
DECODE_FILE = "gpt_decode.onnx"
SHARED_DATA_FILE = "gpt.onnx.data"
#: Tensors smaller than this stay inside the .onnx file (shape constants, scalars).
EXTERNAL_MIN_BYTES = 1024
#: Offsets in the data file are aligned so ONNX Runtime can memory-map each tensor.
DATA_ALIGNMENT = 4096


class ExportError(GsvError):
    """Exporting or verifying a graph failed."""


class _PrefillGraph(torch.nn.Module):
    def __init__(self, model: Text2SemanticDecoder):
        super().__init__()
        self.model = model

    def forward(self, phone_ids, bert_features, prompt_codes):
        return self.model.prefill(phone_ids, bert_features, prompt_codes)


class _DecodeGraph(torch.nn.Module):
    def __init__(self, model: Text2SemanticDecoder):
        super().__init__()
        self.model = model

    def forward(self, token, position, *caches):
        layers = self.model.n_layer
        return self.model.decode_step(token, position, caches[:layers], caches[layers:])


def decode_input_names(n_layer: int) -> list[str]:
    """Input names of the decode graph in order: token, position, k_cache_0.., v_cache_0.."""
    return (
        ["token", "position"]
        + [f"k_cache_{i}" for i in range(n_layer)]
        + [f"v_cache_{i}" for i in range(n_layer)]
    )


def _example_inputs(model: Text2SemanticDecoder, text_len: int, prompt_len: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    phone_ids = torch.randint(0, model.phoneme_vocab_size, (1, text_len), generator=gen)
    bert_features = torch.randn(1, 1024, text_len, generator=gen)
    prompt_codes = torch.randint(0, model.vocab_size - 1, (1, prompt_len), generator=gen)
    return phone_ids, bert_features, prompt_codes


def share_external_data(model_paths: list[Path], data_name: str) -> None:
    """Move the large initializers of the given models into one data file, each distinct tensor once."""
    import onnx
    from onnx.external_data_helper import set_external_data

    out_dir = model_paths[0].parent
    data_path = out_dir / data_name
    stored: dict[str, tuple[int, int]] = {}  # content key -> (offset, length)
    models = [onnx.load(str(p)) for p in model_paths]
    for model in models:
        _constants_to_initializers(model)
    with open(data_path, "wb") as data_file:
        for model in models:
            for tensor in model.graph.initializer:
                raw = tensor.raw_data
                if not raw or len(raw) < EXTERNAL_MIN_BYTES:
                    continue
                key = hashlib.sha256(raw).hexdigest() + f":{tensor.data_type}:{list(tensor.dims)}"
                if key not in stored:
                    offset = data_file.tell()
                    padding = (-offset) % DATA_ALIGNMENT
                    data_file.write(b"\0" * padding)
                    offset += padding
                    data_file.write(raw)
                    stored[key] = (offset, len(raw))
                offset, length = stored[key]
                set_external_data(tensor, location=data_name, offset=offset, length=length)
                tensor.ClearField("raw_data")
                tensor.data_location = onnx.TensorProto.EXTERNAL
    for model, path in zip(models, model_paths, strict=True):
        onnx.save_model(model, str(path))


def _constants_to_initializers(model) -> None:
    """Turn large `Constant` nodes (the exporter folds e.g. the sinusoidal table into one) into
    initializers, so they can live in the external data file."""
    keep = []
    for node in model.graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = node.attribute[0].t
            if len(tensor.raw_data) >= EXTERNAL_MIN_BYTES:
                tensor.name = node.output[0]
                model.graph.initializer.append(tensor)
                continue
        keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)


def _set_output_shapes(graph_model, shapes: dict[str, list]) -> None:
    """Give outputs readable symbolic shapes (the exporter invents names like Concatk_cache_dim_3)."""
    for output in graph_model.graph.output:
        if output.name not in shapes:
            continue
        dims = output.type.tensor_type.shape.dim
        del dims[:]
        for size in shapes[output.name]:
            dim = dims.add()
            if isinstance(size, str):
                dim.dim_param = size
            else:
                dim.dim_value = size


#: Decode-graph attention variants. "gqa" (default) uses ONNX Runtime's GroupQueryAttention on
#: [1, heads, capacity, head_dim] buffers that are both input (past) and output (present): the
#: operator writes the new row in place and reads each head's cache contiguously, one operator per
#: layer (see `build_gqa_decode`). "cache_read" takes [1, P, H] cache inputs that are only read
#: and returns the new rows; its head-merged layout forces block-diagonal products that cost ~2x
#: the cache read at long P (see `TransformerLayer.forward_step`).
DECODE_ATTENTIONS = ("cache_read", "gqa")


def build_gqa_decode(model: Text2SemanticDecoder):
    """The decode step as an ONNX graph around com.microsoft GroupQueryAttention (one op per layer).

    Inputs: `token` int64 [1, 1], `position` int64 [1] (as in design.md (b)), `cache_len` int64 [1]
    (rows already cached, P), and per layer `k_cache_{i}` / `v_cache_{i}` float32
    [1, heads, C, head_dim], buffers of capacity C > P. Outputs: `logits` [1, vocab], `k_new` /
    `v_new` [L, 1, 1, H] (as in design.md (b)) and `k_present_{i}` / `v_present_{i}`
    [1, heads, C, head_dim]. Bind each present output to the same
    memory as its cache input: the operator then writes this step's K/V at row P in place and
    copies nothing. The math equals `Text2SemanticDecoder.decode_step`.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dim, heads, layers = model.hidden_dim, model.head, model.n_layer
    head_dim = dim // heads
    state = {k: v.detach().to(torch.float32).numpy() for k, v in model.state_dict().items()}
    initializers = []
    nodes = []

    def const(name, array):
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def linear(x, prefix, weight_key, bias_key=None):
        out = f"{prefix}_mm"
        nodes.append(helper.make_node("MatMul", [x, const(f"{weight_key}.T", state[weight_key].T)], [out]))
        if bias_key is None:
            return out
        nodes.append(helper.make_node("Add", [out, const(bias_key, state[bias_key])], [f"{prefix}_out"]))
        return f"{prefix}_out"

    def layer_norm(x, prefix, key):
        out = f"{prefix}_ln"
        nodes.append(
            helper.make_node(
                "LayerNormalization",
                [
                    x,
                    const(f"{key}.weight", state[f"{key}.weight"]),
                    const(f"{key}.bias", state[f"{key}.bias"]),
                ],
                [out],
                axis=-1,
                epsilon=1e-5,
            )
        )
        return out

    const("shape_1_1_h", np.array([1, 1, dim], dtype=np.int64))
    const("shape_1", np.array([1], dtype=np.int64))
    const("one", np.array([1], dtype=np.int64))
    const("pe_table", model.pe_table.numpy())
    const("ar_audio_position.alpha", state["ar_audio_position.alpha"])
    nodes += [
        helper.make_node("Reshape", ["token", "shape_1"], ["token_flat"]),
        helper.make_node(
            "Gather",
            [
                const(
                    "ar_audio_embedding.word_embeddings.weight",
                    state["ar_audio_embedding.word_embeddings.weight"],
                ),
                "token_flat",
            ],
            ["token_emb"],
        ),
        helper.make_node("Gather", ["pe_table", "position"], ["pe_row"]),
        helper.make_node("Mul", ["ar_audio_position.alpha", "pe_row"], ["pe_scaled"]),
        helper.make_node("Add", ["token_emb", "pe_scaled"], ["x2d"]),
        helper.make_node("Reshape", ["x2d", "shape_1_1_h"], ["x_in"]),
        # GQA wants seqlens_k = total - 1 = P (int32, [batch]) and the total length (int32 scalar)
        helper.make_node("Cast", ["cache_len"], ["seqlens_k"], to=TensorProto.INT32),
        helper.make_node("Add", ["cache_len", "one"], ["total_1"]),
        helper.make_node("Squeeze", ["total_1"], ["total_64"]),
        helper.make_node("Cast", ["total_64"], ["total_len"], to=TensorProto.INT32),
    ]
    x = "x_in"
    cache_dims = [1, heads, "C", head_dim]
    inputs = [
        helper.make_tensor_value_info("token", TensorProto.INT64, [1, 1]),
        helper.make_tensor_value_info("position", TensorProto.INT64, [1]),
        helper.make_tensor_value_info("cache_len", TensorProto.INT64, [1]),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, model.vocab_size])]
    k_rows: list[str] = []
    v_rows: list[str] = []
    for i in range(layers):
        p = f"h.layers.{i}"
        qkv = linear(x, f"l{i}_qkv", f"{p}.self_attn.in_proj_weight", f"{p}.self_attn.in_proj_bias")
        q, k, v = f"l{i}_q", f"l{i}_k", f"l{i}_v"
        nodes.append(helper.make_node("Split", [qkv], [q, k, v], axis=2))  # equal thirds
        k_rows.append(k)
        v_rows.append(v)
        nodes.append(
            helper.make_node(
                "GroupQueryAttention",
                [q, k, v, f"k_cache_{i}", f"v_cache_{i}", "seqlens_k", "total_len"],
                [f"l{i}_attn", f"k_present_{i}", f"v_present_{i}"],
                domain="com.microsoft",
                num_heads=heads,
                kv_num_heads=heads,
                scale=1.0 / float(np.sqrt(head_dim)),
            )
        )
        inputs += [
            helper.make_tensor_value_info(f"k_cache_{i}", TensorProto.FLOAT, cache_dims),
            helper.make_tensor_value_info(f"v_cache_{i}", TensorProto.FLOAT, cache_dims),
        ]
        outputs += [
            helper.make_tensor_value_info(f"k_present_{i}", TensorProto.FLOAT, cache_dims),
            helper.make_tensor_value_info(f"v_present_{i}", TensorProto.FLOAT, cache_dims),
        ]
        attn = linear(
            f"l{i}_attn", f"l{i}_o", f"{p}.self_attn.out_proj.weight", f"{p}.self_attn.out_proj.bias"
        )
        nodes.append(helper.make_node("Add", [x, attn], [f"l{i}_res1"]))
        h = layer_norm(f"l{i}_res1", f"l{i}_n1", f"{p}.norm1")
        f1 = linear(h, f"l{i}_f1", f"{p}.linear1.weight", f"{p}.linear1.bias")
        nodes.append(helper.make_node("Relu", [f1], [f"l{i}_relu"]))
        f2 = linear(f"l{i}_relu", f"l{i}_f2", f"{p}.linear2.weight", f"{p}.linear2.bias")
        nodes.append(helper.make_node("Add", [h, f2], [f"l{i}_res2"]))
        x = layer_norm(f"l{i}_res2", f"l{i}_n2", f"{p}.norm2")
    nodes.append(
        helper.make_node("Reshape", [x, const("shape_1_h", np.array([1, dim], dtype=np.int64))], ["x_out"])
    )
    logits = linear("x_out", "predict", "ar_predict_layer.weight")
    nodes.append(helper.make_node("Identity", [logits], ["logits"]))
    # design.md (b)'s outputs too: this step's rows [L, 1, 1, H] (the buffers already hold them)
    const("shape_l_1_1_h", np.array([layers, 1, 1, dim], dtype=np.int64))
    for name, rows in (("k_new", k_rows), ("v_new", v_rows)):
        nodes.append(helper.make_node("Concat", rows, [f"{name}_rows"], axis=0))
        nodes.append(helper.make_node("Reshape", [f"{name}_rows", "shape_l_1_1_h"], [name]))
        outputs.insert(
            1 if name == "k_new" else 2,
            helper.make_tensor_value_info(name, TensorProto.FLOAT, [layers, 1, 1, dim]),
        )
    graph = helper.make_graph(nodes, "gpt_decode_gqa", inputs, outputs, initializers)
    onnx_model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)]
    )
    onnx_model.ir_version = 8
    onnx.checker.check_model(onnx_model)
    return onnx_model


def export_gpt(model: Text2SemanticDecoder, out_dir: Path, decode_attention: str = "gqa") -> dict[str, Path]:
    """Write `gpt_prefill.onnx`, `gpt_decode.onnx` and their shared `gpt.onnx.data` into `out_dir`.

    The prefill graph is design.md (a); T_text and T_prompt (may be 0) are dynamic. The decode
    graph is design.md (b) in its default "gqa" form (GroupQueryAttention on in-place buffers, see
    `build_gqa_decode`); `decode_attention="cache_read"` writes the form with [1, P, H] cache
    inputs that are only read (see `TransformerLayer.forward_step`). `GptDecoder` runs either.
    The decode graph carries the sinusoidal table (4000 rows) as a constant indexed by
    `position`, so position must stay below 4000 (metadata `max_positions` says so).
    Returns {"gpt_prefill": path, "gpt_decode": path, "gpt_data": path}.
    """
    import onnx

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    layers = model.n_layer
    prefill_path = out_dir / PREFILL_FILE
    decode_path = out_dir / DECODE_FILE
    with torch.no_grad(), tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        tmp_prefill = Path(tmp) / PREFILL_FILE
        tmp_decode = Path(tmp) / DECODE_FILE
        example = _example_inputs(model, text_len=9, prompt_len=5, seed=0)
        export_torchscript(
            _PrefillGraph(model),
            example,
            tmp_prefill,
            ["phone_ids", "bert_features", "prompt_codes"],
            ["logits", "k_cache", "v_cache"],
            {
                "phone_ids": {1: "T_text"},
                "bert_features": {2: "T_text"},
                "prompt_codes": {1: "T_prompt"},
                "k_cache": {2: "S"},
                "v_cache": {2: "S"},
            },
        )
        cache_len = 6
        caches = tuple(
            torch.randn(1, cache_len, model.hidden_dim, generator=torch.Generator().manual_seed(i))
            for i in range(2 * layers)
        )
        names = decode_input_names(layers)
        if decode_attention not in DECODE_ATTENTIONS:
            raise ExportError(
                f"decode_attention must be one of {', '.join(DECODE_ATTENTIONS)}, got {decode_attention!r}"
            )
        if decode_attention == "gqa":
            onnx.save_model(build_gqa_decode(model), str(tmp_decode))
        else:
            export_torchscript(
                _DecodeGraph(model),
                (torch.tensor([[3]], dtype=torch.int64), torch.tensor([cache_len], dtype=torch.int64))
                + caches,
                tmp_decode,
                names,
                ["logits", "k_new", "v_new"],
                {name: {1: "P"} for name in names[2:]},
            )
        for path, final in ((tmp_prefill, prefill_path), (tmp_decode, decode_path)):
            graph = onnx.load(str(path))  # the exporter may have written external data next to it
            meta = {
                "gsv.graph": final.stem,
                "n_layer": str(layers),
                "hidden_dim": str(model.hidden_dim),
                "vocab_size": str(model.vocab_size),
                "max_positions": str(PE_TABLE_ROWS),
                "decode_attention": decode_attention,
            }
            if final == prefill_path:
                cache_shape = [layers, 1, "T_text + T_prompt", model.hidden_dim]
                _set_output_shapes(graph, {"k_cache": cache_shape, "v_cache": cache_shape})
            del graph.metadata_props[:]
            for key, value in meta.items():
                graph.metadata_props.add(key=key, value=value)
            onnx.save_model(graph, str(final))
    share_external_data([prefill_path, decode_path], SHARED_DATA_FILE)
    return {"gpt_prefill": prefill_path, "gpt_decode": decode_path, "gpt_data": out_dir / SHARED_DATA_FILE}


def verify_gpt(
    model: Text2SemanticDecoder, paths: dict[str, Path], seed: int = 1, steps: int = 3
) -> dict[str, float]:
    """Max abs error of ONNX Runtime against torch on random inputs.

    Runs prefill with a prompt and in reference-free mode, then `steps` chained decode steps
    through the runtime's `GptDecoder` (either decode variant); torch computes each step on the
    same (ORT) cache, so each error is the step's own. Returns {"prefill_logits",
    "prefill_cache", "prefill_ref_free_logits", "decode_logits", "decode_cache"}.
    """
    import numpy as np
    import onnxruntime as ort

    from gsv_onnx.runtime.decoder import GptDecoder
    from gsv_onnx.runtime.options import RuntimeOptions

    model = model.eval()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    prefill = ort.InferenceSession(str(paths["gpt_prefill"]), options, providers=["CPUExecutionProvider"])
    phone_ids, bert_features, prompt_codes = _example_inputs(model, text_len=11, prompt_len=7, seed=seed)
    errors: dict[str, float] = {}

    def err(a, b) -> float:
        return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - b.detach().numpy().astype(np.float64))))

    feeds = {
        "phone_ids": phone_ids.numpy(),
        "bert_features": bert_features.numpy(),
        "prompt_codes": prompt_codes.numpy(),
    }
    with torch.no_grad():
        logits, k_cache, v_cache = model.prefill(phone_ids, bert_features, prompt_codes)
        ort_logits, ort_k, ort_v = prefill.run(None, feeds)
        errors["prefill_logits"] = err(ort_logits, logits)
        errors["prefill_cache"] = max(err(ort_k, k_cache), err(ort_v, v_cache))
        free_logits, _, _ = model.prefill(phone_ids, bert_features, None)
        feeds["prompt_codes"] = np.zeros((1, 0), dtype=np.int64)
        errors["prefill_ref_free_logits"] = err(prefill.run(["logits"], feeds)[0], free_logits)

        decoder = GptDecoder(
            paths["gpt_prefill"],
            paths["gpt_decode"],
            RuntimeOptions(intra_op_threads=1),
            max_new_tokens=steps,
        )
        step_logits = decoder.prefill(phone_ids.numpy(), bert_features.numpy(), prompt_codes.numpy())
        errors["decode_logits"] = errors["decode_cache"] = 0.0
        for _ in range(steps):
            token, position = int(np.argmax(step_logits[:-1])), decoder.position
            k_now, v_now = (torch.from_numpy(np.ascontiguousarray(c))[:, None] for c in decoder.cache_view())
            t_logits, t_k, t_v = model.decode_step(
                torch.tensor([[token]]), torch.tensor([position]), k_now, v_now
            )
            step_logits = decoder.step(token)
            k_after, v_after = decoder.cache_view()
            errors["decode_logits"] = max(errors["decode_logits"], err(step_logits[None], t_logits))
            errors["decode_cache"] = max(
                errors["decode_cache"], err(k_after[:, -1], t_k[:, 0, 0]), err(v_after[:, -1], t_v[:, 0, 0])
            )
    return errors
