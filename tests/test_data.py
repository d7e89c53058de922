"""The data pipeline: split files, clip sampling, motion-consistent transforms, bad videos, real clips."""
import warnings

import numpy as np
import pytest
import torch

from vssl_nb import data as D
from vssl_nb.world.dataset import generate_dataset
from vssl_nb.world.presets import preset_config



@pytest.fixture(scope='module')
def tiny_tree(tmp_path_factory):
    "A small synthetic tree (3 classes x (2 train + 1 test), 24 frames, GOP 8)."
    root = tmp_path_factory.mktemp('tiny')
    generate_dataset(preset_config('tiny', classes=('MoveLeft', 'Circle', 'Grow'), n_train=2, n_test=1, n_frames=24, gop=8),
                     root, seed=0, show_progress=False)
    return root


# --- split files -------------------------------------------------------------------------------

def test_ucf101_split_files_parse_with_other_extensions(tmp_path):
    for c in ('ApplyEyeMakeup', 'Archery'):
        (tmp_path / c).mkdir()
        for g in (1, 2): (tmp_path / c / f'v_{c}_g0{g}_c01.mp4').write_bytes(b'x')
    (tmp_path / 'classInd.txt').write_text('1 ApplyEyeMakeup\n2 Archery\n')
    (tmp_path / 'trainlist01.txt').write_text('ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1\nArchery/v_Archery_g01_c01.avi 2\n')
    (tmp_path / 'testlist01.txt').write_text('ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi\r\nArchery/v_Archery_g02_c01.avi\r\n')
    tr, te = D.dataset_items(tmp_path, 'train'), D.dataset_items(tmp_path, 'test')
    assert [(i.label, i.path.name) for i in tr] == [(0, 'v_ApplyEyeMakeup_g01_c01.mp4'), (1, 'v_Archery_g01_c01.mp4')]
    assert [i.label for i in te] == [0, 1] and all(i.path.is_file() for i in te)
    (tmp_path / 'classInd.txt').write_text('1 ApplyEyeMakeup\n3 Archery\n')
    with pytest.raises(ValueError, match='classInd.txt'): D.dataset_items(tmp_path, 'train')
    with pytest.raises(ValueError, match='split'): D.ucf101_items(tmp_path, 'val')


def test_hmdb51_split_files_parse(tmp_path):
    for c in ('brush_hair', 'cartwheel'):
        (tmp_path / c).mkdir()
        for k in range(3): (tmp_path / c / f'{c}_{k}.avi').write_bytes(b'x')
        (tmp_path / f'{c}_test_split1.txt').write_text(f'{c}_0.avi 1 \n{c}_1.avi 2 \n{c}_2.avi 0 \n')
    tr, te = D.dataset_items(tmp_path, 'train'), D.dataset_items(tmp_path, 'test')
    assert [(i.label, i.path.name) for i in tr] == [(0, 'brush_hair_0.avi'), (1, 'cartwheel_0.avi')]
    assert [i.path.name for i in te] == ['brush_hair_1.avi', 'cartwheel_1.avi']


def test_synthetic_tree_reads_as_ucf101(tiny_tree):
    tr, te = D.dataset_items(tiny_tree, 'train'), D.dataset_items(tiny_tree, 'test')
    assert len(tr) == 6 and len(te) == 3
    classes = D.read_class_index(tiny_tree / 'classInd.txt')
    assert all(i.path.parent.name == classes[i.label] for i in tr + te)
    assert D.dataset_items(tiny_tree, layout='folder')[0].path.suffix == '.mp4'


# --- sampling ----------------------------------------------------------------------------------

def test_sampler_keyframe_and_motion_targets():
    s = D.ClipSampler(n_frames=16, stride=1, motion_offset=2, motion_frames=16)
    c = s.clip(10, 48, keyframes=np.array([0, 16, 32]))
    assert c['frames'].tolist() == list(range(10, 26)) and c['motion'].tolist() == list(range(27, 43))
    assert c['keyframe'] == 16 and c['keyframe_distance'] == 2 and not c['padded']
    rng = np.random.default_rng(0)
    assert all(0 <= s.starts(48, rng)[0] <= 48 - 16 for _ in range(50))
    assert D.ClipSampler(n_frames=8, mode='uniform', n_clips=5).starts(40) == [0, 8, 16, 24, 32]


