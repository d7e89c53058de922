"""Calibration of the synthetic world: motion statistics, the oracles, the appearance control, and the supervised ceiling
on the smoke preset (the small version of benchmarks/results/world.md that CI keeps true)."""
import numpy as np
import pytest
import torch

from vssl_nb.calibrate import appearance_accuracy, codec_track, motion_oracles, motion_statistics
from vssl_nb.study import StudyData, eval_loader, train_supervised
from vssl_nb.evaluate import evaluate_classifier
from vssl_nb.world.dataset import generate_dataset
from vssl_nb.world.presets import preset_config

from conftest import ROOT


def test_motion_statistics_of_hand_made_tracks():
    s = motion_statistics(np.tile([-2.0, 0.0], (20, 1)))
    assert s[0] == -2 and s[2] == 2 and s[5] == 0 and s[7] == 2 and s[9] == 0      # mean vx, |mean vx|, std vx, speed, stopped
    on = (np.arange(20) // 4) % 2 == 0                                                 # moving 4 frames, stopped 4 frames
    s = motion_statistics(np.stack([3.0 * on, np.zeros(20)], 1), dangle=np.full(20, -10.0), dlogscale=np.full(20, 0.03))
    assert abs(s[9] - 0.4) < 1e-9 and s[10] > 0                                        # 8 of 20 frames still; velocity changes
    assert s[12] == -10 and s[13] == 10 and abs(s[15] - 0.03) < 1e-12                   # turn and growth


def _field(kind: str, T=6, g=8, block=8):
    yy, xx = (np.mgrid[0:g, 0:g] + 0.5) * block
    c = g * block / 2
    r = np.hypot(xx - c, yy - c) < 20                                    # a disc that moves, on a still background
    if kind == 'cw': fx, fy = -(yy - c) * 0.1, (xx - c) * 0.1            # clockwise on screen (y points down)
    elif kind == 'grow': fx, fy = (xx - c) * 0.1, (yy - c) * 0.1
    else: fx, fy = np.full_like(xx, -3.0), np.zeros_like(xx)
    flow = np.zeros((T, 2, g, g), np.float32)
    flow[:, 0][:, r], flow[:, 1][:, r] = fx[r], fy[r]
    return flow, np.ones((T, g, g), bool)


def test_codec_track_reads_translation_rotation_and_growth():
    vel, curl, div = codec_track(*_field('left'), 8)
    assert np.allclose(vel, [-3, 0]) and np.allclose(curl, 0) and np.allclose(div, 0)
    vel, curl, div = codec_track(*_field('cw'), 8)
    assert (curl > 0.5).all() and np.allclose(div, 0, atol=1e-6)        # curl = d vy/dx - d vx/dy = 2 * 0.1 * block
    vel, curl, div = codec_track(*_field('grow'), 8)
    assert (div > 0.5).all() and np.allclose(curl, 0, atol=1e-6)


def test_oracles_on_a_generated_world(tmp_path):
    cfg = preset_config('tiny', classes=('MoveLeft', 'MoveUp', 'RotateCW', 'Grow', 'Bounce', 'StopAndGo'), n_train=6, n_test=3)
    generate_dataset(cfg, tmp_path / 'w', seed=11, show_progress=False)
    out = motion_oracles(tmp_path / 'w', cache_dir=tmp_path / 'cache', show_progress=False)
    assert out['gt_oracle_acc'] >= 0.9, out          # the classes are defined by motion
    assert out['codec_oracle_acc'] >= 0.6, out       # and the codec's per-frame vectors carry it (chance 1/6)
    app = appearance_accuracy(tmp_path / 'w', steps=30, show_progress=False)
    assert 0 <= app['appearance_acc'] <= 1 and 0 <= app['appearance_train_acc'] <= 1


def test_supervised_fits_the_smoke_preset(tmp_path):
    """On data_samples (the `tiny` preset, 5 training videos per class) the tiny backbone trained with the calibrated protocol
    fits its training set: a world whose classes cannot even be fitted cannot rank methods (world v1 reached 0.30)."""
    torch.set_num_threads(2)
    data = StudyData(ROOT / 'data_samples', min_crop=0.5, flip=False, eval_clips=2, cache=str(tmp_path / 'cache'))
    res, model = train_supervised(data, steps=800, lr=2e-3, optimizer='adamw', weight_decay=0.05, dropout=0.2, seed=0,
                                  show_progress=False, return_model=True)
    train_acc = evaluate_classifier(model, eval_loader(data, 'train'))['video_acc']
    assert train_acc >= 0.9, f'the tiny backbone fits only {train_acc:.2f} of its 60 training videos'
    assert 0 <= res['video_acc'] <= 1
