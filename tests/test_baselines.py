"""adafv.baselines: DART, DivPrune and VisionZip by hand, their contracts, ties, and that all compile into a vision
graph."""

from __future__ import annotations

import math

import pytest
import torch

from adafv import AdaFVConfig
from adafv.baselines import dart_positions, divprune_positions, visionzip, visionzip_split
from adafv.errors import ConfigError, ScoreError
from adafv.methods import select


def test_dart_by_hand():
    # one pivot: t0 has the largest L1 norm; the least duplicated of it are t4 (opposite, cos -1) and t2 (cos 0)
    tokens = torch.tensor([[[4, 0], [1, 0.1], [0, 1], [1, 1], [-1, 0], [2, 0]]], dtype=torch.float32)
    assert dart_positions(tokens, keep=3, pivots=1).tolist() == [[0, 2, 4]]
    # two pivots: t0 (L1 4) and t5 (L1 2)... t3 (L1 2) ties t5 and comes first: pivots t0, t3
    assert dart_positions(tokens, keep=3, pivots=2).tolist() == [[0, 3, 4]]


def _circle(degrees):
    return torch.tensor([[[math.cos(math.radians(d)), math.sin(math.radians(d))] for d in degrees]])


def test_divprune_by_hand():
    # points on the unit circle at 0, 10, 90, 180, 185, 270 degrees (exact axes: cosines 0 and -1 are exact)
    tokens = _circle([0, 10, 90, 180, 185, 270])
    tokens[0, [0, 2, 3, 5]] = torch.tensor([[1.0, 0], [0, 1], [-1, 0], [0, -1]])
    # first: the farthest from its nearest neighbour (270: 85 degrees from 185); then 90 (opposite); then 0 and 180
    # tie at distance 1 from the set: 0 (the lower position) first, then 180
    assert divprune_positions(tokens, keep=3).tolist() == [[0, 2, 5]]
    assert divprune_positions(tokens, keep=4).tolist() == [[0, 2, 3, 5]]


@pytest.mark.parametrize("method", ["dart", "divprune"])
def test_contract(method):
    g = torch.Generator().manual_seed(0)
    B, N, P, D = 2, 3, 16, 8
    tokens = torch.randn((B, N * P, D), generator=g)
    sal, rel = torch.rand((B, N, P), generator=g), torch.rand((B, N * P), generator=g)
    for keep in (1, 5, 20, 47):
        out = select(method, sal, rel, keep, tokens=tokens)
        assert out.shape == (B, keep) and out.dtype == torch.int64
        for row in out.tolist():
            assert row == sorted(set(row)) and 0 <= row[0] and row[-1] < N * P
    assert select(method, sal, rel, N * P, tokens=tokens).tolist() == [list(range(N * P))] * B
    with pytest.raises(ScoreError, match="selects from the visual tokens"):
        select(method, sal, rel, 4)


def test_flat_tokens_keep_the_first_positions():
    """Identical tokens (a flat image): every score ties, and ties go to the lowest positions."""
    tokens = torch.ones((1, 12, 4))
    assert dart_positions(tokens, keep=5, pivots=2).tolist() == [[0, 1, 2, 3, 4]]
    assert divprune_positions(tokens, keep=5).tolist() == [[0, 1, 2, 3, 4]]


def test_visionzip_split_is_the_papers():
    dominant, contextual = visionzip_split(torch.tensor([64, 128, 192, 7, 6, 1, 0]))
    assert dominant.tolist() == [54, 108, 162, 6, 6, 1, 0]
    assert contextual.tolist() == [10, 20, 30, 1, 0, 0, 0]


def test_visionzip_by_hand():
    # one crop of 16 patches, keep 13: 11 dominant + 2 contextual. The 5 least salient patches, in raster order,
    # are 1, 4, 6, 9, 15; step floor(5/2) = 2 makes 1 and 6 the targets; 4 and 15 have keys like 6's, 9 like 1's.
    P = 16
    saliency = torch.ones(1, 1, P)
    saliency[0, 0, [1, 4, 6, 9, 15]] = torch.tensor([0.01, 0.02, 0.03, 0.04, 0.05])
    keys = torch.tensor([1.0, 0.0]).repeat(1, 1, P, 1)  # (1, 1, P, 2)
    for patch, key in {1: [1, 0], 6: [0, 1], 4: [0.1, 1], 9: [1, 0.2], 15: [-0.1, 1]}.items():
        keys[0, 0, patch] = torch.tensor(key, dtype=torch.float32)
    hidden = torch.arange(P, dtype=torch.float32).reshape(1, 1, P, 1) * 2  # feature of patch p: 2p
    zipped = visionzip(hidden, saliency, keys, keep=13)
    assert zipped.positions.tolist() == [[0, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13, 14]]
    expected = [2.0 * p for p in zipped.positions[0].tolist()]
    expected[1] = 2 + 18  # target 1 + the mean of the one that joined it (9)
    expected[5] = 12 + (8 + 30) / 2  # target 6 + the mean of 4 and 15
    assert zipped.features[0, :, 0].tolist() == expected
    assert zipped.contextual[0].nonzero().flatten().tolist() == [1, 5]


def test_visionzip_flat_image_ties_go_to_the_first():
    """Equal attention and equal keys: the first patches are dominant, every other patch joins the first target."""
    hidden = torch.arange(12, dtype=torch.float32).reshape(1, 1, 12, 1)
    zipped = visionzip(hidden, torch.ones(1, 1, 12), torch.ones(1, 1, 12, 3), keep=11)  # 10 dominant + 1 contextual
    assert zipped.positions.tolist() == [list(range(11))]
    assert zipped.features[0, -1, 0].item() == 10 + 11  # target 10, joined by 11
    assert zipped.contextual[0].tolist() == [False] * 10 + [True]


