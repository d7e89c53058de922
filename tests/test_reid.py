"""Video re-identification: the `reid` data kind of the world (`world/11_reid`: MARS's layout, determinism, the identity-disjoint
split, the query/gallery protocol, the detector's truth), its loader and MARS / iLIDS-VID readers with their errors, tracklet
sampling and P×K batches, and CMC / mAP (`08f_reid`) — the vectorised code against the loop reference, ties included — and
`vssl synth --preset reid-tiny`."""
import hashlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from vssl_nb.cli import main as vssl
from vssl_nb.core import sample_seed
from vssl_nb.reid import (ILIDS_SPLITS, PKSampler, ReIDFormatError, Tracklet, TrackletDataset, _rank_order, cmc_map,
                          cmc_map_from_distances, cmc_map_loop, distance_matrix, load_ilidsvid, load_mars, ranked_gallery,
                          retrieval_figure, tracklet_frame_indices)
from vssl_nb.world.presets import PRESETS, preset_config
from vssl_nb.world.reid import (MARS_NAME, ReIDConfig, generate_reid, mars_name, parse_mars_name, plan_cameras,
                                plan_identities, plan_tracklets, render_tracklet)

TINY = 'reid-tiny'
pytestmark = pytest.mark.usefixtures('quiet_progress')


def tree_hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "reid-tiny, seed 0, generated once for the module: (root, metadata as metadata.json reads back)."
    root = tmp_path_factory.mktemp('reid') / 'seed0'
    meta = generate_reid(preset_config(TINY), root, seed=0, name=TINY, show_progress=False)
    return root, json.loads(json.dumps(meta))


@pytest.fixture
def copy(tiny, tmp_path):
    "A fresh copy of the reid-tiny tree to break."
    dst = tmp_path / 'copy'
    shutil.copytree(tiny[0], dst)
    return dst


# ---------------------------------------------------------------- the world


def test_layout_and_names_follow_mars(tiny):
    root, meta = tiny
    assert sorted(p.name for p in root.iterdir()) == ['bbox_test', 'bbox_train', 'info', 'metadata.json', 'truth']
    assert sorted(p.name for p in (root / 'info').iterdir()) == sorted(
        ['train_name.txt', 'test_name.txt', 'tracks_train_info.mat', 'tracks_train_info.txt', 'tracks_test_info.mat',
         'tracks_test_info.txt', 'query_IDX.mat', 'query_IDX.txt'])
    for split in ('train', 'test'):
        names = (root / 'info' / f'{split}_name.txt').read_text().splitlines()
        on_disk = sorted(p.name for p in (root / f'bbox_{split}').rglob('*') if p.is_file())
        assert sorted(names) == on_disk and len(set(names)) == len(names)
        for p in (root / f'bbox_{split}').rglob('*.jpg'):
            assert MARS_NAME.fullmatch(p.name) and p.parent.name == p.name[:4], p
        info = scipy.io.loadmat(root / 'info' / f'tracks_{split}_info.mat')[f'track_{split}_info']
        assert info.dtype == np.int32 and info.shape[1] == 4
        assert np.array_equal(info, np.loadtxt(root / 'info' / f'tracks_{split}_info.txt', dtype=np.int64, ndmin=2))
        assert info[0, 0] == 1 and info[-1, 1] == len(names) and (info[1:, 0] == info[:-1, 1] + 1).all()   # consecutive, 1-based
        for start, end, pid, cam in info:
            crops = [parse_mars_name(n) for n in names[start - 1:end]]
            assert {c[:2] for c in crops} == {(pid, cam)} and [c[3] for c in crops] == list(range(1, end - start + 2))
        with np.load(root / 'truth' / f'tracks_{split}_truth.npz') as z:
            assert {k: z[k].shape for k in z.files} == {'true_box': (len(names), 4), 'det_box': (len(names), 4),
                                                         'person_box': (len(names), 4), 'occlusion': (len(names),)}
    q = scipy.io.loadmat(root / 'info' / 'query_IDX.mat')['query_IDX']
    assert q.shape[0] == 1 and np.array_equal(q.ravel(), np.loadtxt(root / 'info' / 'query_IDX.txt', dtype=np.int64))
    crop = Image.open(next((root / 'bbox_train').rglob('*.jpg')))
    assert crop.format == 'JPEG' and crop.size == (32, 64) and crop.mode == 'RGB'
    assert {'00-1', '0000'} <= {p.name for p in (root / 'bbox_test').iterdir()}
    assert meta['format'] == 'MARS' and meta['crop_size'] == [64, 32] and meta['preset'] == TINY


