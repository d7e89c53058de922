"""Retrieval and kNN on hand-made features with known answers; video pooling; linear probe keeps the backbone frozen;
the probe on cached features: separable vs random labels, exact repeats, scale-free."""
import math

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from vssl_nb.evaluate import (Features, FeatureProbe, LinearProbeRecipe, evaluate_classifier, extract_features, extract_video_features,
                              feature_statistics, fine_tune, fit_linear_probe, knn_accuracy, knn_predict, linear_probe, probe_accuracy,
                              retrieval_recall, video_features)
from vssl_nb.models import build_backbone
from vssl_nb.train import SyntheticClips, make_loader


pytestmark = pytest.mark.usefixtures('quiet_progress')


def at(*degrees):
    "Unit vectors at the given angles: cosine similarity is the cosine of the angle between them."
    return torch.tensor([[math.cos(math.radians(d)), math.sin(math.radians(d))] for d in degrees])


GALLERY, G_LAB = at(0, 10, 90, 100, 180), torch.tensor([0, 0, 1, 1, 2])


def test_retrieval_recall_known_answers():
    # gallery at 0°, 10° (class 0), 90°, 100° (class 1), 180° (class 2); cosine similarity falls with the angle
    # 5° (class 0): nearest 0° → hit at rank 1
    # 135° (class 2): 100° (35° away), then 90° and 180° (45° each, ties keep gallery order) → class 2 at rank 3
    # 80° (class 0): 90°, 100°, then 10° → rank 3
    # 270° (class 1): 0° and 180° (90° each), 10° (100°), then 100° (170°) → rank 4
    q, q_lab = at(5, 135, 80, 270), torch.tensor([0, 2, 0, 1])
    r = retrieval_recall(q, q_lab, GALLERY, G_LAB, ks=(1, 2, 3, 4, 5, 50))
    assert r == {'R@1': 0.25, 'R@2': 0.25, 'R@3': 0.75, 'R@4': 1.0, 'R@5': 1.0, 'R@50': 1.0}


def test_retrieval_is_cosine_not_euclidean():
    gallery, labels = torch.tensor([[10., 0.], [0.1, 0.1]]), torch.tensor([0, 1])
    # Euclidean would pick [0.1, 0.1] for a short query along x; cosine picks the aligned [10, 0]
    assert retrieval_recall(torch.tensor([[0.2, 0.]]), torch.tensor([0]), gallery, labels, ks=(1,))['R@1'] == 1.0
    assert knn_predict(torch.tensor([[0.2, 0.]]), gallery, labels, k=1).tolist() == [0]


def test_retrieval_errors():
    with pytest.raises(ValueError, match='differ in length'): retrieval_recall(at(0), torch.tensor([0, 1]), GALLERY, G_LAB)
    with pytest.raises(ValueError, match='same D'): retrieval_recall(torch.ones(1, 3), torch.tensor([0]), GALLERY, G_LAB)


def test_knn_known_answers():
    q, q_lab = at(5, 95, 175, 80), torch.tensor([0, 1, 2, 0])
    assert knn_predict(q, GALLERY, G_LAB, k=1).tolist() == [0, 1, 2, 1]
    assert knn_accuracy(q, q_lab, GALLERY, G_LAB, k=1) == 0.75
    # k=3 at 175°: 180° (2), 100° (1), 90° (1) → class 1 by majority
    assert knn_predict(at(175), GALLERY, G_LAB, k=3).tolist() == [1]
    # ... but with exp(cos/τ) weights the much closer 180° outweighs them
    assert knn_predict(at(175), GALLERY, G_LAB, k=3, weighting='exp', temperature=0.05).tolist() == [2]
    # a 1-1 vote (k=2 at 40°: 10° is 30° away, 90° is 50° away) goes to the nearer neighbour's class
    assert knn_predict(at(40), GALLERY, G_LAB, k=2).tolist() == [0]
    assert knn_predict(at(60), GALLERY, G_LAB, k=2).tolist() == [1]
    with pytest.raises(ValueError, match='weighting'): knn_predict(q, GALLERY, G_LAB, weighting='euclid')


def test_video_features_mean_of_clips():
    clips = Features(torch.tensor([[1., 1.], [3., 1.], [5., 5.]]), torch.tensor([4, 4, 2]), torch.tensor([9, 9, 3]))
    v = video_features(clips)
    assert v.video_index.tolist() == [3, 9] and v.labels.tolist() == [2, 4]
    assert torch.equal(v.features, torch.tensor([[5., 5.], [2., 1.]]))
    with pytest.raises(ValueError, match='video 9 has clips with different labels'):
        video_features(Features(clips.features, torch.tensor([4, 1, 2]), clips.video_index))


