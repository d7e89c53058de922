"""Label efficiency: linear probe and fine-tuning at 1%/10%/100% of the labels on the bundled samples, its arguments,
its nested subsets, its metrics for the results table and its figure. No test depends on data_samples' exact numbers."""
import json

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import pytest
import torch

from vssl_nb.models import build_backbone
from vssl_nb.study import (StudyData, label_efficiency, label_efficiency_metrics, labelled_subset, parse_fractions, parse_protocols,
                           plot_label_efficiency, pretext_dataset)

from conftest import vssl as run_vssl


pytestmark = pytest.mark.usefixtures('quiet_progress')

ROW_KEYS = {'protocol', 'fraction', 'labelled_videos', 'clip_acc', 'video_acc', 'seconds', 'steps'}


@pytest.fixture(scope='module')
def data():
    return StudyData(size=32, frames=4, batch_size=8, eval_clips=1, flip=False)


def small_backbone():
    torch.manual_seed(0)
    return build_backbone('tiny', widths=(4, 8, 8, 16))


def test_arguments_are_checked_before_any_work(data):
    bb = small_backbone()
    for bad in [(0.0,), (0.1, 1.5), (-0.1,), (10,), ('half',), ()]:
        with pytest.raises(ValueError, match=r'label fraction|no label fraction'): label_efficiency(bb, data, fractions=bad)
    with pytest.raises(ValueError, match="unknown protocol.*'knn'"): label_efficiency(bb, data, protocols=('linear', 'knn'))
    with pytest.raises(ValueError, match='no protocol'): label_efficiency(bb, data, protocols='')
    with pytest.raises(ValueError, match='finetune_steps'): label_efficiency(bb, data, protocols='finetune', finetune_steps=0)
    with pytest.raises(ValueError, match='finetune_optimizer'): label_efficiency(bb, data, finetune_optimizer='lamb')
    assert parse_fractions('1.0, 0.01,0.1') == [0.01, 0.1, 1.0] and parse_fractions(0.5) == [0.5] and parse_fractions([1, 1.0]) == [1.0]
    assert parse_protocols('finetune,linear,finetune') == ['finetune', 'linear']


def test_labelled_subsets_are_stratified_and_nested(data):
    ds = pretext_dataset(data, ('clip', 'label'))
    labels = [it.label for it in ds.dataset.items]
    n_cls = len(set(labels))
    for seed in (0, 1, 2):
        subs = [set(labelled_subset(ds, f, seed).indices) for f in (0.01, 0.1, 0.3, 0.6, 1.0)]
        assert all(a <= b for a, b in zip(subs, subs[1:])), f'seed {seed}: subsets not nested'
        assert {labels[i] for i in subs[0]} == set(labels) and len(subs[0]) == n_cls   # one video per class at 1%
        assert len(subs[-1]) == len(labels)
    assert labelled_subset(ds, 0.3, 0).indices != labelled_subset(ds, 0.3, 1).indices   # the seed chooses the videos


def test_label_efficiency_rows_frozen_backbone_and_repeatable(data):
    bb = small_backbone().train()
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    rows = label_efficiency(bb, data, fractions=(1.0, 0.01), protocols=('linear', 'finetune'), finetune_steps=2, device='cpu')
    # the backbone given is never trained: weights and BatchNorm statistics as they were, its mode restored
    for k, v in bb.state_dict().items(): assert torch.equal(v, before[k]), f'{k} changed'
    assert bb.training
    assert [(r['protocol'], r['fraction']) for r in rows] == [('linear', 0.01), ('linear', 1.0), ('finetune', 0.01), ('finetune', 1.0)]
    for r in rows:
        assert ROW_KEYS <= set(r) and 0 <= r['clip_acc'] <= 1 and 0 <= r['video_acc'] <= 1 and r['seconds'] >= 0
    assert rows[0]['labelled_videos'] == data.num_classes < rows[1]['labelled_videos']
    assert rows[2]['labelled_videos'] == rows[0]['labelled_videos'] and rows[2]['steps'] == 2
    # exact repeat for a seed (timings aside)
    again = label_efficiency(bb, data, fractions=(0.01, 1.0), protocols='linear', device='cpu')
    strip = lambda rs: [{k: v for k, v in r.items() if 'seconds' not in k} for r in rs]
    assert strip(again) == strip(rows[:2])
    ft = label_efficiency(bb, data, fractions=0.01, protocols='finetune', finetune_steps=2, device='cpu')
    assert strip(ft) == strip(rows[2:3])
    # Adam and augmented probe clips run too
    adam = label_efficiency(bb, data, fractions=0.01, protocols=('finetune', 'linear'), finetune_steps=1, finetune_optimizer='adam',
                            probe_augment=1, device='cpu')
    assert [r['protocol'] for r in adam] == ['finetune', 'linear']
    for k, v in bb.state_dict().items(): assert torch.equal(v, before[k]), f'{k} changed'