def test_same_seed_same_bytes_other_seed_other_bytes(tiny, tmp_path):
    again = generate_reid(preset_config(TINY), tmp_path / 'again', seed=0, workers=2, name=TINY, show_progress=False)
    assert tree_hashes(tmp_path / 'again') == tree_hashes(tiny[0]), 'same seed (in worker processes): byte-identical files'
    assert json.loads(json.dumps(again)) == tiny[1]
    generate_reid(preset_config(TINY), tmp_path / 'other', seed=1, name=TINY, show_progress=False)
    a, b = tree_hashes(tiny[0]), tree_hashes(tmp_path / 'other')
    jpgs = [k for k in a if k.endswith('.jpg')]
    assert sum(a[k] != b.get(k) for k in jpgs) > 0.9 * len(jpgs)


def test_identities_are_disjoint_and_the_protocol_is_mars(tiny):
    root, meta = tiny
    cfg = preset_config(TINY)
    ids = {i['pid']: i for i in meta['identities']}
    assert sum(i['split'] == 'train' for i in ids.values()) == cfg.n_train and len(ids) == cfg.n_train + cfg.n_test
    v = meta['videos']
    train_pids = {r['pid'] for r in v if r['split'] == 'train'}
    test_people = {r['source'] for r in v if r['split'] == 'test' and r['role'] != 'distractor'}
    assert train_pids == {p for p, i in ids.items() if i['split'] == 'train'} and not train_pids & test_people
    assert all(r['video'].startswith('bbox_train/') for r in v if r['split'] == 'train')
    queries = [r for r in v if r['role'] == 'query']
    pairs = [(r['pid'], r['camid']) for r in queries]
    assert len(pairs) == len(set(pairs)) == sum(len(i['cameras']) for i in ids.values() if i['split'] == 'test')
    for r in queries:   # every query has a true match in another camera of the gallery
        assert any(g['pid'] == r['pid'] and g['camid'] != r['camid'] for g in v if g['role'] == 'gallery')
    test_rows = sorted((r for r in v if r['split'] == 'test'), key=lambda r: r['row'])
    qidx = np.loadtxt(root / 'info' / 'query_IDX.txt', dtype=np.int64)
    assert sorted(test_rows[q - 1]['role'] for q in qidx) == ['query'] * len(queries)
    assert sum(r['role'] == 'distractor' and r['pid'] == 0 for r in v) == cfg.n_distractors
    assert sum(r['role'] == 'junk' and r['pid'] == -1 and ids[r['source']]['split'] == 'test' for r in v) == cfg.n_junk
    assert any(r['occluded'] for r in v), 'some tracklet has a passer-by in front'


def test_the_truth_is_the_box_the_detector_missed():
    "With every detector error off, the person's true box is exactly the whole crop; with them on, it is not, and it is still near."
    exact = ReIDConfig(n_train=2, n_test=2, n_cameras=2, cameras_per_identity=(2, 2), box_bias=0, box_drift=0, box_jitter=0,
                       box_scale_jitter=0, n_distractors=0, n_junk=0, person_height=(40, 60))
    noisy = ReIDConfig(**{**exact.to_dict(), 'box_bias': 0.08, 'box_drift': 0.02, 'box_jitter': 0.05, 'box_scale_jitter': 0.06})
    for cfg, aligned in ((exact, True), (noisy, False)):
        cams, ids = plan_cameras(cfg, 0), {i.pid: i for i in plan_identities(cfg, 0)}
        spec = plan_tracklets(cfg, 0, list(ids.values()))[0]
        crops, truth = render_tracklet(spec, cfg, cams[spec.camid - 1], ids[spec.pid].look)
        full = np.broadcast_to([0, 0, cfg.crop_width, cfg.crop_height], truth['true_box'].shape)
        assert np.allclose(truth['true_box'], full, atol=1e-3) == aligned
        assert np.abs(truth['true_box'] - full).max() < 0.6 * cfg.crop_height
    with pytest.raises(ValueError, match='needs its identity'): render_tracklet(spec, cfg, cams[spec.camid - 1], None)


