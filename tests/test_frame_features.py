"""Frame features (vssl_nb.frame_features): the Breakfast / YTI / 50 Salads / MS-TCN loader and its errors, per-frame
features from a backbone (streamed, hop) or the world's truth, the cache with its manifest, and `vssl frame-features`."""
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import vssl
from vssl_nb.codec import CompressedVideo
from vssl_nb.core import atomic_write, atomic_write_json, file_hash
from vssl_nb.data import eval_transform
from vssl_nb.frame_features import (CLIP_DEFAULTS, SegmentationFormatError, cache_frame_features, extract_frame_features,
                                    frame_source, load_segmentation_dataset, nearest_window, truth_features, window_frames)

pytestmark = pytest.mark.usefixtures('quiet_progress')

BF = ['SIL', 'take_cup', 'pour_coffee', 'pour_milk', 'take_bowl', 'pour_cereals']


def _breakfast(root: Path, dim: int = 6, seed: int = 0) -> dict:
    "A Breakfast-style folder (Kukleva et al.'s release): features/<activity>/<name>.txt, groundTruth/<name> (no extension), mapping/mapping.txt."
    rng = np.random.default_rng(seed)
    (root / 'mapping').mkdir(parents=True); (root / 'groundTruth').mkdir()
    (root / 'mapping' / 'mapping.txt').write_text(''.join(f"{i} {n}\n" for i, n in enumerate(BF)))
    plans = {'P03_cam01_P03_coffee': [0] * 3 + [1] * 5 + [2] * 6 + [3] * 4 + [0] * 2,
             'P04_webcam02_P04_coffee': [1] * 4 + [2] * 7 + [3] * 5,
             'P03_cam01_P03_cereals': [0] * 2 + [4] * 6 + [5] * 8 + [3] * 5}
    feats = {}
    for name, labels in plans.items():
        (root / 'groundTruth' / name).write_text(''.join(BF[i] + '\n' for i in labels))
        folder = root / 'features' / name.rsplit('_', 1)[-1]
        folder.mkdir(parents=True, exist_ok=True)
        feats[name] = rng.normal(size=(len(labels), dim)).astype(np.float32)
        np.savetxt(folder / f'{name}.txt', feats[name])
    return dict(labels={n: np.array(v) for n, v in plans.items()}, features=feats)


def test_breakfast_text_features(tmp_path):
    truth = _breakfast(tmp_path)
    ds = load_segmentation_dataset(tmp_path)
    assert ds.activity_rule == 'folder' and ds.background == 0 and ds.mapping_path == tmp_path / 'mapping' / 'mapping.txt'
    assert ds.activity_names == ['cereals', 'coffee'] and len(ds) == 3 and ds.feature_dim == 6 and not ds.skipped
    assert [v.name for v in ds.by_activity()['coffee']] == ['P03_cam01_P03_coffee', 'P04_webcam02_P04_coffee']
    assert ds.K('coffee') == 3 and ds.K('coffee', with_background=True) == 4 and ds.K('cereals') == 3
    assert ds.labels_of('cereals') == [0, 3, 4, 5] and ds.order('coffee') is None
    v = ds['P03_cam01_P03_coffee']
    assert v._features is None                                    # listed, not read
    np.testing.assert_allclose(v.features, truth['features'][v.name], rtol=1e-6)
    assert v.features.dtype == np.float32 and v._features is not None
    np.testing.assert_array_equal(v.labels, truth['labels'][v.name])
    assert v.label_names[2:4] == ['SIL', 'take_cup']
    feats, labels = ds.activities('cereals')['cereals']
    assert len(feats) == 1 and feats[0].shape == (21, 6) and labels[0].shape == (21,)
    assert [r['videos'] for r in ds.summary()] == [1, 2]
    same = load_segmentation_dataset(tmp_path, activity='suffix')   # the name's last part gives the same activities
    assert same.activity_rule == 'suffix' and {v.name: v.activity for v in same} == {v.name: v.activity for v in ds}
    assert load_segmentation_dataset(tmp_path, activities='coffee').names == ['P03_cam01_P03_coffee', 'P04_webcam02_P04_coffee']
    with pytest.raises(ValueError, match=r"no activity \['tea'\]"): load_segmentation_dataset(tmp_path, activities=['tea'])
    with pytest.raises(ValueError, match='activity must be'): load_segmentation_dataset(tmp_path, activity='middle')