def test_extract_features_restores_mode_and_pools_videos():
    bb = build_backbone('tiny', widths=(4, 8, 8, 16)).train()
    dl = DataLoader(SyntheticClips(n=8, size=32), batch_size=3)
    f = extract_features(bb, dl, 'cpu')
    assert f.features.shape == (8, 16) and f.video_index.tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and bb.training
    v = extract_video_features(bb, dl, 'cpu')
    assert len(v) == 4 and torch.allclose(v.features[1], f.features[2:4].mean(0))


def test_linear_probe_keeps_backbone_frozen():
    torch.manual_seed(0)
    bb = build_backbone('tiny', widths=(4, 8, 8, 16))
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    probe = LinearProbeRecipe(bb, 4)
    probe.train()
    assert not bb.training and not any(p.requires_grad for p in bb.parameters())
    # what a non-frozen backbone would do on the same batch: its BatchNorm statistics would move
    batch = next(iter(make_loader(SyntheticClips(n=8, size=32), 8)))
    probe(batch)['loss'].backward()
    assert all(p.grad is None for p in bb.parameters()) and probe.classifier[1].weight.grad is not None
    acc = linear_probe(bb, make_loader(SyntheticClips(n=32, size=32), 8), DataLoader(SyntheticClips(n=16, size=32, seed=1), batch_size=8),
                       num_classes=4, steps=20, show_progress=False, device='cpu')
    for k, v in bb.state_dict().items(): assert torch.equal(v, before[k]), f'{k} changed during the linear probe'
    assert set(acc) == {'clip_acc', 'video_acc'} and acc['clip_acc'] > 0.25


def test_the_frozen_check_can_fail():
    # the same check on a fine-tuned backbone sees the change
    torch.manual_seed(0)
    bb = build_backbone('tiny', widths=(4, 8, 8, 16))
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    fine_tune(bb, make_loader(SyntheticClips(n=32, size=32), 8), DataLoader(SyntheticClips(n=16, size=32, seed=1), batch_size=8),
              num_classes=4, steps=2, show_progress=False, device='cpu')
    assert any(not torch.equal(v, before[k]) for k, v in bb.state_dict().items())


def test_evaluate_classifier_clip_and_video_accuracy():
    class Fixed(nn.Module):
        "Predicts class 1 for clips whose first pixel is positive, else class 0."
        def forward(self, clip): return torch.stack([-clip[:, 0, 0, 0, 0], clip[:, 0, 0, 0, 0]], 1) * 10
    clips = torch.zeros(4, 3, 2, 2, 2); clips[:, 0, 0, 0, 0] = torch.tensor([1., -1., 1., 1.])
    batch = {'clip': clips, 'label': torch.tensor([1, 1, 0, 0]), 'video_index': torch.tensor([0, 0, 1, 1])}
    acc = evaluate_classifier(Fixed(), [batch], 'cpu')
    assert acc == {'clip_acc': 0.25, 'video_acc': 0.0}   # video 0 ties (one vote each way) → class 0; video 1 → class 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_evaluation_on_gpu():
    torch.manual_seed(0)
    bb = build_backbone('tiny')
    dl = DataLoader(SyntheticClips(n=16, size=64), batch_size=8)
    v = extract_video_features(bb, dl, 'cuda')
    assert v.features.device.type == 'cpu' and torch.isfinite(v.features).all() and len(v) == 8
    acc = linear_probe(bb, make_loader(SyntheticClips(n=32, size=64), 8), dl, num_classes=4, steps=5, show_progress=False, device='cuda')
    assert 0 <= acc['clip_acc'] <= 1


def test_video_key_of_the_data_pipeline_is_accepted():
    bb = build_backbone('tiny', widths=(4, 8, 8, 16))
    batches = [{'clip': torch.randn(2, 3, 4, 32, 32), 'label': torch.tensor([1, 1]), 'video': torch.tensor([5, 5])}]
    v = extract_video_features(bb, batches, 'cpu')
    assert v.video_index.tolist() == [5] and v.labels.tolist() == [1]