def test_metrics_are_flat_keys():
    rows = [{'protocol': 'linear', 'fraction': 0.1, 'labelled_videos': 12, 'clip_acc': 0.5, 'video_acc': 0.6, 'seconds': 0.1},
            {'protocol': 'finetune', 'fraction': 1, 'labelled_videos': 60, 'clip_acc': 0.7, 'video_acc': 0.8, 'seconds': 2.0}]
    m = label_efficiency_metrics(rows)
    assert m['linear@0.1_video_acc'] == 0.6 and m['finetune@1.0_video_acc'] == 0.8 and m['finetune@1.0_labelled_videos'] == 60
    assert all(not isinstance(v, (dict, list)) for v in m.values()) and len(m) == 8


def rows_of(protocol, accs, fractions=(0.01, 0.1, 1.0)):
    return [{'protocol': protocol, 'fraction': f, 'video_acc': a, 'labelled_videos': n}
            for f, a, n in zip(fractions, accs, (12, 24, 120))]


def test_plot_label_efficiency():
    rows = rows_of('linear', [0.3, 0.5, 0.7]) + rows_of('finetune', [0.2, 0.55, 0.9])
    refs = {'random init': rows_of('linear', [0.1, 0.2, 0.4]), 'supervised (100%)': 0.85}
    fig = plot_label_efficiency(rows, chance=1 / 12, references=refs)
    ax = fig.axes[0]
    assert ax.get_xscale() == 'log'
    labels = [l.get_label() for l in ax.get_lines()]
    assert labels[:2] == ['linear', 'finetune'] and 'random init (linear)' in labels and 'supervised (100%)' in labels
    chance = [l for l in ax.get_lines() if l.get_label().startswith('chance')]
    assert len(chance) == 1 and chance[0].get_linestyle() == '--' and chance[0].get_ydata()[0] == pytest.approx(1 / 12)
    assert list(ax.get_lines()[1].get_xdata()) == [0.01, 0.1, 1.0] and list(ax.get_lines()[1].get_ydata()) == [0.2, 0.55, 0.9]
    assert [t.get_text() for t in ax.get_xticklabels()][0] == '1%\n12 videos'
    fig.canvas.draw()   # renders headless
    plt.close(fig)
    with pytest.raises(ValueError, match='no rows'): plot_label_efficiency([])
    with pytest.raises(ValueError, match='lacks'): plot_label_efficiency([{'protocol': 'linear', 'fraction': 0.1}])


def test_evaluate_template_saves_the_curve(vssl_env):
    r = run_vssl('run', 'evaluate', '-p', 'probe_steps', 1, '-p', 'batch_size', 8, '-p', 'eval_clips', 1, '-p', 'size', 32,
                 '-p', 'label_fractions', '0.01,1.0', '-p', 'finetune_steps', 1, '-p', 'threads', 1, '--run-id', 'le', timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((vssl_env['runs'] / 'evaluate' / 'le' / 'metrics.json').read_text())
    for p in ('linear', 'finetune'):
        for f in ('0.01', '1.0'):
            assert 0 <= m[f'{p}@{f}_video_acc'] <= 1 and m[f'{p}@{f}_labelled_videos'] >= 1
    assert 'linear@0.1_video_acc' not in m and 0 <= m['probe_video_acc'] <= 1
