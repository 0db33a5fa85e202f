"""FP16 variant of the vision graph: every float op in FP16 except the pixel table, the selection subgraph (saliency
row, relevance, AdaFV) and the LayerNorms, which stay FP32 behind explicit Casts.

The conversion is ONNX Runtime's own `convert_float_to_float16` (maintained with the ops it knows, already in both
ONNX Runtime packages; onnxconverter-common is the same code, older; ModelOpt's AutoCast pins onnx ~= 1.21 and
onnxruntime-gpu ~= 1.24, which clash with onnxruntime-genai-cuda), followed by `dedupe_casts`: the converter in
onnxruntime-gpu 1.31 adds one Cast per *consumer* of a shared float16 tensor, all with the same node and output
name, which ONNX Runtime then refuses to load ("two nodes with same node name"); 1.32 shares one Cast. Merging
identical nodes makes every version's output valid, and the build then loads and runs the result in an
InferenceSession before it keeps it.

The same file serves TensorRT 11 (strongly typed networks: the graph's types are the engine's precisions; its FP16
builder flag is gone) and ONNX Runtime's CUDA/TensorRT providers. For TensorRT 10, `fp32_layers` gives the node names
the builder pins to FP32 through precision constraints on the FP32 graph.
"""

from __future__ import annotations

from pathlib import Path

from .regions import fp32_nodes


def dedupe_casts(model) -> int:
    """Merge nodes that are exact duplicates (same op, inputs, outputs and attributes): the converter's repeated
    Casts. Then give any remaining same-named nodes distinct names. Returns how many nodes were removed."""
    seen: set[bytes] = set()
    keep = []
    for node in model.graph.node:
        key = node.SerializeToString(deterministic=True)
        if key in seen:
            continue
        seen.add(key)
        keep.append(node)
    removed = len(model.graph.node) - len(keep)
    if removed:
        del model.graph.node[:]
        model.graph.node.extend(keep)
    names: dict[str, int] = {}
    for node in model.graph.node:
        if node.name in names:
            names[node.name] += 1
            node.name = f"{node.name}_{names[node.name]}"
        else:
            names[node.name] = 0
    return removed


def to_fp16(src: Path, dst: Path, keep32: list[str] | None = None) -> dict:
    """Write the mixed-precision graph `dst` (+ `dst.data`) from the FP32 graph `src`; inputs/outputs keep their
    types. `keep32`: the nodes that stay FP32 (default `fp32_nodes`: the pixel table, selection and LayerNorms)."""
    import onnx
    import onnx_graphsurgeon as gs
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    keep32 = fp32_nodes(model) if keep32 is None else keep32
    half = convert_float_to_float16(model, keep_io_types=True, node_block_list=keep32, disable_shape_infer=False)
    merged = dedupe_casts(half)
    metadata = {n.name: list(n.metadata_props) for n in half.graph.node}
    graph = gs.import_onnx(half)
    graph.toposort()  # the converter appends its Cast nodes at the end; ONNX (and TensorRT) need topological order
    half = gs.export_onnx(graph)
    for node in half.graph.node:  # graphsurgeon drops node metadata; the lint reads the selection scope from it
        node.metadata_props.extend(metadata.get(node.name, []))
    del half.graph.value_info[:]
    onnx.save(half, str(dst), save_as_external_data=True, location=dst.name + ".data", size_threshold=1024)
    return {"fp32_nodes": len(keep32), "nodes": len(half.graph.node), "merged_duplicate_nodes": merged}
