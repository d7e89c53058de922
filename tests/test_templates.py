"""The experiment templates run end to end under papermill on the bundled data_samples/."""
import json

import pytest

from vssl_nb import experiments

from conftest import vssl as run_vssl


def vssl(*args): return run_vssl(*args, timeout=900)


@pytest.mark.parametrize('method', ['cmd', 'simclr', 'be'])
def test_pretrain_template(method, vssl_env):
    r = vssl('run', 'pretrain', '-p', 'method', method, '-p', 'steps', 3, '-p', 'batch_size', 8, '-p', 'eval_clips', 1,
             '-p', 'threads', 1, '--run-id', method)
    assert r.returncode == 0, r.stderr[-3000:]
    run = vssl_env['runs'] / 'pretrain' / method
    m = json.loads((run / 'metrics.json').read_text())
    assert 0 <= m['R@1'] <= m['R@5'] <= m['R@10'] <= 1 and 0 <= m['knn_acc'] <= 1
    assert m['train']['recipe'] == method and m['train']['steps'] == 3 and m['final_loss'] > 0
    assert (run / 'backbone.pt').exists() and (run / 'train_log.jsonl').exists()


def test_supervised_template_with_motion_auxiliary(vssl_env):
    r = vssl('run', 'supervised', '-p', 'motion_weight', 1.0, '-p', 'label_fraction', 0.5, '-p', 'steps', 3,
             '-p', 'batch_size', 8, '-p', 'eval_clips', 1, '-p', 'threads', 1, '--run-id', 'aux')
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((vssl_env['runs'] / 'supervised' / 'aux' / 'metrics.json').read_text())
    assert 0 <= m['clip_acc'] <= 1 and m['train_videos'] == 24 and m['train']['recipe'] == 'supervised_motion'


def test_quickstart_runs_every_listed_run_and_prints_the_table(vssl_env, monkeypatch, capsys):
    short = [('pretrain', 'cmd-s0', {'method': 'cmd', 'seed': 0, 'steps': 2, 'batch_size': 8, 'eval_clips': 1}),
             ('pretrain', 'none-s0', {'method': 'none', 'seed': 0, 'steps': 0, 'batch_size': 8, 'eval_clips': 1})]
    monkeypatch.setattr(experiments, 'QUICKSTART', short)
    assert experiments.quickstart() == 0
    out = capsys.readouterr().out
    (exp,) = [p for p in vssl_env['runs'].iterdir() if p.name.startswith('quickstart-')]
    assert {p.name for p in exp.iterdir() if p.is_dir()} == {'cmd-s0', 'none-s0'}
    assert '| cmd |' in out and '| none |' in out and 'R@1' in out and str(exp / 'results.md') in out


def test_evaluate_template_on_a_pretrain_run(vssl_env):
    r = vssl('run', 'pretrain', '-p', 'method', 'cmd_motion_only', '-p', 'steps', 2, '-p', 'batch_size', 8, '-p', 'eval_clips', 1,
             '-p', 'threads', 1, '--run-id', 'src')
    assert r.returncode == 0, r.stderr[-3000:]
    src = vssl_env['runs'] / 'pretrain' / 'src'
    r = vssl('run', 'evaluate', '-p', 'checkpoint', src, '-p', 'probe_steps', 3, '-p', 'batch_size', 8, '-p', 'eval_clips', 1,
             '-p', 'threads', 1, '--run-id', 'ev')
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((vssl_env['runs'] / 'evaluate' / 'ev' / 'metrics.json').read_text())
    assert m['checkpoint'] == str(src / 'backbone.pt') and 0 <= m['probe_video_acc'] <= 1 and 0 <= m['R@1'] <= 1
    r = vssl('run', 'evaluate', '-p', 'checkpoint', src / 'missing.pt', '--run-id', 'bad')
    assert r.returncode == 1 and 'missing.pt' in r.stderr


@pytest.mark.parametrize('method', ['dsm', 'moco'])
def test_scenebias_template(method, vssl_env):
    r = vssl('run', 'scenebias', '-p', 'method', method, '-p', 'steps', 2, '-p', 'probe_steps', 2, '-p', 'batch_size', 8,
             '-p', 'eval_clips', 1, '-p', 'threads', 1, '--run-id', method)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((vssl_env['runs'] / 'scenebias' / method / 'metrics.json').read_text())
    assert 0 <= m['probe_test_acc'] <= 1 and 0 <= m['scene_only_acc'] <= 1
    assert 0 <= m['mask_share'] <= 1 and 0 < m['mask_area'] < 1 and m['train']['recipe'] == method


def test_calibrate_template_reports_every_reference_row(vssl_env):
    r = vssl('run', 'calibrate', '-p', 'steps', 4, '-p', 'low_steps', 2, '-p', 'appearance_steps', 3, '-p', 'batch_size', 8,
             '-p', 'eval_clips', 1, '-p', 'threads', 1, '--run-id', 'cal')
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((vssl_env['runs'] / 'calibrate' / 'cal' / 'metrics.json').read_text())
    for k in ('gt_oracle_acc', 'codec_oracle_acc', 'appearance_acc', 'supervised_acc', 'supervised_train_acc', 'supervised_acc_10pct',
              'random_r1', 'supervised_r1'):
        assert 0 <= m[k] <= 1, k
    assert abs(m['chance'] - 1 / 12) < 1e-9 and m['train_videos'] == 60 and m['supervised_10pct_videos'] == 12
    assert m['gt_oracle_acc'] >= 0.9, 'on the bundled samples the classes must be separable from the true motion'


