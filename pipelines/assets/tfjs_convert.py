"""TensorFlow.js graph models -> TFLite files, for the set-up step (needs TensorFlow).

A TensorFlow.js *graph model* is a `model.json` (a TensorFlow `GraphDef` written as JSON, under
`modelTopology`, plus a `weightsManifest`) and binary weight shards. Its graph is TensorFlow's
own, with three things TensorFlow's TFLite converter does not take as they are:

- weights are not in the graph: each `Const` node named in the manifest gets its value from the
  shards (float32, or float16 / uint8 / uint16 quantized, dequantized here to float32);
- convolutions are fused by the TensorFlow.js converter into `_FusedConv2D` and
  `FusedDepthwiseConv2dNative` nodes (the second is not a TensorFlow op at all): each is split
  back into `Conv2D` / `DepthwiseConv2dNative`, `BiasAdd` and its activation;
- a `StridedSlice` that only inserts axes (`x[:, :, None]`) stops the converter when the input's
  height and width are dynamic: each such slice becomes a chain of `ExpandDims`.

The result is the same function: `tests/pipelines/stages/test_pose_models.py` checks the converted
MoveNet
against its TensorFlow.js graph run by TensorFlow. The conversion is deterministic for a given
TensorFlow version (the set-up step pins the output's sha256).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

# Activations that a fused TensorFlow.js convolution may carry after its BiasAdd.
_ACTIVATIONS = ("Relu", "Relu6", "Elu", "Sigmoid", "Tanh")
# TensorFlow.js weight dtypes and quantized storage dtypes.
_DTYPES = {
    "float32": np.float32,
    "int32": np.int32,
    "bool": np.bool_,
    "float16": np.float16,
    "uint8": np.uint8,
    "uint16": np.uint16,
}


class ConversionError(ValueError):
    """A TensorFlow.js model cannot be read or converted; the message says which part and why."""


def read_weights(manifest: list, shards: Mapping[str, bytes]) -> dict[str, np.ndarray]:
    """The weights of a TensorFlow.js graph model, by node name.

    Args:
      manifest: the model's `weightsManifest`: groups of `paths` (shard names) and `weights`
        (`name`, `shape`, `dtype`, optional `quantization` {dtype, and scale/min for ints}).
      shards: shard name -> bytes.

    Returns:
      name -> array of the weight's shape and dtype (quantized weights dequantized).

    Raises:
      ConversionError: a shard is missing or shorter than its weights, or a dtype is unknown.
    """
    out: dict[str, np.ndarray] = {}
    for group in manifest:
        try:
            buf = b"".join(shards[p] for p in group["paths"])
        except KeyError as e:
            raise ConversionError(f"weight shard {e.args[0]!r} is missing") from None
        offset = 0
        for w in group["weights"]:
            shape = [int(d) for d in w["shape"]]
            count = int(np.prod(shape)) if shape else 1
            quant = w.get("quantization")
            stored = (quant or w)["dtype"]
            if stored not in _DTYPES or w["dtype"] not in _DTYPES:
                raise ConversionError(f"weight {w['name']!r}: unknown dtype {stored!r}")
            size = count * np.dtype(_DTYPES[stored]).itemsize
            if offset + size > len(buf):
                raise ConversionError(f"weight {w['name']!r}: the shards end before its data")
            arr = np.frombuffer(buf, _DTYPES[stored], count, offset)
            offset += size
            if quant and stored == "float16":
                arr = arr.astype(np.float32)
            elif quant:
                arr = arr.astype(np.float32) * float(quant["scale"]) + float(quant["min"])
            out[w["name"]] = arr.astype(_DTYPES[w["dtype"]]).reshape(shape)
    return out


def graph_def(model_json: bytes, shards: Mapping[str, bytes]):
    """A TensorFlow `GraphDef` from a TensorFlow.js graph model, weights in, fused ops split.

    Args:
      model_json: the `model.json` bytes.
      shards: weight shard name (as in the manifest's `paths`) -> bytes.

    Returns:
      (graph_def, signature): a `tf.compat.v1.GraphDef` and the model's `signature` dict.
    """
    import tensorflow as tf
    from google.protobuf import json_format

    try:
        model = json.loads(model_json)
        topology, manifest = model["modelTopology"], model["weightsManifest"]
    except (ValueError, KeyError, TypeError) as e:
        raise ConversionError(f"not a TensorFlow.js graph model: {e}") from None
    weights = read_weights(manifest, shards)
    source = json_format.ParseDict(topology, tf.compat.v1.GraphDef(), ignore_unknown_fields=True)
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(source.versions)
    for node in source.node:
        if node.op == "Const" and node.name in weights:
            value = weights[node.name]
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
            node.attr["dtype"].type = tf.as_dtype(value.dtype).as_datatype_enum
        if node.op in ("_FusedConv2D", "FusedDepthwiseConv2dNative"):
            out.node.extend(_unfuse(node))
        else:
            out.node.append(node)
    return _expand_new_axis_slices(out), model.get("signature", {})


def _unfuse(node) -> list:
    """A fused convolution node -> convolution, BiasAdd, activation, and an Identity of its name."""
    import tensorflow as tf

    fused = [s.decode() for s in node.attr["fused_ops"].list.s]
    if not fused or fused[0] != "BiasAdd" or any(op not in _ACTIVATIONS for op in fused[1:]):
        raise ConversionError(f"node {node.name!r}: unsupported fused ops {fused}")
    base = "Conv2D" if node.op == "_FusedConv2D" else "DepthwiseConv2dNative"
    conv = tf.compat.v1.NodeDef(name=f"{node.name}/conv", op=base, input=node.input[:2])
    for key in ("T", "strides", "padding", "dilations", "data_format", "explicit_paddings"):
        if key in node.attr:
            conv.attr[key].CopyFrom(node.attr[key])
    nodes, last = [conv], conv.name
    for op, extra in zip(fused, [node.input[2]] + [None] * (len(fused) - 1), strict=True):
        inputs = [last] if extra is None else [last, extra]
        step = tf.compat.v1.NodeDef(name=f"{node.name}/{op.lower()}", op=op, input=inputs)
        step.attr["T"].CopyFrom(node.attr["T"])
        nodes.append(step)
        last = step.name
    ident = tf.compat.v1.NodeDef(name=node.name, op="Identity", input=[last])
    ident.attr["T"].CopyFrom(node.attr["T"])
    return [*nodes, ident]


def _expand_new_axis_slices(gd):
    """`StridedSlice` nodes that only insert axes -> `ExpandDims` chains; others unchanged."""
    import tensorflow as tf

    consts = {n.name: n for n in gd.node if n.op == "Const"}
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(gd.versions)
    for node in gd.node:
        axes = _inserted_axes(node, consts) if node.op == "StridedSlice" else None
        if not axes:
            out.node.append(node)
            continue
        last = node.input[0]
        for j, axis in enumerate(axes):
            const = tf.compat.v1.NodeDef(name=f"{node.name}/axis{j}", op="Const")
            const.attr["dtype"].type = tf.int32.as_datatype_enum
            const.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.int32(axis)))
            name = node.name if j == len(axes) - 1 else f"{node.name}/expand{j}"
            expand = tf.compat.v1.NodeDef(name=name, op="ExpandDims", input=[last, const.name])
            expand.attr["T"].CopyFrom(node.attr["T"])
            expand.attr["Tdim"].type = tf.int32.as_datatype_enum
            out.node.extend([const, expand])
            last = name
    return out


def _inserted_axes(node, consts) -> list[int] | None:
    """The axes a StridedSlice inserts, if inserting them is all it does; else None."""
    import tensorflow as tf

    a = node.attr
    new_axis = a["new_axis_mask"].i
    if not new_axis or a["shrink_axis_mask"].i or a["ellipsis_mask"].i:
        return None
    strides_node = consts.get(node.input[3])
    if strides_node is None:
        return None
    strides = tf.make_ndarray(strides_node.attr["value"].tensor).reshape(-1)
    begin, end = a["begin_mask"].i, a["end_mask"].i
    for i, stride in enumerate(strides):
        if (new_axis >> i) & 1:
            continue
        if not ((begin >> i) & 1 and (end >> i) & 1 and stride == 1):
            return None  # a real slice along axis i
    return [i for i in range(len(strides)) if (new_axis >> i) & 1]


def to_tflite(model_json: bytes, shards: Mapping[str, bytes], input_shape, input_dtype) -> bytes:
    """Converts a TensorFlow.js graph model with one input to a TFLite flatbuffer.

    Args:
      model_json, shards: as for `graph_def`.
      input_shape: the input's shape, None for a dynamic dimension (e.g. [1, None, None, 3]).
      input_dtype: the input's TensorFlow dtype (e.g. tf.int32).

    Returns:
      The TFLite model bytes (float32 weights, TFLite builtin ops only).

    Raises:
      ConversionError: the model is not a one-input graph model, or the converter failed.
    """
    import tensorflow as tf

    gd, signature = graph_def(model_json, shards)
    inputs = [v["name"] for v in signature.get("inputs", {}).values()]
    outputs = [v["name"] for v in signature.get("outputs", {}).values()]
    if len(inputs) != 1 or not outputs:
        raise ConversionError(f"expected one input and some outputs, signature has {signature}")

    def tensor(graph, name):
        return graph.get_tensor_by_name(name if ":" in name else f"{name}:0")

    wrapped = tf.compat.v1.wrap_function(lambda: tf.graph_util.import_graph_def(gd, name=""), [])
    pruned = wrapped.prune(
        tensor(wrapped.graph, inputs[0]), [tensor(wrapped.graph, n) for n in outputs]
    )

    @tf.function(input_signature=[tf.TensorSpec(input_shape, input_dtype, name="input")])
    def serve(x):
        return pruned(x)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], serve
    )
    try:
        return bytes(converter.convert())
    except Exception as e:  # the converter raises its own ConverterError types
        raise ConversionError(f"TFLite conversion failed: {str(e)[-1500:]}") from None