@pytest.mark.parametrize('kw, name', [(dict(n_cameras=12), 'n_cameras'), (dict(cameras_per_identity=(1, 2)), 'cameras_per_identity'),
                                      (dict(tracklet_frames=(0, 5)), 'tracklet_frames'), (dict(jpeg_quality=101), 'jpeg_quality'),
                                      (dict(n_train=9000, n_test=1000), '9000 + 1000'), (dict(occlusion_prob=-1), 'occlusion_prob')])
def test_bad_parameters_name_the_parameter(kw, name):
    with pytest.raises(ValueError, match=name.replace('+', r'\+').replace('(', r'\(').replace(')', r'\)')): ReIDConfig(**kw)


def test_mars_names_round_trip_and_refuse_what_is_not_one():
    assert mars_name(65, 1, 2, 16) == '0065C1T0002F016.jpg' and parse_mars_name('00-1C6T0012F999.jpg') == (-1, 6, 12, 999)
    for bad in ('0065C1T0002F16.jpg', '0065C10T0002F016.jpg', 'abcdC1T0002F016.jpg', '0065C1T0002F016.jpeg'):
        with pytest.raises(ValueError, match=bad.replace('.', r'\.')): parse_mars_name(bad)


def test_vssl_synth_writes_reid_tiny(tiny, tmp_path, capsys):
    assert vssl(['synth', '--preset', TINY, '--out', str(tmp_path / 'cli')]) == 0
    assert tree_hashes(tmp_path / 'cli') == tree_hashes(tiny[0]), 'the CLI writes what generate_reid writes (default seed 0)'
    out = capsys.readouterr().out
    assert f"wrote {tiny[1]['counts']['tracklets']} tracklets" in out and 'of 12 + 12 identities in 3 cameras' in out
    assert vssl(['synth', '--preset', TINY, '--n-test', '5', '--out', str(tmp_path / 'five')]) == 0
    assert json.loads((tmp_path / 'five' / 'metadata.json').read_text())['config']['n_test'] == 5
    capsys.readouterr()
    assert vssl(['synth', '--preset', TINY, '--frames', '40', '--out', str(tmp_path / 'bad')]) == 1
    assert 'n_frames' in capsys.readouterr().err
    assert vssl(['synth', '--help']) == 0
    assert 'reid, reid-tiny (reid)' in capsys.readouterr().out.replace('\n', ' ')
    assert PRESETS['reid'].kind == 'reid' and preset_config('reid').n_train + preset_config('reid').n_test == 400


# ---------------------------------------------------------------- the loaders


def test_load_mars_reads_the_synthetic_tree(tiny):
    root, meta = tiny
    ds = load_mars(root)
    by = lambda roles: sorted(r['video'].rsplit('/', 1)[1] for r in meta['videos'] if r['role'] in roles)
    assert sorted(t.name for t in ds.train) == by(('train',)) and sorted(t.name for t in ds.query) == by(('query',))
    assert sorted(t.name for t in ds.gallery) == by(('gallery', 'distractor', 'junk'))
    rec = {r['video'].rsplit('/', 1)[1]: r for r in meta['videos']}
    for t in ds.train + ds.query + ds.gallery:
        r = rec[t.name]
        assert (t.pid, t.camid, len(t)) == (r['pid'], r['camid'], r['n_frames']) and all(p.is_file() for p in t.paths)
        assert [parse_mars_name(p.name)[3] for p in t.paths] == list(range(1, len(t) + 1))
    assert ds.skipped == [] and len(ds.pid_labels()) == 12 and sorted(ds.pid_labels().values()) == list(range(12))
    txt = load_mars(root, info='txt')
    assert [(t.name, t.paths) for t in txt.train + txt.query + txt.gallery] == [(t.name, t.paths) for t in ds.train + ds.query + ds.gallery]
    ids = lambda ts: ([t.pid for t in ts], [t.camid for t in ts])
    rng = np.random.default_rng(0)
    r = cmc_map(rng.normal(size=(len(ds.query), 8)), *ids(ds.query), rng.normal(size=(len(ds.gallery), 8)), *ids(ds.gallery))
    assert r['queries'] == len(ds.query) and r['queries_without_match'] == 0
    both = load_mars(root, query_in_gallery=True)
    assert len(both.gallery) == len(ds.gallery) + len(ds.query)
    assert all(len(t) >= 10 for t in load_mars(root, min_frames=10).train)