def test_visionzip_contract():
    g = torch.Generator().manual_seed(0)
    B, N, P, C = 2, 3, 64, 8
    hidden = torch.randn((B, N, P, C), generator=g)
    saliency, keys = torch.rand((B, N, P), generator=g), torch.randn((B, N, P, 4), generator=g)
    for keep in (2, 23, 100, 191):
        zipped = visionzip(hidden, saliency, keys, keep)
        quota = torch.tensor([keep // N + (n < keep % N) for n in range(N)])  # by hand: the first crops one more
        contextual = quota * 10 // 64  # the paper's 10 contextual tokens in 64
        assert [t.tolist() for t in visionzip_split(quota)] == [(quota - contextual).tolist(), contextual.tolist()]
        assert zipped.positions.shape == zipped.contextual.shape == (B, keep)
        assert zipped.features.shape == (B, keep, C)
        flat = hidden.reshape(B, N * P, C)
        for b in range(B):
            row = zipped.positions[b].tolist()
            assert row == sorted(set(row)) and 0 <= row[0] and row[-1] < N * P
            crops = torch.tensor(row) // P
            assert torch.bincount(crops, minlength=N).tolist() == quota.tolist()  # each crop its quota
            is_ctx = zipped.contextual[b]
            assert torch.bincount(crops[is_ctx], minlength=N).tolist() == contextual.tolist()
            dominant = zipped.positions[b][~is_ctx]
            assert torch.equal(zipped.features[b][~is_ctx], flat[b, dominant])  # dominant tokens unchanged
            # dominant = the most attended of each crop: none of the dropped patches has more attention
            for n in range(N):
                mine = dominant[(dominant // P) == n] % P
                others = torch.ones(P, dtype=torch.bool)
                others[mine] = False
                if len(mine) and others.any():
                    assert saliency[b, n, mine].min() >= saliency[b, n, others].max()
    with pytest.raises(ConfigError, match="visionzip merges tokens"):
        select("visionzip", saliency.reshape(B, N, P), None, 4)
    for keep in (N * P, N * P + 7):  # nothing to drop: every patch as it is, as every method does
        zipped = visionzip(hidden, saliency, keys, keep)
        assert zipped.positions.tolist() == [list(range(N * P))] * B and not zipped.contextual.any()
        assert torch.equal(zipped.features, hidden.reshape(B, N * P, C))


@pytest.mark.parametrize("method", ["dart", "divprune", "visionzip"])
def test_compiles_into_an_engine_with_parity(method, tmp_path, tiny_next, photos):
    """Built into a bundle, the baseline keeps on a photo the probes never saw what the PyTorch reference keeps."""
    from adafv.export.bundle import EngineConfig, build
    from adafv.runtime import Pipeline

    config = EngineConfig("tiny-llava-next", AdaFVConfig(keep=24, method=method), target="cpu", max_probes=3,
                          llm_precision="fp32")  # fmt: skip
    result = build(config, out=tmp_path / method, progress=False)
    assert result.manifest["selection"]["method"] == method
    image = photos["chelsea.png"]
    got = Pipeline.load(result.path, warmup=False).run(image, "What is this?", max_new_tokens=1)
    want = tiny_next.run(image, "What is this?", AdaFVConfig(keep=24, method=method), 1)
    assert got["kept_positions"] == want["kept_positions"]


def test_visionzip_bundle_gives_the_reference_greedy_tokens(tmp_path, tiny_next, photos):
    """The merge compiled into the vision graph answers like the PyTorch reference (fp32 LLM: identical tokens),
    both layouts, and the graph keeps the same inputs as every other method (text_embeds unused)."""
    from adafv.export.bundle import EngineConfig, build
    from adafv.runtime import Pipeline

    for layout in ("rows", "compact"):
        selection = AdaFVConfig(keep=40, method="visionzip", layout=layout)
        config = EngineConfig("tiny-llava-next", selection, llm_precision="fp32", target="cpu", max_probes=2)
        pipe = Pipeline.load(build(config, out=tmp_path / layout, progress=False).path, warmup=False)
        for name in ("astronaut.png", "rocket.jpg"):
            got = pipe.run(photos[name], "Where is the rocket?", max_new_tokens=8)
            want = tiny_next.run(photos[name], "Where is the rocket?", selection, max_new_tokens=8)
            assert got["kept_positions"] == want["kept_positions"], name
            assert got["tokens"] == want["tokens"], name
            assert got["method"] == want["method"] == "visionzip"
            assert got["num_kept"] == 40 and want["num_llm_visual_tokens"] >= 40


def test_visionzip_fp16_graph_keeps_its_merge_in_float32(tmp_path):
    """The fp16 build: ZipTokens' similarities and merge stay float32 (the build's lint enforces it), and the fp16
    graph keeps nearly the positions of the fp32 one."""
    from adafv.export.bundle import EngineConfig, build

    selection = AdaFVConfig(keep=40, method="visionzip")
    config = EngineConfig("tiny-llava-next", selection, precision="fp16", target="cpu", max_probes=3)
    manifest = build(config, out=tmp_path / "fp16", progress=False).manifest
    assert manifest["parity"]["fp16"]["min_position_overlap"] >= 0.9
