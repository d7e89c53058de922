"""Trainer: exact resume, checkpoints, metrics, schedule, sampler, recipes, and DDP on 2 CPU processes."""
import json
import math

import pytest
import torch

from vssl_nb.models import build_backbone
from vssl_nb.train import (Callback, DistBatchNorm, ResumableBatchSampler, SyntheticClips, Trainer, build_recipe,
                           convert_sync_batchnorm, load_backbone, make_loader, read_train_log, run_distributed, train_losses,
                           warmup_cosine)

SMALL = dict(widths=(4, 8, 8, 16))
# the recipes that train on SyntheticClips as they come (the ones `vssl_nb.train.RECIPES` held before the methods moved out)
RECIPES = ('cmd', 'cmd_context_only', 'cmd_motion_only', 'cmd_motion_regression', 'simclr', 'none', 'supervised', 'supervised_motion')


pytestmark = pytest.mark.usefixtures('quiet_progress')


class Crash(Callback):
    def __init__(self, at): self.at = at
    def on_step_end(self, trainer, step, logs):
        if step == self.at: raise RuntimeError(f'simulated crash at step {step}')


def _trainer(run_dir, recipe='cmd', steps=10, callbacks=(), seed=0, **kw):
    recipe = build_recipe(recipe, build_backbone('tiny', **SMALL), **({'num_classes': 4} if recipe.startswith('supervised') else {}))
    loader = make_loader(SyntheticClips(n=24, size=32), 4, seed=seed)
    return Trainer(recipe, loader, steps=steps, lr=0.05, run_dir=run_dir, checkpoint_every=3, log_every=2, seed=seed,
                   show_progress=False, device='cpu', callbacks=callbacks, **kw)


@pytest.mark.parametrize('recipe', ['cmd', 'simclr'])
def test_resume_equals_uninterrupted(tmp_path, recipe):
    torch.manual_seed(0); full = _trainer(tmp_path / 'full', recipe); full.fit()
    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match='simulated crash'): _trainer(tmp_path / 'crashed', recipe, callbacks=[Crash(8)]).fit()
    torch.manual_seed(99)   # a restarted process: different random state before building the model
    resumed = _trainer(tmp_path / 'crashed', recipe); resumed.fit()
    assert resumed.start_step == 6      # the last checkpoint before the crash (every 3 steps)
    a, b = full.recipe.state_dict(), resumed.recipe.state_dict()
    assert a.keys() == b.keys()
    for k in a: assert torch.equal(a[k], b[k]), k
    drop = lambda rows: [{k: v for k, v in r.items() if k != 'clips_per_s'} for r in rows]
    assert drop(read_train_log(tmp_path / 'full')) == drop(read_train_log(tmp_path / 'crashed'))


def test_resume_is_not_trivially_equal(tmp_path):
    # the check above can fail: a different seed gives different weights
    torch.manual_seed(0); a = _trainer(tmp_path / 'a', steps=4); a.fit()
    torch.manual_seed(0); b = _trainer(tmp_path / 'b', steps=4, seed=1); b.fit()
    assert any(not torch.equal(x, y) for x, y in zip(a.recipe.state_dict().values(), b.recipe.state_dict().values()))


def test_checkpoint_metrics_and_backbone_files(tmp_path):
    torch.manual_seed(0); t = _trainer(tmp_path, steps=5); hist = t.fit()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ['backbone.pt', 'checkpoint.prev.pt', 'checkpoint.pt', 'events.jsonl', 'metrics.json', 'train_log.jsonl']   # no temporary files
    sd = torch.load(tmp_path / 'checkpoint.pt', weights_only=True)
    assert sd['step'] == 5 and sd['recipe'] == 'cmd' and set(sd) >= {'model', 'optimizer', 'history', 'window'}
    assert torch.load(tmp_path / 'checkpoint.prev.pt', weights_only=True)['step'] == 3   # the one before (every 3 steps) is kept
    metrics = json.loads((tmp_path / 'metrics.json').read_text())
    assert metrics['train']['steps'] == 5 and metrics['train']['recipe'] == 'cmd'
    assert metrics['train']['loss'] == hist[-1]['loss'] and {'context', 'motion', 'lr', 'clips_per_s'} <= set(metrics['train'])
    assert [r['step'] for r in read_train_log(tmp_path)] == [2, 4, 5]
    bb = load_backbone('tiny', tmp_path / 'backbone.pt', **SMALL)
    for k, v in bb.state_dict().items(): assert torch.equal(v, t.recipe.backbone.state_dict()[k])


def test_metrics_merge_keeps_other_entries(tmp_path):
    (tmp_path / 'metrics.json').write_text(json.dumps({'retrieval': {'R@1': 0.5}}))
    torch.manual_seed(0); _trainer(tmp_path, steps=2).fit()
    m = json.loads((tmp_path / 'metrics.json').read_text())
    assert m['retrieval'] == {'R@1': 0.5} and m['train']['steps'] == 2


def test_checkpoint_of_another_recipe_is_refused(tmp_path):
    torch.manual_seed(0); _trainer(tmp_path, 'simclr', steps=2).fit()
    with pytest.raises(ValueError, match="written by recipe 'simclr'"): _trainer(tmp_path, 'cmd', steps=4).fit()