def test_malformed_name_and_missing_crop_are_named(tiny, copy):
    ds = load_mars(tiny[0])
    names_file = copy / 'info' / 'test_name.txt'
    lines = names_file.read_text().splitlines()
    victim = ds.gallery[-1].paths[0].name
    bad = victim.replace('C', 'C0')                                  # 0023C03T0001F001.jpg
    names_file.write_text('\n'.join(l if l != victim else bad for l in lines) + '\n')
    with pytest.raises(ReIDFormatError) as e: load_mars(copy, strict=True)
    assert repr(bad) in str(e.value) and e.value.path == names_file and e.value.line == lines.index(victim) + 1
    gone = ds.query[0].paths[-1]
    (copy / gone.relative_to(tiny[0])).unlink()
    with pytest.warns(RuntimeWarning, match='skipped 2 tracklets'): lenient = load_mars(copy)
    assert len(lenient.skipped) == 2 and len(lenient.query) == len(ds.query) - 1 and len(lenient.gallery) == len(ds.gallery) - 1
    assert any(bad in reason for _, reason in lenient.skipped) and any(gone.name in reason for _, reason in lenient.skipped)
    names_file.write_text('\n'.join(lines) + '\n')
    with pytest.raises(ReIDFormatError, match='listed but missing on disk') as e: load_mars(copy, strict=True)
    assert str(copy / 'bbox_test' / gone.parent.name / gone.name) in str(e.value)


def test_broken_index_files_are_named(copy):
    info = np.loadtxt(copy / 'info' / 'tracks_test_info.txt', dtype=np.int64, ndmin=2)
    info[2, 1] = 10_000                                              # a row that runs past the name list
    (copy / 'info' / 'tracks_test_info.mat').unlink()
    (copy / 'info' / 'tracks_test_info.txt').write_text(''.join(' '.join(map(str, r)) + '\n' for r in info))
    with pytest.raises(ReIDFormatError, match='row 3 lists lines') as e: load_mars(copy, strict=True)
    assert e.value.line == 3 and e.value.path.name == 'tracks_test_info.txt'
    (copy / 'info' / 'query_IDX.mat').unlink()
    (copy / 'info' / 'query_IDX.txt').write_text(f"1\n{len(info) + 5}\n")
    with pytest.raises(ReIDFormatError, match=f'got {len(info) + 5}'): load_mars(copy)
    (copy / 'info' / 'query_IDX.txt').write_text("1\ntwo\n")
    with pytest.raises(ReIDFormatError, match="'two'"): load_mars(copy)
    with pytest.raises(FileNotFoundError, match='bbox_train'): shutil.rmtree(copy / 'bbox_train') or load_mars(copy)


def test_without_info_the_tree_is_read_from_file_names(tiny, copy):
    shutil.rmtree(copy / 'info')
    ds, bare = load_mars(tiny[0]), load_mars(copy)
    assert sorted(t.name for t in bare.train) == sorted(t.name for t in ds.train)
    assert sorted(t.name for t in bare.query + bare.gallery) == sorted(t.name for t in ds.query + ds.gallery)
    assert {(t.pid, t.camid) for t in bare.query} == {(t.pid, t.camid) for t in ds.query} and 'first tracklet' in bare.notes[0]
    odd = bare.train[0].paths[0]
    odd.rename(odd.with_name('0001C1T1F1.jpg'))
    with pytest.raises(ReIDFormatError, match="'0001C1T1F1.jpg'"): load_mars(copy, strict=True)
    with pytest.warns(RuntimeWarning): assert len(load_mars(copy).skipped) == 1


def make_ilids(root: Path, people: int = 8, cams=(1, 2)) -> Path:
    for cam in cams:
        for p in range(1, people + 1):
            d = root / 'i-LIDS-VID' / 'sequences' / f'cam{cam}' / f'person{p:03d}'
            d.mkdir(parents=True)
            for f in range(2 + p % 3): Image.new('RGB', (32, 64), (p * 20, cam * 60, f * 40)).save(d / f'cam{cam}_person{p:03d}_{f:05d}.png')
    return root


