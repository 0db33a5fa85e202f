"""adafv.baselines: DART and DivPrune by hand, their contract, ties, and that both compile into an engine."""

from __future__ import annotations

import math

import pytest
import torch

from adafv import AdaFVConfig
from adafv.baselines import dart_positions, divprune_positions
from adafv.select import select


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
    with pytest.raises(Exception, match="selects from the visual tokens"):
        select(method, sal, rel, 4)


def test_flat_tokens_keep_the_first_positions():
    """Identical tokens (a flat image): every score ties, and ties go to the lowest positions."""
    tokens = torch.ones((1, 12, 4))
    assert dart_positions(tokens, keep=5, pivots=2).tolist() == [[0, 1, 2, 3, 4]]
    assert divprune_positions(tokens, keep=5).tolist() == [[0, 1, 2, 3, 4]]


@pytest.mark.parametrize("method", ["dart", "divprune"])
def test_compiles_into_an_engine_with_parity(method, tmp_path):
    """The build's own parity check (ONNX Runtime vs PyTorch, identical positions) passes for the baseline."""
    from adafv.export.bundle import EngineConfig, build

    config = EngineConfig("tiny-llava-next", AdaFVConfig(keep=24, method=method), target="cpu", max_probes=3)
    result = build(config, out=tmp_path / method, progress=False)
    assert result.manifest["selection"]["method"] == method
    assert result.manifest["parity"]["fp32"]["positions"] == "identical"
