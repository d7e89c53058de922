"""Grad-CAM for 3D CNNs, the mask-share number, clips with masks from the synthetic world, and the explorer figure."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from vssl_nb.attention import (AttentionExplorer, ClipClassifier, attention_figure, attention_mask_share, grad_cam, mask_share,
                               normalize_cam, overlay_cam, resolve_layer, synthetic_clips_with_masks)
from vssl_nb.models import build_backbone


pytestmark = pytest.mark.usefixtures('quiet_progress')


def moving_square_clip(T=8, size=32, region=(8, 16, 8, 16), seed=0):
    "Static random texture everywhere; a bright square moves inside `region` (y0, y1, x0, x1), whose mask is returned."
    g = torch.Generator().manual_seed(seed)
    clip = torch.rand(3, 1, size, size, generator=g).repeat(1, T, 1, 1)
    mask = torch.zeros(T, size, size)
    y0, y1, x0, x1 = region
    for t in range(T):
        x = x0 + (t % (x1 - x0 - 3))
        clip[:, t, y0 + 2:y0 + 6, x:x + 4] = 1.0
        mask[t, y0:y1, x0:x1] = 1
    return clip[None], mask[None]


def one_layer_model(kind):
    "A 3D conv with a fixed kernel (temporal difference = motion, or brightness = scene), |·|, global average pool."
    conv = nn.Conv3d(3, 1, (3, 1, 1), padding=(1, 0, 0), bias=False, padding_mode='replicate')
    k = torch.zeros(1, 3, 3, 1, 1)
    if kind == 'motion': k[0, :, 2], k[0, :, 1] = 1.0, -1.0
    else: k[0, :, 1] = 1.0
    with torch.no_grad(): conv.weight.copy_(k)
    class Abs(nn.Module):
        def forward(self, x): return x.abs()
    return nn.Sequential(nn.Sequential(conv, Abs()), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(1, 2))


def test_grad_cam_mass_lies_where_the_answer_comes_from():
    clip, mask = moving_square_clip()
    motion = one_layer_model('motion')
    with torch.no_grad(): motion[3].weight.copy_(torch.tensor([[1.0], [-1.0]]))
    cam = grad_cam(motion, clip, layer='0', target=0)
    assert cam.shape == (1, 8, 32, 32)
    assert mask_share(cam, mask).item() > 0.9                 # the answer depends only on the moving region
    scene = one_layer_model('scene')
    with torch.no_grad(): scene[3].weight.copy_(torch.tensor([[1.0], [-1.0]]))
    assert mask_share(grad_cam(scene, clip, layer='0', target=0), mask).item() < 0.5   # a scene model looks elsewhere
    # the class whose score falls with the evidence gets no map (ReLU of negative weights)
    assert grad_cam(motion, clip, layer='0', target=1).sum() == 0


def test_grad_cam_upsamples_over_time_and_space_and_leaves_the_model_alone():
    torch.manual_seed(0)
    bb = build_backbone('tiny', widths=(4, 8, 8, 16)).train()
    x = torch.randn(2, 3, 8, 32, 32)
    layer = resolve_layer(bb)
    assert layer is bb.stages[-1]
    cam = grad_cam(bb, x)                                       # bare backbone: feature energy
    assert cam.shape == (2, 8, 32, 32) and (cam >= 0).all() and cam.sum() > 0
    assert bb.training and all(p.grad is None for p in bb.parameters())
    assert grad_cam(bb, x, size=(4, 16, 16)).shape == (2, 4, 16, 16)
    for p in bb.parameters(): p.requires_grad_(False)         # a frozen backbone (as under a linear probe) still gets maps
    clf = ClipClassifier(bb, nn.Linear(16, 3))
    assert grad_cam(clf, x, layer=-2, target=torch.tensor([0, 2])).sum() > 0
    torch.testing.assert_close(normalize_cam(cam).flatten(1).amax(1), torch.ones(2))
    with pytest.raises(ValueError, match="no module named"): grad_cam(clf, x, layer='nope')
    with pytest.raises(ValueError, match='out of range'): grad_cam(clf, x, layer=7)


def test_mask_share_reference_values():
    mask = torch.zeros(1, 2, 4, 4); mask[..., :2, :] = 1       # half the area
    assert mask_share(torch.ones(1, 2, 4, 4), mask).item() == pytest.approx(0.5)
    assert mask_share(mask.clone(), mask).item() == pytest.approx(1.0)
    assert mask_share(1 - mask, mask).item() == pytest.approx(0.0)
    assert mask_share(torch.zeros(1, 2, 4, 4), mask).item() == pytest.approx(0.5)   # no mass: the area share
    with pytest.raises(ValueError, match='same shape'): mask_share(torch.ones(1, 2, 4, 4), mask[:, :1])


def test_attention_mask_share_over_clips_with_label_targets():
    clips, masks = zip(*[moving_square_clip(seed=s) for s in range(3)])
    clips, masks = torch.cat(clips), torch.cat(masks)
    motion = one_layer_model('motion')
    with torch.no_grad(): motion[3].weight.copy_(torch.tensor([[1.0], [-1.0]]))
    res = attention_mask_share(motion, clips, masks, layer='0', target=torch.tensor([0, 0, 0]), batch_size=2)
    assert res['n_clips'] == 3 and res['mask_share'] > 0.9 and res['lift'] > 5
    assert res['mask_area'] == pytest.approx(masks.mean().item())


def test_overlay_figure_and_explorer():
    clip, mask = moving_square_clip()
    frames = (clip[0].permute(1, 2, 3, 0) * 255).round().byte()
    cams = {'a': torch.rand(8, 32, 32), 'b': mask[0].clone()}
    img = overlay_cam(frames[0].numpy(), cams['b'][0].numpy(), alpha=0.5)
    assert img.dtype == np.uint8 and img.shape == (32, 32, 3)
    fig = attention_figure(frames, cams, t=2, mask=mask[0])
    assert len(fig.data) == 3 and fig.data[1].z.shape == (32, 32, 3)
    assert '100% on actor' in fig.layout.annotations[2].text
    with pytest.raises(ValueError, match='outside'): attention_figure(frames, cams, t=8)
    ex = AttentionExplorer(frames, cams, mask[0])
    ex.slider.value = 6
    assert 'frame 6 of 8' in ex.figure.layout.title.text


def test_synthetic_clips_with_masks(tmp_path):
    from vssl_nb.world.dataset import generate_dataset
    from vssl_nb.world.spec import WorldConfig
    cfg = WorldConfig(width=32, height=32, n_frames=12, n_train=1, n_test=1, classes=('MoveLeft', 'Grow'))
    generate_dataset(cfg, tmp_path, seed=0, show_progress=False)
    d = synthetic_clips_with_masks(tmp_path, 'test', n_frames=8, size=16, clips_per_video=2, show_progress=False)
    assert d['clip'].shape == (4, 3, 8, 16, 16) and d['frames'].shape == (4, 8, 16, 16, 3) and d['frames'].dtype == torch.uint8
    assert d['mask'].shape == (4, 8, 16, 16) and 0 <= d['mask'].min() and d['mask'].max() <= 1 and d['mask'].sum() > 0
    assert sorted(d['label'].tolist()) == [0, 0, 1, 1] and d['start'].tolist() == [0, 4, 0, 4]
    with pytest.raises(FileNotFoundError, match='metadata.json'): synthetic_clips_with_masks(tmp_path / 'nope')
    with pytest.raises(ValueError, match='fewer than a clip'): synthetic_clips_with_masks(tmp_path, n_frames=20, show_progress=False)
