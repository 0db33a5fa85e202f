"""adafv.relevance: equals a naive loop over tokens; masking; float32 math."""

import math

import torch

from adafv import text_relevance


def naive(visual, text, mask, temperature):
    B, Nv, D = visual.shape
    out = torch.zeros(B, Nv, dtype=torch.float64)
    for b in range(B):
        best = [0.0] * Nv
        for t in range(text.shape[1]):
            if mask is not None and not mask[b, t]:
                continue
            cos = []
            for v in range(Nv):
                x, y = text[b, t].double(), visual[b, v].double()
                cos.append(float(x @ y) / (float(x.norm()) * float(y.norm())))
            z = [math.exp(temperature * c - temperature * max(cos)) for c in cos]
            s = sum(z)
            best = [max(best[v], z[v] / s) for v in range(Nv)]
        out[b] = torch.tensor(best)
    return out


def test_equals_naive_loop():
    g = torch.Generator().manual_seed(0)
    visual, text = torch.randn(2, 30, 16, generator=g), torch.randn(2, 5, 16, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    for temperature in (1.0, 100.0):
        got = text_relevance(visual, text, mask, temperature)
        assert got.dtype == torch.float32 and got.shape == (2, 30)
        torch.testing.assert_close(got.double(), naive(visual, text, mask, temperature), atol=1e-5, rtol=1e-4)


def test_padding_is_ignored():
    g = torch.Generator().manual_seed(1)
    visual, text = torch.randn(1, 12, 8, generator=g), torch.randn(1, 3, 8, generator=g)
    padded = torch.cat([text, torch.randn(1, 4, 8, generator=g)], 1)
    mask = torch.tensor([[True] * 3 + [False] * 4])
    torch.testing.assert_close(text_relevance(visual, padded, mask), text_relevance(visual, text))


def test_half_precision_inputs_compute_in_float32():
    g = torch.Generator().manual_seed(2)
    visual, text = torch.randn(1, 40, 32, generator=g), torch.randn(1, 6, 32, generator=g)
    full = text_relevance(visual, text)
    half = text_relevance(visual.half(), text.half())
    assert half.dtype == torch.float32
    assert torch.equal(torch.topk(full, 5).indices, torch.topk(half, 5).indices)
