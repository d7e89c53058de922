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
