"""TOT's mathematical core (vssl_nb.methods.tot) and the segmentation evaluation layer (vssl_nb.segmentation).

Normalisation of the plan: `sinkhorn_plan` rows sum to 1/N exactly (its last step scales the rows) and its columns to
1/K at convergence; `sinkhorn_codes` = N x plan, so each frame's codes sum to 1."""
import itertools
import math

import numpy as np
import pytest
import torch

from vssl_nb.methods.tot import (fit_tot, predict, sinkhorn_codes, sinkhorn_plan, temporal_prior)
from vssl_nb.segmentation import (equal_split, f1_segments, hungarian_match, iou_jaccard, mof, relabel,
                                  score_activity, viterbi_ordered)


def test_prior_matches_the_formula_by_double_loop():
    N, K, sigma = 13, 5, 1.5
    T = temporal_prior(N, K, sigma, dtype=torch.float64)
    for i in range(1, N + 1):
        for j in range(1, K + 1):
            c = (abs(i / N - j / K) / math.sqrt(1 / N**2 + 1 / K**2)) ** 2
            assert T[i - 1, j - 1].item() == pytest.approx(math.exp(-c / (2 * sigma**2)) / (2 * math.pi * sigma), rel=1e-12)
    assert not torch.allclose(temporal_prior(N, K, 0.7, dtype=torch.float64), T)   # sigma is used
    with pytest.raises(ValueError, match='K=0'): temporal_prior(4, 0)


def test_plan_marginals():
    torch.manual_seed(0)
    P = torch.randn(3, 40, 6, dtype=torch.float64) * 0.5
    prior = temporal_prior(40, 6, dtype=torch.float64)
    Q = sinkhorn_plan(P, eps=0.08, iters=3, prior=prior)
    assert torch.allclose(Q.sum(2), torch.full((3, 40), 1 / 40, dtype=torch.float64), atol=1e-12)   # rows: exactly 1/N
    assert torch.allclose(Q.sum((1, 2)), torch.ones(3, dtype=torch.float64), atol=1e-12)
    assert not torch.allclose(Q.sum(1), torch.full((3, 6), 1 / 6, dtype=torch.float64), atol=1e-6)  # 3 iterations: columns not yet
    Qc = sinkhorn_plan(P, eps=0.08, iters=2000, prior=prior)
    assert torch.allclose(Qc.sum(1), torch.full((3, 6), 1 / 6, dtype=torch.float64), atol=1e-8)   # columns: 1/K at convergence
    assert torch.allclose(sinkhorn_codes(P, prior=prior), Q * 40)
    # scores whose kernel does not fit float32 take the log-domain path: still finite, rows still 1/N
    Qlog = sinkhorn_plan(P.float() * 40, eps=0.01, iters=3, prior=prior.float())
    assert torch.isfinite(Qlog).all() and torch.allclose(Qlog.sum(2), torch.full((3, 40), 1 / 40), atol=1e-4)
    assert torch.allclose(Qlog.double(), sinkhorn_plan(P * 40, eps=0.01, iters=3, prior=prior), atol=1e-4)
    with pytest.raises(ValueError, match=r'got shape \(40,\)'): sinkhorn_plan(P[0, :, 0])


@pytest.mark.filterwarnings('ignore:Sinkhorn did not converge')
def test_plan_equals_pot():
    ot = pytest.importorskip('ot', reason='POT (pip install pot, a dev requirement) is needed to compare with ot.sinkhorn')
    torch.manual_seed(1)
    N, K, eps = 64, 7, 0.08
    P = torch.rand(2, N, K, dtype=torch.float64) * 2 - 1
    T = temporal_prior(N, K, dtype=torch.float64)
    for iters in (3, 20):
        ours = sinkhorn_plan(P, eps, iters, prior=T)
        for b in range(2):
            M = -(P[b] + eps * T.log()).numpy()            # exp(-M/eps) = exp(P/eps) * T
            pot = ot.sinkhorn(np.full(N, 1 / N), np.full(K, 1 / K), M, eps, numItermax=iters, stopThr=0.0)
            assert np.abs(ours[b].numpy() - pot).max() < 1e-5
            assert np.abs(ours[b].numpy() - pot).max() < 1e-3 * pot.max()
    # and the prior matters: without it the plan differs from POT's plan with it
    M = -(P[0] + eps * T.log()).numpy()
    pot = ot.sinkhorn(np.full(N, 1 / N), np.full(K, 1 / K), M, eps, numItermax=3, stopThr=0.0)
    assert np.abs(sinkhorn_plan(P[0], eps, 3).numpy() - pot).max() > 1e-4


