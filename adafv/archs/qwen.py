"""Qwen2.5-VL (`qwen2_5_vl`; also Cosmos-Reason1-7B, a Qwen2.5-VL): a ViT of 14-px patches over a dynamic
resolution (the image is resized to multiples of 28 px, never cropped), window attention with full attention in
a few blocks, a 2x2 PatchMerger into the LLM's width, and an LLM with 3-D rotary positions (M-RoPE,
`adafv.positions`).

There is no [CLS] token. Saliency is *global attention* (our extension of AdaFV, docs/method.md): the attention
each patch receives in the tower's last full-attention block (softmax of QK^T/sqrt(d) in float32, mean over heads
and queries), with the window permutation undone and summed over each 2x2 merge unit, so it scores the merged
tokens the LLM reads. It is exact at every size: the block's attention runs in query blocks whose probabilities
give both the block's output and the column sums, so memory stays bounded (QUERY_BLOCK_ELEMENTS) and nothing is
computed twice.

Visual tokens are read in raster order on the merged grid (one "crop": N = 1, P = rows x cols merged tokens).
The processor object of transformers needs torchvision (for video); `QwenProcessor` is the image processor
(`Qwen2VLImageProcessorPil`) and the tokenizer with the chat template, expanding `<|image_pad|>` itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from .base import Arch, register

QUERY_BLOCK_ELEMENTS = 1 << 24  # scores held at once in the saliency block: heads x queries x keys (64 MB fp32)
IMAGE_PAD, VISION_START, VISION_END = "<|image_pad|>", "<|vision_start|>", "<|vision_end|>"


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's processor rule: (height, width) multiples of `factor`, within [min_pixels, max_pixels], the aspect
    kept as closely as rounding allows (transformers' smart_resize; the runtime's copy is adafv.runtime.preprocess)."""
    import math

    h = round(height / factor) * factor
    w = round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def window_layout(rows: int, cols: int, merge: int, window: int) -> tuple[np.ndarray, list[int]]:
    """The window permutation of a (rows, cols) patch grid, as Qwen2.5-VL's tower reads it.

    Merged cells (rows/merge x cols/merge, raster order) are grouped into windows of `window` x `window` cells
    (the last ones smaller); returns (order (P,) the cells in window-major order, lengths: patches per window).
    """
    r, c = rows // merge, cols // merge
    index = np.arange(r * c).reshape(r, c)
    order, lengths = [], []
    for top in range(0, r, window):
        for left in range(0, c, window):
            block = index[top : top + window, left : left + window].reshape(-1)
            order.append(block)
            lengths.append(block.size * merge * merge)
    return np.concatenate(order), lengths


def window_groups(lengths: list[int]) -> tuple[list[np.ndarray], np.ndarray]:
    """Windows (consecutive chunks of `lengths` patches) grouped by length: ([(windows, length) patch indices per
    length], the permutation that puts the groups' concatenation back in window order)."""
    starts = np.cumsum([0, *lengths[:-1]])
    indices = []
    for n in sorted(set(lengths)):
        first = starts[[i for i, m in enumerate(lengths) if m == n]]  # (windows,)
        indices.append(first[:, None] + np.arange(n)[None, :])  # (windows, n)
    return indices, np.argsort(np.concatenate([i.reshape(-1) for i in indices]))


