"""TOT's mathematical core (vssl_nb.methods.tot) and the segmentation evaluation layer (vssl_nb.segmentation).

Normalisation of the plan: `sinkhorn_plan` rows sum to 1/N exactly (its last step scales the rows) and its columns to
1/K at convergence; `sinkhorn_codes` = N x plan, so each frame's codes sum to 1."""
import itertools
import math

import numpy as np
import pytest
import torch

import vssl_nb.methods.tot as tot
from vssl_nb.methods.tot import (TOTModel, fit_tot, log_temporal_prior, predict, sinkhorn_codes, sinkhorn_plan,
                                 temporal_prior)
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


def _reference_plan(P, eps, iters, log_prior=None):
    "Log-domain Sinkhorn-Knopp in float64 numpy/scipy, one video (N, K) at a time, written apart from the library: columns, then rows."
    from scipy.special import logsumexp
    P = np.asarray(P, dtype=np.float64)
    N, K = P.shape
    L = P / eps + (0 if log_prior is None else np.asarray(log_prior, dtype=np.float64))
    f = np.zeros(N)
    for _ in range(iters):
        g = -np.log(K) - logsumexp(L + f[:, None], axis=0)
        f = -np.log(N) - logsumexp(L + g[None], axis=1)
    return np.exp(L + f[:, None] + g[None])


@pytest.fixture
def path_spy(monkeypatch):
    "Counts the calls of the numpy path that returned and that raised, and of the torch path."
    counts = {'numpy': 0, 'numpy_raised': 0, 'torch': 0}
    numpy_path, torch_path = tot._sinkhorn_numpy, tot._sinkhorn_torch
    def spy_numpy(*args):
        try: out = numpy_path(*args)
        except FloatingPointError: counts['numpy_raised'] += 1; raise
        counts['numpy'] += 1
        return out
    def spy_torch(*args):
        counts['torch'] += 1
        return torch_path(*args)
    monkeypatch.setattr(tot, '_sinkhorn_numpy', spy_numpy)
    monkeypatch.setattr(tot, '_sinkhorn_torch', spy_torch)
    return counts


def test_log_prior_cache_serves_what_a_fresh_call_computes():
    for N, K, sigma, dtype in [(40, 6, 1.5, torch.float32), (40, 6, 0.7, torch.float32), (13, 5, 1.5, torch.float64)]:
        cached = log_temporal_prior(N, K, sigma, dtype)
        assert cached.dtype == dtype and cached.shape == (N, K)
        assert torch.equal(cached, temporal_prior(N, K, sigma, dtype).log())
        assert log_temporal_prior(N, K, sigma, dtype, 'cpu') is cached               # served from the cache
    assert not torch.equal(log_temporal_prior(40, 6, 0.7), log_temporal_prior(40, 6, 1.5))
    with pytest.raises(ValueError, match='N=0'): log_temporal_prior(0, 4)
    torch.manual_seed(0)
    P = torch.rand(2, 40, 6) * 2 - 1
    assert torch.equal(sinkhorn_plan(P, log_prior=log_temporal_prior(40, 6)), sinkhorn_plan(P, prior=temporal_prior(40, 6)))
    with pytest.raises(ValueError, match='not both'): sinkhorn_plan(P, prior=temporal_prior(40, 6), log_prior=log_temporal_prior(40, 6))
    with pytest.raises(ValueError, match=r'log_prior must be \(40, 6\)'): sinkhorn_plan(P, log_prior=log_temporal_prior(41, 6))
    with pytest.raises(ValueError, match=r'\(2, 40, 6\)'): sinkhorn_plan(P, prior=temporal_prior(40, 6).expand(3, 40, 6))


@pytest.mark.parametrize('dtype, tol', [(torch.float64, 1e-15), (torch.float32, 1e-7)])
def test_numpy_path_equals_torch_path_and_the_reference(dtype, tol, path_spy):
    torch.manual_seed(2)
    P = (torch.rand(3, 50, 7) * 2 - 1).to(dtype)
    L = log_temporal_prior(50, 7, dtype=dtype)
    for iters in (1, 3, 25):
        via_numpy = tot._sinkhorn_numpy(P, L, 0.08, iters, 1 / 50)
        via_torch = tot._sinkhorn_torch(P, L, 0.08, iters, 1 / 50)
        assert via_numpy.dtype == via_torch.dtype == dtype and via_numpy.shape == (3, 50, 7) and via_numpy.is_contiguous()
        assert (via_numpy - via_torch).abs().max() < tol
        for b in range(3):
            assert np.abs(via_numpy[b].double().numpy() - _reference_plan(P[b], 0.08, iters, L)).max() < max(tol, 1e-12)
        # codes: the last row step scales to 1 instead of 1/N, on both paths
        assert torch.allclose(tot._sinkhorn_numpy(P, L, 0.08, iters, 1.0), via_numpy * 50, atol=50 * tol)
        assert torch.allclose(tot._sinkhorn_torch(P, L, 0.08, iters, 1.0), via_torch * 50, atol=50 * tol)
    path_spy.update(numpy=0, torch=0)
    plan = sinkhorn_plan(P, log_prior=L)
    assert path_spy == {'numpy': 1, 'numpy_raised': 0, 'torch': 0}        # small CPU input: the numpy path, nothing else
    assert torch.equal(plan, tot._sinkhorn_numpy(P, L, 0.08, 3, 1 / 50))