def test_warmup_cosine():
    lrs = [warmup_cosine(s, 100, 1.0, 10, 0.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0) and lrs[10] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.5) and all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 1e-3
    assert warmup_cosine(0, 10, 0.3) == pytest.approx(0.3)   # no warm-up


def test_lr_and_clipping_applied():
    grads = []
    class Norm(Callback):
        def on_step_end(self, trainer, step, logs):
            grads.append(math.sqrt(sum(p.grad.square().sum() for p in trainer.recipe.parameters() if p.grad is not None)))
    torch.manual_seed(0); t = _trainer(None, steps=3, clip_grad=0.01, callbacks=[Norm()], warmup_steps=2)
    t.fit()
    assert all(g <= 0.01 + 1e-6 for g in grads)
    assert t.optimizer.param_groups[0]['lr'] == pytest.approx(warmup_cosine(2, 3, 0.05, 2))


def test_sampler_shards_global_batches_and_resumes():
    one = list(ResumableBatchSampler(30, 6, seed=2, rank=0, world_size=1))
    parts = [list(ResumableBatchSampler(30, 3, seed=2, rank=r, world_size=2)) for r in range(2)]
    assert one == [a + b for a, b in zip(*parts)] and len(one) == 5
    assert sorted(sum(one, [])) == list(range(30))
    s = ResumableBatchSampler(30, 6, seed=2, rank=0, world_size=1); s.set_epoch(0, start=2)
    assert list(s) == one[2:]
    s.set_epoch(1); assert list(s) != one
    with pytest.raises(ValueError, match='cannot fill one global batch'): ResumableBatchSampler(5, 4, rank=0, world_size=2)


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_every_recipe_runs_one_step(name):
    torch.manual_seed(0)
    t = _trainer(None, name, steps=1)
    assert t.recipe.name == name == t.recipe_name      # checkpoints are labelled with the registry name
    before = {k: v.clone() for k, v in t.recipe.backbone.state_dict().items()}
    hist = t.fit()
    changed = any(not torch.equal(v, before[k]) for k, v in t.recipe.backbone.state_dict().items())
    if name == 'none':
        assert hist == [] and not changed and t.step == 0
    else:
        assert len(hist) == 1 and math.isfinite(hist[0]['loss']) and changed


def test_recipe_parts():
    torch.manual_seed(0)
    batch = next(iter(make_loader(SyntheticClips(n=8, size=32), 8)))
    bb = build_backbone('tiny', **SMALL)
    assert set(build_recipe('cmd', bb)(batch)) == {'loss', 'context', 'motion'}
    assert set(build_recipe('cmd_context_only', bb)(batch)) == {'loss', 'context'}
    assert set(build_recipe('cmd_motion_only', bb)(batch)) == {'loss', 'motion'}
    sup = build_recipe('supervised_motion', bb, num_classes=4).eval()
    out = sup(batch)
    assert torch.allclose(out['loss'], out['ce'] + out['motion'])
    assert 'motion' not in build_recipe('supervised', bb, num_classes=4)(batch)
    with pytest.raises(KeyError, match=r"missing \['keyframe'\]"): build_recipe('cmd_context_only', bb)({'clip': batch['clip']})
    with pytest.raises(ValueError, match='unknown recipe'): build_recipe('byol', bb)
    with pytest.raises(ValueError, match='unknown preset'): build_recipe('cmd', bb, preset='huge')


def test_dist_batchnorm_single_process_is_batchnorm():
    bn = torch.nn.BatchNorm3d(3)
    net = convert_sync_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm3d(3)))
    assert isinstance(net[0], DistBatchNorm)
    x = torch.randn(4, 3, 2, 5, 5)
    torch.testing.assert_close(net(x), bn(x)); torch.testing.assert_close(net[0].running_var, bn.running_var)


@pytest.mark.parametrize('recipe', ['cmd', 'simclr', 'supervised_motion'])
def test_ddp_two_cpu_processes_equal_one_process(recipe):
    # float64, so that summation order (per process, then across processes) cannot matter: equal to the printed digit
    kw = dict(steps=4, batch_size=8, float64=True)
    one = train_losses(recipe, **kw)
    two = run_distributed(train_losses, (recipe,), kw, world_size=2)
    assert two[0] == two[1]                                   # the processes agree on the (all-reduced) loss
    assert two[0] == pytest.approx(one, rel=1e-6, abs=2e-6)   # and it is the loss of one process on the global batch
    assert one[0] != one[-1]


def test_ddp_float32_first_step():
    one = train_losses('cmd', steps=1, batch_size=8)
    two = run_distributed(train_losses, ('cmd',), dict(steps=1, batch_size=8), world_size=2)
    assert two[0] == pytest.approx(one, rel=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_mixed_precision_on_gpu():
    torch.manual_seed(0)
    recipe = build_recipe('cmd', build_backbone('tiny'))
    t = Trainer(recipe, make_loader(SyntheticClips(n=32, size=64), 8), steps=4, lr=0.05, show_progress=False, device='cuda')
    assert t.amp
    hist = t.fit()
    assert all(math.isfinite(r['loss']) for r in hist)


def test_none_recipe_records_zero_steps(tmp_path):
    torch.manual_seed(0)
    t = _trainer(tmp_path, 'none', steps=5)
    assert t.fit() == [] and t.step == 0
    assert json.loads((tmp_path / 'metrics.json').read_text())['train'] == {'recipe': 'none', 'steps': 0}
    assert (tmp_path / 'backbone.pt').exists()