def test_hungarian_mof_hand_case():
    gt = [np.array([0, 0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 2, 2])]
    pred = [np.array([5, 5, 3, 3, 3, 4]), np.array([5, 5, 3, 3, 4, 4])]
    # pooled overlaps: 5->0: 3, 5->1: 1; 3->0: 1, 3->1: 4; 4->2: 3. Best: 5->0, 3->1, 4->2 with 10 of 12 frames.
    mapping = hungarian_match(pred, gt)
    assert mapping == {5: 0, 3: 1, 4: 2}
    assert mof(gt, relabel(pred, mapping)) == pytest.approx(10 / 12)
    assert score_activity(pred, gt)['mof'] == pytest.approx(10 / 12)
    # pooled over the activity, not per video: the second video alone would be matched the other way round
    p1, g1, p2, g2 = np.array([0, 0, 0, 1]), np.array([0, 0, 0, 1]), np.array([0, 1]), np.array([1, 0])
    assert hungarian_match(p2, g2) == {0: 1, 1: 0}
    assert hungarian_match([p1, p2], [g1, g2]) == {0: 0, 1: 1}
    assert mof([0, 0, 7, 7], [0, 1, 1, 1], exclude=7) == pytest.approx(0.5)
    assert mof([0, 0, 7, 7], [0, 1, 1, 1]) == pytest.approx(0.25)


def _all_monotone_paths(N, L):
    "Every labelling of N frames with steps 0..L-1 in order, each at least one frame."
    for cuts in itertools.combinations(range(1, N), L - 1):
        bounds = (0, *cuts, N)
        yield np.repeat(np.arange(L), np.diff(bounds))


@pytest.mark.parametrize('order', [None, [2, 0, 3, 1], [3, 1]])
def test_viterbi_is_the_best_ordered_path(order):
    rng = np.random.default_rng(3)
    N, K = 9, 4
    for _ in range(5):
        scores = np.log(rng.dirichlet(np.ones(K), size=N))
        o = np.arange(K) if order is None else np.asarray(order)
        best = max(_all_monotone_paths(N, len(o)), key=lambda steps: scores[np.arange(N), o[steps]].sum())
        labels, score = viterbi_ordered(scores, order, return_score=True)
        assert labels.tolist() == o[best].tolist()
        assert score == pytest.approx(scores[np.arange(N), o[best]].sum())
        assert labels.tolist() != scores.argmax(1).tolist() or len(set(labels.tolist())) == len(o)
    with pytest.raises(ValueError, match='N=2'): viterbi_ordered(np.zeros((2, 3)))


def test_f1_and_iou_hand_case():
    gt = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    pred = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 2])
    # segments gt: 0[0,4) 1[4,8) 2[8,10); pred: 0[0,3) IoU 3/4 TP, 1[3,9) IoU 4/6 TP, 2[9,10) IoU 1/2 TP at 0.5
    assert f1_segments(gt, pred, 0.5) == pytest.approx(1.0)
    # at 0.7 only the first: P = 1/3, R = 1/3
    assert f1_segments(gt, pred, 0.7) == pytest.approx(1 / 3)
    # IoU per class: 0: 3/4, 1: 4/6, 2: 1/2
    assert iou_jaccard(gt, pred) == pytest.approx(np.mean([3 / 4, 4 / 6, 1 / 2]))
    # class 2 as background: frames 8, 9 are ignored, so class 1's union shrinks to frames 3..7: 4/5
    assert iou_jaccard(gt, pred, exclude=2) == pytest.approx(np.mean([3 / 4, 4 / 5]))
    # pred 0[0,2) 1[2,3) 0[3,4) 1[4,8) 2[8,10) at IoU >= 0.2: 0[0,2) TP (1/2), 1[2,3) FP (0), 0[3,4) FP although
    # IoU 1/4 >= 0.2, because its ground-truth segment is already matched; 1[4,8) and 2[8,10) TP: P = 3/5, R = 1
    assert f1_segments(gt, np.array([0, 0, 1, 0, 1, 1, 1, 1, 2, 2]), 0.2) == pytest.approx(0.75)


def _synthetic_activity(n_videos=12, K=4, D=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(K, D, generator=gen) * 1.5
    videos, truth = [], []
    for _ in range(n_videos):
        n = int(torch.randint(90, 150, (1,), generator=gen))
        shares = torch.tensor([1., 3., 1., 2.]) + torch.rand(K, generator=gen)
        lengths = (shares / shares.sum() * n).round().long().clamp(min=2)
        y = torch.repeat_interleave(torch.arange(K), lengths)
        videos.append(centres[y] + torch.randn(len(y), D, generator=gen)); truth.append(y.numpy())
    return videos, truth


def test_fit_tot_lowers_its_loss_and_beats_the_equal_split():
    torch.set_num_threads(1)
    videos, truth = _synthetic_activity()
    K = 4
    model, hist = fit_tot(videos, K, steps=120, freeze_prototypes_steps=30, lr=1e-2, frames_per_video=96, n_splits=16, seed=0)
    losses = np.array([h['loss'] for h in hist])
    assert len(hist) == 120 and np.isfinite(losses).all()
    assert losses[-10:].mean() < 0.8 * losses[:10].mean()
    labels = [viterbi_ordered(predict(model, v)) for v in videos]
    ours = score_activity(labels, truth)
    split = score_activity([equal_split(len(v), K) for v in videos], truth)
    assert ours['mof'] > split['mof'] + 0.05, (ours, split)
    with pytest.raises(ValueError, match='fewer than K=4'): fit_tot([torch.zeros(3, 16)], K, steps=1)