def test_mstcn_npy_features_in_both_layouts(tmp_path):
    "MS-TCN's copies: mapping.txt at the root, groundTruth/<name>.txt, features/<name>.npy as (D, n_frames); ours as (n_frames, D)."
    rng = np.random.default_rng(1)
    (tmp_path / 'mapping.txt').write_text('0 SIL\n1 cut\n2 mix\n')
    (tmp_path / 'groundTruth').mkdir(); (tmp_path / 'features').mkdir()
    arrays = {'P01_cam01_P01_salad': (20, 7, True), 'P02_cam01_P02_salad': (15, 7, False), 'P03_cam01_P03_salad': (7, 7, False)}
    for name, (T, D, dt) in arrays.items():
        (tmp_path / 'groundTruth' / f'{name}.txt').write_text(''.join(['SIL\n', 'cut\n', 'mix\n'][t * 3 // T] for t in range(T)))
        a = rng.normal(size=(T, D)).astype(np.float32)
        arrays[name] = a
        np.save(tmp_path / 'features' / f'{name}.npy', a.T if dt else a)
    (tmp_path / 'splits').mkdir()
    (tmp_path / 'splits' / 'test.split1.bundle').write_text('P01_cam01_P01_salad.txt\nP03_cam01_P03_salad.txt\n')
    ds = load_segmentation_dataset(tmp_path)
    assert ds.activity_rule == 'suffix' and ds.activity_names == ['salad'] and ds.mapping_path == tmp_path / 'mapping.txt'
    for v in ds: np.testing.assert_array_equal(v.features, arrays[v.name])     # (D, T) files transposed, (T, D) kept
    assert [v.transpose for v in ds] == [True, False, False]                    # the square one: frames first by default
    flipped = load_segmentation_dataset(tmp_path, transpose=True, videos=['P03_cam01_P03_salad'])
    np.testing.assert_array_equal(flipped[0].features, arrays['P03_cam01_P03_salad'].T)
    split = load_segmentation_dataset(tmp_path, videos=tmp_path / 'splits' / 'test.split1.bundle')
    assert split.names == ['P01_cam01_P01_salad', 'P03_cam01_P03_salad']
    assert load_segmentation_dataset(tmp_path, activity=lambda n: n[:3]).activity_names == ['P01', 'P02', 'P03']


def test_yti_and_50salads_names_and_a_negative_background(tmp_path):
    (tmp_path / 'mapping').mkdir(); (tmp_path / 'groundTruth').mkdir(); (tmp_path / 'features').mkdir()
    (tmp_path / 'mapping' / 'mapping.txt').write_text('-1 background\n1 jack_up\n2 remove_wheel\n3 compress\n')
    for name, labels in {'changing_tire_0001': ['background', 'jack_up', 'remove_wheel', 'background'],
                         'changing_tire_0002': ['jack_up', 'remove_wheel'], 'cpr_0001': ['compress', 'background']}.items():
        (tmp_path / 'groundTruth' / name).write_text('\n'.join(labels) + '\n\n')   # trailing blank lines are no frames
        np.savetxt(tmp_path / 'features' / f'{name}.txt', np.ones((len(labels), 3)))
    ds = load_segmentation_dataset(tmp_path)
    assert ds.activity_rule == 'prefix' and ds.activity_names == ['changing_tire', 'cpr'] and ds.background == -1
    assert ds['changing_tire_0001'].labels.tolist() == [-1, 1, 2, -1] and ds.K('changing_tire') == 2 and ds.K('cpr') == 1
    assert load_segmentation_dataset(tmp_path, background=None).background is None
    assert load_segmentation_dataset(tmp_path, background='jack_up').background == 1
    with pytest.raises(ValueError, match="background label 'SIL' is not in the mapping"): load_segmentation_dataset(tmp_path, background='SIL')


def _load_warning(root, **kw):
    with pytest.warns(RuntimeWarning, match=r'skipped 1 of 3 videos') as rec:
        ds = load_segmentation_dataset(root, **kw)
    assert len([w for w in rec if 'skipped' in str(w.message)]) == 1
    assert len(ds) == 2 and len(ds.skipped) == 1
    return ds, ds.skipped[0]


def test_bad_files_are_named_with_their_line_and_skipped(tmp_path):
    gt, feats = tmp_path / 'groundTruth', tmp_path / 'features'
    _breakfast(tmp_path)
    # features one row longer than the labels: both counts, both files
    with open(feats / 'coffee' / 'P04_webcam02_P04_coffee.txt', 'a') as f: f.write('0 0 0 0 0 0\n')
    ds, (name, reason) = _load_warning(tmp_path)
    assert name == 'P04_webcam02_P04_coffee'
    assert f"{feats / 'coffee' / 'P04_webcam02_P04_coffee.txt'}: 17 frames of features, but {gt / 'P04_webcam02_P04_coffee'} has 16 label lines" in reason
    assert load_segmentation_dataset(tmp_path, trim=1)['P04_webcam02_P04_coffee'].features.shape == (16, 6)   # trim: cut to the shorter
    with pytest.raises(SegmentationFormatError, match='17 frames of features'): load_segmentation_dataset(tmp_path, strict=True)


def test_unknown_label_names_file_line_label_and_the_known_labels(tmp_path):
    _breakfast(tmp_path)
    p = tmp_path / 'groundTruth' / 'P03_cam01_P03_cereals'
    lines = p.read_text().splitlines(); lines[9] = 'pour_cereal'; p.write_text('\n'.join(lines) + '\n')
    _, (name, reason) = _load_warning(tmp_path)
    assert reason == (f"{p}:10: unknown label 'pour_cereal'; the mapping knows SIL, take_cup, pour_coffee, pour_milk, "
                      "take_bowl, pour_cereals")
    lines[9] = ''; p.write_text('\n'.join(lines) + '\n')
    _, (_, reason) = _load_warning(tmp_path)
    assert reason.startswith(f"{p}:10: empty line among the labels")


def test_malformed_mapping_and_missing_folders_raise(tmp_path):
    _breakfast(tmp_path)
    m = tmp_path / 'mapping' / 'mapping.txt'
    m.write_text('0 SIL\n1 take_cup\n2 pour coffee\n')
    with pytest.raises(SegmentationFormatError, match=rf"{m}:3: expected '<index> <label>', got '2 pour coffee'"): load_segmentation_dataset(tmp_path)
    m.write_text('0 SIL\n1 take_cup\n1 pour_coffee\n')
    with pytest.raises(SegmentationFormatError, match=rf"{m}:3: index 1 given twice"): load_segmentation_dataset(tmp_path)
    m.unlink()
    with pytest.raises(FileNotFoundError, match='no mapping file'): load_segmentation_dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match='ground-truth folder'): load_segmentation_dataset(tmp_path, ground_truth='gt')
    with pytest.raises(FileNotFoundError, match='feature folder'): load_segmentation_dataset(tmp_path, features='nope', mapping=tmp_path / 'x')


def test_missing_feature_file_and_bad_numbers(tmp_path):
    _breakfast(tmp_path)
    f = tmp_path / 'features' / 'coffee' / 'P03_cam01_P03_coffee.txt'
    moved = f.with_name('elsewhere.txt'); f.rename(moved)
    _, (name, reason) = _load_warning(tmp_path)
    assert name == 'P03_cam01_P03_coffee' and reason.startswith(str(tmp_path / 'groundTruth' / 'P03_cam01_P03_coffee'))
    assert 'no feature file for this ground truth: looked for P03_cam01_P03_coffee.npy and P03_cam01_P03_coffee.txt' in reason
    assert load_segmentation_dataset(tmp_path, strict=False, videos=['P04_webcam02_P04_coffee']).unlabelled == ['elsewhere']
    moved.rename(f)
    rows = f.read_text().splitlines(); rows[3] = rows[3].replace(rows[3].split()[2], '0.5x', 1); f.write_text('\n'.join(rows) + '\n')
    lazy = load_segmentation_dataset(tmp_path)          # rows are counted, not parsed: the error comes when they are read
    with pytest.raises(SegmentationFormatError, match=rf"{f}:4: not a number: '0.5x' \(column 3\)"): lazy['P03_cam01_P03_coffee'].features
    _, (_, reason) = _load_warning(tmp_path, validate=True)
    assert reason.startswith(f"{f}:4: not a number: '0.5x' (column 3)")
    with pytest.raises(SegmentationFormatError, match='not a number'): lazy.validate(strict=True)
    with pytest.warns(RuntimeWarning, match='1 videos have unreadable features'): lazy.validate()
    assert lazy.names == ['P03_cam01_P03_cereals', 'P04_webcam02_P04_coffee'] and lazy.skipped[0][0] == 'P03_cam01_P03_coffee'
    light = load_segmentation_dataset(tmp_path, keep_features=False, activities='cereals')
    assert light[0].features.shape == (21, 6) and light[0]._features is None    # read from disk at every use
    rows[3] = ' '.join(['1.5'] * 5); f.write_text('\n'.join(rows) + '\n')   # a short row
    _, (_, reason) = _load_warning(tmp_path, validate=True)
    assert reason == f"{f}:4: 5 numbers, but line 1 has 6"
    np.save(tmp_path / 'features' / 'coffee' / 'P04_webcam02_P04_coffee.npy', np.zeros((16, 6)))   # two files for one video
    with pytest.raises(SegmentationFormatError, match='several feature files'):
        load_segmentation_dataset(tmp_path, videos=['P04_webcam02_P04_coffee'], strict=True)


def test_a_feature_dimension_that_differs_is_skipped(tmp_path):
    _breakfast(tmp_path)
    np.savetxt(tmp_path / 'features' / 'cereals' / 'P03_cam01_P03_cereals.txt', np.zeros((21, 5)))
    _, (name, reason) = _load_warning(tmp_path)
    assert name == 'P03_cam01_P03_cereals' and reason.endswith('5 features per frame, the other videos have 6')


# ---- synthetic activity videos, rendered here (not the activities generator: its presets are tested with it)

ACTS = {'travel': ['MoveRight', 'RotateCW', 'Grow'], 'spin': ['RotateCCW', 'MoveUp', 'Shrink']}


@pytest.fixture(scope='module')
def activity_root(tmp_path_factory):
    "Three rendered 40-frame videos of two activities in the data-set layout (metadata.json, mapping/, groundTruth/, <activity>/<name>.mp4 + .npz)."
    from vssl_nb.world.encode import encode_h264, save_npz
    from vssl_nb.world.render import render_video
    from vssl_nb.world.spec import VideoSpec, WorldConfig
    root = tmp_path_factory.mktemp('acts')
    cfg = WorldConfig(n_frames=40, gop=8)
    names = ['SIL'] + sorted({a for v in ACTS.values() for a in v})
    atomic_write(root / 'mapping' / 'mapping.txt', ''.join(f"{i} {n}\n" for i, n in enumerate(names)))
    meta = dict(activities=[dict(name=a, K=3, order=subs) for a, subs in ACTS.items()], videos=[])
    for k, (a, bounds) in enumerate([('travel', [0, 14, 27, 40]), ('travel', [0, 10, 30, 40]), ('spin', [0, 13, 26, 40])]):
        segs = [(s, bounds[j], bounds[j + 1]) for j, s in enumerate(ACTS[a])]
        spec = VideoSpec(f'{a}_v{k:02d}', 0, a, 'noise-forest', False, 'train', 1000 + k, segs)
        frames, gt, _ = render_video(spec, cfg)
        mp4 = root / a / f'{spec.name}.mp4'
        atomic_write(mp4, encode_h264(frames, cfg.fps, cfg.gop, cfg.bframes, cfg.crf, cfg.refs))
        save_npz(mp4.with_suffix('.npz'), **gt)
        atomic_write(root / 'groundTruth' / f'{spec.name}.txt', ''.join(f"{s}\n" for s, b, e in segs for _ in range(e - b)))
        meta['videos'].append(dict(video=f'{a}/{spec.name}.mp4', name=spec.name, activity=a, split='test' if k == 2 else 'train', n_frames=40))
    atomic_write_json(root / 'metadata.json', meta)
    return root


def test_extraction_gives_one_row_per_decoded_frame(activity_root):
    path = activity_root / 'travel' / 'travel_v00.mp4'
    n = len(CompressedVideo(path).frames())
    f = extract_frame_features('random', path, hop=3)
    assert f.shape == (n, 128) and f.dtype == np.float32 and n == 40
    assert extract_frame_features('random', path, backbone='tiny', frames=4, stride=1, size=32, batch_size=5).shape == (n, 128)


def test_hop1_equals_a_direct_computation_per_window(activity_root):
    "Streamed, batched clips against clips cut from the fully decoded video, transformed as the evaluation does, one by one."
    path = activity_root / 'spin' / 'spin_v02.mp4'
    src = frame_source('random', seed=3, batch_size=7)
    streamed = src(path)
    frames = CompressedVideo(path).frames()
    T, tf, net = len(frames), eval_transform(56), src.backbone.eval()
    rows = []
    with torch.no_grad():
        for t in range(T):
            idx = [min(max(t + 2 * (j - 4), 0), T - 1) for j in range(8)]      # 8 frames, stride 2, centred on t, edges repeated
            clip = tf({'clip': torch.from_numpy(frames[idx]).permute(0, 3, 1, 2).float() / 255})['clip']
            rows.append(net(clip.permute(1, 0, 2, 3)[None])[0].numpy())
    np.testing.assert_allclose(streamed, np.stack(rows), rtol=1e-4, atol=1e-5)
    assert window_frames(0, T).tolist() == [0, 0, 0, 0, 0, 2, 4, 6] and window_frames(T - 1, T).tolist()[-4:] == [T - 1] * 4


def test_hop_takes_the_nearest_window(activity_root):
    path = activity_root / 'travel' / 'travel_v01.mp4'
    full = extract_frame_features('random', path)
    for hop in (4, 7):
        coarse = extract_frame_features('random', path, hop=hop)
        near = nearest_window(len(full), hop) * hop
        assert np.abs(np.arange(len(full)) - near).max() <= hop // 2 + (len(full) - 1) % hop
        np.testing.assert_allclose(coarse, full[near], rtol=1e-4, atol=1e-5)
    assert nearest_window(10, 4).tolist() == [0, 0, 1, 1, 1, 1, 2, 2, 2, 2]   # ties to the later clip; the tail to the last
    with pytest.raises(ValueError, match='hop must be'): extract_frame_features('random', path, hop=0)


def test_extraction_is_deterministic_and_seeded(activity_root):
    path = activity_root / 'travel' / 'travel_v00.mp4'
    a, b = extract_frame_features('random', path, seed=1), extract_frame_features('random', path, seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, extract_frame_features('random', path, seed=2))
    state = torch.random.get_rng_state()
    frame_source('random', seed=5)
    assert torch.equal(state, torch.random.get_rng_state())    # the global RNG is left as it was


def test_truth_features_follow_the_actors_motion(activity_root):
    t = truth_features(activity_root / 'travel' / 'travel_v00.mp4', smooth=1)
    assert t.shape == (40, 5)
    move, rotate, grow = t[1:14], t[15:27], t[28:]
    assert (move[:, 0] > 0.99).all() and np.allclose(move[:, 3], 0) and np.allclose(move[:, 1], 0)      # right, at >= 1.5 px/frame
    assert (rotate[:, 3] >= 0.99).all() and np.allclose(rotate[:, 2], 0)                                 # 8-16 degrees a frame
    assert (grow[:, 4] >= 0.99).all() and np.allclose(grow[:, :4], 0)
    smooth = truth_features(activity_root / 'travel' / 'travel_v00.mp4')
    assert 0 < smooth[14, 0] < move[0, 0]                                                               # blurred across the cut
    noisy = truth_features(activity_root / 'travel' / 'travel_v00.mp4', noise=0.5, seed=1)
    np.testing.assert_array_equal(noisy, truth_features(activity_root / 'travel' / 'travel_v00.mp4', noise=0.5, seed=1))
    assert 0.4 < np.std(noisy - smooth) < 0.6
    with pytest.raises(FileNotFoundError, match='the truth source needs a synthetic video'):
        truth_features(activity_root / 'nothing.mp4')


def test_checkpoint_source_reads_the_run(tmp_path, activity_root):
    from vssl_nb.models import build_backbone
    from vssl_nb.train import save_backbone
    torch.manual_seed(4)
    net = build_backbone('tiny')
    run = tmp_path / 'pretrain-run7'
    save_backbone(net, run / 'backbone.pt')
    (run / 'params.json').write_text(json.dumps(dict(backbone='tiny', frames=4, stride=1, size=48)))
    src = frame_source(run)
    assert (src.name, src.frames, src.stride, src.size) == ('pretrain-run7', 4, 1, 48)
    assert src.params['checkpoint_hash'] == file_hash(run / 'backbone.pt') and src.params['kind'] == 'checkpoint'
    path = activity_root / 'travel' / 'travel_v00.mp4'
    np.testing.assert_allclose(src(path), extract_frame_features(net, path, frames=4, stride=1, size=48), rtol=1e-5, atol=1e-6)
    assert frame_source(run / 'backbone.pt', frames=8).frames == 8          # given options win over the run's
    with pytest.raises(ValueError, match="do not fit backbone 'r3d18' \\(the run's params.json says 'tiny'\\)"): frame_source(run, backbone='r3d18')
    with pytest.raises(FileNotFoundError, match="holds no backbone.pt"): frame_source(tmp_path)
    with pytest.raises(FileNotFoundError, match="is not 'random', 'truth'"): frame_source(tmp_path / 'nowhere')


def test_clip_defaults_are_the_studys():
    from vssl_nb.study import StudyData
    assert CLIP_DEFAULTS == {k: StudyData.__dataclass_fields__[k].default for k in CLIP_DEFAULTS}


def _copy(src: Path, dst: Path) -> Path:
    import shutil
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns('features'))
    return dst


def test_cache_skips_what_is_done_and_redoes_what_changed(tmp_path, activity_root):
    root = _copy(activity_root, tmp_path / 'acts')
    rep = cache_frame_features(root, 'random', hop=2)
    assert rep['counts'] == dict(extracted=3, cached=0, failed=0) and rep['folder'] == root / 'features' / 'random'
    files = sorted(rep['folder'].glob('*.npy'))
    stamps = [p.stat().st_mtime_ns for p in files]
    assert cache_frame_features(root, 'random', hop=2)['counts'] == dict(extracted=0, cached=3, failed=0)
    assert [p.stat().st_mtime_ns for p in files] == stamps
    m = json.loads(rep['manifest'].read_text())
    assert m['source'] == 'random' and m['params']['hop'] == 2 and m['params']['backbone'] == 'tiny' and m['checkpoint_hash'] is None
    assert m['versions']['torch'] and m['versions']['numpy'] == np.__version__ and m['params_hash'] == m['videos']['spin_v02']['params_hash']
    assert m['videos']['spin_v02']['shape'] == [40, 128] and m['videos']['spin_v02']['video'] == 'spin/spin_v02.mp4'
    assert cache_frame_features(root, 'random', hop=1)['counts'] == dict(extracted=3, cached=0, failed=0)   # a new parameter: all again
    assert cache_frame_features(root, 'random', hop=1, force=True, videos=['travel_v00'])['counts']['extracted'] == 1
    (root / 'travel' / 'travel_v01.mp4').touch()                                                            # the video changed
    assert cache_frame_features(root, 'random', hop=1)['counts'] == dict(extracted=1, cached=2, failed=0)
    np.save(rep['folder'] / 'spin_v02.npy', np.zeros((3, 128), np.float32))                              # a damaged file
    assert cache_frame_features(root, 'random', hop=1)['counts']['extracted'] == 1
    rep_t = cache_frame_features(root, 'truth', smooth=3)
    assert rep_t['counts']['extracted'] == 3 and json.loads(rep_t['manifest'].read_text())['params']['smooth'] == 3
    with pytest.raises(ValueError, match='holds several feature sources \\(random, truth\\)'): load_segmentation_dataset(root)
    ds = load_segmentation_dataset(root, features='random', split='train')
    assert ds.names == ['travel_v00', 'travel_v01'] and ds.feature_dim == 128 and ds.activity_rule == 'metadata'
    index = {label: i for i, label in ds.mapping.items()}
    assert ds.order('travel') == [index[n] for n in ACTS['travel']] and ds.K('travel') == 3
    assert load_segmentation_dataset(root, features='features/truth').K('spin') == 3


def test_cache_reports_a_video_that_cannot_be_decoded(tmp_path, activity_root):
    root = _copy(activity_root, tmp_path / 'acts')
    (root / 'spin' / 'spin_v02.mp4').write_bytes(b'this is no video' * 10)
    with pytest.warns(RuntimeWarning, match=r'skipped .*spin_v02.mp4: VideoDecodeError'):
        rep = cache_frame_features(root, 'random', hop=4)
    assert rep['counts'] == dict(extracted=2, cached=0, failed=1) and list(rep['failed']) == ['spin_v02']
    assert 'spin_v02' in json.loads(rep['manifest'].read_text())['failed']
    with pytest.warns(RuntimeWarning, match='no feature file'):
        ds = load_segmentation_dataset(root, features='random')
    assert ds.names == ['travel_v00', 'travel_v01'] and ds.skipped[0][0] == 'spin_v02'


def test_cli_end_to_end(tmp_path, activity_root, monkeypatch):
    from vssl_nb.cli import main
    root = _copy(activity_root, tmp_path / 'acts')
    r = vssl('frame-features', root, '--source', 'truth', '--quiet')
    assert r.returncode == 0, r.stderr
    assert '3 videos: 3 extracted, 0 already cached, 0 failed' in r.stdout
    monkeypatch.setenv('VSSL_THREADS', '1')
    assert main(['frame-features', str(root), '--source', 'random', '--hop', '4', '--videos', 'travel_v00,spin_v02', '--quiet']) == 0
    assert sorted(p.name for p in (root / 'features' / 'random').glob('*.npy')) == ['spin_v02.npy', 'travel_v00.npy']
    ds = load_segmentation_dataset(root, features='truth')
    assert len(ds) == 3 and ds.feature_dim == 5
    bad = vssl('frame-features', tmp_path / 'nothing', '--quiet')
    assert bad.returncode == 1 and 'data set folder' in bad.stderr
    assert main(['frame-features', str(root), '--hop', '0', '--quiet']) == 1
