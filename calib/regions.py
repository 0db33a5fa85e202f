"""Which nodes of a vision graph stay float32 in a reduced-precision build, by where they were traced from (the
exporter records each node's module in its metadata): the pixel table (uint8 -> the processor's float values), the
selection (saliency: LLaVA's [CLS] row, Qwen's global attention block; relevance; the method), every LayerNorm,
and for INT8 also every Softmax and the projector (LLaVA's MultiModalProjector, Qwen's PatchMerger), whose tokens
feed the relevance cue directly (quantising it moved kept positions most). The FP16 and INT8 builds and the
TensorRT lint all read this one list.
"""

from __future__ import annotations

SELECTION_MODULES = ("adafv.saliency.ClsSaliency", "adafv.vision.SelectTokens", "adafv.vision.ZipTokens",
                     "GlobalAttention")  # the last: Qwen's saliency block attention (adafv/archs/qwen.py)
PROJECTOR_MODULES = ("MultiModalProjector", "PatchMerger")  # LLaVA's; Qwen2.5-VL's and Qwen2-VL's merger


def _traced_from(node, name: str) -> bool:
    return any(p.key == "pkg.torch.onnx.class_hierarchy" and name in p.value for p in node.metadata_props)


def in_pixel_table(node) -> bool:
    """Whether a node was traced from the pixel table (uint8 -> float32 through the processor's table)."""
    return _traced_from(node, "PixelTable")


def in_selection(node) -> bool:
    """Whether a node was traced from the selection modules (saliency row, relevance, the method), by its metadata."""
    return any(_traced_from(node, m) for m in SELECTION_MODULES)


def in_projector(node) -> bool:
    return any(_traced_from(node, m) for m in PROJECTOR_MODULES)


def fp32_nodes(model) -> list[str]:
    """The nodes that must compute in FP32 in every reduced-precision graph: the pixel table, the selection
    subgraph and every LayerNormalization."""
    return [n.name for n in model.graph.node
            if in_selection(n) or in_pixel_table(n) or n.op_type == "LayerNormalization"]  # fmt: skip


def int8_excluded(model) -> list[str]:
    """The nodes that stay float32 in the INT8 graph: `fp32_nodes`, every Softmax, and the projector."""
    extra = [n.name for n in model.graph.node if n.op_type == "Softmax" or in_projector(n)]
    return fp32_nodes(model) + extra
