"""Qwen2.5-VL through adafv, each piece against transformers' own code as the oracle: the processor's resize rule
and patch layout, the tower's window permutation and rotary positions, the merged tokens, global-attention saliency
(vs the eager attention weights), M-RoPE positions (vs get_rope_index), the reference answer (vs generate), and a
bundle that answers token for token like the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from adafv import AdaFVConfig
from adafv.archs import qwen
from adafv.positions import cells, mrope

PROMPT = "What is in the picture?"


@pytest.fixture(scope="module")
def twin():
    from adafv.models import load

    return load("tiny-qwen2.5-vl")


@pytest.fixture(scope="module")
def reference(twin):
    from adafv.pipeline import Reference

    return Reference(twin)


def noise(h: int, w: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("hw", [(200, 300), (480, 640), (333, 517), (1000, 750), (97, 1400), (28, 28), (3000, 4000)])
def test_smart_resize_is_transformers(hw):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    for lo, hi in [(56 * 56, 28 * 28 * 1280), (56 * 56, 28 * 28 * 96), (256 * 28 * 28, 1280 * 28 * 28)]:
        assert qwen.smart_resize(*hw, 28, lo, hi) == smart_resize(*hw, factor=28, min_pixels=lo, max_pixels=hi)


@pytest.mark.parametrize("grid", [(8, 8), (14, 22), (16, 16), (34, 46), (2, 40), (18, 2)])
def test_window_order_and_rotary_positions_are_transformers(grid):
    from transformers.vision_utils import get_vision_position_ids, get_vision_window_index

    thw = torch.tensor([[1, *grid]])
    window_index, cu = get_vision_window_index(thw, spatial_merge_size=2, window_size=112, patch_size=14)
    order, lengths = qwen.window_layout(*grid, merge=2, window=4)
    assert order.tolist() == window_index.tolist()
    assert np.cumsum([0, *lengths]).tolist() == cu.tolist()
    assert qwen.patch_positions(*grid, merge=2).tolist() == get_vision_position_ids(thw, 2).tolist()


@pytest.mark.parametrize("hw", [(200, 300), (300, 200), (120, 500), (56, 56)])
def test_merged_tokens_are_the_stock_image_features(twin, reference, hw):
    prepared = reference.prepare(noise(*hw), PROMPT)
    with torch.no_grad():
        tokens, saliency = reference.visual(prepared.pixel_values, prepared.patch_grid)
        stock = twin.arch.stock_image_features(twin.model, prepared.inputs)
    rows, cols = prepared.merged_grid
    assert tokens.shape == (1, rows * cols, stock.shape[-1])
    torch.testing.assert_close(tokens[0], stock, atol=1e-5, rtol=1e-5)
    assert saliency.shape == (1, rows * cols) and abs(float(saliency.sum()) - 1) < 1e-5


def _eager_global_attention(model, inputs) -> torch.Tensor:
    """The oracle: transformers' eager attention weights of the last full-attention block, mean over heads and
    queries, the window permutation undone with transformers' own window index, summed per 2x2 merge unit."""
    from transformers.vision_utils import get_vision_window_index

    visual = model.model.visual
    cfg = visual.config
    block = max(cfg.fullatt_block_indexes)
    captured = {}
    previous = visual.config._attn_implementation
    visual.set_attn_implementation("eager")
    try:
        from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as m

        original = m.eager_attention_forward

        def spy(module, *args, **kwargs):
            out, weights = original(module, *args, **kwargs)
            captured.setdefault(id(module), []).append(weights)
            return out, weights

        m.eager_attention_forward = spy
        try:
            with torch.no_grad():
                visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
        finally:
            m.eager_attention_forward = original
    finally:
        visual.set_attn_implementation(previous)
    weights = captured[id(visual.blocks[block].attn)]
    assert len(weights) == 1  # a full-attention block: one chunk over every patch
    received = weights[0][0].float().mean(0).mean(0)  # (N,) window order
    window_index, _ = get_vision_window_index(inputs["image_grid_thw"], 2, cfg.window_size, cfg.patch_size)
    per_unit = received.reshape(-1, 4).sum(-1)  # (P,) window order
    return per_unit[torch.argsort(window_index)]  # (P,) raster


