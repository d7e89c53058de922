"""The synthetic world: determinism, the bundled data_samples, the scene-bias knob, the preset registry, the old module path,
ground truth vs the codec."""
import hashlib
import importlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from vssl_nb import codec
from vssl_nb.cli import main as vssl
from vssl_nb.world import presets as P
from vssl_nb.world.dataset import generate_dataset, load_ground_truth
from vssl_nb.world.presets import DEFAULT_SEED, preset_config, register_preset
from vssl_nb.world.spec import WorldConfig, typical_scene
from vssl_nb.world.truth import motion_error_on_actor

from conftest import ROOT

SAMPLES = ROOT / 'data_samples'


def tree_hashes(root: Path, only=None) -> dict:
    "sha256 of every file under `root` (optionally only the relative paths in `only`)."
    files = sorted(p for p in root.rglob('*') if p.is_file())
    out = {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    return {k: v for k, v in out.items() if only is None or k in only}


SMALL = dict(classes=('MoveLeft', 'RotateCW', 'ZigZag'), n_train=2, n_test=1, n_frames=20)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    cfg = preset_config('tiny', **SMALL)
    generate_dataset(cfg, tmp_path / 'a', seed=5, show_progress=False)
    generate_dataset(cfg, tmp_path / 'b', seed=5, workers=2, show_progress=False)  # workers must not change bytes
    generate_dataset(cfg, tmp_path / 'c', seed=6, show_progress=False)
    a, b, c = (tree_hashes(tmp_path / k) for k in 'abc')
    assert len(a) == 3 * 3 * 3 + 4  # mp4 + npz + json per video, 3 split/index files + metadata
    assert a == b
    mp4s = [k for k in a if k.endswith('.mp4')]
    assert all(a[k] != c[k] for k in mp4s), 'a different seed must give different videos'


def test_data_samples_is_the_tiny_preset_byte_for_byte(tmp_path, monkeypatch):
    assert (SAMPLES / 'metadata.json').is_file(), 'data_samples/ must hold the tiny preset (vssl synth --preset tiny --out data_samples)'
    meta = json.loads((SAMPLES / 'metadata.json').read_text())
    assert meta['preset'] == 'tiny' and meta['seed'] == DEFAULT_SEED
    monkeypatch.setenv('VSSL_PROGRESS', 'off')
    assert vssl(['synth', '--preset', 'tiny', '--out', str(tmp_path / 'tiny'), '--workers', '2']) == 0
    fresh = tree_hashes(tmp_path / 'tiny')
    committed = tree_hashes(SAMPLES, only=set(fresh))
    missing = sorted(set(fresh) - set(committed))
    assert not missing, f'data_samples/ lacks {missing[:5]}'
    differ = sorted(k for k in fresh if fresh[k] != committed[k])
    assert not differ, f'data_samples/ differs from a fresh `vssl synth --preset tiny` in {len(differ)} files, e.g. {differ[:5]}'
    size = sum(p.stat().st_size for p in SAMPLES.rglob('*') if p.is_file())
    assert size < 3e6, f'data_samples/ is {size / 1e6:.2f} MB, over 3 MB'


def test_split_files_follow_ucf101(tmp_path):
    cfg = preset_config('tiny', **SMALL)
    meta = generate_dataset(cfg, tmp_path, seed=0, show_progress=False)
    ind = [l.split() for l in (tmp_path / 'classInd.txt').read_text().splitlines()]
    assert ind == [['1', 'MoveLeft'], ['2', 'RotateCW'], ['3', 'ZigZag']]
    train = [l.split() for l in (tmp_path / 'trainlist01.txt').read_text().splitlines()]
    test = (tmp_path / 'testlist01.txt').read_text().splitlines()
    assert len(train) == 6 and len(test) == 3
    for path, label in train:
        cls = path.split('/')[0]
        assert ind[int(label) - 1][1] == cls and (tmp_path / path).is_file()
    assert all((tmp_path / p).is_file() and ' ' not in p for p in test)
    assert len(meta['videos']) == 9


@pytest.mark.parametrize('p', [0.0, 0.5, 0.9])
def test_scene_bias_matches_p(tmp_path, p):
    "Measured on generated files: P(typical scene) = p + (1-p)/n_scenes within 4 standard errors."
    cfg = WorldConfig(width=16, height=16, n_frames=2, n_train=15, n_test=0, scene_bias_train=p)
    generate_dataset(cfg, tmp_path, seed=11, show_progress=False)
    typical = {c: typical_scene(i, cfg).name for i, c in enumerate(cfg.classes)}
    gts = [json.loads(f.read_text()) for f in tmp_path.rglob('v_*.json')]
    assert len(gts) == 12 * 15
    hits = np.mean([g['scene'] == typical[g['action']] for g in gts])
    expect = p + (1 - p) / cfg.n_scenes
    se = np.sqrt(expect * (1 - expect) / len(gts))
    assert abs(hits - expect) <= 4 * se + 1e-9, f'p={p}: measured {hits:.3f}, expected {expect:.3f} +- {4 * se:.3f}'


def test_ground_truth_is_consistent_with_the_pixels(tmp_path):
    cfg = WorldConfig(n_frames=16, classes=('MoveRight', 'Grow', 'Circle'), n_train=1, n_test=0)
    generate_dataset(cfg, tmp_path, seed=2, show_progress=False)
    for v in json.loads((tmp_path / 'metadata.json').read_text())['videos']:
        g = load_ground_truth(tmp_path / v['video'])
        m = g['masks'] == 1
        assert m.any(axis=(1, 2)).all(), 'the actor is in view in every frame'
        ys, xs = np.nonzero(m[8])
        assert abs(xs.mean() - g['centers'][8, 0, 0]) < 2.5 and abs(ys.mean() - g['centers'][8, 0, 1]) < 2.5
        x0, y0, x1, y1 = g['bboxes'][8, 0]
        assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        half = np.array([g['width'], g['height']]) / 2
        step = (np.diff(g['centers'][:, 0], axis=0) + half) % (2 * half) - half   # the world wraps: centres live on a torus
        np.testing.assert_allclose(step, g['velocity'][1:, 0], atol=1e-3)
        if v['action'] == 'Grow': assert m[-1].sum() > 1.8 * m[0].sum()


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    (tmp_path / 'x.txt').write_text('mine')
    assert vssl(['synth', '--out', str(tmp_path)]) == 1
    assert 'not empty' in capsys.readouterr().err
    assert vssl(['synth', '--preset', 'huge', '--out', str(tmp_path / 'n')]) == 1
    assert vssl(['synth', '--classes', 'MoveLeft,Moonwalk', '--out', str(tmp_path / 'n')]) == 1
    assert 'Moonwalk' in capsys.readouterr().err


# --- the preset registry and the old module path -------------------------------------------------

@pytest.fixture
def registry():
    "The world's preset and kind registries, restored after the test (whatever it registered)."
    P.discover_world()
    saved = dict(P._PRESETS), dict(P._KINDS)
    yield P
    for table, old in zip((P._PRESETS, P._KINDS), saved): table.clear(); table.update(old)


def test_a_registered_preset_is_found_by_vssl_synth(registry, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('VSSL_PROGRESS', 'off')
    monkeypatch.setenv('COLUMNS', '200')   # the help text wraps at the terminal's width
    register_preset('test-three', dict(width=32, height=32, n_frames=8, classes=('MoveLeft', 'Grow', 'Circle'), n_train=1, n_test=1),
                    kind='actions', doc='three classes, two videos each')
    assert preset_config('test-three').classes == ('MoveLeft', 'Grow', 'Circle') and 'test-three' in P.PRESETS
    assert vssl(['synth', '--preset', 'test-three', '--out', str(tmp_path / 'a'), '--n-test', '0']) == 0
    meta = json.loads((tmp_path / 'a' / 'metadata.json').read_text())
    assert meta['preset'] == 'test-three' and len(meta['videos']) == 3 and meta['config']['width'] == 32
    @register_preset('test-factory', doc='a factory')            # the decorator form
    def _factory(**overrides): return WorldConfig(**{'width': 16, 'height': 16, 'n_frames': 4, 'classes': ('MoveUp',), **overrides})
    assert preset_config('test-factory', n_train=3).n_train == 3 and P.PRESETS['test-factory'].module == __name__
    capsys.readouterr()
    assert vssl(['synth', '--preset', 'test-thre', '--out', str(tmp_path / 'b')]) == 1
    err = capsys.readouterr().err
    assert "unknown preset 'test-thre'" in err and "did you mean 'test-three'" in err
    for name in ('tiny', 'small', 'scenebias', 'test-three', 'test-factory'): assert name in err, (name, err)
    assert vssl(['synth', '--help']) == 0
    out = capsys.readouterr().out
    assert 'tiny, small, scenebias' in out and 'test-three' in out


def test_preset_names_and_kinds_are_checked(registry):
    with pytest.raises(ValueError, match='taken'): register_preset('tiny', dict(n_train=1))      # another module's name
    with pytest.raises(ValueError, match='n_trian'): register_preset('test-typo', dict(n_trian=1))
    with pytest.raises(ValueError, match='name'): register_preset('no spaces', dict(n_train=1))
    register_preset('test-nokind', dict(x=1), kind='nokind')
    with pytest.raises(ValueError, match="unknown data kind 'nokind'"): preset_config('test-nokind')
    with pytest.raises(ValueError, match='no option frames'): preset_config('tiny', frames=3)


def test_the_old_module_path_still_works_and_warns():
    old = importlib.import_module('vssl_nb.synth')
    from vssl_nb.world import dataset, spec
    with pytest.warns(DeprecationWarning, match='vssl_nb.world.dataset.generate_dataset'):
        assert old.generate_dataset is dataset.generate_dataset
    with pytest.warns(DeprecationWarning, match='vssl_nb.world.spec.WorldConfig'):
        from vssl_nb.synth import WorldConfig as OldConfig
    assert OldConfig is spec.WorldConfig
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        assert old.preset_config('tiny') == preset_config('tiny') and old.PRESETS['tiny'].params['n_train'] == 5
    with pytest.raises(AttributeError): old.no_such_name


# --- ground-truth velocity vs the codec's motion field -------------------------------------------

def motion_agreement(codec, root: Path, videos: list, block: int = 16, per_frame: bool = False) -> np.ndarray:
    "|codec flow - ground-truth actor velocity| (px) on blocks wholly inside the actor, over `videos` (flow per frame of time if `per_frame`)."
    errs = []
    for v in videos:
        mf = codec.CompressedVideo(root / v['video']).motion_field(block=block, per_frame=per_frame)
        errs.append(motion_error_on_actor(root / v['video'], np.asarray(mf.flow), np.asarray(mf.valid), block))
    return np.concatenate(errs)


def _moving_set(root, **kw):
    cfg = WorldConfig(width=128, height=128, n_frames=24, classes=('MoveLeft', 'MoveRight', 'MoveUp', 'MoveDown', 'ZigZag'),
                        n_train=2, n_test=0, sprite_size=(0.25, 0.3), **kw)
    return generate_dataset(cfg, root, seed=3, show_progress=False)['videos']


def test_codec_motion_agrees_with_ground_truth_on_textured_sprites(tmp_path):
    """With one reference frame and no B-frames every vector is a one-frame displacement, so the codec's
    field must match the true velocity (measured 2026-11: median 0.08 px, p90 0.29 px)."""
    err = motion_agreement(codec, tmp_path, _moving_set(tmp_path, bframes=0, refs=1))
    assert len(err) > 100, f'too few blocks inside sprites ({len(err)})'
    med, p90 = float(np.median(err)), float(np.quantile(err, 0.9))
    print(f'codec motion vs ground truth (P-frames, 1 ref): median error {med:.3f} px, p90 {p90:.3f} px over {len(err)} blocks')
    assert med < 1.0, f'median |flow - true velocity| = {med:.3f} px'
    assert p90 < 1.0, f'p90 |flow - true velocity| = {p90:.3f} px'


def test_codec_motion_with_b_frames_is_displacement_to_the_reference(tmp_path):
    """With B-frames and 3 references (world v1's encoder) a raw vector is the displacement to its reference, 1-3 frames
    away: at world v2's speeds (several px per frame) its median error is a few pixels (measured 2.26 px). Divided by the
    distance to the reference (`per_frame=True`) it is a per-frame velocity again (measured median 0.12 px)."""
    videos = _moving_set(tmp_path, bframes=2, refs=3)
    raw, per = motion_agreement(codec, tmp_path, videos), motion_agreement(codec, tmp_path, videos, per_frame=True)
    print(f'codec motion vs ground truth (B-frames, 3 refs): median error raw {np.median(raw):.3f} px, per frame {np.median(per):.3f} px')
    assert np.median(raw) > 1.0, 'a raw B-frame-stream vector spans more than one frame'
    assert np.median(per) < 0.5 and np.median(per) < np.median(raw)


# --- sound (world/12_sound): the soundtrack, muxed as AAC beside the pictures ----------------------

def test_sound_tiny_preset_writes_aac_beside_h264_with_audio_ground_truth(tmp_path, monkeypatch):
    import av
    monkeypatch.setenv('VSSL_PROGRESS', 'off')
    assert vssl(['synth', '--preset', 'sound-tiny', '--out', str(tmp_path / 'a')]) == 0
    assert vssl(['synth', '--preset', 'sound-tiny', '--out', str(tmp_path / 'b'), '--workers', '2']) == 0
    assert vssl(['synth', '--preset', 'sound-tiny', '--out', str(tmp_path / 'c'), '--seed', '1']) == 0
    a, b, c = (tree_hashes(tmp_path / k) for k in 'abc')
    assert a == b, 'the same seed must give the same bytes, whatever the workers'
    mp4s = [k for k in a if k.endswith('.mp4')]
    assert len(mp4s) == 6 and all(a[k] != c[k] for k in mp4s)
    meta = json.loads((tmp_path / 'a' / 'metadata.json').read_text())
    assert meta['config']['sound'] is True and meta['sound']['sample_rate'] == 16000 and meta['sound']['codec'] == 'aac'
    assert set(meta['sound']['typical_ambience']) == {'MoveUp', 'RotateCW', 'Bounce'}
    for k in mp4s:
        with av.open(str(tmp_path / 'a' / k)) as cont:
            v, s = cont.streams.video[0], cont.streams.audio[0]
            assert (v.codec_context.name, s.codec_context.name, s.rate, s.codec_context.channels) == ('h264', 'aac', 16000, 1)
        g = load_ground_truth(tmp_path / 'a' / k)
        assert g['audio']['sample_rate'] == 16000 and g['audio']['n_samples'] == 32000
        assert g['audio_pitch'].shape == (32,) and g['audio_events'].ndim == 2 and g['audio_events'].shape[1] == 3


def test_the_muxed_sound_is_the_soundtrack_of_the_saved_ground_truth(tmp_path):
    "Decoded AAC == soundtrack() recomputed from the .npz/.json beside it, and its events are where the ground truth says."
    from vssl_nb.audio import read_audio
    from vssl_nb.world.sound import soundtrack
    from vssl_nb.world.spec import plan_dataset
    cfg = preset_config('sound-tiny')
    generate_dataset(cfg, tmp_path, seed=3, show_progress=False)
    for spec in plan_dataset(cfg, 3):
        g = load_ground_truth(tmp_path / spec.relpath)
        gt = {k: g[k] for k in ('velocity', 'camera', 'angle', 'scale', 'labels')}
        wave, arrays, desc = soundtrack(spec, cfg, gt, g)
        assert desc == g['audio']
        np.testing.assert_array_equal(arrays['audio_events'], g['audio_events'])
        heard = read_audio(tmp_path / spec.relpath)
        assert np.corrcoef(heard, wave)[0, 1] > 0.95, spec.name
        kinds = set(g['audio_events'][:, 1].astype(int).tolist())
        if spec.action == 'Bounce': assert 0 in kinds, 'a bounce hits the floor'
        if spec.action == 'RotateCW': assert kinds == {1}, 'clockwise: rising quarter-turn chirps only'
        if spec.action == 'MoveUp': assert (g['audio_pitch'] > g['audio']['base_pitch']).all()


def test_sound_is_off_by_default_and_leaves_silent_worlds_as_they_were(tmp_path, monkeypatch):
    import av
    cfg = preset_config('tiny', **SMALL)
    assert not cfg.sound and 'sound' not in cfg.to_dict() and 'sample_rate' not in cfg.to_dict()
    meta = generate_dataset(cfg, tmp_path / 'silent', seed=0, show_progress=False)
    assert 'sound' not in meta and 'ambience' not in meta['videos'][0]
    with av.open(str(tmp_path / 'silent' / meta['videos'][0]['video'])) as c: assert not c.streams.audio
    monkeypatch.setenv('VSSL_PROGRESS', 'off')   # --sound turns it on for any actions preset
    assert vssl(['synth', '--preset', 'tiny', '--classes', 'Grow', '--n-train', '1', '--n-test', '0', '--sound',
                 '--out', str(tmp_path / 'loud')]) == 0
    with av.open(str(tmp_path / 'loud' / 'Grow' / 'v_Grow_g01_c01.mp4')) as c: assert c.streams.audio[0].rate == 16000


def test_bad_sound_options_are_errors():
    with pytest.raises(ValueError, match='sample_rate'): WorldConfig(sound=True, sample_rate=15000)
    with pytest.raises(ValueError, match='ambience_bias_test'): WorldConfig(ambience_bias_test=-0.1)
    with pytest.raises(ValueError, match='audio_bitrate'): WorldConfig(audio_bitrate=100)
