"""The activities data kind of the synthetic world (`world/10_activities`): the Breakfast-style layout, label counts against
the decoder, the grammar (orders up to swaps and omissions), determinism, bad parameters, `vssl synth`, and the actions
presets left as they were."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from vssl_nb.cli import main as vssl
from vssl_nb.world.actions import ACTIONS, DEFAULT_CLASSES
from vssl_nb.world.activities import (BACKGROUND, ActivitiesConfig, follows_order, frame_labels, generate_activities,
                                      plan_activities, realise_order)
from vssl_nb.world.dataset import generate_video, load_ground_truth
from vssl_nb.world.encode import decode_rgb
from vssl_nb.world.presets import PRESETS, preset_config
from vssl_nb.world.spec import plan_dataset

from conftest import ROOT

TINY = 'activities-tiny'


def tree_hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "activities-tiny, seed 0, generated once for the module: (root, metadata)."
    root = tmp_path_factory.mktemp('activities') / 'seed0'
    meta = generate_activities(preset_config(TINY), root, seed=0, name=TINY, show_progress=False)
    return root, json.loads(json.dumps(meta))   # as metadata.json reads back (tuples become lists)


def test_layout_follows_the_contract(tiny):
    root, meta = tiny
    cfg = preset_config(TINY)
    assert json.loads((root / 'metadata.json').read_text()) == json.loads(json.dumps(meta))
    mapping = [l.split(' ', 1) for l in (root / 'mapping' / 'mapping.txt').read_text().splitlines()]
    assert mapping == [[str(i), c] for i, c in enumerate([BACKGROUND, *cfg.classes])]
    assert meta['mapping'] == [BACKGROUND, *cfg.classes] and meta['classes'] == list(cfg.classes)
    n_acts, per_act = len(cfg.n_sub_actions), cfg.n_train + cfg.n_test
    assert len(meta['activities']) == n_acts and len(meta['videos']) == n_acts * per_act
    assert [a['K'] for a in meta['activities']] == list(cfg.n_sub_actions)
    names = [v['name'] for v in meta['videos']]
    assert len(set(names)) == len(names), 'video names are unique across activities'
    assert sorted(p.stem for p in (root / 'groundTruth').iterdir()) == sorted(names)
    for act in meta['activities']:
        assert len(act['order']) == act['K'] == len(set(act['order'])) and set(act['order']) <= set(cfg.classes)
        mine = [v for v in meta['videos'] if v['activity'] == act['name']]
        assert [v['name'] for v in mine] == act['videos'] and len(mine) == per_act
        assert [v['split'] for v in mine].count('train') == cfg.n_train and [v['split'] for v in mine].count('test') == cfg.n_test
    for v in meta['videos']:
        assert v['video'] == f"{v['activity']}/{v['name']}.mp4"
        for ext in ('.mp4', '.json', '.npz'): assert (root / v['video']).with_suffix(ext).is_file()
    assert meta['preset'] == TINY and meta['seed'] == 0 and meta['config']['n_sub_actions'] == list(cfg.n_sub_actions)


def test_ground_truth_has_a_label_per_decoded_frame(tiny):
    root, meta = tiny
    known = set(meta['mapping'])
    for v in meta['videos']:
        labels = (root / 'groundTruth' / f"{v['name']}.txt").read_text().splitlines()
        assert len(labels) == len(decode_rgb(root / v['video'])) == v['n_frames'], v['name']
        assert set(labels) <= known, (v['name'], set(labels) - known)
        assert labels == frame_labels(v['segments'])
        g = load_ground_truth(root / v['video'])
        assert g['masks'].shape[0] == v['n_frames'] and [list(s) for s in g['segments']] == v['segments']


def test_videos_follow_their_activity_order(tiny):
    root, meta = tiny
    cfg = preset_config(TINY)
    orders = {a['name']: a['order'] for a in meta['activities']}
    for v in meta['videos']:
        order = orders[v['activity']]
        labels = (root / 'groundTruth' / f"{v['name']}.txt").read_text().splitlines()
        runs = [l for i, l in enumerate(labels) if i == 0 or labels[i - 1] != l]   # the labels in order of their segments
        inner = runs[1:] if runs[0] == BACKGROUND else runs
        inner = inner[:-1] if inner and inner[-1] == BACKGROUND else inner
        assert BACKGROUND not in inner, f"{v['name']}: background only at the ends"
        assert inner == v['order'] and follows_order(inner, order), (v['name'], inner, order)
        assert v['omitted'] == [a for a in order if a not in inner]
        for first, second in v['swapped']:
            i = inner.index(second)
            assert inner[i + 1] == first and order.index(first) < order.index(second)
        lo, hi = cfg.seg_frames
        assert all(lo <= e - s <= hi for a, s, e in v['segments'] if a != BACKGROUND)
        blo, bhi = cfg.background_frames
        assert all(blo <= e - s <= bhi for a, s, e in v['segments'] if a == BACKGROUND)


def test_background_is_the_actor_standing_still(tiny):
    root, meta = tiny
    seen = 0
    for v in meta['videos']:
        g = load_ground_truth(root / v['video'])
        for a, s, e in v['segments']:
            vel = g['velocity'][s:e, 0]
            if a == BACKGROUND:
                seen += 1
                np.testing.assert_allclose(vel, 0, atol=1e-6)
                assert np.ptp(g['angle'][s:e, 0]) < 1e-3 and np.ptp(g['scale'][s:e, 0]) < 1e-6
            elif a.startswith('Move'): assert np.abs(vel).sum(-1).min() > 1, (v['name'], a)
    assert seen > 0, 'activities-tiny has background segments'


def test_same_seed_same_bytes_other_seed_other_files(tiny, tmp_path):
    root, _ = tiny
    generate_activities(preset_config(TINY), tmp_path / 'again', seed=0, workers=2, name=TINY, show_progress=False)
    generate_activities(preset_config(TINY), tmp_path / 'other', seed=1, name=TINY, show_progress=False)
    a, b, c = tree_hashes(root), tree_hashes(tmp_path / 'again'), tree_hashes(tmp_path / 'other')
    assert a == b, 'the same seed (whatever the number of workers) gives byte-identical files'
    assert a['metadata.json'] != c['metadata.json']
    gts = [k for k in a if k.startswith('groundTruth/')]
    assert any(a[k] != c.get(k) for k in gts)
    assert all(a[k] != c[k] for k in a if k.endswith('.mp4') and k in c)


def test_the_grammar_draws_at_its_rates():
    order = tuple('ABCDEFGHIJ')
    rng = np.random.default_rng(0)
    n = 4000
    draws = [realise_order(order, 0.25, 0.15, rng) for _ in range(n)]
    assert all(follows_order(s, order) and len(s) >= 1 for s, _, _ in draws)
    omit = np.mean([len(o) for _, o, _ in draws]) / len(order)
    first_pair_swapped = np.mean([bool(w) and s[0] == w[0][1] for s, _, w in draws])
    assert abs(omit - 0.15) < 4 * np.sqrt(0.15 * 0.85 / (n * len(order))), omit
    assert abs(first_pair_swapped - 0.25) < 4 * np.sqrt(0.25 * 0.75 / n), first_pair_swapped
    assert realise_order(order, 0.0, 0.0, rng)[0] == list(order)
    assert not follows_order(list('CAB'), order) and not follows_order(list('AA'), order) and follows_order(list('BADC'), order)
    acts = plan_activities(ActivitiesConfig(n_sub_actions=(4, 10)), seed=3)
    assert [len(set(a.order)) for a in acts] == [4, 10] and acts == plan_activities(ActivitiesConfig(n_sub_actions=(4, 10)), seed=3)


@pytest.mark.parametrize('kw, name, value', [
    (dict(n_sub_actions=(4, 13)), 'n_sub_actions[1]', '13'), (dict(n_sub_actions=(0,)), 'n_sub_actions[0]', '0'),
    (dict(n_sub_actions=(3,), classes=('MoveLeft', 'Grow')), 'n_sub_actions[0]', '3'),
    (dict(seg_frames=(0, 4)), 'seg_frames', '(0, 4)'), (dict(seg_frames=(5, 3)), 'seg_frames', '(5, 3)'),
    (dict(background_frames=(0, 0)), 'background_frames', '(0, 0)'),
    (dict(swap_prob=1.5), 'swap_prob', '1.5'), (dict(omit_prob=-0.1), 'omit_prob', '-0.1'),
    (dict(background_prob=2.0), 'background_prob', '2.0'), (dict(n_frames=32), 'n_frames', '32'),
])
def test_bad_parameters_name_the_parameter_and_value(kw, name, value):
    with pytest.raises(ValueError) as e: ActivitiesConfig(**kw)
    assert name in str(e.value) and value in str(e.value), str(e.value)


def test_vssl_synth_writes_activities_tiny(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('VSSL_PROGRESS', 'off')
    assert vssl(['synth', '--preset', TINY, '--out', str(tmp_path / 'cli')]) == 0
    assert tree_hashes(tmp_path / 'cli') == tree_hashes(tiny[0]), 'the CLI writes what generate_activities writes (default seed 0)'
    assert 'wrote 8 videos' in capsys.readouterr().out
    assert vssl(['synth', '--preset', TINY, '--frames', '40', '--out', str(tmp_path / 'bad')]) == 1
    assert 'n_frames' in capsys.readouterr().err
    assert vssl(['synth', '--help']) == 0
    assert 'activities, activities-tiny (activities)' in capsys.readouterr().out.replace('\n', ' ')


def test_the_actions_presets_are_unchanged(tmp_path):
    "No new action class; `tiny` with seed 0 still gives the bundled data_samples/ files (a few videos) and metadata records."
    assert BACKGROUND not in ACTIONS and len(DEFAULT_CLASSES) == 12
    assert preset_config('tiny').classes == DEFAULT_CLASSES and PRESETS['tiny'].kind == 'actions'
    samples = ROOT / 'data_samples'
    meta = json.loads((samples / 'metadata.json').read_text())
    cfg = preset_config('tiny')
    assert meta['config'] == json.loads(json.dumps(cfg.to_dict()))
    specs = plan_dataset(cfg, meta['seed'])
    assert [{k: v for k, v in r.items() if k != 'bytes'} for r in meta['videos']] == [
        dict(video=s.relpath, label=s.label, action=s.action, scene=s.scene, scene_typical=s.scene_typical, split=s.split, seed=s.seed)
        for s in specs]
    for spec in (specs[0], specs[len(specs) // 2]):
        generate_video(spec, cfg, tmp_path)
        for ext in ('.mp4', '.json', '.npz'):
            fresh, bundled = (tmp_path / spec.relpath).with_suffix(ext), (samples / spec.relpath).with_suffix(ext)
            assert fresh.read_bytes() == bundled.read_bytes(), f'{spec.relpath} ({ext}) differs from data_samples/'