@pytest.mark.filterwarnings('ignore:Sinkhorn did not converge')
def test_float64_plan_equals_pot_to_1e_10_on_every_path():
    ot = pytest.importorskip('ot', reason='POT (pip install pot, a dev requirement) is needed to compare with ot.sinkhorn')
    torch.manual_seed(3)
    N, K, eps = 256, 10, 0.08
    P = torch.rand(2, N, K, dtype=torch.float64) * 2 - 1
    L = log_temporal_prior(N, K, dtype=torch.float64)
    for iters in (3, 20):
        plans = {'sinkhorn_plan': sinkhorn_plan(P, eps, iters, log_prior=L), 'numpy': tot._sinkhorn_numpy(P, L, eps, iters, 1 / N),
                 'torch': tot._sinkhorn_torch(P, L, eps, iters, 1 / N)}
        for b in range(2):
            pot = ot.sinkhorn(np.full(N, 1 / N), np.full(K, 1 / K), -(P[b] + eps * L).numpy(), eps, numItermax=iters, stopThr=0.0)
            for name, Q in plans.items():
                assert np.abs(Q[b].numpy() - pot).max() < 1e-10, (name, iters, b)


def test_overflow_and_underflow_fall_back_and_stay_correct(path_spy):
    torch.manual_seed(4)
    N, K = 40, 6
    P = torch.rand(2, N, K, dtype=torch.float64) * 2 - 1
    L = log_temporal_prior(N, K, dtype=torch.float64)
    # scores near 10: P/eps ~ 125 overflows float32's exp (max ~88.7); numpy raises, the torch path shifts by the max
    Q = sinkhorn_plan((P + 10).float(), 0.08, 3, log_prior=L.float())
    assert path_spy == {'numpy': 0, 'numpy_raised': 1, 'torch': 1}
    assert torch.isfinite(Q).all()
    for b in range(2): assert np.abs(Q[b].double().numpy() - _reference_plan(P[b] + 10, 0.08, 3, L)).max() < 1e-6
    # eps = 0.001: log G spans ~2000, exp underflows even in float64 (below ~-708): the log-domain path
    path_spy.update(numpy=0, numpy_raised=0, torch=0)
    for dtype, tol in [(torch.float64, 1e-12), (torch.float32, 1e-5)]:
        Q = sinkhorn_plan(P.to(dtype), 0.001, 3, log_prior=L.to(dtype))
        assert torch.isfinite(Q).all()
        assert torch.allclose(Q.sum(2), torch.full((2, N), 1 / N, dtype=dtype), atol=tol, rtol=0)     # rows: exactly 1/N
        for b in range(2): assert np.abs(Q[b].double().numpy() - _reference_plan(P[b], 0.001, 3, L)).max() < tol
        # columns approach 1/K as the iterations go on (slowly at so small an eps: 0.09 off after 10, 6e-5 after 3000)
        Qc = sinkhorn_plan(P.to(dtype), 0.001, 3000, log_prior=L.to(dtype))
        assert torch.allclose(Qc.sum(1), torch.full((2, K), 1 / K, dtype=dtype), atol=1e-4, rtol=0)
        assert torch.allclose(Qc.sum(2), torch.full((2, N), 1 / N, dtype=dtype), atol=tol, rtol=0)
    assert path_spy['numpy_raised'] == 4 and path_spy['numpy'] == 0 and path_spy['torch'] == 4
    # too large for the numpy path: the torch path, same plan
    big = torch.rand(2, 4000, 10) * 2 - 1
    assert big.numel() > tot.NUMPY_MAX_SCORES
    path_spy.update(numpy=0, numpy_raised=0, torch=0)
    Qbig = sinkhorn_plan(big, log_prior=log_temporal_prior(4000, 10))
    assert path_spy == {'numpy': 0, 'numpy_raised': 0, 'torch': 1}
    assert (Qbig - tot._sinkhorn_numpy(big, log_temporal_prior(4000, 10), 0.08, 3, 1 / 4000)).abs().max() < 1e-9