@pytest.mark.parametrize("hw", [(200, 300), (420, 300)])
def test_global_attention_saliency_is_the_eager_attention(twin, reference, hw, monkeypatch):
    prepared = reference.prepare(noise(*hw, seed=3), PROMPT)
    want = _eager_global_attention(twin.model, prepared.inputs)
    with torch.no_grad():
        _, got = reference.visual(prepared.pixel_values, prepared.patch_grid)
    torch.testing.assert_close(got[0], want, atol=1e-7, rtol=1e-5)
    monkeypatch.setattr(qwen, "QUERY_BLOCK_ELEMENTS", 4 * 37 * 8)  # a few queries per block: many blocks, same sums
    with torch.no_grad():
        blocked_tokens, blocked = reference.visual(prepared.pixel_values, prepared.patch_grid)
    torch.testing.assert_close(blocked[0], want, atol=1e-7, rtol=1e-5)


def test_the_benchs_isolated_parts_are_the_graphs_saliency_block(twin, tmp_path):
    """`adafv bench` times the saliency block's attention alone, with and without the saliency (eval/overhead.py):
    fed the block's real input, the part with it gives the tower's saliency and both parts the same attention; the
    exported parts run, and the selection part keeps `keep` distinct cells."""
    import onnxruntime as ort

    from adafv.eval import overhead

    visual = twin.arch.graph_visual(twin.model, (224, 308)).float().eval()
    tokens, grid = visual.tokens, visual.grid
    block = tokens.blocks[tokens.saliency_block]
    seen = {}
    hook = block.norm1.register_forward_hook(lambda m, i, o: seen.setdefault("h", o))
    pixels = torch.from_numpy(np.random.default_rng(1).standard_normal((1, 3, 224, 308)).astype(np.float32))
    with torch.no_grad():
        _, want = visual(pixels)  # (1, P) the tower's saliency, raster
        hook.remove()
        h = seen["h"]  # (N, C) window order
        cos, sin = tokens.rotary(h, torch.from_numpy(tokens.layout(grid)[3]))
        plain = tokens.saliency_attention(h, cos, sin, grid, False)
        out, got = tokens.saliency_attention(h, cos, sin, grid, True)
    torch.testing.assert_close(got, want[0], atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(out, plain, atol=1e-5, rtol=1e-4)

    parts = overhead.graphs(twin, (224, 308), AdaFVConfig(keep=16), 5, tmp_path)
    run = {name: ort.InferenceSession(str(path)).run(None, feeds) for name, (path, feeds) in parts.items()}
    np.testing.assert_allclose(run["global"][0], run["plain"][0], atol=1e-5, rtol=1e-4)
    assert run["global"][1].shape == (88,) and abs(float(run["global"][1].sum()) - 1) < 1e-5  # shares of the image
    kept, order = run["select"]
    assert kept.shape == (16, twin.config.text_config.hidden_size) and len(set(order.tolist())) == 16
    assert 0 <= order.min() and order.max() < 88
    rounds = overhead.measure(parts, 2)
    assert all(len(rounds[name]) == 2 for name in overhead.PARTS)


def test_mrope_positions_by_hand():
    # 3 text tokens, a 2x3 merged grid of which cells (0, 1) and (1, 2) are kept, 2 text tokens after
    got = mrope(3, [(0, 1), (1, 2)], (2, 3), 2)
    assert got.tolist() == [[0, 1, 2, 3, 3, 6, 7], [0, 1, 2, 3, 4, 6, 7], [0, 1, 2, 4, 5, 6, 7]]
    assert mrope(2, [], (0, 0), 0).tolist() == [[0, 1]] * 3
    with pytest.raises(ValueError, match="outside the 2x3 grid"):
        mrope(0, [(2, 0)], (2, 3), 0)


@pytest.mark.parametrize("hw", [(200, 300), (300, 200), (56, 700)])
def test_mrope_positions_are_get_rope_index(twin, reference, hw):
    prepared = reference.prepare(noise(*hw), PROMPT)
    inputs = prepared.inputs
    want, _ = twin.model.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"],
                                              image_grid_thw=inputs["image_grid_thw"])  # fmt: skip
    want = want[:, 0].numpy()  # (3, L)
    rows, cols = prepared.merged_grid
    n_pre, n_post = len(prepared.pre_ids), len(prepared.post_ids)
    assert np.array_equal(mrope(n_pre, cells(np.arange(rows * cols), cols), (rows, cols), n_post), want)
    # pruned: transformers' own positions of the kept columns (as DART's port keeps them) are ours
    kept = np.sort(np.random.default_rng(0).choice(rows * cols, size=7, replace=False))
    columns = np.concatenate([np.arange(n_pre), n_pre + kept, np.arange(n_pre + rows * cols, want.shape[1])])
    assert np.array_equal(mrope(n_pre, cells(kept, cols), (rows, cols), n_post), want[:, columns])