def patch_positions(rows: int, cols: int, merge: int) -> np.ndarray:
    """(rows*cols, 2) the (row, col) of each patch in merge-unit order (the processor's patch layout)."""
    h, w = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    shape = (rows // merge, merge, cols // merge, merge)
    h = h.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
    w = w.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
    return np.stack([h, w], axis=1)


class QwenProcessor:
    """What `Qwen2_5_VLProcessor` does for one image, without its video processor (which needs torchvision)."""

    def __init__(self, image_processor, tokenizer, chat_template: str | None = None):
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None)
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)

    def apply_chat_template(self, conversation, add_generation_prompt=True, tokenize=False):
        return self.tokenizer.apply_chat_template(conversation, chat_template=self.chat_template, tokenize=tokenize,
                                                  add_generation_prompt=add_generation_prompt)  # fmt: skip

    def __call__(self, images, text: str, return_tensors: str = "pt") -> dict:
        import torch

        pixels = self.image_processor(images=images, return_tensors="pt")
        grid = pixels["image_grid_thw"]  # (1, 3) t, patch rows, patch cols
        merge = self.image_processor.merge_size
        n = int(grid[0].prod()) // (merge * merge)
        if text.count(IMAGE_PAD) != 1:
            raise ModelError(f"the prompt must hold exactly one {IMAGE_PAD}")
        ids = self.tokenizer(text.replace(IMAGE_PAD, IMAGE_PAD * n), add_special_tokens=False,
                             return_tensors="pt")["input_ids"]  # fmt: skip
        from transformers import BatchFeature

        return BatchFeature({"input_ids": ids, "attention_mask": torch.ones_like(ids),
                             "pixel_values": pixels["pixel_values"], "image_grid_thw": grid,
                             "mm_token_type_ids": (ids == self.image_token_id).int()})  # fmt: skip

    def save_pretrained(self, out) -> None:
        self.image_processor.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        if self.chat_template:
            (Path(out) / "chat_template.json").write_text(json.dumps({"chat_template": self.chat_template}))

    @classmethod
    def from_pretrained(cls, source: str, **kwargs) -> QwenProcessor:
        from transformers import AutoTokenizer, Qwen2VLImageProcessorPil

        image_processor = Qwen2VLImageProcessorPil.from_pretrained(source, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        template = None
        folder = Path(source)
        if (folder / "chat_template.json").is_file():
            template = json.loads((folder / "chat_template.json").read_text()).get("chat_template")
        elif (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text()
        return cls(image_processor, tokenizer, template)


def _torch_modules():
    """The nn.Modules, defined on first use so that importing adafv.archs needs no torch."""
    import torch
    from torch import nn
    from torch.nn import functional as F
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

    class Merger(nn.Module):
        """The PatchMerger over grouped features: (..., P, 4C) -> (..., P, D) (it norms each patch's C, then mixes)."""

        def __init__(self, merger, width: int):
            super().__init__()
            self.merger, self.width = merger, width

        def forward(self, grouped):
            lead = grouped.shape[:-1]
            return self.merger(grouped.reshape(-1, self.width)).reshape(*lead, -1)

    class GlobalAttention(nn.Module):
        """The saliency block's attention over all N patches: its normed input h (N, C) -> the attention output
        (H, N, E), the attention each patch receives, mean over heads and queries (N,), and the keys, mean over
        heads (N, E). Owns the block's qkv projection and rotary (as LLaVA's ClsSaliency owns q_proj and k_proj):
        the saliency's whole path from the hidden state is selection math, float32 in reduced-precision builds
        (calib/regions.py). Query blocks whose probabilities give both the output and the column sums (memory
        bounded by QUERY_BLOCK_ELEMENTS, nothing computed twice)."""

        def __init__(self, qkv: nn.Module, heads: int):
            super().__init__()
            self.qkv, self.heads = qkv, heads  # the saliency block's own Linear (shared, not copied)

        def forward(self, h, cos, sin):
            N = h.shape[0]
            q, k, v = self.qkv(h).reshape(N, 3, self.heads, -1).permute(1, 0, 2, 3).unbind(0)  # (N, H, E) each
            q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
            q, k, v = (t.transpose(0, 1) for t in (q, k, v))  # (H, N, E)
            H, N, E = q.shape
            block = max(1, QUERY_BLOCK_ELEMENTS // (H * N))
            scale = E**-0.5
            kf, vf = k.float(), v.float()
            received = torch.zeros(N, dtype=torch.float32)
            outs = []
            for start in range(0, N, block):
                qb = q[:, start : start + block].float()  # (H, b, E)
                probs = torch.softmax((qb @ kf.transpose(1, 2)) * scale, dim=-1)  # (H, b, N) float32
                received = received + probs.sum(dim=(0, 1))  # (N,)
                outs.append((probs @ vf).to(v.dtype))  # (H, b, E)
            return torch.cat(outs, dim=1), received / (H * N), kf.mean(0)  # (H, N, E), (N,), (N, E)

    class QwenVisualTokens(nn.Module):
        """patches (rows*cols, 3*2*14*14) of one image, its patch grid -> merged tokens (1, P, D) and their global
        attention saliency (1, P), raster order on the merged grid. Composes the HF tower's modules (shared)."""

        def __init__(self, visual, width: int, full: list[int], window: int | None):
            """`width`: the tower's; `full`: its full-attention blocks; `window`: merged cells per window side
            (None: no window attention, Qwen2-VL)."""
            super().__init__()
            cfg = visual.config
            self.patch_embed, self.rotary, self.blocks = visual.patch_embed, visual.rotary_pos_emb, visual.blocks
            self.merge = cfg.spatial_merge_size
            self.unit = self.merge**2
            self.window = window
            self.full = set(full)
            self.saliency_block = max(self.full)  # the last full-attention block
            self.heads = cfg.num_heads
            self.width = width
            self.projector = Merger(visual.merger, self.width)
            self.global_attention = GlobalAttention(self.blocks[self.saliency_block].attn.qkv, self.heads)

        def layout(self, grid: tuple[int, int]):
            """Static index structures of a (rows, cols) patch grid: computed in numpy, constants in a graph."""
            rows, cols = grid
            if self.window is None:  # one "window": every patch, merge units in raster order
                order, lengths = np.arange(rows * cols // self.unit), [rows * cols]
            else:
                order, lengths = window_layout(rows, cols, self.merge, self.window)
            hw = patch_positions(rows, cols, self.merge).reshape(-1, self.unit, 2)[order].reshape(-1, 2)
            return order, np.argsort(order), window_groups(lengths), hw

        def hidden(self, pixel_values, grid: tuple[int, int]):
            """-> the last block's features grouped per merge unit (1, P, 4C), saliency (1, P) and the saliency
            block's keys, mean over heads and the unit (1, P, E); raster order on the merged grid."""
            order, reverse, windows, hw = self.layout(grid)
            order_t, reverse_t = torch.from_numpy(order), torch.from_numpy(reverse)
            x = self.patch_embed(pixel_values)  # (N, C)
            N, C = x.shape
            P = N // self.unit
            x = x.reshape(P, self.unit, C)[order_t].reshape(N, C)  # window order
            cos, sin = self.rotary(x, torch.from_numpy(hw))  # (N, head_dim) each
            saliency = keys = None
            for i, block in enumerate(self.blocks):
                groups = None if i in self.full else windows
                out, scores = self._attention(block.attn, block.norm1(x), cos, sin, groups, i == self.saliency_block)
                if scores is not None:
                    saliency, keys = scores
                x = x + out
                x = x + block.mlp(block.norm2(x))
            grouped = x.reshape(P, self.unit * C)[reverse_t]  # (P, 4C) raster
            saliency = saliency.reshape(P, self.unit).sum(-1)[reverse_t]  # (P,) each merged token's share
            keys = keys.reshape(P, self.unit, -1).mean(1)[reverse_t]  # (P, E)
            return grouped[None], saliency[None], keys[None]

        def _attention(self, attn, h, cos, sin, groups, want_saliency: bool):
            """One block's attention over all N patches (groups None) or within windows: windows of one length
            are gathered into one batch, (windows, H, length, E), so a block runs a few attentions, not one per
            window (a smaller graph, the same math)."""
            N = h.shape[0]
            if want_saliency:
                out, saliency, keys = self.global_attention(h, cos, sin)  # (H, N, E), (N,), (N, E) window order
                return attn.proj(out.transpose(0, 1).reshape(N, -1)), (saliency, keys)
            q, k, v = attn.qkv(h).reshape(N, 3, self.heads, -1).permute(1, 0, 2, 3).unbind(0)  # (N, H, E) each
            q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
            if groups is None:
                out = F.scaled_dot_product_attention(*(t.transpose(0, 1)[None] for t in (q, k, v)))[0]
                return attn.proj(out.transpose(0, 1).reshape(N, -1)), None  # (N, H*E)
            indices, inverse = groups
            outs = []
            for index in indices:  # (windows, length) patch indices of the windows of one length
                t = torch.from_numpy(index)
                qg, kg, vg = (x[t].permute(0, 2, 1, 3) for x in (q, k, v))  # (windows, H, length, E)
                o = F.scaled_dot_product_attention(qg, kg, vg)  # (windows, H, length, E)
                outs.append(o.permute(0, 2, 1, 3).reshape(-1, self.heads, o.shape[-1]))  # (windows*length, H, E)
            out = torch.cat(outs)[torch.from_numpy(inverse)]  # (N, H, E) back in window order
            return attn.proj(out.reshape(N, -1)), None

        def saliency_attention(self, h, cos, sin, grid: tuple[int, int], saliency: bool):
            """The saliency block's attention over all N patches, alone: with the saliency (GlobalAttention, as the
            vision graph runs it: the output (N, C) and each merged token's share (P,), raster order) or without it
            (scaled-dot-product attention, as the tower without the selection runs it: the output only). `adafv
            bench` times the two side by side to isolate what exact global attention costs."""
            block = self.blocks[self.saliency_block]
            out, scores = self._attention(block.attn, h, cos, sin, None, saliency)  # (N, C)
            if not saliency:
                return out
            P = h.shape[0] // self.unit
            reverse = torch.from_numpy(self.layout(grid)[1])  # window order -> raster
            return out, scores[0].reshape(P, self.unit).sum(-1)[reverse]  # (N, C), (P,)

        def forward(self, pixel_values, grid: tuple[int, int]):
            grouped, saliency, _ = self.hidden(pixel_values, grid)
            return self.projector(grouped), saliency  # (1, P, D), (1, P)

    class QwenGridTokens(nn.Module):
        """The tower at one fixed resolution, as the vision graph runs it: normalised pixels (1, 3, H, W) ->
        patchified in the processor's layout -> QwenVisualTokens. Its index structures are constants."""

        def __init__(self, tokens: QwenVisualTokens, patch: int, temporal: int, resolution: tuple[int, int]):
            super().__init__()
            self.tokens, self.patch, self.temporal = tokens, patch, temporal
            self.grid = (resolution[0] // patch, resolution[1] // patch)
            self.projector = tokens.projector

        def patchify(self, pixels):
            """(1, 3, H, W) -> (rows*cols, 3*T*p*p) in merge-unit order, the frame repeated T times."""
            m, p, (rows, cols) = self.tokens.merge, self.patch, self.grid
            x = pixels.reshape(3, rows // m, m, p, cols // m, m, p)
            x = x.permute(1, 4, 2, 5, 0, 3, 6)  # (rows/m, cols/m, m, m, 3, p, p)
            x = x.unsqueeze(5).expand(-1, -1, -1, -1, -1, self.temporal, -1, -1)  # (..., 3, T, p, p)
            return x.reshape(rows * cols, -1)

        def hidden(self, pixels):
            return self.tokens.hidden(self.patchify(pixels), self.grid)

        def forward(self, pixels):
            return self.tokens(self.patchify(pixels), self.grid)  # (1, P, D), (1, P)

    return QwenVisualTokens, QwenGridTokens


class Qwen25VL(Arch):
    name = "qwen2_5_vl"
    anyres = False
    positions = "mrope"
    processor_kind = "qwen2vl"

    def model_class(self):
        from transformers import Qwen2_5_VLForConditionalGeneration

        return Qwen2_5_VLForConditionalGeneration

    def tower_layout(self, vision) -> tuple[int, list[int], int | None]:
        """(the tower's width, its full-attention blocks, merged cells per window side) from its config."""
        return vision.hidden_size, list(vision.fullatt_block_indexes), \
            vision.window_size // vision.spatial_merge_size // vision.patch_size  # fmt: skip

    def merger_width(self, vision) -> int:
        return vision.out_hidden_size

    def check(self, config, where: str) -> None:
        vision = config.vision_config
        if vision.spatial_merge_size != 2 or vision.temporal_patch_size != 2:
            raise ModelError(f"{where}: adafv supports a 2x2 merger over 2-frame patches "
                             f"(spatial_merge_size={vision.spatial_merge_size}, "
                             f"temporal_patch_size={vision.temporal_patch_size})")  # fmt: skip
        if self.merger_width(vision) != config.text_config.hidden_size:
            raise ModelError(f"{where}: the merger's width {self.merger_width(vision)} is not the LLM's "
                             f"{config.text_config.hidden_size}")  # fmt: skip
        self._check_blocks(vision, where)

    def _check_blocks(self, vision, where: str) -> None:
        if not vision.fullatt_block_indexes:
            raise ModelError(f"{where}: no full-attention block in the tower: global attention needs one")
        if max(vision.fullatt_block_indexes) >= vision.depth:
            raise ModelError(f"{where}: fullatt_block_indexes {list(vision.fullatt_block_indexes)} exceed the depth "
                             f"{vision.depth}")  # fmt: skip

    def config_class(self):
        from transformers import Qwen2_5_VLConfig

        return Qwen2_5_VLConfig

    def config(self, vision, text, tokenizer, *, pinpoints=None):
        ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in
               [("image_token_id", IMAGE_PAD), ("vision_start_token_id", VISION_START),
                ("vision_end_token_id", VISION_END), ("video_token_id", "<|video_pad|>")]}  # fmt: skip
        vision = vision if isinstance(vision, dict) else vision.to_dict()
        text = text if isinstance(text, dict) else text.to_dict()
        return self.config_class()(vision_config=vision, text_config=text, **ids)

    def build(self, vision, text, tokenizer, *, seed: int = 0, chat_template: str | None = None, pinpoints=None,
              min_pixels: int = 56 * 56, max_pixels: int = 28 * 28 * 1280) -> tuple[Any, Any]:  # fmt: skip
        import torch
        from transformers import Qwen2VLImageProcessorPil

        config = self.config(vision, text, tokenizer)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self.model_class()(config)
        image_processor = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels,
                                                   patch_size=config.vision_config.patch_size)  # fmt: skip
        return model.eval(), QwenProcessor(image_processor, tokenizer, chat_template)

    def load_processor(self, source: str, **kwargs):
        return QwenProcessor.from_pretrained(source, **kwargs)

    def crop_range(self, config) -> tuple[int, int]:
        return 1, 1

    def grid(self, config, image_size_hw: tuple[int, int]) -> tuple[int, int]:
        return 1, 1

    def patches_per_side(self, config) -> int:
        raise ModelError("Qwen-VL has no fixed patch grid: its grid follows each image (patch_grid)")

    def patch_grid(self, inputs: dict) -> tuple[int, int]:
        """(rows, cols) of patches of the processed image (image_grid_thw)."""
        _, rows, cols = (int(v) for v in inputs["image_grid_thw"][0])
        return rows, cols

    def merged_grid(self, config, patch_grid: tuple[int, int]) -> tuple[int, int]:
        m = config.vision_config.spatial_merge_size
        return patch_grid[0] // m, patch_grid[1] // m

    def visual(self, model):
        return _torch_modules()[0](model.model.visual, *self.tower_layout(model.config.vision_config))

    def graph_visual(self, model, resolution: tuple[int, int] | None = None):
        cfg = model.config.vision_config
        fixed = _torch_modules()[1]
        return fixed(self.visual(model), cfg.patch_size, cfg.temporal_patch_size, resolution)

    def default_resolution(self, config, processor_limits: tuple[int, int] = (56 * 56, 28 * 28 * 1280)):
        """(height, width) Qwen's processor (its default pixel range) gives a 640x480 (VGA) camera frame: 476x644.
        A checkpoint whose processor has another range refuses it at build time, in one line."""
        return smart_resize(480, 640, config.vision_config.patch_size * 2, *processor_limits)

    def check_resolution(self, config, resolution: tuple[int, int]) -> None:
        factor = config.vision_config.patch_size * config.vision_config.spatial_merge_size
        h, w = resolution
        if h < factor or w < factor or h % factor or w % factor:
            raise ModelError(f"--resolution {w}x{h}: width and height must be multiples of {factor} (>= {factor})")

    def newline(self, model):
        return None

    def stock_image_features(self, model, inputs: dict):
        import torch

        out = model.model.get_image_features(pixel_values=inputs["pixel_values"],
                                             image_grid_thw=inputs["image_grid_thw"])  # fmt: skip
        return torch.cat(list(out.pooler_output), dim=0)

    def language_model(self, model):
        """The whole VLM: onnxruntime-genai's builder exports its text decoder from a Qwen2_5_VLForConditionalGeneration
        (exclude_embeds, 3-D position_ids), and on embeddings alone (text positions p, p, p) it is the causal LM."""
        return model

    def fallback_prompt(self, prompt: str) -> str:
        return (f"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                f"{VISION_START}{IMAGE_PAD}{VISION_END}{prompt}<|im_end|>\n<|im_start|>assistant\n")  # fmt: skip


class Qwen2VL(Qwen25VL):
    """Qwen2-VL (`qwen2_vl`): the same processor, merger, M-RoPE and text decoder as Qwen2.5-VL; its tower has no
    window attention (every block is full attention: saliency comes from the last one), LayerNorms and a GELU MLP,
    and its config names the tower's width `embed_dim` (its `hidden_size` is the merger's output)."""

    name = "qwen2_vl"

    def model_class(self):
        from transformers import Qwen2VLForConditionalGeneration

        return Qwen2VLForConditionalGeneration

    def tower_layout(self, vision) -> tuple[int, list[int], int | None]:
        return vision.embed_dim, list(range(vision.depth)), None

    def merger_width(self, vision) -> int:
        return vision.hidden_size

    def tower_facts(self, vision) -> dict[str, int]:
        return {"width": vision.embed_dim, "heads": vision.num_heads, "mlp": int(vision.embed_dim * vision.mlp_ratio),
                "layers": vision.depth}  # fmt: skip

    def _check_blocks(self, vision, where: str) -> None:
        if vision.depth < 1:
            raise ModelError(f"{where}: the tower has no block")

    def config_class(self):
        from transformers import Qwen2VLConfig

        return Qwen2VLConfig

    def language_model(self, model):
        """onnxruntime-genai's builder (0.18) has no Qwen2-VL decoder, but Qwen2-VL's text decoder *is* Qwen2.5-VL's
        (the same Qwen2 layers, M-RoPE and sections; transformers defines one from the other): the Qwen2.5-VL
        model handed to the builder holds this model's own text modules and head (shared, not copied) and a
        one-block stand-in tower, which the decoder (exclude_embeds) never reads. The build checks the decoder
        against this model's text path token for token, as for every family."""
        import torch
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

        c = model.config
        stand_in = dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=1, fullatt_block_indexes=[0],
                        out_hidden_size=c.text_config.hidden_size, window_size=112,
                        patch_size=c.vision_config.patch_size)  # fmt: skip
        config = Qwen2_5_VLConfig(vision_config=stand_in, text_config=c.text_config.to_dict(),
                                  image_token_id=c.image_token_id, video_token_id=c.video_token_id,
                                  vision_start_token_id=c.vision_start_token_id,
                                  vision_end_token_id=c.vision_end_token_id)  # fmt: skip
        with torch.device("meta"):
            twin = Qwen2_5_VLForConditionalGeneration(config)
        twin.model.language_model = model.model.language_model
        twin.lm_head = model.lm_head
        twin.model.visual = Qwen2_5_VisionTransformerPretrainedModel._from_config(config.vision_config,
                                                                                  dtype=model.dtype)  # fmt: skip
        return twin.eval()


QWEN2_5_VL = register(Qwen25VL())
QWEN2_VL = register(Qwen2VL())