def test_ilidsvid_layout_and_protocol(tmp_path):
    root = make_ilids(tmp_path)
    ds = load_ilidsvid(root)
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (8, 4, 4) and 'random half' in ds.notes[0]
    assert {t.pid for t in ds.query} == {t.pid for t in ds.gallery} and not {t.pid for t in ds.train} & {t.pid for t in ds.query}
    assert all(t.camid == 1 for t in ds.query) and all(t.camid == 2 for t in ds.gallery)
    assert [p.name for p in ds.query[0].paths] == sorted(p.name for p in ds.query[0].paths)
    assert load_ilidsvid(root, split=0).query == ds.query and load_ilidsvid(root, split=3).query != ds.query
    assert load_ilidsvid(root / 'i-LIDS-VID').query == ds.query          # the data set folder itself works too
    (root / ILIDS_SPLITS).parent.mkdir(parents=True)
    scipy.io.savemat(root / ILIDS_SPLITS, {'ls_set': np.array([[2, 4, 6, 8, 1, 3, 5, 7]], np.float64)})
    shipped = load_ilidsvid(root)
    assert sorted(t.pid for t in shipped.query) == [2, 4, 6, 8] and sorted({t.pid for t in shipped.train}) == [1, 3, 5, 7]
    with pytest.raises(ValueError, match='split must be 0..0'): load_ilidsvid(root, split=1)
    shutil.rmtree(root / 'i-LIDS-VID' / 'sequences' / 'cam2' / 'person003')
    with pytest.raises(ReIDFormatError, match='person003'): load_ilidsvid(root, strict=True)
    with pytest.warns(RuntimeWarning, match='skipped 1'): assert len(load_ilidsvid(root).train) == 6
    with pytest.raises(FileNotFoundError, match='i-LIDS-VID/sequences'): load_ilidsvid(tmp_path / 'nowhere')


# ---------------------------------------------------------------- sampling


def test_tracklet_dataset_and_pk_sampler(tiny):
    ds = load_mars(tiny[0])
    assert list(tracklet_frame_indices(10, 4, 'evenly')) == [1, 3, 6, 8]
    assert list(tracklet_frame_indices(3, 5, 'random', np.random.default_rng(0))) == [0, 1, 2, 2, 2]
    tds = TrackletDataset(ds.train, seq_len=4, labels=ds.pid_labels())
    s = tds[(0, 7)]
    assert s['frames'].shape == (4, 3, 64, 32) and s['frames'].dtype == torch.float32 and s['label'] == ds.pid_labels()[ds.train[0].pid]
    assert torch.equal(tds[(0, 7)]['frames'], s['frames']) and (np.diff(s['frames_index'].numpy()) == 1).all()
    assert TrackletDataset(ds.query, sampling='all', size=None)[1]['frames'].shape[0] == len(ds.query[1])
    with pytest.warns(RuntimeWarning, match='gone'):
        assert TrackletDataset([Tracklet(1, 1, (tiny[0] / 'gone.jpg',), 'gone'), ds.train[0]], seq_len=2)[0]['index'] == 1
    pk = PKSampler(tds.pids, P=3, K=2, seed=0, keyed=True)
    first = list(pk)
    assert len(first) == 4 and all(len(b) == 6 for b in first)
    for b in first:
        pids = [tds.pids[i] for i, _ in b]
        assert len(set(pids)) == 3 and all(pids.count(p) == 2 for p in pids)
    assert first[0][0][1] == sample_seed(0, 0, 0) and list(pk) != first
    pk.set_epoch(0)
    assert list(pk) == first
    batch = next(iter(torch.utils.data.DataLoader(tds, batch_sampler=PKSampler(tds.pids, P=3, K=2, seed=1, keyed=True))))
    assert batch['frames'].shape == (6, 4, 3, 64, 32)
    with pytest.raises(ValueError, match='K >= 2'): PKSampler(tds.pids, P=3, K=1)


# ---------------------------------------------------------------- CMC and mAP


def random_case(rng, nq, ng, d=5):
    "Whole-number features with many exact duplicates (so many equal distances), few identities and cameras, junk and distractors."
    qf, gf = rng.integers(0, 3, (nq, d)).astype(np.float32), rng.integers(0, 3, (ng, d)).astype(np.float32)
    gf[rng.random(ng) < 0.3] = gf[0]
    return qf, rng.integers(1, 6, nq), rng.integers(1, 4, nq), gf, rng.integers(-1, 6, ng), rng.integers(1, 4, ng)


def agree(fast, ref, ranks):
    "Exactly the same: CMC, mAP and counts (NaN where no query counts), and every query's first match, validity and AP, bit for bit."
    for k in [f'rank{r}' for r in ranks] + ['mAP', 'queries', 'queries_without_match']:
        assert fast[k] == ref[k] or (np.isnan(fast[k]) and np.isnan(ref[k])), (k, fast[k], ref[k])
    for k in ('first_match', 'valid', 'ap'): assert np.array_equal(fast['per_query'][k], ref['per_query'][k]), k


