"""The decoded-clip store: entries stream to disk, a failed write leaves nothing behind, the data set reads the same samples
from the store as from the mp4, and a training run augments its batches on the device."""
import tracemalloc

import numpy as np
import pytest
import torch

import vssl_nb.store as S
from vssl_nb.codec import CompressedVideo, synthetic_pan
from vssl_nb.data import BatchAugment, ClipDataset, ClipSampler, VideoItem, train_transform


@pytest.fixture(scope='module')
def tiny_tree(tmp_path_factory):
    "A small synthetic tree (4 classes x (3 train + 1 test), 32 frames)."
    from vssl_nb.world.dataset import generate_dataset
    from vssl_nb.world.presets import preset_config
    root = tmp_path_factory.mktemp('tiny')
    generate_dataset(preset_config('tiny', classes=('MoveLeft', 'Circle', 'Grow', 'ZigZag'), n_train=3, n_test=1), root, seed=0, show_progress=False)
    return root


@pytest.fixture(scope='module')
def long_video(tmp_path_factory):
    return synthetic_pan(tmp_path_factory.mktemp('v') / 'long.mp4', 'h264', shift=(1, 1), n_frames=240, size=(192, 128))


def test_writer_streams_frames(long_video, tmp_path):
    decoded = 240 * 128 * 192 * 3
    tracemalloc.start()
    try:
        S.write_stored(long_video, tmp_path / 'e.clips', block=16, extract_dir=tmp_path / 'x')
        peak = tracemalloc.get_traced_memory()[1]
    finally: tracemalloc.stop()
    assert peak < decoded / 4, f"peak {peak:,} B while writing {decoded:,} B of frames: the writer holds the video"
    assert S.open_stored(tmp_path / 'e.clips').frames.shape == (240, 128, 192, 3)


def test_failed_write_leaves_nothing(long_video, tmp_path, monkeypatch):
    calls = {'n': 0}
    real = S._rgb
    def dying(frame, size=None):
        calls['n'] += 1
        if calls['n'] > 50: raise OSError('disk full')
        return real(frame, size)
    monkeypatch.setattr(S, '_rgb', dying)
    with pytest.raises(OSError, match='disk full'):
        S.load_or_store(long_video, tmp_path / 'store', block=16, extract_dir=tmp_path / 'x')
    assert list((tmp_path / 'store').iterdir()) == []   # no entry, no temporary file
    monkeypatch.setattr(S, '_rgb', real)
    sv = S.load_or_store(long_video, tmp_path / 'store', block=16, extract_dir=tmp_path / 'x')
    np.testing.assert_array_equal(sv.frames[100:104], CompressedVideo(long_video).frames(range(100, 104)))


def test_store_and_mp4_give_the_same_samples(tiny_tree, tmp_path):
    from vssl_nb.data import dataset_items
    items = dataset_items(tiny_tree, 'train')[:6]
    kw = dict(sampler=ClipSampler(n_frames=8, stride=2, motion_frames=4), transform=train_transform(48), cache_dir=tmp_path / 'c',
              store_dir=tmp_path / 's')
    a, b = ClipDataset(items, store='on', **kw), ClipDataset(items, store='off', **kw)
    assert a.use_store and not b.use_store
    for v in range(len(items)):
        x, y = a.load(v, seed=v), b.load(v, seed=v)
        for k in ('clip', 'keyframe', 'motion', 'motion_valid'): torch.testing.assert_close(x[k], y[k], rtol=0, atol=0)


def test_batch_augment_in_training(tiny_tree, tmp_path, vssl_env):
    from vssl_nb.study import StudyData, pretrain
    losses = {}
    for aug in ('batch', 'sample'):
        data = StudyData(tiny_tree, size=48, batch_size=8, augment=aug, flip=True, cache=str(tmp_path / 'c'))
        assert data.batch_augment == (aug == 'batch')
        losses[aug] = [r['loss'] for r in pretrain('cmd', data, steps=3, lr=1e-3, optimizer='adamw', show_progress=False, log_every=1).history]
    # the same clips and augmentation parameters; the pixels differ only where a crop is shrunk (no antialiasing on the batch)
    assert losses['batch'] == pytest.approx(losses['sample'], rel=0.05)


def test_use_store_auto_refuses_what_does_not_fit(long_video, monkeypatch):
    monkeypatch.setenv('VSSL_STORE_GB', '0.001')
    on, why = S.use_store('auto', [long_video] * 10)
    assert not on and 'exceed' in why