def test_pretrain_template_in_a_torchrun_group_matches_one_process(vssl_env):
    # `-p nproc 2`: the training step runs in a torchrun group of two CPU processes (gloo), each with half of every batch of
    # 8, and the notebook resumes the group's final checkpoint; with samples drawn from their own seeds (keyed sampler) the
    # group computes one process's update: the same loss and weights, to float32 rounding (SGD: AdamW's first steps move every
    # weight by ±lr whatever its gradient's size, so a gradient that rounding tips across zero moves it the other way)
    runs = {}
    for n in (1, 2):
        r = vssl('run', 'pretrain', '-p', 'method', 'cmd', '-p', 'steps', 2, '-p', 'batch_size', 8, '-p', 'eval_clips', 1,
                 '-p', 'optimizer', 'sgd', '-p', 'lr', 0.05,
                 '-p', 'threads', 1, '-p', 'label_fractions', '0.5', '-p', 'nproc', n, '--run-id', f'n{n}')
        assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
        runs[n] = vssl_env['runs'] / 'pretrain' / f'n{n}'
    m1, m2 = (json.loads((runs[n] / 'metrics.json').read_text()) for n in (1, 2))
    assert m1['train']['steps'] == m2['train']['steps'] == 2
    assert m2['final_loss'] == pytest.approx(m1['final_loss'], rel=1e-4)
    assert (runs[2] / 'launch.pkl').exists() and not (runs[1] / 'launch.pkl').exists()
    import torch
    from vssl_nb.core import seed_everything
    from vssl_nb.models import build_backbone
    seed_everything(0); w0 = build_backbone('tiny').state_dict()   # the initial weights both runs started from
    w1, w2 = (torch.load(runs[n] / 'backbone.pt', weights_only=True) for n in (1, 2))
    assert w1.keys() == w2.keys()
    for k in w1:   # the group's update is one process's update (to 1e-3 of its size here; a wrong split or sum is off by O(1))
        if w1[k].is_floating_point():
            assert (w2[k] - w1[k]).norm() <= 1e-2 * (w1[k] - w0[k]).norm(), k
    events = [json.loads(l)['event'] for l in (runs[2] / 'events.jsonl').read_text().splitlines()]
    assert events.count('first_step') == 1   # one process trained (process 0 of the group); the notebook only resumed


def test_segment_template_on_the_tiny_activities(vssl_env):
    "TOT on the world's true motion, k-means on a random backbone's features, and the supervised reference, end to end."
    r = vssl('run', 'segment', '-p', 'method', 'tot', '-p', 'steps', 30, '-p', 'freeze_prototypes_steps', 10, '-p', 'threads', 1,
             '--run-id', 'tot')
    assert r.returncode == 0, r.stderr[-3000:]
    assert (vssl_env['data'] / 'synth-activities-tiny' / 'features' / 'truth' / 'manifest.json').is_file()
    run = vssl_env['runs'] / 'segment' / 'tot'
    m = json.loads((run / 'metrics.json').read_text())
    assert m['activities'] == 2 and m['videos'] == 8 and m['feature_dim'] == 5
    assert all(0 <= m[k] <= 1 for k in ('mof', 'f1', 'iou', 'mof_fg', 'f1_fg', 'iou_fg'))
    rows = json.loads((run / 'activities.json').read_text())
    assert [r['activity'] for r in rows] == ['activity01', 'activity02', 'mean'] and rows[0]['K'] >= 4
    r = vssl('run', 'segment', '-p', 'method', 'kmeans', '-p', 'features', 'random', '-p', 'hop', 4, '-p', 'threads', 1,
             '--run-id', 'km')
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((vssl_env['runs'] / 'segment' / 'km' / 'metrics.json').read_text())
    assert m['feature_dim'] == 128 and 0 <= m['mof'] <= 1
    r = vssl('run', 'segment', '-p', 'method', 'supervised', '-p', 'threads', 1, '--run-id', 'sup')
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((vssl_env['runs'] / 'segment' / 'sup' / 'metrics.json').read_text())
    assert m['videos'] == 2 and 0 <= m['mof'] <= 1          # scored on the test videos only (one per activity)
    r = vssl('run', 'pretrain', '-p', 'method', 'cmd_motion_only', '-p', 'steps', 2, '-p', 'batch_size', 8, '-p', 'eval_clips', 1,
             '-p', 'label_fractions', '', '-p', 'threads', 1, '--run-id', 'src')
    assert r.returncode == 0, r.stderr[-3000:]
    r = vssl('run', 'segment', '-p', 'method', 'equal_split', '-p', 'features', vssl_env['runs'] / 'pretrain' / 'src', '-p', 'hop', 4,
             '-p', 'threads', 1, '--run-id', 'ckpt')   # a backbone of a run of this workbench as the feature source
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((vssl_env['runs'] / 'segment' / 'ckpt' / 'metrics.json').read_text())
    assert m['videos'] == 8 and m['feature_dim'] == 128
    r = vssl('run', 'segment', '-p', 'method', 'kmeans++', '--run-id', 'bad')
    assert r.returncode == 1 and "unknown method 'kmeans++'" in r.stderr