def test_vectorised_cmc_map_agrees_with_the_loop_on_ties():
    rng, ties = np.random.default_rng(7), 0
    for trial in range(60):
        qf, qp, qc, gf, gp, gc = random_case(rng, int(rng.integers(1, 20)), int(rng.integers(1, 50)))
        junk = ((-1,), (0,), (-1, 0), ())[trial % 4]
        for metric in ('euclidean', 'cosine'):
            D = distance_matrix(qf + (metric == 'cosine'), gf + (metric == 'cosine'), metric)
            ties += int((D[:, None, :] == D[:, :, None]).sum() - D.numel())
            for ap in ('standard', 'trapezoid'):
                kw = dict(ranks=(1, 2, 5), junk_pids=junk, ap=ap)
                ref = cmc_map_loop(D, qp, qc, gp, gc, **kw)
                agree(cmc_map_from_distances(D, qp, qc, gp, gc, chunk=int(rng.integers(1, 7)), per_query=True, **kw), ref, kw['ranks'])
                agree(cmc_map_from_distances(D.double(), qp, qc, gp, gc, per_query=True, **kw), ref, kw['ranks'])   # the stable-sort path
                if metric == 'euclidean':   # whole-number features: exact distances whatever the chunk
                    agree(cmc_map(qf, qp, qc, gf, gp, gc, chunk=int(rng.integers(1, 7)), per_query=True, **kw), ref, kw['ranks'])
    assert ties > 1000, 'the cases exercise the tie rule'


def test_known_case_and_the_tie_rule():
    D = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    gp, gc = [1, 7, 1, -1, 0, 1], [1, 2, 2, 3, 1, 3]      # same id+cam, stranger, match, junk, distractor, match
    r = cmc_map_from_distances(D, [1], [1], gp, gc, ranks=(1, 2), per_query=True)
    assert (r['rank1'], r['rank2'], r['mAP']) == (0.0, 1.0, 0.5) and list(r['per_query']['first_match']) == [2]
    assert abs(cmc_map_from_distances(D, [1], [1], gp, gc, ap='trapezoid')['mAP'] - 1 / 3) < 1e-12
    assert abs(cmc_map_from_distances(D, [1], [1], gp, gc, junk_pids=(-1, 0))['mAP'] - 7 / 12) < 1e-12
    tied = cmc_map_from_distances(np.zeros((1, 4), np.float32), [1], [1], [2, 1, 3, 1], [2, 2, 2, 2], ranks=(1, 2), per_query=True)
    assert list(tied['per_query']['first_match']) == [2]   # all distances equal: gallery order decides
    assert list(ranked_gallery(np.zeros(4), 1, 2, [2, 1, 3, 1], [2, 2, 2, 1], k=None)) == [0, 2, 3]
    x = torch.tensor([[0.5, -0.0, 0.0, -1.5, 0.5, float('inf'), -2.0, 1e-38, -1e-38, 0.0]])
    assert torch.equal(_rank_order(x), torch.sort(x, dim=1, stable=True).indices)


def test_bad_evaluation_input_is_named():
    q, g = np.ones((2, 3)), np.ones((4, 3))
    with pytest.raises(ValueError, match='gallery_features row 1 is not finite'):
        cmc_map(q, [1, 2], [1, 1], np.array([[1, 1, 1], [np.inf, 0, 0], [1, 1, 1], [1, 1, 1]]), [1, 2, 3, 4], [2] * 4)
    with pytest.raises(ValueError, match='gallery_camids has 3 entries for 4 items'): cmc_map(q, [1, 2], [1, 1], g, [1, 2, 3, 4], [2] * 3)
    with pytest.raises(ValueError, match='query_pids must be whole numbers'): cmc_map(q, [1.5, 2], [1, 1], g, [1, 2, 3, 4], [2] * 4)
    with pytest.raises(ValueError, match='all zeros'): cmc_map(np.zeros((2, 3)), [1, 2], [1, 1], g, [1, 2, 3, 4], [2] * 4, metric='cosine')
    with pytest.raises(ValueError, match="'trapezoidal'"): cmc_map(q, [1, 2], [1, 1], g, [1, 2, 3, 4], [2] * 4, ap='trapezoidal')


