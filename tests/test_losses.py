"""Each loss against a direct, slow computation (values and gradients), plus the properties that define it."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vssl_nb.losses import (MoCoQueue, MomentumEncoder, all_gather_with_grad, context_matching_loss, info_nce, moco_loss,
                            motion_prediction_loss, motion_regression_loss, nt_xent)


def _rand(*shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True) for s in shapes]


def info_nce_slow(q, k, tau, neg=None):
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    neg = [] if neg is None else F.normalize(neg, dim=1)
    total = 0.
    for i in range(len(q)):
        den = sum(torch.exp(q[i] @ k[j] / tau) for j in range(len(k))) + sum(torch.exp(q[i] @ n / tau) for n in neg)
        total = total - torch.log(torch.exp(q[i] @ k[i] / tau) / den)
    return total / len(q)


def nt_xent_slow(z1, z2, tau):
    z = F.normalize(torch.cat([z1, z2]), dim=1); n = len(z1); total = 0.
    for i in range(2 * n):
        den = sum(torch.exp(z[i] @ z[k] / tau) for k in range(2 * n) if k != i)
        total = total - torch.log(torch.exp(z[i] @ z[(i + n) % (2 * n)] / tau) / den)
    return total / (2 * n)


def _same_value_and_grad(fast, slow, inputs, eps=1e-8):
    assert abs(fast.item() - slow.item()) < eps * max(1, abs(slow.item())) * 1e3
    for a, b in zip(torch.autograd.grad(fast, inputs, retain_graph=True), torch.autograd.grad(slow, inputs)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize('tau', [0.07, 0.1, 0.5])
def test_info_nce_matches_slow(tau):
    q, k = _rand((7, 12), (7, 12), seed=1)
    _same_value_and_grad(info_nce(q, k, tau), info_nce_slow(q, k, tau), (q, k))


def test_info_nce_with_extra_negatives_matches_slow():
    q, k, n = _rand((5, 8), (5, 8), (9, 8), seed=2)
    _same_value_and_grad(info_nce(q, k, 0.1, n), info_nce_slow(q, k, 0.1, n), (q, k, n))


def test_info_nce_properties():
    k, = _rand((16, 32), seed=3)
    assert info_nce(k, k, 0.01).item() < 1e-3                               # perfect matches: no loss
    q, = _rand((16, 32), seed=4)
    assert abs(info_nce(q, k, 100.).item() - math.log(16)) < 0.05          # hot temperature: chance
    assert torch.allclose(info_nce(3 * q, 0.5 * k), info_nce(q, k))          # scale-free (cosine)
    with pytest.raises(ValueError, match='same shape'): info_nce(q, k[:3])
    with pytest.raises(ValueError, match='temperature'): info_nce(q, k, 0.)


def test_nt_xent_matches_slow_and_is_symmetric():
    z1, z2 = _rand((6, 10), (6, 10), seed=5)
    _same_value_and_grad(nt_xent(z1, z2, 0.5), nt_xent_slow(z1, z2, 0.5), (z1, z2))
    assert torch.allclose(nt_xent(z1, z2, 0.2), nt_xent(z2, z1, 0.2))


def test_nt_xent_uses_2n_minus_2_negatives():
    # at a very hot temperature every logit is equal: the loss is log of the number of candidates (1 positive + 2N-2 negatives)
    z1, z2 = _rand((6, 10), (6, 10), seed=6)
    assert abs(nt_xent(z1, z2, 1e6).item() - math.log(2 * 6 - 1)) < 1e-4
    with pytest.raises(ValueError, match='same shape'): nt_xent(z1, z2[:5])


def test_context_matching_is_info_nce_with_tau_0_1():
    c, f = _rand((8, 16), (8, 16), seed=7)
    _same_value_and_grad(context_matching_loss(c, f), info_nce_slow(c, f, 0.1), (c, f))


def test_motion_prediction_every_position_against_all():
    p, t = _rand((3, 5, 8), (3, 5, 8), seed=8)
    _same_value_and_grad(motion_prediction_loss(p, t, 0.1), info_nce_slow(p.reshape(15, 8), t.reshape(15, 8), 0.1), (p, t))
    n, = _rand((2, 5, 8), seed=9)
    _same_value_and_grad(motion_prediction_loss(p, t, 0.1, n),
                         info_nce_slow(p.reshape(15, 8), t.reshape(15, 8), 0.1, n.reshape(10, 8)), (p, t, n))
    with pytest.raises(ValueError, match=r'\(B, P, D\)'): motion_prediction_loss(p[:, 0], t[:, 0])


def test_motion_regression_loss():
    p, t = _rand((2, 4, 2), (2, 4, 2), seed=10)
    _same_value_and_grad(motion_regression_loss(p, t), ((p - t) ** 2).sum() / p.numel(), (p, t))
    with pytest.raises(ValueError, match='same shape'): motion_regression_loss(p, t[:1])


def test_momentum_encoder_update_and_freeze():
    online = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    mom = MomentumEncoder(online, 0.99)
    assert not any(p.requires_grad for p in mom.parameters())
    old = [p.clone() for p in mom.parameters()]
    with torch.no_grad():
        for p in online.parameters(): p.add_(1.)
    online(torch.randn(8, 4))                                              # moves the online BN statistics
    mom.update(online)
    for o, k, q in zip(old, mom.parameters(), online.parameters()): torch.testing.assert_close(k, 0.99 * o + 0.01 * q)
    torch.testing.assert_close(mom.encoder[1].running_mean, online[1].running_mean)
    with pytest.raises(ValueError, match='momentum'): MomentumEncoder(online, 1.5)


def test_moco_queue_fifo_and_loss():
    queue = MoCoQueue(dim=3, size=5)
    queue.enqueue(torch.eye(3))
    queue.enqueue(torch.tensor([[0., 0, 2], [0, 3, 0], [4, 0, 0]]))
    assert int(queue.ptr) == 1
    torch.testing.assert_close(queue.keys[0], torch.tensor([4., 0, 0]) / 4)   # the oldest slot was overwritten
    with pytest.raises(ValueError, match='cannot enqueue'): queue.enqueue(torch.randn(6, 3))
    q, k = _rand((4, 3), (4, 3), seed=11)
    loss = moco_loss(q.float(), k.float(), queue, 0.07)
    slow = sum(info_nce_slow(q[i:i + 1].float(), k[i:i + 1].float(), 0.07, queue.keys) for i in range(4)) / 4
    assert abs(loss.item() - slow.item()) < 1e-4


def test_gather_without_process_group_is_identity():
    x = torch.randn(3, 2)
    assert all_gather_with_grad(x) is x