def test_plan_has_no_gradient_and_checks_its_input():
    P = (torch.rand(2, 30, 4) * 2 - 1).requires_grad_()
    T = temporal_prior(30, 4).requires_grad_()
    for Q in (sinkhorn_plan(P, prior=T), sinkhorn_codes(P, prior=T), sinkhorn_plan(P.double(), 0.001, prior=T)):
        assert not Q.requires_grad and Q.grad_fn is None
    assert P.grad is None
    with pytest.raises(TypeError, match='floating-point'): sinkhorn_plan(torch.ones(2, 30, 4, dtype=torch.long))
    with pytest.raises(TypeError, match='torch tensor'): sinkhorn_plan(np.ones((30, 4)))
    with pytest.raises(ValueError, match='eps must be positive, got 0'): sinkhorn_plan(P, eps=0)
    with pytest.raises(ValueError, match='iters must be at least 1'): sinkhorn_plan(P, iters=0)
    if hasattr(torch, 'bfloat16'):          # a dtype numpy lacks: the torch path (log domain: bfloat16 has no range margin)
        Qb = sinkhorn_plan(P.detach().bfloat16(), log_prior=log_temporal_prior(30, 4, dtype=torch.bfloat16))
        assert Qb.dtype == torch.bfloat16 and torch.allclose(Qb.float().sum(2), torch.full((2, 30), 1 / 30), atol=1e-3)


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


def _small_activity(n_videos=6, K=3, D=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(K, D, generator=gen) * 2
    videos = []
    for _ in range(n_videos):
        y = torch.repeat_interleave(torch.arange(K), torch.randint(8, 15, (K,), generator=gen))
        videos.append(centres[y] + torch.randn(len(y), D, generator=gen))
    return videos


@pytest.mark.parametrize('steps, every, expected', [(7, 3, [0, 3, 6]), (8, 3, [0, 3, 6, 7]), (4, 1, [0, 1, 2, 3]), (5, 10, [0, 4])])
def test_fit_tot_callback_steps_and_info(steps, every, expected):
    videos, K = _small_activity(), 3
    calls = []
    def record(step, model, info):
        assert model.training
        model.eval()                     # fit_tot puts it back in train mode
        calls.append((step, info))
    model, hist = fit_tot(videos, K, steps=steps, freeze_prototypes_steps=2, frames_per_video=20, n_splits=4, seed=1,
                          callback=record, callback_every=every)
    assert [s for s, _ in calls] == expected and len(hist) == steps and not model.training
    for step, info in calls:
        assert set(info) == {'step', 'loss', 'cross_entropy', 'coherence', 'videos', 'frames', 'scores', 'codes'}
        assert info['step'] == step and {k: info[k] for k in hist[step]} == hist[step]
        B, n = info['frames'].shape
        assert B == 2 and info['videos'].shape == (2,) and info['videos'].dtype == torch.long
        assert info['scores'].shape == info['codes'].shape == (B, n, K) and n == min(20, *(len(videos[i]) for i in info['videos']))
        assert not info['scores'].requires_grad and not info['codes'].requires_grad
        assert torch.allclose(info['codes'].sum(-1), torch.ones(B, n), atol=1e-5)
        assert torch.allclose(info['codes'], sinkhorn_codes(info['scores'], log_prior=log_temporal_prior(n, K)))
        for f, v in zip(info['frames'], info['videos']):
            assert (f.diff() > 0).all() and f.max() < len(videos[v])            # sorted, distinct, inside the video


def test_fit_tot_callback_sees_the_batch_it_describes_and_does_not_change_training():
    videos, K = _small_activity(), 3
    first = {}
    def keep_first(step, model, info):
        if step == 0: first.update(info)
    _, hist = fit_tot(videos, K, steps=5, frames_per_video=20, n_splits=4, seed=3, callback=keep_first)
    _, hist_plain = fit_tot(videos, K, steps=5, frames_per_video=20, n_splits=4, seed=3)
    assert hist == hist_plain                                                  # the hook leaves the training as it was
    with torch.random.fork_rng(devices=[]):                                   # the model as fit_tot builds it, before step 0
        torch.manual_seed(3); start = TOTModel(videos[0].shape[1], K)
    x = torch.stack([videos[int(v)][f] for v, f in zip(first['videos'], first['frames'])])
    assert torch.allclose(start(x)[1], first['scores'], atol=1e-6)              # indices and scores belong together


def test_fit_tot_callback_stops_training():
    videos, K = _small_activity(), 3
    seen = []
    def stop_at_4(step, model, info):
        seen.append(step)
        return step == 4
    model, hist = fit_tot(videos, K, steps=50, frames_per_video=20, n_splits=4, callback=stop_at_4, callback_every=2)
    assert seen == [0, 2, 4] and len(hist) == 5 and hist[-1]['step'] == 4 and not model.training
    with pytest.raises(TypeError, match="return None, False or True.*got 'yes' at step 0"):
        fit_tot(videos, K, steps=3, callback=lambda step, model, info: 'yes')
    with pytest.raises(ValueError, match='callback_every must be at least 1, got 0'):
        fit_tot(videos, K, steps=3, callback=lambda *a: None, callback_every=0)
    with pytest.raises(TypeError, match='callback must be callable'): fit_tot(videos, K, steps=3, callback=3)