def test_retrieval_figure_frames_by_identity(tiny):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    ds = load_mars(tiny[0])
    qi = 0
    D = np.random.default_rng(0).random((len(ds.query), len(ds.gallery)))
    pids, cams = [t.pid for t in ds.gallery], [t.camid for t in ds.gallery]
    top = ranked_gallery(D[qi], ds.query[qi].pid, ds.query[qi].camid, pids, cams, k=5)
    extra = {'aligned': [np.zeros((64, 32, 3), np.uint8)] * 6}
    fig = retrieval_figure(ds.query[qi], ds.gallery, top, distances=D[qi], frames=2, extra_rows=extra)
    assert len(fig.axes) == 3 * 6
    green, red = matplotlib.colors.to_rgba('tab:green'), matplotlib.colors.to_rgba('tab:red')
    for c, i in enumerate(top, 1):
        want = green if ds.gallery[i].pid == ds.query[qi].pid else red
        assert fig.axes[c].spines['top'].get_edgecolor() == want
    assert fig.axes[2 * 6].get_ylabel() == 'aligned'
    with pytest.raises(ValueError, match='3 images for 6 columns'): retrieval_figure(ds.query[qi], ds.gallery, top, extra_rows={'x': [None] * 3})
    plt.close('all')


# ---------------------------------------------------------------- the method (vssl_nb.methods.reid) and its template


def test_batch_hard_triplet_loss_against_a_loop():
    from vssl_nb.losses import batch_hard_triplet_loss
    g = torch.Generator().manual_seed(0)
    e = torch.randn(10, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 3, 9])   # 9: no positive, left out
    for margin in (0.3, None):
        def slow():
            out = []
            for a in range(10):
                pos = [torch.dist(e[a], e[p]) for p in range(10) if p != a and y[p] == y[a]]
                neg = [torch.dist(e[a], e[n]) for n in range(10) if y[n] != y[a]]
                if pos and neg:
                    x = max(pos) - min(neg)
                    out.append(torch.nn.functional.softplus(x) if margin is None else (x + margin).clamp_min(0))
            return torch.stack(out).mean()
        fast, ref = batch_hard_triplet_loss(e, y, margin), slow()
        assert abs(fast.item() - ref.item()) < 1e-10
        assert torch.allclose(torch.autograd.grad(fast, e)[0], torch.autograd.grad(ref, e)[0], atol=1e-9)
    with pytest.raises(ValueError, match='both a positive and a negative'): batch_hard_triplet_loss(e[:3], torch.tensor([0, 1, 2]))


def test_true_boxes_give_the_alignment_target(tiny):
    from vssl_nb.methods.reid import box_iou, box_to_theta, theta_to_box
    from vssl_nb.reid import true_boxes
    ds = load_mars(tiny[0])
    t = ds.train[0]
    boxes = torch.from_numpy(true_boxes(t))
    assert boxes.shape == (len(t), 4) and torch.isfinite(boxes).all()
    theta = box_to_theta(boxes, (64, 32))
    assert torch.allclose(theta_to_box(theta, (64, 32)), boxes, atol=1e-4)
    assert torch.allclose(box_iou(theta_to_box(theta, (64, 32)), boxes), torch.ones(len(t)), atol=1e-5)
    # the truth file's rows follow the name list: a tracklet's boxes are the rows of its crops' lines
    names = (tiny[0] / 'info' / 'train_name.txt').read_text().splitlines()
    with np.load(tiny[0] / 'truth' / 'tracks_train_truth.npz') as z:
        first = names.index(t.paths[0].name)
        assert np.array_equal(z['true_box'][first:first + len(t)], true_boxes(t))
    assert np.isnan(true_boxes(next(x for x in ds.gallery if x.pid == 0))).all()


def test_st2n_starts_as_the_identity_and_can_learn_the_true_alignment(tiny):
    from vssl_nb.methods.reid import ST2N, box_iou, box_to_theta, theta_to_box
    from vssl_nb.reid import true_boxes
    ds = load_mars(tiny[0])
    torch.manual_seed(0)
    tds = TrackletDataset(ds.train, seq_len=6, sampling='evenly')
    items = [tds[(i, 0)] for i in range(16)]
    frames = torch.stack([it['frames'] for it in items])
    boxes = torch.stack([torch.from_numpy(true_boxes(ds.train[i])[it['frames_index'].numpy()]) for i, it in enumerate(items)])
    st = ST2N()
    aligned, theta = st(frames)
    assert torch.allclose(aligned, frames, atol=1e-5) and torch.allclose(theta, torch.eye(2, 3).expand_as(theta))
    raw = box_iou(torch.tensor([0., 0, 32, 64]).expand_as(boxes), boxes).mean()
    opt = torch.optim.Adam(st.parameters(), 3e-3)
    for _ in range(60):   # supervised on the truth: the localisation network can see where the person is
        loss = torch.nn.functional.mse_loss(st.theta(frames), box_to_theta(boxes, (64, 32)))
        opt.zero_grad(); loss.backward(); opt.step()
    st.eval()
    assert box_iou(theta_to_box(st.theta(frames), (64, 32)), boxes).mean() > raw + 0.05


