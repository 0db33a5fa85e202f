"""adafv.select: hand-worked cases, properties (hypothesis), exact vs paper, baselines, bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adafv import ConfigError, ScoreError, select_tokens
from adafv.methods import select
from adafv.select import paper_budget
from tests import naive

# ---- hand-worked cases -------------------------------------------------------------------------------------------
# relevance over 12 positions; descending: .20@0 .15@2 .14@11 .12@4 .10@6 .08@8 .06@10 .05@9 .04@7 .03@5 .02@3 .01@1
REL = [0.20, 0.01, 0.15, 0.02, 0.12, 0.03, 0.10, 0.04, 0.08, 0.05, 0.06, 0.14]
# saliency for N=1, P=12; descending: .30@1 .20@3 .10@5 .09@11 .08@7 .07@10 .06@9 .05@8 .04@6 .03@4 .02@0 .01@2
SAL1 = [[0.02, 0.30, 0.01, 0.20, 0.03, 0.10, 0.04, 0.08, 0.05, 0.06, 0.07, 0.09]]
# the same twelve values as N=2 crops of P=6 (crop 1 holds positions 6..11)
SAL2 = [SAL1[0][:6], SAL1[0][6:]]


def t(rows):
    return torch.tensor([rows], dtype=torch.float32)


def test_paper_one_crop_by_hand():
    # keep=8, N=1: k = floor(4/1) = 4, V = 8, B0 = 2, R = 4
    # pos_t = [0, 2, 11, 4, 6, 8, 10, 9], a = [.20 .15 .14 .12 .10 .08 .06 .05]
    # pos_c = [1, 3, 5, 11, 7, 10, 9, 8], c = [.30 .20 .10 .09 .08 .07 .06 .05]
    # guaranteed: pos_t[:2] = [0, 2], pos_c[:2] = [1, 3]
    # L1 = [.14 .12 .10 .08 ...] -> S1 = 0, .14, .26, .36, .44
    # L2 = [.10 .09 .08 .07 ...] (positions 5, 11, 7, 10) -> S2 = 0, .10, .19, .27, .34
    # S1(j) * S2(4-j): j=0: 0, j=1: .14*.27=.0378, j=2: .26*.19=.0494, j=3: .36*.10=.036, j=4: 0 -> k1 = 2, k2 = 2
    # output: [0, 2, 11, 4] + [1, 3] + [5, 11] -> 11 is chosen by both cues and appears twice
    out = select_tokens(t(SAL1), t(REL), 8, mode="paper")
    assert out.tolist() == [[0, 1, 2, 3, 4, 5, 11, 11]]


def test_exact_one_crop_by_hand():
    # K = 8, B0 = 2: G = {0, 2} | {1, 3}, R = 4. L1 = [11, 4, 6, 8, ...], L2 = [5, 11, 7, 10, ...]
    # j=0: L2 takes 5, 11, 7, 10 -> 0 * .34 = 0
    # j=1: L1 takes 11; L2 skips 11: 5, 7, 10 -> .14 * .25 = .035
    # j=2: L1 takes 11, 4; L2 takes 5, 7 -> .26 * .18 = .0468   <- best
    # j=3: L1 takes 11, 4, 6; L2 takes 5 -> .36 * .10 = .036
    # the slot paper mode spends on a second 11 goes to the next saliency candidate, 7
    out = select_tokens(t(SAL1), t(REL), 8)
    assert out.tolist() == [[0, 1, 2, 3, 4, 5, 7, 11]]


def test_paper_two_crops_by_hand():
    # keep=9, N=2, P=6: k = floor(floor(9/2)/2) = 2 -> 4 per crop, V = 8 (< keep), B0 = 2, R = 4
    # crop 0 top 4: .30@1 .20@3 .10@5 .03@4 ; crop 1 top 4: .09@11 .08@7 .07@10 .06@9 (crop-major: n*P + p)
    # pos_c = [1, 3, 5, 4, 11, 7, 10, 9]; L2 = c[2:] sorted: .10@5 .09@11 .08@7 .07@10 .06@9 .03@4
    # S1 as above, S2 = 0, .10, .19, .27, .34 -> k1 = 2, k2 = 2 -> [0, 2, 11, 4] + [1, 3] + [5, 11]
    out = select_tokens(t(SAL2), t(REL), 9, mode="paper")
    assert out.tolist() == [[0, 1, 2, 3, 4, 5, 11, 11]]
    assert paper_budget(9, 2) == 8


def test_paper_two_crops_legacy_offset_by_hand():
    # the released code maps crop 1's local patch p to p + 1 instead of 6 + p:
    # pos_c = [1, 3, 5, 4, 6, 2, 5, 4]; L2 sorted: .10@5 .09@6 .08@2 .07@5 ... -> picks [5, 6]
    out = select_tokens(t(SAL2), t(REL), 9, mode="paper", legacy_offset=True)
    assert out.tolist() == [[0, 1, 2, 3, 4, 5, 6, 11]]


def test_exact_two_crops_odd_keep_by_hand():
    # K = 9, quotas (5, 4): crop 0 gets the extra slot. B0 = 2.
    # T = [0, 2, 11, 4, 6, 8, 10, 9, 7]; C = [1, 3, 5, 4, 0 | 11, 7, 10, 9]
    # G = {0, 2, 1, 3}, R = 5. L1 = [11, 4, 6, 8, 10, 9, 7]; L2 = C[2:] by saliency without G: [5, 11, 7, 10, 9, 4]
    # j=1: .14 * (5, 7, 10, 9 = .31) = .0434 ; j=2: .26 * (5, 7, 10 = .25) = .065 ; j=3: .36 * (5, 7 = .18) = .0648
    # -> k1 = 2: {0, 1, 2, 3} | {11, 4} | {5, 7, 10}
    out = select_tokens(t(SAL2), t(REL), 9)
    assert out.tolist() == [[0, 1, 2, 3, 4, 5, 7, 10, 11]]


# ---- against the plain-Python transcription, with exactly representable scores ------------------------------------


@st.composite
def problems(draw, max_tokens=48):
    N = draw(st.integers(1, 4))
    P = draw(st.integers(2, max_tokens // N))
    B = draw(st.integers(1, 3))
    keep = draw(st.integers(1, N * P - 1))
    perms = [draw(st.permutations(range(1, N * P + 1))) for _ in range(2 * B)]
    sal = torch.tensor([perms[2 * b] for b in range(B)], dtype=torch.float32).reshape(B, N, P)
    rel = torch.tensor([perms[2 * b + 1] for b in range(B)], dtype=torch.float32)
    return sal, rel, keep


@st.composite
def tied_problems(draw, max_tokens=48):
    """Scores drawn from a handful of values: ties everywhere, as on a flat image. The plain-Python rules break ties
    by position (Python's stable sort); so must the tensor code."""
    N = draw(st.integers(1, 4))
    P = draw(st.integers(2, max_tokens // N))
    B = draw(st.integers(1, 2))
    keep = draw(st.integers(1, N * P - 1))
    levels = draw(st.integers(1, 4))
    values = st.lists(st.integers(1, levels), min_size=N * P, max_size=N * P)
    sal = torch.tensor([draw(values) for _ in range(B)], dtype=torch.float32).reshape(B, N, P)
    rel = torch.tensor([draw(values) for _ in range(B)], dtype=torch.float32)
    return sal, rel, keep


def _rows(sal, rel):
    return [(sal[b].tolist(), rel[b].tolist()) for b in range(sal.shape[0])]


@settings(max_examples=150, deadline=None)
@given(problems())
def test_exact_matches_plain_python(problem):
    sal, rel, keep = problem
    out = select_tokens(sal, rel, keep)
    assert out.tolist() == [naive.exact(s, r, keep) for s, r in _rows(sal, rel)]


@settings(max_examples=150, deadline=None)
@given(problems(), st.booleans())
def test_paper_matches_plain_python(problem, legacy):
    sal, rel, keep = problem
    N = sal.shape[1]
    if keep < 2 * N:
        with pytest.raises(ConfigError, match="paper mode needs keep >= 2\\*N"):
            select_tokens(sal, rel, keep, mode="paper")
        return
    out = select_tokens(sal, rel, keep, mode="paper", legacy_offset=legacy)
    assert out.tolist() == [naive.paper(s, r, keep, legacy) for s, r in _rows(sal, rel)]


@settings(max_examples=150, deadline=None)
@given(tied_problems(), st.sampled_from(["exact", "paper"]))
def test_ties_are_broken_by_position(problem, mode):
    sal, rel, keep = problem
    if mode == "paper" and keep < 2 * sal.shape[1]:
        return
    out = select_tokens(sal, rel, keep, mode=mode).tolist()
    rule = naive.exact if mode == "exact" else naive.paper
    assert out == [rule(s, r, keep) for s, r in _rows(sal, rel)]
    for method in ("fastervlm", "text"):  # the baselines follow the same rule
        got = select(method, sal, rel, keep).tolist()
        assert got == [naive.baseline(method, s, r, keep) for s, r in _rows(sal, rel)]


# ---- properties on arbitrary float scores --------------------------------------------------------------------------


@st.composite
def float_problems(draw):
    N = draw(st.integers(1, 5))
    P = draw(st.integers(2, 40))
    B = draw(st.integers(1, 3))
    keep = draw(st.integers(1, N * P + 3))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    sal = torch.rand((B, N, P), generator=g)
    rel = torch.softmax(torch.randn((B, N * P), generator=g) * 3, -1)
    return sal, rel, keep


@settings(max_examples=100, deadline=None)
@given(float_problems(), st.sampled_from(["exact", "paper"]))
def test_properties(problem, mode):
    sal, rel, keep = problem
    B, N, P = sal.shape
    if mode == "paper" and keep < 2 * N:
        return
    out = select_tokens(sal, rel, keep, mode=mode)
    K = N * P if keep >= N * P else (keep if mode == "exact" else paper_budget(keep, N))
    assert out.shape == (B, K) and out.dtype == torch.int64  # count
    assert bool((out[:, 1:] >= out[:, :-1]).all())  # ascending
    assert int(out.min()) >= 0 and int(out.max()) < N * P  # in range
    if mode == "exact" or keep >= N * P:
        assert all(len(set(row)) == K for row in out.tolist())  # distinct
    for b in range(B):  # batch rows independent
        assert torch.equal(out[b : b + 1], select_tokens(sal[b : b + 1], rel[b : b + 1], keep, mode=mode))
    assert torch.equal(out, select_tokens(sal, rel, keep, mode=mode))  # deterministic


@settings(max_examples=100, deadline=None)
@given(problems(), st.integers(-6, 6), st.integers(-6, 6), st.sampled_from(["exact", "paper"]))
def test_split_is_scale_free(problem, e1, e2, mode):
    # scaling a cue by a positive constant leaves the split (and so the output) unchanged. Powers of two scale every
    # sum and product exactly in float32, so the comparison can be exact.
    sal, rel, keep = problem
    if mode == "paper" and keep < 2 * sal.shape[1]:
        return
    base = select_tokens(sal, rel, keep, mode=mode)
    assert torch.equal(base, select_tokens(sal * 2.0**e1, rel * 2.0**e2, keep, mode=mode))


@settings(max_examples=100, deadline=None)
@given(st.integers(4, 40), st.data())
def test_exact_equals_paper_one_crop_even_keep_disjoint(P, data):
    # N = 1, even keep, and the two cues' top-keep lists share no position -> the two modes coincide
    keep = data.draw(st.integers(1, P // 4).map(lambda h: 2 * h))
    order = data.draw(st.permutations(range(P)))
    rel_top, sal_top, rest = order[:keep], order[keep : 2 * keep], order[2 * keep :]
    rel = torch.zeros(P)
    sal = torch.zeros(P)
    rel[list(rel_top)] = torch.arange(2 * P, 2 * P - keep, -1, dtype=torch.float32)
    sal[list(sal_top)] = torch.arange(2 * P, 2 * P - keep, -1, dtype=torch.float32)
    rel[list(sal_top) + list(rest)] = torch.arange(1, P - keep + 1, dtype=torch.float32)[: P - keep]
    sal[list(rel_top) + list(rest)] = torch.arange(1, P - keep + 1, dtype=torch.float32)[: P - keep]
    exact = select_tokens(sal[None, None], rel[None], keep, mode="exact")
    paper = select_tokens(sal[None, None], rel[None], keep, mode="paper")
    assert torch.equal(exact, paper)


def test_paper_keeps_duplicates_exact_does_not():
    # both cues agree on everything: paper mode emits each guaranteed position twice
    scores = torch.arange(16, 0, -1, dtype=torch.float32)
    paper = select_tokens(scores[None, None], scores[None], 8, mode="paper")[0].tolist()
    exact = select_tokens(scores[None, None], scores[None], 8)[0].tolist()
    assert len(set(paper)) < len(paper)
    assert exact == list(range(8))


# ---- baselines --------------------------------------------------------------------------------------------------


def test_baselines_contract():
    g = torch.Generator().manual_seed(0)
    sal, rel = torch.rand((2, 3, 10), generator=g), torch.rand((2, 30), generator=g)
    for method in ("fastervlm", "text", "random", "adafv"):
        out = select(method, sal, rel, 7)
        assert out.shape == (2, 7) and all(len(set(r)) == 7 and r == sorted(r) for r in out.tolist())
    assert select("full", sal, rel, 7).tolist() == [list(range(30))] * 2
    # fastervlm: quotas 3, 2, 2 of the most salient patches per crop
    out = select("fastervlm", sal, rel, 7)[0]
    for n, q in enumerate((3, 2, 2)):
        top = set((torch.topk(sal[0, n], q).indices + 10 * n).tolist())
        assert top == {p for p in out.tolist() if 10 * n <= p < 10 * (n + 1)}
    # text: the 7 most relevant
    assert set(select("text", sal, rel, 7)[0].tolist()) == set(torch.topk(rel[0], 7).indices.tolist())
    # random: seeded
    assert torch.equal(select("random", sal, rel, 7, seed=3), select("random", sal, rel, 7, seed=3))
    assert not torch.equal(select("random", sal, rel, 7, seed=3), select("random", sal, rel, 7, seed=4))


# ---- bad input ----------------------------------------------------------------------------------------------------


def test_keep_at_least_all_tokens_returns_all():
    sal, rel = torch.rand(1, 2, 5), torch.rand(1, 10)
    for keep in (10, 11, 1000):
        for mode in ("exact", "paper"):
            assert select_tokens(sal, rel, keep, mode=mode).tolist() == [list(range(10))]


@pytest.mark.parametrize(
    "args, error, message",
    [
        ((torch.rand(1, 2, 5), torch.rand(1, 10), 0), ConfigError, "keep must be positive"),
        ((torch.rand(1, 2, 5), torch.rand(1, 10), -3), ConfigError, "keep must be positive"),
        ((torch.rand(1, 2, 5), torch.rand(1, 10), 2.5), ConfigError, "keep must be an integer"),
        ((torch.rand(2, 5), torch.rand(1, 10), 4), ScoreError, r"saliency must be a \(B, N, P\)"),
        ((torch.rand(1, 2, 5), torch.rand(1, 9), 4), ScoreError, r"relevance must have shape \(B, N\*P\)"),
        ((torch.rand(1, 2, 5), torch.full((1, 10), float("nan")), 4), ScoreError, "relevance contains NaN"),
        ((torch.full((1, 2, 5), float("inf")), torch.rand(1, 10), 4), ScoreError, "saliency contains NaN or inf"),
        ((-torch.rand(1, 2, 5), torch.rand(1, 10), 4), ScoreError, "saliency has negative values"),
        ((torch.ones(1, 2, 5, dtype=torch.int64), torch.rand(1, 10), 4), ScoreError, "floating-point"),
        ((torch.rand(1, 0, 5), torch.rand(1, 0), 4), ScoreError, "empty axis"),
    ],
)
def test_bad_input(args, error, message):
    with pytest.raises(error, match=message):
        select_tokens(*args)


def test_bad_mode_and_method():
    sal, rel = torch.rand(1, 2, 5), torch.rand(1, 10)
    with pytest.raises(ConfigError, match="unknown mode"):
        select_tokens(sal, rel, 4, mode="fast")
    with pytest.raises(ConfigError, match="needs mode='paper'"):
        select_tokens(sal, rel, 4, legacy_offset=True)
    with pytest.raises(ConfigError, match="unknown method 'magic'"):
        select("magic", sal, rel, 4)
