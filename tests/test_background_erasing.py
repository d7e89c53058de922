"""Background Erasing: the mix, MoCo's loss, and the BE / MoCo / add-on recipes training on a tiny problem."""
import pytest
import torch
import torch.nn.functional as F

from vssl_nb.losses import moco_nce
from vssl_nb.methods.background_erasing import (SCENE_RECIPES, BackgroundErasing, BERecipe, background_erase, other_video_index,
                                                with_background_erasing)
from vssl_nb.methods.moco import MoCoRecipe
from vssl_nb.models import build_backbone
from vssl_nb.train import Recipe, Trainer, make_loader

SMALL = dict(widths=(8, 8, 16, 16))


pytestmark = pytest.mark.usefixtures('quiet_progress')


@pytest.fixture(scope='module')
def videos(synthetic_videos): return synthetic_videos


class Views(torch.utils.data.Dataset):
    "Two views per video: the first 8 frames, and the same frames mirrored (a stand-in augmentation)."
    def __init__(self, videos, labels, frames=8): self.v, self.y, self.f = videos, labels, frames
    def __len__(self): return len(self.v)
    def __getitem__(self, i):
        c = self.v[i][:, :self.f]
        return {'clip': c, 'clip2': c.flip(-1), 'label': self.y[i], 'video_index': torch.tensor(i)}


def test_be_scales_temporal_differences_by_one_minus_lambda():
    clip = torch.rand(4, 3, 8, 16, 16)
    mixed, lam, frame = background_erase(clip, generator=torch.Generator().manual_seed(0), return_params=True)
    assert 0 <= lam <= 0.3 and frame.shape == (4,)
    torch.testing.assert_close(mixed.diff(dim=2), (1 - lam) * clip.diff(dim=2), atol=1e-5, rtol=0)
    # one λ for the whole batch, and each clip's own static frame
    for b in range(4):
        torch.testing.assert_close(mixed[b] - (1 - lam) * clip[b], lam * clip[b][:, frame[b]][:, None].expand_as(clip[b]), atol=1e-5, rtol=0)
    assert not torch.allclose(mixed, clip)   # the check above can fail: the mix changes the frames


def test_be_lambda_and_frames_are_drawn_in_range():
    g = torch.Generator().manual_seed(1)
    lams, frames = [], []
    for _ in range(200):
        _, lam, f = background_erase(torch.rand(2, 3, 5, 4, 4), generator=g, return_params=True)
        lams.append(lam); frames += f.tolist()
    assert 0 <= min(lams) and max(lams) <= 0.3 and max(lams) > 0.25 and min(lams) < 0.05
    assert set(frames) == set(range(5))
    single = background_erase(torch.rand(3, 5, 4, 4), lam=0.2, frame=1)
    assert single.shape == (3, 5, 4, 4)
    with pytest.raises(ValueError, match='expects'): background_erase(torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match='outside a clip of 5 frames'): background_erase(torch.rand(1, 3, 5, 4, 4), frame=5)


def test_moco_nce_matches_direct_computation():
    g = torch.Generator().manual_seed(0)
    q, k, queue, extra = (torch.randn(*s, generator=g) for s in [(3, 6), (3, 6), (10, 6), (3, 6)])
    tau = 0.1
    qn, kn, Qn, en = (F.normalize(t, dim=-1) for t in (q, k, queue, extra))
    ref = torch.stack([-(torch.exp(qn[i] @ kn[i] / tau) / (torch.exp(qn[i] @ kn[i] / tau) + torch.exp(Qn @ qn[i] / tau).sum()
                                                            + torch.exp(qn[i] @ en[i] / tau))).log() for i in range(3)]).mean()
    torch.testing.assert_close(moco_nce(q, k, queue, tau, extra), ref)
    assert moco_nce(q, k, queue, tau) < moco_nce(q, k, queue, tau, extra)   # an extra negative can only raise the loss
    with pytest.raises(ValueError, match='extra_negatives'): moco_nce(q, k, queue, tau, extra[:2])


def test_other_video_index():
    assert other_video_index(torch.tensor([0, 0, 1, 2, 2])).tolist() == [2, 2, 3, 0, 0]


def _train(recipe, videos, steps=30):
    x, y = videos
    torch.manual_seed(0)
    return Trainer(recipe, make_loader(Views(x, y), 8, seed=0), steps=steps, lr=0.05, log_every=5, show_progress=False, device='cpu').fit()


@pytest.mark.parametrize('name', ['moco', 'be', 'be_only', 'simclr_be'])
def test_recipes_train_and_loss_decreases(videos, name):
    torch.manual_seed(0)
    kw = dict(queue_size=8, momentum=0.9) if name != 'simclr_be' else {}
    recipe = SCENE_RECIPES[name](build_backbone('tiny', **SMALL), **kw)
    before = [p.detach().clone() for p in recipe.backbone.parameters()]
    hist = _train(recipe, videos)
    losses = [r['loss'] for r in hist]
    assert all(map(lambda v: v == v, losses))
    assert sum(losses[-2:]) / 2 < losses[0], losses
    assert any(not torch.equal(a, b) for a, b in zip(before, recipe.backbone.parameters()))


def test_moco_momentum_encoder_and_queue():
    torch.manual_seed(0)
    r = MoCoRecipe(build_backbone('tiny', **SMALL), queue_size=12, momentum=0.5)
    batch = {'clip': torch.rand(4, 3, 4, 16, 16), 'clip2': torch.rand(4, 3, 4, 16, 16)}
    with torch.no_grad():
        for p in r.online.parameters(): p.add_(1.0)      # move the online encoder away from its copy
    k0 = [p.clone() for p in r.key_encoder.encoder.parameters()]
    r(batch)
    for a, b, q in zip(k0, r.key_encoder.encoder.parameters(), r.online.parameters()):
        torch.testing.assert_close(b, 0.5 * a + 0.5 * q)
    assert int(r.queue.ptr) == 4
    r.eval(); r(batch)
    assert int(r.queue.ptr) == 4                              # evaluation does not touch the queue
    with pytest.raises(KeyError, match='clip2'): r.train()({'clip': batch['clip']})


class Spy(Recipe):
    name, required_keys = 'spy', ('clip',)
    def __init__(self):
        super().__init__(); self.backbone = build_backbone('tiny', **SMALL); self.seen = None
    def forward(self, batch):
        self.seen = batch['clip']; return {'loss': self.backbone(batch['clip']).mean()}


def test_background_erasing_wrapper_mixes_only_in_training():
    spy = Spy(); wrapped = BackgroundErasing(spy, max_lambda=0.3)
    assert wrapped.name == 'spy_be' and wrapped.backbone is spy.backbone
    clip = torch.rand(2, 3, 6, 16, 16)
    wrapped.train()({'clip': clip})
    ratio = spy.seen.diff(dim=2) / clip.diff(dim=2)
    lam = 1 - ratio.median().item()
    assert 0 <= lam <= 0.3
    torch.testing.assert_close(spy.seen.diff(dim=2), (1 - lam) * clip.diff(dim=2), atol=1e-4, rtol=0)
    wrapped.eval()({'clip': clip})
    assert torch.equal(spy.seen, clip)
    with pytest.raises(ValueError, match='unknown recipe'): with_background_erasing('nope')('tiny')


def test_scene_recipes_build_by_name():
    names = {n: SCENE_RECIPES[n](build_backbone('tiny', **SMALL)).name for n in SCENE_RECIPES}
    assert names == {n: n for n in SCENE_RECIPES}
    assert isinstance(SCENE_RECIPES['be'](build_backbone('tiny', **SMALL)), BERecipe)