def test_reid_training_resumes_exactly_and_evaluates(tiny, tmp_path):
    from vssl_nb.methods.reid import evaluate_reid, reid_chance, train_reid
    from vssl_nb.recipes import all_recipes
    from vssl_nb.train import TrainingInterrupted
    assert 'reid' in all_recipes()
    ds = load_mars(tiny[0])
    opts = dict(aggregator='trl', st2n=True, steps=6, P=4, K=2, seq_len=4, seed=3)
    full, hist, _ = train_reid(ds, **opts)

    class StopAt3:
        def on_fit_start(self, t): pass
        def on_log(self, t, row): pass
        def on_fit_end(self, t): pass
        def on_step_end(self, t, step, logs):
            if step == 3: t.request_stop('test')
    with pytest.raises(TrainingInterrupted): train_reid(ds, **opts, run_dir=tmp_path / 'run', callbacks=[StopAt3()])
    resumed, _, trainer = train_reid(ds, **opts, run_dir=tmp_path / 'run')
    assert trainer.start_step == 3
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()): assert torch.allclose(a.float(), b.float(), atol=1e-6)
    m = evaluate_reid(resumed.net, ds, seq_len=4)
    assert m['queries'] == len(ds.query) and 0 <= m['rank1'] <= m['rank20'] <= 1
    assert 0 < reid_chance(ds)['rank1'] < 0.5
    with pytest.raises(ValueError, match="'max'"): train_reid(ds, 'max', steps=1)


def test_encoder_weights_are_found_or_the_file_is_named(tmp_path):
    from vssl_nb.methods.reid import FrameEncoder, load_encoder_weights
    from vssl_nb.models import TinyBackbone3D
    torch.save(TinyBackbone3D().state_dict(), tmp_path / 'backbone.pt')
    assert load_encoder_weights(FrameEncoder('tiny3d'), tmp_path / 'backbone.pt')['tensors'] > 0
    with pytest.raises(ValueError, match='backbone.pt holds no weights for a resnet2d encoder'):
        load_encoder_weights(FrameEncoder('resnet2d'), tmp_path / 'backbone.pt')
    with pytest.raises(FileNotFoundError, match='no encoder weights at'): load_encoder_weights(FrameEncoder(), tmp_path / 'none.pt')


def test_reid_template_on_reid_tiny(vssl_env):
    "The experiments/reid template end to end on reid-tiny: a short TRL + ST²N run, the random-init reference, a bad aggregator."
    from conftest import vssl
    r = vssl('run', 'reid', '-p', 'steps', 8, '-p', 'P', 4, '-p', 'K', 2, '-p', 'st2n', 'true', '-p', 'threads', 1, '--run-id', 'trl',
             timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    run = vssl_env['runs'] / 'reid' / 'trl'
    m = json.loads((run / 'metrics.json').read_text())
    assert m['queries'] == 30 and m['train_ids'] == 12 and m['gallery_ids'] == 12 and m['train']['steps'] == 8
    assert 0 <= m['rank1'] <= m['rank5'] <= m['rank10'] <= m['rank20'] <= 1 and 0 < m['chance_rank1'] < 0.2
    assert 0 < m['iou_raw'] < 1 and 0 < m['iou_st2n'] < 1 and (run / 'backbone.pt').is_file()
    assert (vssl_env['data'] / 'synth-reid-tiny' / 'info' / 'query_IDX.mat').is_file()
    r = vssl('run', 'reid', '-p', 'steps', 0, '-p', 'aggregator', 'mean', '-p', 'threads', 1, '--run-id', 'rand', timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((vssl_env['runs'] / 'reid' / 'rand' / 'metrics.json').read_text())
    assert m['final_loss'] is None and 0 <= m['rank1'] <= 1
    r = vssl('run', 'reid', '-p', 'aggregator', 'max', '--run-id', 'bad', timeout=300)
    assert r.returncode == 1 and "unknown aggregator 'max'" in r.stderr