def clusters(n_videos, seed, clips=4, dim=16, classes=5, random_labels=False, scale=30.0, offset=-4.0):
    "Clip features around one centre per class (fixed centres), per-video and per-clip noise, on an arbitrary scale."
    centres = 2.0 * torch.randn(classes, dim, generator=torch.Generator().manual_seed(123))
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n_videos) % classes
    x = (centres[y] + 0.5 * torch.randn(n_videos, dim, generator=g)).repeat_interleave(clips, 0) + 0.5 * torch.randn(n_videos * clips, dim, generator=g)
    if random_labels: y = torch.randint(0, classes, (n_videos,), generator=g)
    return Features(scale * x + offset, y.repeat_interleave(clips), torch.arange(n_videos).repeat_interleave(clips))


@pytest.mark.parametrize('optimizer', ['lbfgs', 'adam'])
def test_feature_probe_beats_chance_only_when_there_is_signal(optimizer):
    steps = 100 if optimizer == 'lbfgs' else 300
    sep = probe_accuracy(fit_linear_probe(clusters(50, 1), 5, steps=steps, optimizer=optimizer), clusters(500, 2))
    rnd = probe_accuracy(fit_linear_probe(clusters(50, 1, random_labels=True), 5, steps=steps, optimizer=optimizer),
                         clusters(500, 2, random_labels=True))
    assert sep['video_acc'] > 0.9 and sep['clip_acc'] > 0.8, sep
    assert abs(rnd['video_acc'] - 0.2) < 0.08 and abs(rnd['clip_acc'] - 0.2) < 0.08, rnd


def test_feature_probe_is_exact_repeatable_and_scale_free():
    train, test = clusters(20, 1), clusters(100, 2)
    a, b = fit_linear_probe(train, 5), fit_linear_probe(train, 5)
    assert isinstance(a, FeatureProbe) and torch.equal(a.linear.weight, b.linear.weight) and torch.equal(a.linear.bias, b.linear.bias)
    assert not any(p.requires_grad for p in a.parameters()) and a.final_loss > 0
    # standardisation with the training statistics: scale and offset of the features do not matter
    mean, std = feature_statistics(train.features)
    assert torch.allclose(((train.features.double() - mean) / std).std(0, unbiased=False), torch.ones(16, dtype=torch.float64))
    moved = lambda f: Features(f.features / 30 + 100, f.labels, f.video_index)
    c = fit_linear_probe(moved(train), 5)
    assert torch.allclose(c(moved(test).features).softmax(1), a(test.features).softmax(1), atol=1e-4)
    # a constant dimension does not divide by zero
    const = Features(torch.cat([train.features, torch.ones(len(train), 1)], 1), train.labels, train.video_index)
    assert feature_statistics(const.features)[1][-1] == 1 and torch.isfinite(fit_linear_probe(const, 5).linear.weight).all()
    # more weight decay, smaller weights
    assert fit_linear_probe(train, 5, weight_decay=1.0).linear.weight.norm() < a.linear.weight.norm()


def test_feature_probe_errors():
    f = clusters(10, 0)
    with pytest.raises(ValueError, match='optimizer'): fit_linear_probe(f, optimizer='sgd')
    with pytest.raises(ValueError, match='steps'): fit_linear_probe(f, steps=0)
    with pytest.raises(ValueError, match='exceed every label'): fit_linear_probe(f, num_classes=3)
    with pytest.raises(ValueError, match='labelled'): fit_linear_probe(Features(f.features, torch.full((len(f),), -1), f.video_index))
    with pytest.raises(ValueError, match='non-finite'):
        fit_linear_probe(Features(f.features * float('nan'), f.labels, f.video_index))


def test_cached_linear_probe_keeps_backbone_frozen_and_repeats():
    torch.manual_seed(0)
    bb = build_backbone('tiny', widths=(4, 8, 8, 16)).train()          # training mode: a careless probe would move BatchNorm statistics
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    train_dl = make_loader(SyntheticClips(n=32, size=32), 8)
    test_dl = DataLoader(SyntheticClips(n=16, size=32, seed=1), batch_size=8)
    accs = [linear_probe(bb, train_dl, test_dl, num_classes=4, steps=50, weight_decay=1e-3, cached=True, device='cpu') for _ in range(2)]
    for k, v in bb.state_dict().items(): assert torch.equal(v, before[k]), f'{k} changed during the cached linear probe'
    assert bb.training and all(p.requires_grad for p in bb.parameters())
    assert accs[0] == accs[1] and accs[0]['video_acc'] > 0.5, accs     # colour is linearly separable even from random features