# --- transforms and the motion field -----------------------------------------------------------

def _sample(H=64, W=64, block=16, T=2):
    torch.manual_seed(0)
    f = torch.randn(T, 2, H // block, W // block)
    return dict(clip=torch.rand(3, 3, H, W), keyframe=torch.rand(3, H, W), motion=f,
                motion_valid=torch.ones(T, H // block, W // block, dtype=torch.bool), block=block)


def test_flip_twice_is_identity_and_negates_dx():
    s = _sample(); f = D.flip_sample(s)
    assert torch.equal(f['motion'][:, 0], -s['motion'][:, 0].flip(-1)) and torch.equal(f['motion'][:, 1], s['motion'][:, 1].flip(-1))
    ff = D.flip_sample(f)
    assert torch.equal(ff['motion'], s['motion']) and torch.equal(ff['clip'], s['clip'])


def test_resize_scales_vectors_and_crop_shifts_grid():
    s = _sample(); s['motion'][:] = torch.tensor([2.0, -1.0]).view(1, 2, 1, 1)
    r = D.Resize((128, 96))(s)
    assert r['motion'].shape[-2:] == (8, 6)
    torch.testing.assert_close(r['motion'][:, 0], torch.full((2, 8, 6), 2.0 * 96 / 64))
    torch.testing.assert_close(r['motion'][:, 1], torch.full((2, 8, 6), -1.0 * 128 / 64))
    s = _sample(); s['motion'][:] = 0; s['motion'][:, :, 2, 3] = 5.0
    c = D.crop_resize_sample(s, (32, 16, 32, 48), (48, 32))  # crop 2 cells right, 1 down: cell (2, 3) -> (1, 1)
    nz = (c['motion'][0, 0] != 0).nonzero().tolist()
    assert nz == [[1, 1]] and abs(float(c['motion'][0, 0, 1, 1]) - 5.0) < 1e-5
    assert c['clip'].shape == (3, 3, 48, 32)
    torch.testing.assert_close(c['clip'], s['clip'][..., 16:64, 32:64])


def test_invalid_cells_do_not_drag_neighbours():
    s = _sample(); s['motion'][:] = 3.0; s['motion_valid'][:, 1, 1] = False; s['motion'][:, :, 1, 1] = 0
    r = D.Resize((96, 96))(s)
    torch.testing.assert_close(r['motion'][r['motion_valid'][:, None].expand_as(r['motion'])], torch.full((int(r['motion_valid'].sum()) * 2,), 4.5))


def test_transforms_are_video_consistent_and_seeded():
    s = _sample(); s['clip'] = s['clip'][:1].expand(4, 3, 64, 64).clone()  # four identical frames
    t = D.train_transform(48)
    a = t(s, torch.Generator().manual_seed(5)); b = t(s, torch.Generator().manual_seed(5))
    for k in ('clip', 'keyframe', 'motion'): torch.testing.assert_close(a[k], b[k])
    assert all(torch.equal(a['clip'][0], a['clip'][i]) for i in range(4)), 'one set of parameters for every frame'


def test_flipped_field_matches_field_of_flipped_video(tmp_path):
    err, ctrl = D.flipped_motion_agreement(tmp_path)
    assert len(err) > 50
    med, cmed = err.median().item(), ctrl.median().item()
    print(f'flip consistency: median {med:.3f} px over {len(err)} actor blocks; without negating/mirroring {cmed:.2f} px')
    assert med < 0.5 and cmed > 2.0


# --- the dataset -------------------------------------------------------------------------------

def test_dataset_sample_shapes_and_targets(tiny_tree, tmp_path):
    ds = D.video_dataset(tiny_tree, 'train', sampler=D.ClipSampler(n_frames=8, stride=2, motion_frames=4), transform=D.train_transform(48),
                         cache_dir=tmp_path)
    torch.manual_seed(0)
    b = ds[3]
    assert b['clip'].shape == (3, 8, 48, 48) and b['keyframe'].shape == (3, 48, 48)
    assert b['motion'].shape == (2, 4, 3, 3) and b['motion_valid'].shape == (4, 3, 3)
    assert b['keyframe_index'] in (0, 8, 16) and b['keyframe_distance'] <= 4
    assert ds.classes == ['MoveLeft', 'Circle', 'Grow'] and b['label'] == ds.items[3].label
    assert any(tmp_path.rglob('*.npz')), 'the extraction was cached'
    ev = D.video_dataset(tiny_tree, 'test', sampler=D.ClipSampler(n_frames=8, mode='uniform', n_clips=3), transform=D.eval_transform(48),
                         cache_dir=tmp_path)
    assert len(ev) == 9 and ev[4]['video'] == 1


def test_loader_is_repeatable(tiny_tree, tmp_path):
    ds = D.video_dataset(tiny_tree, 'train', sampler=D.ClipSampler(n_frames=4, motion_frames=2), transform=D.train_transform(32), cache_dir=tmp_path)
    def first(seed):
        torch.manual_seed(seed)
        return next(iter(D.clip_loader(ds, batch_size=3, seed=seed)))
    a, b, c = first(1), first(1), first(2)
    assert torch.equal(a['clip'], b['clip']) and torch.equal(a['frames'], b['frames'])
    assert not torch.equal(a['clip'], c['clip'])


def test_corrupt_video_is_skipped_and_reported_once(tiny_tree, tmp_path):
    items = D.dataset_items(tiny_tree, 'train')
    bad = tmp_path / 'Broken' / 'v_Broken_g01_c01.mp4'; bad.parent.mkdir()
    good = items[0].path.read_bytes(); bad.write_bytes(good[:len(good) // 3])  # a truncated mp4
    empty = tmp_path / 'Broken' / 'v_Broken_g02_c01.mp4'; empty.write_bytes(b'')
    missing = tmp_path / 'Broken' / 'v_Broken_g03_c01.mp4'
    ds = D.ClipDataset([D.VideoItem(p, 0, p.name) for p in (bad, empty, missing)] + items[:2],
                       D.ClipSampler(n_frames=4, motion_frames=2), cache_dir=tmp_path / 'cache')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        out = [ds[i] for i in range(len(ds))] + [ds[0], ds[1]]
    reports = [str(w.message) for w in caught if 'skipping unreadable video' in str(w.message)]
    assert len(reports) == 3, reports
    assert all(o['video'] in (3, 4) for o in out)
    assert set(ds.bad) == {str(bad), str(empty), str(missing)}
    assert any('empty' in r for r in reports) and any('no such file' in r for r in reports)
    only_bad = D.ClipDataset([D.VideoItem(empty, 0, 'e')], cache_dir=tmp_path / 'cache')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with pytest.raises(RuntimeError, match='unreadable'): only_bad[0]


def test_real_clips_through_the_pipeline(shared_videos, tmp_path):
    root = tmp_path / 'real'
    for cls, name in (('ArmWrestling', 'arm_wrestling_340x256_h264.mp4'), ('Basketball', 'basketball_426x240_h264.mp4')):
        (root / cls).mkdir(parents=True)
        (root / cls / name).symlink_to(shared_videos / name)  # read in place, never copied
    ds = D.video_dataset(root, layout='folder', sampler=D.ClipSampler(n_frames=8, stride=4, motion_frames=4),
                         transform=D.train_transform(64), cache_dir=tmp_path / 'cache')
    torch.manual_seed(0)
    for i in range(2):
        b = ds[i]
        assert b['clip'].shape == (3, 8, 64, 64) and b['motion'].shape == (2, 4, 4, 4)
        assert torch.isfinite(b['motion']).all() and b['motion_valid'].any()
        assert b['label'] == i


def test_motion_targets_are_per_frame_by_default(tmp_path):
    "With B-frames the codec's raw field spans 1-3 frames; the dataset's motion targets are per frame of time unless asked otherwise."
    from vssl_nb.codec import synthetic_pan
    (tmp_path / 'Pan').mkdir()
    video = synthetic_pan(tmp_path / 'Pan' / 'pan.mp4', shift=(3, 1), n_frames=24, bframes=2)  # content moves (-3, -1) px per frame
    items = [D.VideoItem(video, 0, 'Pan/pan.mp4')]
    sampler = D.ClipSampler(n_frames=4, mode='uniform', motion_frames=8, motion_offset=1)
    per, raw = D.ClipDataset(items, sampler, cache_dir=tmp_path / 'c'), D.ClipDataset(items, sampler, cache_dir=tmp_path / 'c', per_frame_motion=False)
    assert per.per_frame_motion and per.extraction(items[0]).motion.per_frame and not raw.extraction(items[0]).motion.per_frame
    def medians(s):
        m, v = s['motion'][:, :, 1:-1, 1:-1], s['motion_valid'][:, 1:-1, 1:-1]
        return np.array([[m[c, t][v[t]].median().item() for c in range(2)] for t in range(m.shape[1]) if v[t].any()])
    a, b = medians(per[0]), medians(raw[0])
    assert len(a) == 8 and np.abs(a - [-3, -1]).max() <= 0.25, a
    assert np.abs(b[:, 0]).max() >= 6 - 0.25, b  # raw: some targets span two or three frames
    uncached = D.ClipDataset(items, sampler, from_cache=False)
    assert np.abs(medians(uncached[0]) - [-3, -1]).max() <= 0.25


def test_keyed_samples_are_drawn_the_same_by_any_process(tiny_tree, tmp_path):
    # a keyed sampler's (index, seed) pairs make a sample independent of the random state of whoever loads it: the two halves
    # a group of two processes loads are the batch one process loads, crop for crop (what `vssl run -p nproc 2` relies on)
    from vssl_nb.study import KeyedSubset, PretextViews, labelled_subset
    from vssl_nb.train import ResumableBatchSampler
    ds = PretextViews(D.video_dataset(tiny_tree, 'train', sampler=D.ClipSampler(n_frames=4, motion_frames=2),
                                      transform=D.train_transform(32), cache_dir=tmp_path), second_view=True)
    one = list(ResumableBatchSampler(len(ds), 4, seed=3, rank=0, world_size=1, keyed=True))
    halves = [list(ResumableBatchSampler(len(ds), 2, seed=3, rank=r, world_size=2, keyed=True)) for r in (0, 1)]
    assert one[0] == halves[0][0] + halves[1][0] and all(isinstance(k, tuple) for k in one[0])
    torch.manual_seed(0); a = ds[one[0][1]]
    torch.manual_seed(1); b = ds[one[0][1]]          # another global random state: the same sample
    assert torch.equal(a['clip'], b['clip']) and torch.equal(a['clip2'], b['clip2']) and torch.equal(a['frames'], b['frames'])
    assert not torch.equal(a['clip'], a['clip2'])    # the second view has a seed of its own
    i, seed = one[0][1]
    assert not torch.equal(ds[(i, seed + 1)]['clip'], a['clip'])
    sub = labelled_subset(ds, 0.5, seed=0)
    assert isinstance(sub, KeyedSubset) and sub.keyed_samples
    assert torch.equal(sub[(0, seed)]['clip'], ds[(sub.indices[0], seed)]['clip'])
    assert [s['video'] for s in sub.__getitems__([(0, 1), (1, 2)])] == [sub.indices[0], sub.indices[1]]
    assert ResumableBatchSampler(len(ds), 4, seed=3, world_size=1, rank=0).__iter__().__next__() == [k for k, _ in one[0]]


# --- audio beside the clip (world/12_sound, vssl_nb.audio) --------------------------------------

@pytest.fixture(scope='module')
def sound_tree(tmp_path_factory):
    "The sound-tiny preset (3 classes x (1 train + 1 test), AAC 16 kHz mono)."
    root = tmp_path_factory.mktemp('sound')
    generate_dataset(preset_config('sound-tiny'), root, seed=0, name='sound-tiny', show_progress=False)
    return root


def test_clip_dataset_returns_the_log_mel_under_the_clip(sound_tree, tmp_path):
    from vssl_nb.audio import MelSpec, clip_audio, log_mel
    sampler = D.ClipSampler(n_frames=16, stride=1, motion_frames=8)
    for cache_mb in (256, 0):   # soundtracks kept, or each window decoded from the file: the same spectrogram
        ds = D.video_dataset(sound_tree, 'train', sampler=sampler, cache_dir=tmp_path / 'cache', store='off', audio=True, audio_cache_mb=cache_mb)
        s = ds[(1, 7)]
        assert s['audio'].shape == (1, 64, 101) and s['audio'].dtype == torch.float32 and torch.isfinite(s['audio']).all()
        want = log_mel(torch.from_numpy(clip_audio(ds.items[1].path, s['frames'].numpy(), n_frames=16)), MelSpec())[None]
        torch.testing.assert_close(s['audio'], want)
        assert s['audio'].std() > 0.5   # a soundtrack, not silence
    plain = D.video_dataset(sound_tree, 'train', sampler=sampler, cache_dir=tmp_path / 'cache', store='off')
    assert 'audio' not in plain[0]   # off by default
    b = next(iter(D.clip_loader(ds, batch_size=3, shuffle=False)))
    assert b['audio'].shape == (3, 1, 64, 101)
    strided = D.video_dataset(sound_tree, 'train', sampler=D.ClipSampler(n_frames=8, stride=2, motion_frames=0), cache_dir=tmp_path / 'cache',
                              store='off', audio=True, mel=MelSpec(n_mels=40))
    assert strided[0]['audio'].shape == (1, 40, 94)   # 15 frames of 1/16 s: 15000 samples, 10 ms steps


def test_clip_dataset_skips_and_reports_videos_with_bad_audio(sound_tree, tmp_path):
    import av
    from vssl_nb.world.encode import encode_h264
    good = D.dataset_items(sound_tree, 'train')
    frames = np.zeros((32, 64, 64, 3), np.uint8)
    silent, r22, corrupt = tmp_path / 'silent.mp4', tmp_path / 'r22.mp4', tmp_path / 'corrupt.mp4'
    silent.write_bytes(encode_h264(frames, bframes=0, refs=1))
    r22.write_bytes(encode_h264(frames, bframes=0, refs=1, audio=np.zeros(44100, np.float32), sample_rate=22050))
    b = bytearray(good[0].path.read_bytes())
    with av.open(str(good[0].path)) as c: spans = [(p.pos, p.size) for p in c.demux(audio=0) if p.size and p.pos is not None and p.pos >= 0]
    rng = np.random.default_rng(0)
    for pos, size in spans: b[pos:pos + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    corrupt.write_bytes(bytes(b))
    bad = [D.VideoItem(p, 0, p.name) for p in (silent, r22, corrupt)]
    ds = D.ClipDataset(bad + good, D.ClipSampler(n_frames=16, motion_frames=0), cache_dir=tmp_path / 'cache', store='off', audio=True)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        got = [ds[(i, 0)]['video'] for i in range(3)]
    assert got == [3, 3, 3]   # each bad video skipped for the next readable one
    assert set(ds.bad) == {str(silent), str(r22), str(corrupt)}
    assert 'NoAudioStream' in ds.bad[str(silent)] and 'silent.mp4: no audio stream' in ds.bad[str(silent)]
    assert 'AudioRateMismatch' in ds.bad[str(r22)] and '22050 Hz' in ds.bad[str(r22)]
    assert 'corrupt audio stream' in ds.bad[str(corrupt)]
    assert sum('skipping unreadable video' in str(x.message) for x in w) == 3
    ok = D.ClipDataset([D.VideoItem(r22, 0, 'r22.mp4')], D.ClipSampler(n_frames=16, motion_frames=0), cache_dir=tmp_path / 'cache',
                       store='off', audio=True, audio_resample=True)
    assert ok[0]['audio'].shape == (1, 64, 101)   # resampled 22.05 -> 16 kHz when allowed