def test_reference_without_pruning_is_transformers_generate(twin, reference):
    image = noise(210, 330, seed=5)
    got = reference.run(image, PROMPT, AdaFVConfig(method="full", keep=16), max_new_tokens=8)
    inputs = reference.prepare(image, PROMPT).inputs
    with torch.no_grad():
        out = twin.model.generate(**inputs, max_new_tokens=8, do_sample=False)
    want = out[0, inputs["input_ids"].shape[1] :].tolist()
    eos = twin.model.generation_config.eos_token_id
    want = want[: want.index(eos)] if eos in want else want
    rows, cols = got["merged_grid"]
    assert (rows, cols) == (224 // 28, 336 // 28)  # smart_resize: 210x330 -> 224x336
    assert got["tokens"] == want and got["num_kept"] == got["num_visual_tokens"] == rows * cols


@pytest.mark.parametrize("method", ["adafv", "fastervlm", "text", "random", "divprune", "dart", "visionzip"])
def test_every_method_keeps_k_cells_of_the_merged_grid(reference, method):
    r = reference.run(noise(200, 300), PROMPT, AdaFVConfig(method=method, keep=12), max_new_tokens=2)
    rows, cols = r["merged_grid"]
    assert r["num_kept"] == 12 and r["num_visual_tokens"] == rows * cols
    assert r["kept_positions"] == sorted(set(r["kept_positions"])) and 0 <= min(r["kept_positions"])
    assert max(r["kept_positions"]) < rows * cols


@pytest.mark.parametrize("hw", [(200, 300), (480, 640), (333, 517), (1000, 750), (97, 1400), (60, 60)])
def test_runtime_preprocessing_is_the_processor_bit_for_bit(twin, hw):
    from adafv.export.preprocess_spec import image_processor_spec
    from adafv.runtime.preprocess import normalize, patchify, preprocess

    image_processor = twin.processor.image_processor
    size = image_processor.size
    resolution = qwen.smart_resize(*hw, 28, size["shortest_edge"], size["longest_edge"])
    spec = image_processor_spec(twin.processor, resolution)
    image = noise(*hw, seed=hw[0])
    pixels, grid = preprocess(image, spec)
    want = image_processor(images=image, return_tensors="np")
    assert pixels.dtype == np.uint8 and pixels.shape == (1, 3, *resolution) and grid == (1, 1)
    assert want["image_grid_thw"].tolist() == [[1, resolution[0] // 14, resolution[1] // 14]]
    assert np.array_equal(patchify(normalize(pixels, spec), spec), want["pixel_values"])


def test_a_resolution_outside_the_processor_range_is_one_line(twin):
    from adafv.export.preprocess_spec import image_processor_spec

    with pytest.raises(ValueError, match="outside the processor's range"):
        image_processor_spec(twin.processor, (28 * 40, 28 * 40))  # 1,600 cells: above the 1,280 it allows


def test_the_default_resolution_is_what_the_processor_gives_a_vga_frame():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    from adafv.export.bundle import graph_shapes
    from adafv.models import peek

    arch, config = peek("tiny-qwen2.5-vl")
    shapes = graph_shapes(arch, config, None, 256)
    assert shapes.image_hw == smart_resize(480, 640, factor=28, min_pixels=56 * 56, max_pixels=28 * 28 * 1280)
    assert shapes.image_hw == (476, 644) and shapes.patches_per_crop == 17 * 23 and shapes.crops == (1, 1)


@pytest.mark.parametrize("grid", [(14, 22), (34, 46), (8, 8)])
def test_windows_grouped_by_length_cover_every_patch_once(grid):
    order, lengths = qwen.window_layout(*grid, merge=2, window=4)
    indices, inverse = qwen.window_groups(lengths)
    flat = np.concatenate([i.reshape(-1) for i in indices])
    assert sorted(flat.tolist()) == list(range(sum(lengths))) and np.array_equal(flat[inverse], np.arange(len(flat)))
    starts = np.cumsum([0, *lengths[:-1]])  # each group row is one window: consecutive patches from its start
    assert sorted(int(row[0]) for i in indices for row in i) == starts.tolist()
    assert len(indices) <= 4  # full windows, the right edge, the bottom edge, the corner


# -- Qwen2-VL: the same processor, merger, positions and decoder; full attention in every tower block --------------


@pytest.fixture(scope="module")
def twin2():
    from adafv.models import load

    return load("tiny-qwen2-vl")


@pytest.fixture(scope="module")
def reference2(twin2):
    from adafv.pipeline import Reference

    return Reference(twin2)


@pytest.mark.parametrize("hw", [(200, 300), (120, 500)])
def test_qwen2_vl_merged_tokens_and_saliency_are_transformers(twin2, reference2, hw, monkeypatch):
    """Tokens vs the stock image features; saliency vs the eager attention weights of the last block (no windows:
    the patches are in merge-unit raster order, so summing each run of 4 gives the raster merged grid)."""
    from transformers.models.qwen2_vl import modeling_qwen2_vl as m

    prepared = reference2.prepare(noise(*hw, seed=11), PROMPT)
    visual = twin2.model.model.visual
    captured = []
    original = m.eager_attention_forward

    def spy(module, *args, **kwargs):
        out, weights = original(module, *args, **kwargs)
        if module is visual.blocks[-1].attn:
            captured.append(weights)
        return out, weights

    previous = visual.config._attn_implementation
    visual.set_attn_implementation("eager")
    monkeypatch.setattr(m, "eager_attention_forward", spy)
    try:
        with torch.no_grad():
            stock = twin2.arch.stock_image_features(twin2.model, prepared.inputs)
    finally:
        visual.set_attn_implementation(previous)
    want = captured[0][0].float().mean(0).mean(0).reshape(-1, 4).sum(-1)  # (P,)
    with torch.no_grad():
        tokens, saliency = reference2.visual(prepared.pixel_values, prepared.patch_grid)
    rows, cols = prepared.merged_grid
    assert tokens.shape == (1, rows * cols, stock.shape[-1])
    torch.testing.assert_close(tokens[0], stock, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(saliency[0], want, atol=1e-7, rtol=1e-5)


def test_qwen2_vl_positions_are_get_rope_index_and_unpruned_is_generate(twin2, reference2):
    image = noise(210, 330, seed=5)
    inputs = reference2.prepare(image, PROMPT).inputs
    want, _ = twin2.model.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"],
                                               image_grid_thw=inputs["image_grid_thw"])  # fmt: skip
    prepared = reference2.prepare(image, PROMPT)
    rows, cols = prepared.merged_grid
    got = mrope(len(prepared.pre_ids), cells(np.arange(rows * cols), cols), (rows, cols), len(prepared.post_ids))
    assert np.array_equal(got, want[:, 0].numpy())
    ran = reference2.run(image, PROMPT, AdaFVConfig(method="full", keep=16), max_new_tokens=8)
    with torch.no_grad():
        out = twin2.model.generate(**inputs, max_new_tokens=8, do_sample=False)
    tokens = out[0, inputs["input_ids"].shape[1] :].tolist()
    eos = twin2.model.generation_config.eos_token_id
    assert ran["tokens"] == (tokens[: tokens.index(eos)] if eos in tokens else tokens)


def test_qwen2_vl_decoder_for_the_builder_is_its_own_text_path(twin2):
    """genai's builder takes a Qwen2.5-VL: the one handed to it holds Qwen2-VL's text modules and head (shared)
    and gives the same logits on embeddings with 3-D positions."""
    model = twin2.model
    lm = twin2.arch.language_model(model)
    assert type(lm).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert lm.model.language_model is model.model.language_model and lm.lm_head is model.lm_head
    assert not any(p.is_meta for p in lm.parameters()) and not any(b.is_meta for b in lm.buffers())
    embeds = model.model.language_model.embed_tokens(torch.randint(0, 300, (1, 9)))
    positions = torch.tensor([[0, 1, 2, 3, 3, 4, 6, 7, 8], [0, 1, 2, 3, 4, 4, 6, 7, 8], [0, 1, 2, 3, 4, 5, 6, 7, 8]])
    with torch.no_grad():
        want = model(inputs_embeds=embeds, position_ids=positions[:, None]).logits
        got = lm(inputs_embeds=embeds, position_ids=positions[:, None]).logits
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_qwen2_vl_checks_its_own_config(twin2):
    from adafv.errors import ModelError

    config = twin2.model.config.__class__.from_dict(twin2.model.config.to_dict())
    config.vision_config.hidden_size = 48  # the merger's output, no longer the LLM's width
    with pytest.raises(ModelError, match="merger's width 48 is not the LLM's 64"):
        twin2.arch.check(config, "tiny-qwen2-vl")
