"""Train the toy-world LLaVA-NeXT (or Qwen2.5-VL) from scratch on generated scenes, the way LLaVA is trained.

    .venv/bin/python -m adafv.eval.toyworld.train --out checkpoints/toyworld-llava-next              # v1, 40 min
    .venv/bin/python -m adafv.eval.toyworld.train --world v2 --out checkpoints/toyworld-v2-llava-next  # v2
    .venv/bin/python -m adafv.eval.toyworld.train --world v2 --family qwen2_5_vl \\
        --out checkpoints/toyworld-v2-qwen2.5-vl  # Qwen2.5-VL

`--world v2` trains on `scenes_v2` with v2's settings (`V2`: longer tower stage, object tokens and place questions
first in stage 0, gentler LLM learning rates, the grounding term in stages 1 and 2, no large-object curriculum); any
`--name value` overrides one setting. `--tower-from CHECKPOINT` takes a checkpoint's tower instead of running the
tower stage again (refused unless it was trained with the same tower settings; the weights are the same either way:
the tower is frozen after its stage, and stages 0-2 reseed).

Stages (each on fresh scenes drawn from its own seeded stream of training seeds, all below HELDOUT_SEED):

* tower: the CLIP-style tower alone, on every crop the processor makes (base view and high-resolution crops).
  [CLS] (the pooled output) classifies the large salient object (colour, shape, or "none" when the crop does not
  show it): this is what makes the [CLS] query attend to the large object, as real CLIP's does, so that the
  saliency cue (FasterVLM, AdaFV's saliency half) highlights the distractor. A dense head on the features LLaVA
  reads (layer -2, patches) classifies the object under each patch (colour, shape, size or "none"), so that the
  patch tokens carry the small objects too. The heads are discarded after this stage.
* stage 0: the LLM alone on text: `USER: <scene description>\\n<questions> ASSISTANT: <answers>`, the description
  where the image will be (loss on the description and the answers). With `object_tokens` the description is one
  input vector per object, the sum of its words' input embeddings (`object_tokens`: the form grounding gives a
  visual token; Qwen's at its object's M-RoPE cell), and the loss is on the answers only.
* stage 1: the projector (and LLaVA-NeXT's newline embedding) alone, tower and LLM frozen: image -> description
  (`Describe the picture.`).
* stage 2: projector + newline + LLM, tower frozen: multi-turn conversations of questions about the image.

v2 adds grounding to stages 1 and 2 (`Grounding`: each projected visual token, read through the LLM's input
embeddings, names its object's colour and shape words) and measures alignment before stage 1 and after stage 2
(`alignment`: the share of the queried object's patches among the top 10% by AdaFV's text relevance).

`--family qwen2_5_vl` trains the Qwen2.5-VL toy on v2 scenes the same way (model.py, qwen.py): its tower stage
(`pretrain_qwen_tower`) has no [CLS], so the saliency-pooled features name the distractor instead; a tower place
stage (`tower_place_steps`) then teaches the tower each small object's quadrant, which its 2-D rotary alone does not
give (where it lies from the central distractor); stage 0 reads object grids (`object_grid`, half of them reduced at
random: `pruned`); stages 1 and 2 train the PatchMerger (the projector) and feed the merged tokens at their M-RoPE
positions (adafv.positions).

Stages 1 and 2 feed the LLM the stock LLaVA-NeXT image features (anyres packing, unpadding, newline tokens), i.e.
exactly what `generate` sees with no token reduction; no selection method is ever seen in training.
Writes the weights (safetensors), tokenizer, processor, `train.json` (settings, losses, times) and the model card.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import WORLDS, qwen, scenes, world
from .model import FAMILIES, build, num_parameters, save

IGNORE = -100


@dataclasses.dataclass
class Settings:
    """Everything that determines the trained weights."""

    world: str = "v1"  # the scenes: v1 (eval/toyworld/scenes.py) or v2 (scenes_v2.py)
    family: str = "llava_next"  # the model: llava_next or qwen2_5_vl (model.FAMILIES)
    seed: int = 0
    tower_batch: int = 16  # scenes per tower step (all their crops: 48-96 crops)
    tower_steps: int = 1500
    tower_lr: float = 1e-3
    tower_place_steps: int = 0  # Qwen: then this many tower steps whose dense head also names the patch's quadrant
    batch: int = 8  # conversations per step in stages 0-2 (small batches, many steps: a small LM learns faster so)
    stage0_steps: int = 1500
    stage0_lr: float = 2e-3
    stage1_steps: int = 500
    stage1_lr: float = 2e-3
    stage2_steps: int = 3000
    stage2_lr: float = 1e-3
    turns: int = 12  # questions per conversation (stages 0 and 2): more answers per step for the same visual tokens
    describe_share: float = 0.2  # stage 2: share of conversations that ask for the description (LLaVA mixes them)
    large_first: float = 0.1  # stage 2 curriculum: this share of the steps asks about the large object only
    warmup: int = 100
    threads: int = 2
    ground_position: int = 0  # with grounding: base-view tokens also name their object's quadrant word (1 = on)
    ground_weight: float = 0.0  # stages 1 and 2: weight of the grounding term (class Grounding); 0 = v1's training
    object_tokens: int = 0  # stage 0: the scene as one input vector per object (`object_tokens`), not words (1 = on)
    stage0_place_steps: int = 0  # stage 0 begins with this many steps of position and count questions (PLACE_KINDS)
    stage0_prune: float = 0.0  # Qwen's object grid in stage 0: this share of the scenes keeps some cells (`pruned`)
    vision: dict = dataclasses.field(default_factory=dict)  # overrides of model.VISION
    tower_from: str = ""  # a checkpoint whose tower to take instead of the tower stage (the same tower settings)
    text: dict = dataclasses.field(default_factory=dict)  # overrides of model.TEXT


# -- data ----------------------------------------------------------------------------------------------------------


def seed_stream(settings: Settings, stage: str):
    """Training scene seeds for one stage: an endless seeded stream below HELDOUT_SEED."""
    rng = random.Random(f"{settings.seed}:{stage}")
    while True:
        yield rng.randrange(world(settings.world).HELDOUT_SEED)


def crops(processor, images) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The processor's crops of a list of images: pixel_values (M, 3, S, S) for all crops of all images (image by
    image, base view first), image_sizes (B, 2), and the number of crops of each image."""
    out = processor.image_processor(images, return_tensors="pt")
    pinpoints = [list(p) for p in processor.image_processor.image_grid_pinpoints]  # (height, width) pairs
    grids = [(h // scenes.CROP, w // scenes.CROP) for h, w in pinpoints]
    counts = [1 + r * c for r, c in (scenes.best_grid(h, w, pinpoints, grids) for h, w in out["image_sizes"].tolist())]
    pixel_values = torch.cat([pv[:n] for pv, n in zip(out["pixel_values"], counts)])  # (M, 3, S, S)
    return pixel_values, out["image_sizes"], counts


def patch_objects(processor, batch: list[scenes.Scene], counts: list[int], with_share: bool = False):
    """Which object covers each patch of each crop: (M, P) int, 0 = none, i + 1 = objects[i] of its scene; with
    `with_share`, also the share of the patch's pixels that object covers, (M, P) float.

    The label maps go through the processor's own geometry (resize, pad, crop) with nearest resampling; a patch
    belongs to the object that covers most of its pixels if that is at least 1/8 of them."""
    from PIL import Image
    from transformers.image_utils import PILImageResampling

    maps = [Image.fromarray(np.repeat(s.labels[..., None], 3, -1)) for s in batch]
    out = processor.image_processor(
        maps, resample=PILImageResampling.NEAREST, do_rescale=False, do_normalize=False, return_tensors="pt"
    )
    lab = torch.cat([pv[:n, 0] for pv, n in zip(out["pixel_values"], counts)]).round().long()  # (M, S, S)
    M, S, _ = lab.shape
    g = S // scenes.PATCH
    lab = lab.view(M, g, scenes.PATCH, g, scenes.PATCH).permute(0, 1, 3, 2, 4).reshape(M, g * g, -1)  # (M, P, 64)
    if int(lab.max()) >= 8:
        raise ValueError("a scene has more than 7 objects: the label maps hold ids 1-7 (scenes_v2.MAX_SMALL)")
    count = F.one_hot(lab, 8).sum(2)  # (M, P, 8) pixels per object id
    count[..., 0] = 0
    most, which = count.max(-1)  # (M, P)
    which = torch.where(most * 8 >= scenes.PATCH**2, which, 0)  # (M, P)
    return (which, most / scenes.PATCH**2) if with_share else which


COLOR_ID = {c: i + 1 for i, c in enumerate(scenes.COLORS)}
SHAPE_ID = {s: i + 1 for i, s in enumerate(scenes.SHAPES)}
SIZE_ID = {"small": 1, "large": 2}


def attribute_table(batch: list[scenes.Scene], counts: list[int]) -> torch.Tensor:
    """(M, 8, 3) per crop: (colour, shape, size) ids of object id 0..7 of its scene (row 0 = none = zeros)."""
    table = torch.zeros(len(batch), 8, 3, dtype=torch.long)
    for b, s in enumerate(batch):
        for i, o in enumerate(s.objects):
            table[b, i + 1] = torch.tensor([COLOR_ID[o.color], SHAPE_ID[o.shape], SIZE_ID[o.size]])
    return table.repeat_interleave(torch.tensor(counts), dim=0)  # (M, 8, 3)


def attributes(scene) -> torch.Tensor:
    """(8, 3) (colour, shape, size) ids of object id 0..7 of a scene (row 0 = none = zeros), as train's tables."""
    table = torch.zeros(8, 3, dtype=torch.long)
    for i, o in enumerate(scene.objects):
        table[i + 1] = torch.tensor([COLOR_ID[o.color], SHAPE_ID[o.shape], SIZE_ID[o.size]])
    return table


def quadrant_table(batch: list[scenes.Scene], counts: list[int]) -> torch.Tensor:
    """(M, 8) per crop: the quadrant id (1-4, QUADRANTS order) of object id 0..7 of its scene (0 = none)."""
    table = torch.zeros(len(batch), 8, dtype=torch.long)
    for b, s in enumerate(batch):
        for i, o in enumerate(s.objects):
            table[b, i + 1] = scenes.QUADRANTS.index(o.quadrant) + 1
    return table.repeat_interleave(torch.tensor(counts), dim=0)  # (M, 8)


# -- sequences -----------------------------------------------------------------------------------------------------


def render(processor, turns: list[tuple[str, str]], first_prefix: str = "") -> tuple[list[int], list[int], list[int]]:
    """A conversation with the image first -> (ids before the image, ids after it, labels of the ids after it).

    Labels cover every assistant answer and its end token (`</s>`, Qwen's `<|im_end|>`); everything else is IGNORE.
    The image is the template's placeholder (`<image>`; Qwen: `<|image_pad|>` between its vision start and end
    tokens, which stay in the text); an answer starts after `ASSISTANT:` (Qwen: `<|im_start|>assistant`)."""
    conversation = []
    for k, (question, answer) in enumerate(turns):
        content = [{"type": "text", "text": first_prefix + question if k == 0 else question}]
        if k == 0:
            content.insert(0, {"type": "image"})
        conversation += [
            {"role": "user", "content": content},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ]
    text = processor.apply_chat_template(conversation, tokenize=False, add_generation_prompt=False)
    tok = processor.tokenizer
    qwen_template = "<|image_pad|>" in text
    before, after = text.split("<|image_pad|>" if qwen_template else "<image>")
    pre = tok(before).input_ids
    post = tok(after, add_special_tokens=False).input_ids
    assistant, eos = tok.convert_tokens_to_ids("assistant" if qwen_template else "ASSISTANT:"), tok.eos_token_id
    start = tok.convert_tokens_to_ids("<|im_start|>") if qwen_template else None
    labels, answering, previous = [], False, None
    for t in post:
        labels.append(t if answering else IGNORE)
        if t == assistant and (start is None or previous == start):
            answering = True
        elif t == eos:
            answering = False
        previous = t
    return pre, post, labels


def collate(embed: nn.Module, rows, grids=None):
    """rows of (pre ids, middle embeds (K, D), middle labels (K,), post ids, post labels) -> inputs_embeds (B, L, D),
    attention_mask (B, L), labels (B, L), right-padded. With `grids` (one per row: the merged grid (rows, cols) of
    an image whose K = rows*cols tokens are the middle, (rows, cols, kept raster indices (K,)) for a pruned one, or
    None for text there), also M-RoPE position_ids (3, B, L) (adafv.positions, as the reference's generation lays
    them out: kept tokens keep their cells)."""
    seqs, labs = [], []
    for pre, middle, middle_labels, post, post_labels in rows:
        pre_t, post_t = torch.tensor(pre), torch.tensor(post)
        seqs.append(torch.cat([embed(pre_t), middle, embed(post_t)]))  # (L_i, D)
        labs.append(torch.cat([torch.full((len(pre),), IGNORE), middle_labels, torch.tensor(post_labels)]))
    length = max(s.shape[0] for s in seqs)
    D = seqs[0].shape[1]
    inputs = seqs[0].new_zeros((len(rows), length, D))  # (B, L, D)
    mask = torch.zeros((len(rows), length), dtype=torch.long)  # (B, L)
    labels = torch.full((len(rows), length), IGNORE)  # (B, L)
    for b, (s, y) in enumerate(zip(seqs, labs)):
        inputs[b, : len(s)], mask[b, : len(s)], labels[b, : len(s)] = s, 1, y
    if grids is None:
        return inputs, mask, labels
    from adafv.positions import cells, mrope

    positions = torch.zeros((3, len(rows), length), dtype=torch.long)  # (3, B, L)
    for b, ((pre, middle, _, post, _), grid) in enumerate(zip(rows, grids)):
        if grid is None:  # text in the image's place: 1-D positions
            layout = np.broadcast_to(np.arange(len(pre) + middle.shape[0] + len(post)), (3, seqs[b].shape[0]))
        else:
            kept = grid[2] if len(grid) == 3 else np.arange(grid[0] * grid[1])
            layout = mrope(len(pre), cells(kept, grid[1]), grid[:2], len(post))
        positions[:, b, : seqs[b].shape[0]] = torch.from_numpy(np.ascontiguousarray(layout))
    return inputs, mask, labels, positions


def visual_features(model, pixel_values: torch.Tensor, image_sizes: torch.Tensor, counts: list[int],
                    projected_too: bool = False):  # fmt: skip
    """The stock LLaVA-NeXT image features of each image (anyres packing, unpadding, newline): list of (n_i, D);
    with `projected_too`, also the projected tokens crop-major, (M, P, D).

    The tower runs without gradients (it is frozen in stages 1 and 2); the projector and the newline get them."""
    with torch.no_grad():
        hidden = model.model.vision_tower(pixel_values, output_hidden_states=True).hidden_states
        features = hidden[model.config.vision_feature_layer][:, 1:]  # (M, P, C) [CLS] dropped
    projected = model.model.multi_modal_projector(features)  # (M, P, D)
    packed, _ = model.model.pack_image_features(
        list(torch.split(projected, counts)), image_sizes, "default", image_newline=model.model.image_newline
    )
    return (packed, projected) if projected_too else packed


class Grounding(nn.Module):
    """The grounding term: each projected visual token, read through the LLM's own input embeddings, names the
    colour and the shape of the object under its patch (or "none", a learned vector, for background and clutter).

    logits = GROUND_SCALE * cos(token, [none, colour words]) and the same over [none, shape words]; cross-entropy,
    object patches weighted 4x (they are few). Cosine against the input embeddings is what AdaFV's text relevance
    computes (adafv/relevance.py), so this term makes a question's colour and shape words find their object's
    tokens. Real VLMs get that alignment from captioning at scale; a model of 1.4 M parameters trained for minutes
    does not (v1's text relevance was the worst method), so v2 asks for it directly, in stages 1 and 2."""

    def __init__(self, tokenizer, dim: int, position: bool = False):
        super().__init__()
        self.colour_ids = torch.tensor(tokenizer.convert_tokens_to_ids(list(scenes.COLORS)))  # (5,)
        self.shape_ids = torch.tensor(tokenizer.convert_tokens_to_ids(list(scenes.SHAPES)))  # (4,)
        self.none = nn.Parameter(torch.randn(2, dim) * 0.02)  # (2, D): "no colour", "no shape"
        if position:  # the base view's tokens also name their object's quadrant (its position embeddings know it)
            self.quadrant_ids = torch.tensor(tokenizer.convert_tokens_to_ids(list(scenes.QUADRANTS)))  # (4,)
            self.none_quadrant = nn.Parameter(torch.randn(1, dim) * 0.02)  # (1, D)

    def _term(self, v, none, words, y, weight):
        """Cross-entropy of cosine logits over [none, words] -> (loss, right (n,) bool)."""
        classes = F.normalize(torch.cat([none, words]), dim=-1)  # (1 + n, D)
        logits = GROUND_SCALE * v @ classes.T  # (n_tokens, 1 + n)
        loss = (F.cross_entropy(logits, y, reduction="none") * weight).sum() / weight.sum()
        return loss, logits.argmax(-1) == y

    def forward(self, embed: nn.Module, tokens: torch.Tensor, target: torch.Tensor, base=None, quadrant=None):
        """tokens (M, P, D), target (M, P, 3) (colour, shape, size ids; 0 = none); with position grounding, base
        (M,) bool (the crop is a base view) and quadrant (M, P) (quadrant id 1-4 of the object under the patch, 0
        none) -> (loss, accuracy on objects: colour and shape both right, and the quadrant too on base views)."""
        v = F.normalize(tokens.flatten(0, 1), dim=-1)  # (M*P, D)
        obj = target[..., 0].flatten() > 0  # (M*P,)
        weight = torch.where(obj, 4.0, 1.0)
        loss, right = 0.0, []
        for k, ids in enumerate((self.colour_ids, self.shape_ids)):
            term, ok = self._term(v, self.none[k : k + 1], embed(ids), target[..., k].flatten(), weight)
            loss, right = loss + term, right + [ok]
        both = right[0] & right[1]  # (M*P,)
        if base is not None and quadrant is not None:
            at = base[:, None].expand_as(quadrant).flatten()  # (M*P,) patches of base views
            term, ok = self._term(v[at], self.none_quadrant, embed(self.quadrant_ids), quadrant.flatten()[at],
                                  weight[at])  # fmt: skip
            loss = loss + term
            both[at] &= ok
        return loss, float(both[obj].float().mean()) if obj.any() else 0.0


GROUND_SCALE = 10.0


# -- loops ---------------------------------------------------------------------------------------------------------


def schedule(step: int, total: int, warmup: int) -> float:
    """Linear warmup, then cosine decay to 10%."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))


def run_loop(name: str, params, steps: int, lr: float, settings: Settings, step_fn, progress) -> dict:
    """AdamW with warmup + cosine, gradient clipping; step_fn() -> (loss, {metric: value}); returns a summary."""
    params = [p for p in params if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: schedule(s, steps, settings.warmup))
    task = progress.add_task(name, total=steps, info="") if progress else None
    t0, recent = time.perf_counter(), []
    for _ in range(steps):
        loss, metrics = step_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        recent.append({"loss": float(loss.detach()), **metrics})
        recent = recent[-50:]
        if progress:
            mean = {k: sum(r[k] for r in recent) / len(recent) for k in recent[0]}
            info = " ".join(f"{k} {v:.3f}" for k, v in mean.items())
            progress.update(task, advance=1, info=info)
            done = progress.tasks[task].completed
            if not progress.console.is_terminal and (done % 100 == 0 or done == steps):  # a log line, not a bar
                progress.console.print(f"{name}: {done}/{steps} {time.perf_counter() - t0:.0f}s {info}")
    mean = {k: round(sum(r[k] for r in recent) / len(recent), 4) for k in recent[0]} if recent else {}
    return {"steps": steps, "seconds": round(time.perf_counter() - t0, 1), "last50": mean}


def answer_accuracy(logits: torch.Tensor, labels: torch.Tensor, eos: int = 2) -> float:
    """Share of answer tokens (labels that are not IGNORE nor the end token `eos`: LLaVA's </s> is 2) predicted
    right (teacher forcing)."""
    pred = logits[:, :-1].argmax(-1)  # (B, L-1)
    target = labels[:, 1:]  # (B, L-1)
    real = (target != IGNORE) & (target != eos)
    return float((pred[real] == target[real]).float().mean()) if real.any() else 0.0


def sincos_2d(side: int, dim: int) -> torch.Tensor:
    """2-D sine-cosine position embeddings (MAE's): (side*side, dim), raster order."""
    y, x = torch.meshgrid(
        torch.arange(side, dtype=torch.float32), torch.arange(side, dtype=torch.float32), indexing="ij"
    )
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))  # (dim/4,)
    x, y = x.flatten()[:, None] * omega, y.flatten()[:, None] * omega  # (side*side, dim/4) each
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1)  # (side*side, dim)


def init_tower(tower, generator: torch.Generator) -> None:
    """Initialise the tower so that a ViT learns shapes from a few thousand steps instead of epochs: 2-D sin-cos
    patch position embeddings, and "mimetic" attention (Trockman & Kolter, 2023): W_q, W_k near the identity (so
    the attention of a patch starts on its neighbours, through the position embeddings) and W_v, W_o near +/- the
    identity (each layer starts as a local high-pass filter: edges). Only the initial values change."""
    C = tower.config.hidden_size
    side = tower.config.image_size // tower.config.patch_size
    eye = torch.eye(C)
    with torch.no_grad():
        tower.embeddings.position_embedding.weight[1:] = sincos_2d(side, C)
        for layer in tower.encoder.layers:
            attn = layer.self_attn
            for proj, scale in (
                (attn.q_proj, 1.0),
                (attn.k_proj, 1.0),
                (attn.v_proj, 0.5**0.5),
                (attn.out_proj, -(0.5**0.5)),
            ):
                noise = torch.randn(proj.weight.shape, generator=generator) * 0.01
                proj.weight.copy_(scale * eye + noise)


def pretrain_tower(model, processor, settings: Settings, progress) -> dict:
    if settings.family == qwen.FAMILY:
        return pretrain_qwen_tower(model, processor, settings, progress)
    tower = model.model.vision_tower
    init_tower(tower, torch.Generator().manual_seed(settings.seed))
    C = model.config.vision_config.hidden_size
    n_col, n_shape = len(scenes.COLORS) + 1, len(scenes.SHAPES) + 1
    dense = nn.Sequential(nn.LayerNorm(C), nn.Linear(C, n_col + n_shape + 3))
    cls_head = nn.Linear(C, n_col + n_shape)
    stream = seed_stream(settings, "tower")
    layer = model.config.vision_feature_layer

    def step():
        batch = [world(settings.world).make_scene(next(stream)) for _ in range(settings.tower_batch)]
        pixel_values, _, counts = crops(processor, [s.image for s in batch])  # (M, 3, S, S)
        which, share = patch_objects(processor, batch, counts, with_share=True)  # (M, P) each
        table = attribute_table(batch, counts)  # (M, 8, 3)
        target = torch.gather(table, 1, which[..., None].expand(-1, -1, 3))  # (M, P, 3)
        large = (which == 1).sum(-1) * 16 >= which.shape[1]  # (M,) crop shows the large object (>= 1/16)
        cls_target = torch.where(large[:, None], table[:, 1, :2], 0)  # (M, 2)

        out = tower(pixel_values, output_hidden_states=True)
        logits = dense(out.hidden_states[layer][:, 1:])  # (M, P, n_col + n_shape + 3)
        weight = torch.where(which > 0, 4.0, 1.0).flatten()  # object patches count 4x
        loss = 0.0
        acc = []
        small = target[..., 2].flatten() == 1  # (M*P,) patches of small objects (>= 1/8 covered)
        core = small & (share.flatten() >= 0.5)  # (M*P,) ... at least half covered
        for k, (a, b) in enumerate([(0, n_col), (n_col, n_col + n_shape), (n_col + n_shape, n_col + n_shape + 3)]):
            part = logits[..., a:b].flatten(0, 1)  # (M*P, classes)
            y = target[..., k].flatten()
            loss = loss + (F.cross_entropy(part, y, reduction="none") * weight).sum() / weight.sum()
            acc.append(float((part[small].argmax(-1) == y[small]).float().mean()) if small.any() else 0.0)
            if k == 1:
                acc.append(float((part[core].argmax(-1) == y[core]).float().mean()) if core.any() else 0.0)
        cls_logits = cls_head(out.pooler_output)  # (M, n_col + n_shape)
        loss = loss + F.cross_entropy(cls_logits[:, :n_col], cls_target[:, 0])
        loss = loss + F.cross_entropy(cls_logits[:, n_col:], cls_target[:, 1])
        cls_acc = float((cls_logits[:, :n_col].argmax(-1) == cls_target[:, 0]).float().mean())
        metrics = {"small_color": acc[0], "small_shape": acc[1], "small_shape_core": acc[2], "small_size": acc[3]}
        return loss, {**metrics, "cls_color": cls_acc}

    params = list(tower.parameters()) + list(dense.parameters()) + list(cls_head.parameters())
    return run_loop("tower", params, settings.tower_steps, settings.tower_lr, settings, step, progress)


SALIENT_MASS = 0.6  # the Qwen tower stage asks for at least this share of the saliency on the distractor's cells


def init_qwen_tower(tower, generator: torch.Generator) -> None:
    """The LLaVA tower's "mimetic" initialisation (init_tower) for Qwen's blocks: W_q, W_k near the identity
    (with the 2-D rotary, a patch's attention starts on its neighbours) and W_v, W_o near +/- the identity. Only
    the initial values change."""
    C = tower.config.hidden_size
    eye = torch.eye(C)
    with torch.no_grad():
        for block in tower.blocks:
            qkv = block.attn.qkv.weight  # (3C, C): q, k, v stacked
            for k, scale in enumerate((1.0, 1.0, 0.5**0.5)):
                qkv[k * C : (k + 1) * C] = scale * eye + torch.randn((C, C), generator=generator) * 0.01
            block.attn.proj.weight.copy_(-(0.5**0.5) * eye + torch.randn((C, C), generator=generator) * 0.01)


def pretrain_qwen_tower(model, processor, settings: Settings, progress, place: bool = False) -> dict:
    """The tower stage: dense heads on every patch name the object under it (colour, shape, size; object patches
    weighted 4x, as the LLaVA tower's), and the last full-attention block's attention received (adafv's saliency)
    pools the features into a vector that names the large distractor, with a floor of SALIENT_MASS on the mass it
    puts on the distractor's cells (`saliency_on_large`: that mass, mean over the batch; the LLaVA toy's [CLS]
    puts 57% of its attention there unasked). Pooling by the saliency is the [CLS] objective without a [CLS]: as
    CLIP's [CLS] attention lands on the salient object because [CLS] must name it, the attention received here must
    gather what names the distractor. The floor is a floor, not a maximum: a 400-step pilot that maximised the mass
    drove it to 98%, leaving the rest of the image without a ranking; above the floor the ranking is the tower's.

    `place` (the tower place stage, `tower_place_steps` more steps on the trained tower, fresh heads, its own
    stream): the dense head also names the quadrant of the small object under each patch (none for the distractor
    and the background). Qwen's tower has no absolute positions (2-D rotary only) and a scene's background says
    nothing of where the frame is, but the distractor sits at the image's centre: a small object's quadrant is
    where it lies from the distractor (so for every small object of 2,000 training scenes), which the tower's full
    attention, relative by construction, can see. LLaVA's tower knows the place from its position embeddings."""
    W = world(settings.world)
    if not place:
        init_qwen_tower(model.model.visual, torch.Generator().manual_seed(settings.seed))
    module = qwen.visual(model)
    C = model.config.vision_config.hidden_size
    n_col, n_shape = len(scenes.COLORS) + 1, len(scenes.SHAPES) + 1
    n_quad = len(scenes.QUADRANTS) + 1 if place else 0
    dense = nn.Sequential(nn.LayerNorm(C), nn.Linear(C, n_col + n_shape + 3 + n_quad))
    pooled_head = nn.Sequential(nn.LayerNorm(qwen.MERGE**2 * C), nn.Linear(qwen.MERGE**2 * C, n_col + n_shape))
    stream = seed_stream(settings, "tower place" if place else "tower")

    def step():
        batch = [W.make_scene(next(stream)) for _ in range(settings.tower_batch)]
        features, targets, shares, pooled, large_mass, large_targets = [], [], [], [], [], []
        for scene, (pixel_values, grid) in zip(batch, qwen.processed(processor, [s.image for s in batch])):
            objects = qwen.cell_objects(processor, scene)
            grouped, saliency, _ = module.hidden(pixel_values, grid)  # (1, P, 4C), (1, P)
            P = grouped.shape[1]
            features.append(grouped[0].reshape(P * qwen.MERGE**2, C))  # (4P, C) patches in the processor's order
            which = torch.from_numpy(objects["patches"]).long()  # (4P,)
            table = attributes(scene)  # (8, 3)
            if place:  # (8, 4): and the quadrant id of each small object (0: none, the distractor)
                table = torch.cat([table, small_quadrants(scene)[:, None]], dim=1)
            targets.append(table[which])  # (4P, 3 or 4)
            shares.append(torch.from_numpy(objects["patch_share"]).float())
            pooled.append(saliency[0] @ grouped[0])  # (4C,) the saliency-weighted features
            large = torch.from_numpy(objects["cells"] == 1)  # (P,) cells of the distractor
            large_mass.append(saliency[0][large].sum() / saliency[0].sum())
            large_targets.append(table[1, :2])
        feats, target, share = torch.cat(features), torch.cat(targets), torch.cat(shares)  # (n, C), (n, 3|4), (n,)
        logits = dense(feats)  # (n, n_col + n_shape + 3 + n_quad)
        weight = torch.where(target[:, 0] > 0, 4.0, 1.0)
        small = target[:, 2] == 1
        core = small & (share >= 0.5)
        loss, acc = 0.0, []
        spans = [(0, n_col), (n_col, n_col + n_shape), (n_col + n_shape, n_col + n_shape + 3)]
        spans += [(n_col + n_shape + 3, n_col + n_shape + 3 + n_quad)] if place else []
        for k, (a, b) in enumerate(spans):
            part, y = logits[:, a:b], target[:, k]
            loss = loss + (F.cross_entropy(part, y, reduction="none") * weight).sum() / weight.sum()
            acc.append(float((part[small].argmax(-1) == y[small]).float().mean()) if small.any() else 0.0)
            if k == 1:
                acc.append(float((part[core].argmax(-1) == y[core]).float().mean()) if core.any() else 0.0)
        head = pooled_head(torch.stack(pooled))  # (B, n_col + n_shape)
        y = torch.stack(large_targets)  # (B, 2)
        loss = loss + F.cross_entropy(head[:, :n_col], y[:, 0]) + F.cross_entropy(head[:, n_col:], y[:, 1])
        mass = torch.stack(large_mass)  # (B,)
        loss = loss + F.relu(np.log(SALIENT_MASS) - torch.log(mass.clamp_min(1e-6))).mean()  # a floor, not all
        metrics = {"small_color": acc[0], "small_shape": acc[1], "small_shape_core": acc[2], "small_size": acc[3]}
        if place:
            metrics["small_quadrant"] = acc[4]
        pooled_acc = float((head[:, :n_col].argmax(-1) == y[:, 0]).float().mean())
        return loss, {**metrics, "pooled_color": pooled_acc, "saliency_on_large": float(mass.detach().mean())}

    params = list(model.model.visual.parameters()) + list(dense.parameters()) + list(pooled_head.parameters())
    params = [p for p in params if not any(p is q for q in model.model.visual.merger.parameters())]
    if place:
        return run_loop("tower (place)", params, settings.tower_place_steps, settings.tower_lr, settings, step,
                        progress)  # fmt: skip
    return run_loop("tower", params, settings.tower_steps, settings.tower_lr, settings, step, progress)


def small_quadrants(scene) -> torch.Tensor:
    """(8,) the quadrant id (1-4, QUADRANTS order) of each small object by object id + 1; 0 none and the distractor
    (it lies across the centre; the description gives it no place)."""
    table = torch.zeros(8, dtype=torch.long)
    for i, o in enumerate(scene.objects):
        if o.size == "small":
            table[i + 1] = scenes.QUADRANTS.index(o.quadrant) + 1
    return table


PLACE_KINDS = ("position", "count")  # stage 0's first steps (count: a scene without small objects asks only that)


def stage0(model, processor, settings: Settings, progress) -> dict:
    """The LLM alone: answer questions from the scene description in the image's place; with
    `stage0_place_steps`, first that many steps of PLACE_KINDS questions only (a schedule of their own), then
    `stage0_steps` of every kind, on one stream of scenes. Measured (docs/results/toyworld.md): with object
    tokens and every kind from the start, 6000 steps learn colour and count but leave position at chance; 1500
    steps of place first, then 3000 of every kind, learn every kind."""
    W = world(settings.world)
    stream = seed_stream(settings, "stage0")
    qrng = random.Random(f"{settings.seed}:stage0:questions")
    tok = processor.tokenizer
    embed = model.get_input_embeddings()
    asking = {}  # the question kinds of the current phase (none: every kind)
    prng = random.Random(f"{settings.seed}:stage0:prune")

    def step():
        rows, grids = [], []
        for _ in range(settings.batch):
            s = W.make_scene(next(stream))
            asked = W.questions(s, qrng, settings.turns, **asking)
            pre, post, labels = render(processor, [(q.text, q.answer) for q in asked])
            middle, middle_labels, grid = described(s, processor, embed, settings, prng)
            rows.append((pre, middle, middle_labels, post, labels))
            grids.append(grid)
        out, labels = forward(model, settings, embed, rows, grids)
        answers = labels.clone()  # (B, L) the answers only: the description's own tokens are not answers
        for b, (pre, middle, *_rest) in enumerate(rows):
            answers[b, : len(pre) + middle.shape[0]] = IGNORE
        return out.loss, {"answer_acc": answer_accuracy(out.logits, answers, tok.eos_token_id)}

    report = {}
    if settings.stage0_place_steps:
        asking["kinds"] = PLACE_KINDS
        report["place"] = run_loop("stage 0 (LLM, place)", model.parameters(), settings.stage0_place_steps,
                                   settings.stage0_lr, settings, step, progress)  # fmt: skip
    asking.clear()
    every = run_loop("stage 0 (LLM, text)", model.parameters(), settings.stage0_steps, settings.stage0_lr, settings,
                     step, progress)  # fmt: skip
    return {**every, **report}


def described(scene, processor, embed: nn.Module, settings: Settings, rng: random.Random | None = None):
    """Stage 0's middle for a scene -> (embeds (K, D), labels (K,), Qwen's merged grid or None):
    the description's words (labels: the words), or with `settings.object_tokens` its object tokens (labels
    IGNORE): LLaVA's one per object in the description's order, Qwen's a merged grid laid out as the image
    (`object_grid`): whole, or with `rng`, for a share `settings.stage0_prune` of the scenes, `pruned` (the grid
    (rows, cols, kept raster indices))."""
    tok = processor.tokenizer
    if not settings.object_tokens:
        desc = torch.tensor(tok(scene.description(), add_special_tokens=False).input_ids)  # (K,)
        return embed(desc), desc, None
    if settings.family == qwen.FAMILY:
        tokens, grid, cells = object_grid(scene, processor, embed, bool(settings.ground_position))  # (P, D)
        if rng is not None and settings.stage0_prune and rng.random() < settings.stage0_prune:
            kept = pruned(cells, rng)  # (K,)
            tokens, grid = tokens[torch.from_numpy(kept)], (*grid, kept)  # (K, D)
        return tokens, torch.full((tokens.shape[0],), IGNORE), grid
    tokens = object_tokens(scene, tok, embed, settings.family)  # (K, D)
    return tokens, torch.full((tokens.shape[0],), IGNORE), None


def object_tokens(scene, tokenizer, embed: nn.Module, family: str = "llava_next", place: bool | None = None):
    """A scene as one input vector per object, in the description's order: the sum of the input embeddings of the
    words of its phrase (scene.phrases()) -> (K, D). `place` (default: not on Qwen) keeps the quadrant word;
    without it the object's M-RoPE cell is all that says where it is (`object_grid`). Qwen's with `place` is what
    its tokens are grounded to with `ground_position` (the tower place stage makes the tower see the quadrant).

    This is the form the grounding term gives a visual token (cosine-near its colour and shape words; on LLaVA's
    base view with `ground_position`, its quadrant word too), so stage 0 teaches the LLM to read objects as it
    will read them in the image: one vector per object, one attention hop to any of its attributes. The words
    need two hops (find the shape word, read a neighbour); the 4-layer LLM did not learn that in stage 0
    (docs/results/toyworld.md: colour 22% from the description, blind 20%)."""
    vectors = []
    place = family != qwen.FAMILY if place is None else place
    for phrase in scene.phrases():
        words = [w for w in phrase.split() if place or w not in scenes.QUADRANTS]
        vectors.append(embed(torch.tensor(tokenizer.convert_tokens_to_ids(words))).sum(0))  # (D,)
    return torch.stack(vectors)  # (K, D)


def pruned(cells: np.ndarray, rng: random.Random) -> np.ndarray:
    """A random reduction of a merged grid that keeps every object -> the kept raster indices, ascending (K,).
    cells (P,): the object id + 1 under each cell, 0 none. One share u ~ U(0, 1) per grid: each cell is kept with
    probability u, and each object keeps at least one of its cells (a random one), so an answer about the scene
    stays an answer about what is kept; u near 0 leaves one token per object, as keep 5-10% nearly does."""
    u = rng.random()
    keep = {i for i in range(len(cells)) if rng.random() < u}
    for obj in sorted(set(cells.tolist()) - {0}):
        where = [i for i in range(len(cells)) if cells[i] == obj]
        if not keep.intersection(where):
            keep.add(rng.choice(where))
    return np.array(sorted(keep), dtype=np.int64)


def object_grid(scene, processor, embed: nn.Module, place: bool = False) -> tuple[torch.Tensor, tuple, np.ndarray]:
    """Qwen's stage-0 scene: the image's merged grid in words -> ((rows*cols, D) raster, (rows, cols), the object
    id + 1 under each cell (P,), 0 none). A cell covered by an object (qwen.cell_objects, as the grounding targets)
    holds that object's token (`object_tokens`; with its quadrant word if `place`), any other cell the input
    embedding of `<|image_pad|>` (the image placeholder, never text otherwise); fed at the image's M-RoPE
    positions, so the LLM learns on text to read the objects as it must read them in the image."""
    tok = processor.tokenizer
    objects = object_tokens(scene, tok, embed, qwen.FAMILY, place)  # (K, D) in scene.ordered() order
    index = {id(o): k for k, o in enumerate(scene.ordered())}
    covered = qwen.cell_objects(processor, scene)
    rows, cols = covered["grid"][0] // qwen.MERGE, covered["grid"][1] // qwen.MERGE
    pad = embed(torch.tensor([tok.convert_tokens_to_ids("<|image_pad|>")]))  # (1, D)
    table = torch.cat([pad, objects[[index[id(o)] for o in scene.objects]]])  # (1 + objects, D) by object id + 1
    return table[torch.from_numpy(covered["cells"]).long()], (rows, cols), covered["cells"]  # (P, D)


def forward(model, settings: Settings, embed: nn.Module, rows, grids):
    """The LLM over collated rows -> (output with .loss and .logits, labels (B, L)); Qwen's with M-RoPE positions
    (one merged grid per row, None where the middle is text)."""
    if settings.family == qwen.FAMILY:
        inputs, mask, labels, positions = collate(embed, rows, grids)
        return model(inputs_embeds=inputs, attention_mask=mask, position_ids=positions, labels=labels), labels
    inputs, mask, labels = collate(embed, rows)
    return model(inputs_embeds=inputs, attention_mask=mask, labels=labels), labels


def _image_stage(name: str, model, processor, settings: Settings, progress, steps: int, lr: float, describe: float):
    """Stages 1 and 2: conversations about the image; a share `describe` of them is `Describe the picture.` ->
    description, the rest are `turns` questions (the first `large_first` share of the steps about the large object
    only: it is the easiest to find, and the LLM learns to look at the image on it first). Stage 1 (describe = 1)
    trains the projector and newline only."""
    W = world(settings.world)
    stream = seed_stream(settings, name)
    qrng = random.Random(f"{settings.seed}:{name}:questions")
    embed = model.get_input_embeddings()
    done = [0]
    warm = round(settings.large_first * steps) if describe < 1 else 0
    large_only = dict(kinds=("color", "exist", "position"), small_fraction=0.0)
    ground = (Grounding(processor.tokenizer, model.config.text_config.hidden_size, settings.ground_position)
              if settings.ground_weight else None)  # fmt: skip

    is_qwen = settings.family == qwen.FAMILY
    module = qwen.visual(model) if is_qwen else None
    eos = processor.tokenizer.eos_token_id

    def step():
        batch = [W.make_scene(next(stream)) for _ in range(settings.batch)]
        if is_qwen:  # merged tokens in raster order, one image at a time
            visual, grids, objects = qwen.image_tokens(model, processor, batch, module)
        else:
            pixel_values, image_sizes, counts = crops(processor, [s.image for s in batch])
            visual, projected = visual_features(model, pixel_values, image_sizes, counts, projected_too=True)
            grids = [None] * len(batch)
        rows, is_qa = [], []
        distribution = large_only if done[0] < warm else {}
        done[0] += 1
        for s, v in zip(batch, visual):
            if qrng.random() < describe:
                turns = [(W.DESCRIBE, s.description())]
            else:
                turns = [(q.text, q.answer) for q in W.questions(s, qrng, settings.turns, **distribution)]
            is_qa.append(turns[0][0] != W.DESCRIBE)
            pre, post, labels = render(processor, turns)
            rows.append((pre, v, torch.full((v.shape[0],), IGNORE), post, labels))
        out, labels = forward(model, settings, embed, rows, grids)
        qa = torch.tensor(is_qa)
        metrics = {"token_acc": answer_accuracy(out.logits, labels, eos)}
        if describe < 1 and qa.any():
            metrics["answer_acc"] = answer_accuracy(out.logits[qa], labels[qa], eos)
        loss = out.loss
        if ground is not None and is_qwen:  # every merged token against the object under its cell
            cells = [torch.from_numpy(o["cells"]).long() for o in objects]  # [(P_i,)]
            target = torch.cat([attributes(s)[c] for s, c in zip(batch, cells)])  # (sum P, 3)
            base = quadrant = None
            if settings.ground_position:  # one image, no crops: every token names its small object's quadrant
                base = torch.ones(1, dtype=torch.bool)
                quadrant = torch.cat([small_quadrants(s)[c] for s, c in zip(batch, cells)])[None]  # (1, sum P)
            ground_loss, metrics["ground_acc"] = ground(embed, torch.cat(visual)[None], target[None], base, quadrant)
            loss = loss + settings.ground_weight * ground_loss
        elif ground is not None:
            which = patch_objects(processor, batch, counts)  # (M, P) object id + 1 under each patch, 0 none
            target = torch.gather(attribute_table(batch, counts), 1, which[..., None].expand(-1, -1, 3))  # (M, P, 3)
            base = quadrant = None
            if settings.ground_position:
                base = torch.zeros(len(which), dtype=torch.bool)  # (M,) the first crop of each image
                base[torch.tensor([0, *counts[:-1]]).cumsum(0)] = True
                quadrant = torch.gather(quadrant_table(batch, counts), 1, which)  # (M, P)
            ground_loss, metrics["ground_acc"] = ground(embed, projected, target, base, quadrant)
            loss = loss + settings.ground_weight * ground_loss
        return loss, metrics

    if is_qwen:
        trainable = [model.model.visual.merger.parameters()]
    else:
        trainable = [model.model.multi_modal_projector.parameters(), [model.model.image_newline]]
    if ground is not None:
        trainable.append(ground.parameters())
    if describe < 1:  # the LLM, its input embeddings included (stage 1 maps into the frozen word space, as LLaVA's)
        trainable.append(model.model.language_model.parameters())
        trainable.append(model.lm_head.parameters())
    params = list({id(p): p for group in trainable for p in group}.values())  # each once
    return run_loop(name, params, steps, lr, settings, step, progress)


def alignment(model, processor, settings: Settings, n: int = 64, keep: float = 0.1) -> dict:
    """How well text relevance finds the queried object: over questions about `n` fresh training scenes (their own
    seeded stream), the share of the queried objects' patches among the top `keep` of the image's visual tokens by
    AdaFV's text relevance (adafv.relevance: the projected tokens of all crops against the LLM's input embeddings
    of the question and the assistant prefix). Chance is `keep`."""
    from adafv.relevance import text_relevance

    W = world(settings.world)
    stream = seed_stream(settings, "alignment")
    rng = random.Random(f"{settings.seed}:alignment:questions")
    embed = model.get_input_embeddings()
    is_qwen = settings.family == qwen.FAMILY
    assistant = processor.tokenizer.convert_tokens_to_ids("assistant" if is_qwen else "ASSISTANT:")
    shares = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for _ in range(n):
            scene = W.make_scene(next(stream))
            question = W.ask(scene, rng)
            if not question.target:
                continue
            if is_qwen:  # one image, its merged tokens (1, P, D)
                tokens, _, objects = qwen.image_tokens(model, processor, [scene])
                projected, which = tokens[0][None], torch.from_numpy(objects[0]["cells"]).long()  # (1, P, D), (P,)
            else:
                pixel_values, _, counts = crops(processor, [scene.image])  # (N, 3, S, S)
                hidden = model.model.vision_tower(pixel_values, output_hidden_states=True).hidden_states
                projected = model.model.multi_modal_projector(hidden[model.config.vision_feature_layer][:, 1:])
                which = patch_objects(processor, [scene], counts).flatten()  # (N*P,)
            target = torch.isin(which, torch.tensor([i + 1 for i in question.target]))  # (N*P,)
            if not target.any():
                continue
            _, post, _ = render(processor, [(question.text, "")])
            text = embed(torch.tensor(post[: post.index(assistant) + 1]))  # (T, D) question + assistant prefix
            relevance = text_relevance(projected.flatten(0, 1)[None], text[None])[0]  # (N*P,)
            top = relevance.topk(max(1, round(keep * relevance.numel()))).indices
            shares.append(float(target[top].sum() / target.sum()))
    model.train(was_training)
    return {"keep": keep, "questions": len(shares), "target_share": round(sum(shares) / max(1, len(shares)), 3)}


def tower_parameters(model) -> dict[str, nn.Parameter]:
    """The tower's parameters by name: Qwen's blocks and patch embedding (not the merger, the projector), LLaVA's
    vision tower."""
    if hasattr(model.model, "visual"):  # Qwen2.5-VL: the merger lives in the visual module
        return {f"visual.{n}": p for n, p in model.model.visual.named_parameters() if not n.startswith("merger.")}
    return {f"vision_tower.{n}": p for n, p in model.model.vision_tower.named_parameters()}


TOWER_SETTINGS = ("world", "family", "seed", "tower_batch", "tower_steps", "tower_lr", "threads", "vision")


def load_tower(model, settings: Settings) -> dict:
    """The tower stage's result taken from `settings.tower_from`, a checkpoint this module trained with the same
    tower settings (TOWER_SETTINGS: its tower stage would have produced the same weights, which stay frozen after
    it; `check` refuses any other checkpoint); its tower report, with `from`."""
    source = Path(settings.tower_from)
    report = json.loads((source / "train.json").read_text())
    trained = tower_parameters(type(model).from_pretrained(source))
    with torch.no_grad():
        for name, p in tower_parameters(model).items():
            p.copy_(trained[name])
    place = report["stages"].get("tower_place")  # its tower went on to the place stage (`check`: ours, the same)
    return {**report["stages"]["tower"], "from": str(source), **({"place": place} if place else {})}


def freeze(model, *, tower: bool, llm: bool) -> None:
    """Freeze (or thaw) the tower (`tower_parameters`) and the LLM with its head."""
    for p in tower_parameters(model).values():
        p.requires_grad_(not tower)
    for module in (model.model.language_model, model.lm_head):
        for p in module.parameters():
            p.requires_grad_(not llm)


def train(settings: Settings, out_dir: str | Path | None = None, progress: bool = True) -> tuple:
    """Run every stage; returns (model, processor, report). Writes the checkpoint when out_dir is given. Uses
    `settings.threads` torch threads and gives the caller's setting back at the end."""
    check(settings)
    previous = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        return _train(settings, out_dir, progress)
    finally:
        torch.set_num_threads(previous)


def check(settings: Settings) -> None:
    """Refuse settings that cannot train, before any training: ValueError with one line."""
    if settings.large_first and settings.world != "v1":
        raise ValueError("large_first is a v1 curriculum (v2 never asks about the large object): set it to 0")
    world(settings.world)  # an unknown world fails here, before any training
    if settings.family not in FAMILIES:
        raise ValueError(f"unknown family {settings.family!r}: one of {', '.join(FAMILIES)}")
    if settings.family == qwen.FAMILY and settings.world == "v1":
        raise ValueError("the Qwen2.5-VL toy model is trained on v2 scenes (--world v2)")
    if settings.object_tokens and settings.world == "v1":
        raise ValueError("object_tokens is a v2 setting (v1's shipped model reads the description's words)")
    if settings.tower_from:
        source = Path(settings.tower_from)
        if not (source / "train.json").is_file():
            raise ValueError(f"--tower-from {source}: not a checkpoint of this trainer (no train.json)")
        given = json.loads((source / "train.json").read_text()).get("settings", {})
        ours, unset = dataclasses.asdict(settings), Settings()  # a field older than the checkpoint: its default
        differ = [f for f in TOWER_SETTINGS if given.get(f, getattr(unset, f)) != ours[f]]
        if differ:
            raise ValueError(f"--tower-from {source}: its tower was trained with other {', '.join(differ)}")
        theirs = given.get("tower_place_steps", 0)
        if theirs and theirs != settings.tower_place_steps:
            raise ValueError(f"--tower-from {source}: its tower went on for {theirs} tower place steps, not "
                             f"{settings.tower_place_steps}")  # fmt: skip
    if settings.tower_place_steps and settings.family != qwen.FAMILY:
        raise ValueError("tower_place_steps is the Qwen tower's place stage (LLaVA's tower has position embeddings)")


def _train(settings: Settings, out_dir: str | Path | None, progress: bool) -> tuple:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    torch.manual_seed(settings.seed)
    model, processor = build(settings.seed, settings.vision, settings.text, world(settings.world), settings.family)
    model.train()
    report = {"settings": dataclasses.asdict(settings), "parameters": num_parameters(model), "stages": {}}
    columns = [
        TextColumn("{task.description:22s}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
    ]
    t0 = time.perf_counter()
    with Progress(*columns, disable=not progress) as bar:
        bar = bar if progress else None
        with torch.random.fork_rng(devices=[]):
            if settings.tower_from:
                report["stages"]["tower"] = load_tower(model, settings)
            else:
                freeze(model, tower=False, llm=True)
                report["stages"]["tower"] = pretrain_tower(model, processor, settings, bar)
            if settings.tower_place_steps:
                place = report["stages"]["tower"].pop("place", None)  # a checkpoint's tower that has it already
                if place is None:
                    torch.manual_seed(settings.seed + 2)  # the same after the tower stage or a tower taken
                    freeze(model, tower=False, llm=True)
                    place = pretrain_qwen_tower(model, processor, settings, bar, place=True)
                report["stages"]["tower_place"] = place
            torch.manual_seed(settings.seed + 1)  # stages 0-2 draw the same randomness after either
            freeze(model, tower=True, llm=False)
            report["stages"]["stage0"] = stage0(model, processor, settings, bar)
            report["alignment"] = {"before": alignment(model, processor, settings)}  # the projector untrained
            freeze(model, tower=True, llm=True)
            report["stages"]["stage1"] = _image_stage(
                "stage 1 (projector)", model, processor, settings, bar, settings.stage1_steps, settings.stage1_lr, 1.0
            )
            freeze(model, tower=True, llm=False)
            report["stages"]["stage2"] = _image_stage(
                "stage 2 (proj + LLM)",
                model,
                processor,
                settings,
                bar,
                settings.stage2_steps,
                settings.stage2_lr,
                settings.describe_share,
            )
            report["alignment"]["after"] = alignment(model, processor, settings)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    if out_dir is not None:
        out = save(model, processor, out_dir)
        (out / "train.json").write_text(json.dumps(report, indent=2) + "\n")
        write_card(out, report)
    return model, processor, report


RESULTS_BEGIN, RESULTS_END = "<!-- results:begin -->", "<!-- results:end -->"


def write_card(out: Path, report: dict) -> Path:
    """The model card README.md: what the model is, how it was trained (settings, times, final training metrics);
    the measurement section (between RESULTS_BEGIN / RESULTS_END) is filled by `adafv.eval.toyworld.evaluate --card`."""
    s = report["settings"]
    stages = report["stages"]
    size_mb = (out / "model.safetensors").stat().st_size / 1e6
    v2 = s.get("world", "v1") == "v2"
    is_qwen = s.get("family", "llava_next") == qwen.FAMILY
    source, grids, crops_n = (("scenes_v2.py", "1x2, 2x1, 2x2", "3 or 5") if v2 else
                              ("scenes.py", "1x2, 2x1, 2x2, 3x1, 1x3", "3-5"))  # fmt: skip
    if is_qwen:
        rope = json.loads((out / "config.json").read_text())["text_config"].get("rope_parameters") or {}
        about = [
            "A small Qwen2.5-VL (`Qwen2_5_VLForConditionalGeneration`) trained from scratch on CPU on procedurally",
            f"generated toy-world {s['world']} scenes (`eval/toyworld/{source}`), so that accuracy under visual-token",
            "reduction can be measured offline. Qwen2.5-VL's own tower, read at each image's own resolution (8-px",
            "patches, the image resized to multiples of 16 px: 18-64 merged tokens), no [CLS], window attention in",
            "windows of 4x4 merged cells with full attention in blocks 1 and 3 (adafv's saliency: the attention each",
            "token receives in block 3), its 2x2 PatchMerger, a Qwen2 LLM with M-RoPE (rope_theta",
            f"{rope.get('rope_theta')}, sections {rope.get('mrope_section')}), a word-level tokenizer with Qwen's",
            "special tokens and Qwen2-VL's chat template.",
        ]
    else:
        about = [
            "A small LLaVA-NeXT (`LlavaNextForConditionalGeneration`) trained from scratch on CPU on procedurally",
            f"generated toy-world {s.get('world', 'v1')} scenes (`eval/toyworld/{source}`), so that accuracy under",
            "visual-token reduction can be measured offline. CLIP-style tower with [CLS] (64-px crops, 8-px patches:",
            f"P = 64 per crop, anyres grids {grids}: N = {crops_n} crops), LLaVA's 2-layer MLP projector, Llama-style",
            "LLM, a word-level tokenizer over the toy vocabulary, `vision_feature_layer=-2`,",
            '`vision_feature_select_strategy="default"`.',
        ]
    lines = [
        f"# {out.name}",
        "",
        *about,
        "",
        f"- parameters: {report['parameters']:,} ({size_mb:.1f} MB of float32 safetensors)",
        f"- tower: {s['vision'] or 'defaults'}; LLM: {s['text'] or 'defaults'} (see `config.json`)",
        f"- training: {report['seconds'] / 60:.1f} min on {s['threads']} CPU threads, seed {s['seed']}, "
        f"batch {s['tower_batch']} scenes (tower), {s['batch']} conversations of {s['turns']} questions (stages 0-2)"
        + (f"; the tower stage taken from `{stages['tower']['from']}` (`--tower-from`: a checkpoint trained with the "
           "same tower settings; the same weights as training it again, tested), its minutes not in this total"
           if "from" in stages.get("tower", {}) else ""),
        LICENCE,
        "",
        "## Training (`python -m adafv.eval.toyworld.train`)",
        "",
        "| stage | trains | steps | lr | minutes | last-50-step metrics |",
        "|---|---|---|---|---|---|",
    ]
    grounding = " + grounding" if s.get("ground_weight") else ""
    what = {
        "tower": "tower + heads: [CLS] -> large object; patches -> object under them",
        "stage0": "LLM on text (" + ("object tokens" if s.get("object_tokens") else "description") + " in the "
        "image's place)",
        "stage1": "projector + newline (image -> description)" + grounding,
        "stage2": "projector + newline + LLM (questions)" + grounding,
    }
    if is_qwen:
        what.update(tower=f"tower + heads: saliency-pooled features -> large object, >= {SALIENT_MASS:.0%} of the "
                    "saliency on it; patches -> object under them", stage1="merger (image -> description)" + grounding,
                    stage2="merger + LLM (questions)" + grounding,
                    tower_place="tower + heads, as the tower stage (fresh heads); patches -> also the quadrant of the "
                    "small object under them")  # fmt: skip
    for name, r in stages.items():
        lr = s["tower_lr" if name == "tower_place" else f"{name}_lr"]
        if "place" in r:  # stage 0's first steps: position and count questions only
            p = r["place"]
            metrics = ", ".join(f"{k} {v}" for k, v in p["last50"].items())
            lines.append(f"| {name} (place first) | {what[name]}: {' and '.join(PLACE_KINDS)} questions only | "
                         f"{p['steps']} | {lr} | {p['seconds'] / 60:.1f} | {metrics} |")  # fmt: skip
        metrics = ", ".join(f"{k} {v}" for k, v in r["last50"].items())
        lines.append(f"| {name} | {what[name]} | {r['steps']} | {lr} | {r['seconds'] / 60:.1f} | {metrics} |")
    family = f"--family {s['family']} " if is_qwen else ""
    command = f"python -m adafv.eval.toyworld.train --out checkpoints/{out.name} --world {s['world']} {family}"
    command += " ".join(f"--{k.replace('_', '-')} {v}" for k, v in s.items() if isinstance(v, (int, float)))
    lines += [
        "",
        "Metrics, all on fresh training scenes (never the held-out set): tower, per-patch accuracy of the dense heads",
        "on patches of small objects (`small_shape_core`: patches at least half covered by the object) and "
        + (
            "of the saliency-pooled features naming the large object's colour (`pooled_color`), and the saliency's mass"
            " on the large object's cells (`saliency_on_large`);"
            if is_qwen
            else "of [CLS] naming the large object's colour;"
        ),
        *(["tower place, `small_quadrant`: the dense head's quadrant of small-object patches;"]
          if "tower_place" in stages else []),
        "stages 0 and 2, `answer_acc`, teacher-forced accuracy of the one-word answers (stage 0 reads the scene",
        "description in the image's place); stage 1, `token_acc` on the description.",
    ]
    if not v2:
        lines += [
            "The tower's grasp of small-object *shape* is the model's weak point (colour is near perfect): questions",
            "that hinge on a small object's shape are where it errs most, with every selection method.",
        ]
    lines += [
        "",
    ]
    if s.get("object_tokens"):
        lines += [
            "Object tokens (`train.object_tokens`): in stage 0 the scene is one input vector per object, the sum of",
            "its words' input embeddings, in the image's place"
            + ((" and laid out as the image: the merged grid, each cell its covering object's vector ("
                + ("with the quadrant word, as grounding names it" if s.get("ground_position") else
                   "without the quadrant word: the place is the M-RoPE position")
                + "), else `<|image_pad|>`'s embedding"
                + (f"; {s['stage0_prune']:.0%} of the grids reduced at random, every object kept (`train.pruned`)."
                   if s.get("stage0_prune") else "."))
               if is_qwen else " (size, colour, shape and quadrant words)."),
            "That is the form grounding gives a visual token; the description's words need two attention hops per",
            "lookup, which this LLM did not learn (docs/results/toyworld.md).",
            "",
        ]
    if s.get("ground_weight"):
        place_words = (", and a small object's tokens its quadrant word (the tower place stage taught the tower "
                       "where each lies)" if is_qwen else ", and on the base view its quadrant word")  # fmt: skip
        lines += [
            "Grounding (`train.Grounding`, weight " + f"{s['ground_weight']}): in stages 1 and 2 each projected visual",
            "token, read through the LLM's input embeddings (cosine, as AdaFV's text relevance reads it), names the",
            "colour and shape words of the object under its patch"
            + (place_words if s.get("ground_position") else "")
            + " (`ground_acc`: all right, on object patches).",
            "",
        ]
    if report.get("alignment"):
        before, after = report["alignment"]["before"], report["alignment"].get("after", {})
        lines += [
            f"Alignment (`train.alignment`, {before['questions']} questions on fresh training scenes): the share of",
            f"the queried object's {'merged tokens' if is_qwen else 'patches'} among the top {before['keep']:.0%} of "
            f"visual tokens by text relevance (chance {before['keep']:.0%}): {before['target_share']:.1%} before "
            f"stage 1 ({'merger' if is_qwen else 'projector'} untrained), "
            f"{after.get('target_share', float('nan')):.1%} after stage 2.",
            "",
        ]
    lines += [
        "Reproduce:",
        "",
        "```bash",
        f".venv/bin/{command}",
        "```",
        "",
        "## Measurement",
        "",
    ]
    card = out / "README.md"
    old = card.read_text() if card.is_file() else ""
    if RESULTS_BEGIN in old and RESULTS_END in old:
        lines.append(old[old.index(RESULTS_BEGIN) : old.index(RESULTS_END) + len(RESULTS_END)])
    else:
        lines += [RESULTS_BEGIN, "(not measured yet: run `python -m adafv.eval.toyworld.evaluate --card`)", RESULTS_END]
    card.write_text("\n".join(lines) + "\n")
    return card


LICENCE = (
    "- licence: Apache-2.0, like adafv (weights trained here from a random initialisation on generated scenes; "
    "no third-party data)"
)


# v2's settings; measured on v2 scenes (2,000 text-only steps): stage 0 at lr 5e-4 answered 57.6% (counting learned),
# at 2e-3 46.0% (3,000 steps), wider (192) at 1e-3 52.3%: the small LLM binds words slowly and needs a gentle lr
V2 = dict(world="v2", tower_steps=3000, stage0_steps=3000, stage0_lr=5e-4, stage1_steps=600, stage2_lr=5e-4,
          large_first=0.0, ground_weight=1.0, warmup=200, object_tokens=1, stage0_place_steps=1500,
          ground_position=1)  # fmt: skip


# The shipped Qwen toy's differences from V2 (docs/results/toyworld.md, measured 2026-12-03): its tower has no
# absolute positions, so a tower place stage teaches it each small object's quadrant (where it lies from the central
# distractor); its tokens are then grounded to their quadrant word too, and stage 0 reads object grids with the
# quadrant word, half of them reduced at random (`pruned`). Without the place stage the LLM, left to read the place
# from M-RoPE cells, did not (position 35.8% after 1,500 steps, blind 25%); with whole grids only, pruning broke it.
V2_QWEN = dict(tower_place_steps=1000, stage0_prune=0.5)


def defaults(world_name: str = "v1", family: str = "llava_next") -> Settings:
    """The settings a world's shipped model of a family was trained with: v1's are Settings(); v2 overrides V2;
    the Qwen2.5-VL toy is trained on v2 with V2's settings (its tower stage: pretrain_qwen_tower) and V2_QWEN's."""
    base = Settings(**V2) if world_name == "v2" else Settings()
    return dataclasses.replace(base, family=family, **(V2_QWEN if family == qwen.FAMILY else {}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adafv.eval.toyworld.train", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None, help="checkpoint folder to write (checkpoints/toyworld-llava-next)")
    parser.add_argument("--world", default="v1", choices=WORLDS, help="the scenes (v2: scenes_v2, with its defaults)")
    parser.add_argument("--family", default="llava_next", choices=FAMILIES, help="the model (qwen2_5_vl: v2 only)")
    for field in dataclasses.fields(Settings):
        if field.type in ("int", "float"):
            kind = int if field.type == "int" else float
            default = f"default {getattr(Settings(), field.name)} (v2: {V2.get(field.name, 'the same')})"
            parser.add_argument(f"--{field.name.replace('_', '-')}", type=kind, default=None, help=default)
    parser.add_argument(
        "--tower-from",
        default=None,
        metavar="CHECKPOINT",
        help="take the tower of a checkpoint trained with the same tower settings (skips that stage)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    base = defaults(args.world, args.family)
    given = (f.name for f in dataclasses.fields(Settings) if getattr(args, f.name, None) is not None)
    values = {name: getattr(args, name) for name in given}
    settings = dataclasses.replace(base, **values)
    try:
        check(settings)
    except ValueError as e:
        parser.error(str(e))
    _, _, report = train(settings, args.out, progress=not args.quiet)
    print(json.dumps({k: v for k, v in report.items() if k != "settings"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
