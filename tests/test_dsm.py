"""DSM: the spatial disturbance is one warp on every frame, the temporal negative is the same video at another time, recipes learn."""
import numpy as np
import pytest
import torch

from vssl_nb.methods.dsm import (DSM_RECIPES, OTHER_TIME_KEY, cut_two_windows, dsm_views, local_warp_field, other_time_start,
                                 sample_other_time, spatial_local_disturbance, warp_frames)
from vssl_nb.models import build_backbone
from vssl_nb.train import Trainer, make_loader

SMALL = dict(widths=(8, 8, 16, 16))


pytestmark = pytest.mark.usefixtures('quiet_progress')


@pytest.fixture(scope='module')
def videos(synthetic_videos): return synthetic_videos[0]


def test_warp_is_identical_across_frames():
    clip = torch.rand(2, 3, 6, 24, 24)
    out, fields = spatial_local_disturbance(clip, generator=torch.Generator().manual_seed(0), return_field=True)
    assert out.shape == clip.shape and fields.shape == (2, 24, 24, 2)
    for b in range(2):
        for t in range(6): torch.testing.assert_close(out[b, :, t], warp_frames(clip[b, :, t], fields[b]), atol=1e-6, rtol=0)
    assert not torch.allclose(out, clip, atol=1e-3)           # it does change the frames
    static = clip[:, :, :1].expand(-1, -1, 6, -1, -1).contiguous()
    ws = spatial_local_disturbance(static)
    torch.testing.assert_close(ws, ws[:, :, :1].expand_as(ws), atol=1e-6, rtol=0)   # no motion is added


def test_warp_field_follows_the_paper_scaled_to_the_frame():
    g = torch.Generator().manual_seed(0)
    for size in (224, 64):
        for n in (1, 2, 3):
            f = local_warp_field(size, size, n_warps=n, generator=g)
            peak = f.norm(dim=-1).max().item()
            # each warp moves at most 0.5·|v|, |v| ≤ 20/224 of the frame
            assert 0 < peak <= n * 0.5 * 20 / 224 * size + 1e-4
    one = local_warp_field(224, 224, n_warps=1, generator=torch.Generator().manual_seed(3))
    peak = one.norm(dim=-1).max().item()
    assert 0.5 * 10 * 0.95 <= peak <= 0.5 * 20 + 1e-4         # the centre moves by ≈ |v|/2 with |v| in [10, 20] px
    torch.testing.assert_close(warp_frames(torch.rand(3, 8, 8), torch.zeros(8, 8, 2)).shape, torch.Size([3, 8, 8]))
    with pytest.raises(ValueError, match='does not fit'): warp_frames(torch.rand(3, 8, 8), torch.zeros(4, 4, 2))


def test_temporal_negative_is_same_video_other_time():
    rng = np.random.default_rng(0)
    video = np.arange(40)[:, None, None, None] * np.ones((1, 2, 2, 3))     # frame t holds the value t
    for _ in range(300):
        a = int(rng.integers(0, 40 - 8 + 1))
        clip, s = sample_other_time(video, a, 8, rng=rng)
        assert abs(s - a) >= 2 and 0 <= s <= 32
        np.testing.assert_array_equal(clip[:, 0, 0, 0], np.arange(s, s + 8))
    # a torch tensor with time on axis 1 (C, T, H, W) and a stride
    vt = torch.arange(40.)[None, :, None, None].expand(3, 40, 2, 2)
    clip, s = sample_other_time(vt, 0, 8, stride=2, axis=1, rng=rng)
    assert torch.equal(clip[0, :, 0, 0], torch.arange(s, s + 16, 2).float()) and s >= 2
    # a close draw is shifted by a third of the clip
    class Fixed:
        def __init__(self, v): self.v = v
        def integers(self, lo, hi): return self.v
    assert other_time_start(10, 48, 16, Fixed(11)) == 15       # 1 frame away: moved forward by 16 // 3
    assert other_time_start(30, 48, 16, Fixed(31)) == 25       # no room forward (max start 32): moved back
    assert other_time_start(10, 48, 16, Fixed(20)) == 20       # far enough: kept
    with pytest.raises(ValueError, match='too short'): other_time_start(0, 17, 16)


def test_cut_two_windows_from_one_long_clip():
    B, L = 4, 20
    long = torch.arange(L).float()[None, None, :, None, None].repeat(B, 1, 1, 2, 2) + 100 * torch.arange(B).float()[:, None, None, None, None]
    anchor, neg, sa, sn = cut_two_windows(long, 8, torch.Generator().manual_seed(0))
    assert anchor.shape == neg.shape == (B, 1, 8, 2, 2)
    assert ((sa - sn).abs() >= 2).all()
    for b in range(B):
        assert torch.equal(anchor[b, 0, :, 0, 0], 100 * b + torch.arange(sa[b], sa[b] + 8).float())
        assert torch.equal(neg[b, 0, :, 0, 0], 100 * b + torch.arange(sn[b], sn[b] + 8).float())   # same video (100·b), other time


def test_dsm_views_from_batch_key_or_long_clip():
    clip, other = torch.rand(2, 3, 8, 16, 16), torch.rand(2, 3, 8, 16, 16)
    a, p, n = dsm_views({'clip': clip, OTHER_TIME_KEY: other})
    assert a is clip and n is other and p.shape == clip.shape
    a, p, n = dsm_views({'clip': torch.rand(2, 3, 16, 16, 16)}, clip_frames=8)
    assert a.shape == p.shape == n.shape == (2, 3, 8, 16, 16)
    with pytest.raises(KeyError, match=OTHER_TIME_KEY): dsm_views({'clip': clip})
    with pytest.raises(ValueError, match='must match'): dsm_views({'clip': clip, OTHER_TIME_KEY: other[:, :, :4]})


class LongClips(torch.utils.data.Dataset):
    def __init__(self, v): self.v = v
    def __len__(self): return len(self.v)
    def __getitem__(self, i): return {'clip': self.v[i], 'video_index': torch.tensor(i)}


def test_dsm_moco_trains_and_loss_decreases(videos):
    torch.manual_seed(0)
    recipe = DSM_RECIPES['dsm'](build_backbone('tiny', **SMALL), clip_frames=8, queue_size=8, momentum=0.9)
    hist = Trainer(recipe, make_loader(LongClips(videos), 8, seed=0), steps=30, lr=0.05, log_every=5, show_progress=False, device='cpu').fit()
    losses = [r['loss'] for r in hist]
    assert sum(losses[-2:]) / 2 < losses[0], losses


def test_dsm_triplet_fits_a_fixed_batch(videos):
    # fresh disturbances every step make 30 steps too few to show progress; on a fixed batch and fixed draws it must fit
    torch.manual_seed(0)
    recipe = DSM_RECIPES['dsm_triplet'](build_backbone('tiny', **SMALL), clip_frames=8)
    opt = torch.optim.Adam(recipe.parameters(), 1e-3)
    losses = []
    for _ in range(15):
        torch.manual_seed(123)
        out = recipe({'clip': videos[:8]})
        opt.zero_grad(); out['loss'].backward(); opt.step(); losses.append(out['loss'].item())
    assert losses[0] > 0 and min(losses[-3:]) < 0.5 * losses[0], losses
    assert set(out) >= {'loss', 'd_pos', 'd_neg'}
