"""vssl_nb.extract: cache format round trip, load_or_extract, the `vssl extract` command (skip, redo, shards, failures)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vssl_nb.cli import main
from vssl_nb.codec import CompressedVideo, synthetic_pan
from vssl_nb.extract import (cache_file_for, extract, extraction_params, find_videos, load_or_extract, parse_shard,
                             read_extraction, save_extraction)


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / 'videos'; (d / 'sub').mkdir(parents=True)
    synthetic_pan(d / 'a.mp4', 'h264', shift=(1, 0), n_frames=16)
    synthetic_pan(d / 'sub' / 'b.avi', 'mpeg4', shift=(0, 2), n_frames=16)
    (d / 'notes.txt').write_text('not listed: not a video extension')
    return d


def test_round_trip(tmp_path):
    path = synthetic_pan(tmp_path / 'p.mp4', shift=(2, 1), n_frames=14)
    ex = CompressedVideo(path).extract(keyframe_size=64)
    f = save_extraction(ex, tmp_path / 'c.npz', extraction_params(keyframe_size=64))
    back = read_extraction(f)
    assert back.frame_types == ex.frame_types and back.info == ex.info and back.mv_available
    assert np.array_equal(back.keyframes, ex.keyframes) and np.array_equal(back.keyframe_indices, ex.keyframe_indices)
    assert np.abs(back.flow - ex.flow).max() <= 0.125 and np.array_equal(back.valid, ex.valid)
    assert back.accumulated.shape == ex.accumulated.shape and back.keyframes.shape[1] == 64
    with pytest.raises(ValueError, match='not a readable extraction'):
        (tmp_path / 'junk.npz').write_bytes(b'junk'); read_extraction(tmp_path / 'junk.npz')


def test_load_or_extract_caches_and_redoes_on_change(tmp_path):
    path = synthetic_pan(tmp_path / 'p.mp4', n_frames=12)
    a = load_or_extract(path, tmp_path / 'cache')
    f = cache_file_for(path, tmp_path / 'cache')
    assert f.exists()
    mtime = f.stat().st_mtime_ns
    b = load_or_extract(path, tmp_path / 'cache')
    assert f.stat().st_mtime_ns == mtime and np.array_equal(a.flow, b.flow) and np.array_equal(a.keyframes, b.keyframes)
    load_or_extract(path, tmp_path / 'cache', block=8)  # other parameters: another entry
    synthetic_pan(path, n_frames=12, shift=(1, 1))  # changed content: another entry
    c = load_or_extract(path, tmp_path / 'cache')
    assert len(list((tmp_path / 'cache').glob('*.npz'))) == 3 and not np.array_equal(a.flow, c.flow)


def test_default_cache_dir_follows_env(tmp_path, vssl_env):
    path = synthetic_pan(tmp_path / 'p.mp4', n_frames=8)
    load_or_extract(path)
    assert len(list((vssl_env['cache'] / 'extract').glob('*.npz'))) == 1


def test_find_videos_and_shards(folder, tmp_path):
    vids = find_videos(folder)
    assert [p.name for p in vids] == ['a.mp4', 'b.avi']
    lst = tmp_path / 'list.txt'
    lst.write_text(f"# my list\nvideos/a.mp4\n{folder / 'sub' / 'b.avi'}\n")
    assert find_videos(lst) == [folder / 'a.mp4', folder / 'sub' / 'b.avi']
    assert parse_shard('1/2') == (1, 2) and parse_shard(None) == (0, 1)
    for bad in ('2/2', 'x', '1/0'):
        with pytest.raises(ValueError): parse_shard(bad)


def test_cli_extract_skip_resume_failures(folder, tmp_path, vssl_env, capsys):
    out = tmp_path / 'cache'
    assert main(['extract', str(folder), '--out', str(out), '--workers', '2', '--keyframe-size', '32']) == 0
    man = json.loads((out / 'manifest.json').read_text())
    assert man['counts'] == {'ok': 2, 'cached': 0, 'failed': 0} and man['finished']
    files = sorted(out.glob('*.npz'))
    assert len(files) == 2 and read_extraction(files[0]).keyframes.shape[1] == 32
    # second run: nothing to do
    assert main(['extract', str(folder), '--out', str(out), '--keyframe-size', '32']) == 0
    assert json.loads((out / 'manifest.json').read_text())['counts']['cached'] == 2
    # interrupted run: one entry missing -> only that one is redone
    files[0].unlink()
    assert main(['extract', str(folder), '--out', str(out), '--keyframe-size', '32']) == 0
    assert json.loads((out / 'manifest.json').read_text())['counts'] == {'ok': 1, 'cached': 1, 'failed': 0}
    # a bad file is reported, the others still done, exit status 1
    (folder / 'broken.mp4').write_bytes(os.urandom(5000))
    assert main(['extract', str(folder), '--out', str(out), '--keyframe-size', '32', '--workers', '2']) == 1
    man = json.loads((out / 'manifest.json').read_text())
    bad = [r for r in man['videos'] if r['status'] == 'failed']
    assert len(bad) == 1 and bad[0]['video'].endswith('broken.mp4') and bad[0]['error']
    assert man['counts']['cached'] == 2
    assert 'broken.mp4' in capsys.readouterr().err


def test_cli_shards_and_errors(folder, tmp_path, vssl_env, capsys):
    out = tmp_path / 'cache'
    assert main(['extract', str(folder), '--out', str(out), '--shard', '0/2', '--no-keyframes', '--quiet']) == 0
    assert main(['extract', str(folder), '--out', str(out), '--shard', '1/2', '--no-keyframes', '--quiet']) == 0
    m0 = json.loads((out / 'manifest-0of2.json').read_text()); m1 = json.loads((out / 'manifest-1of2.json').read_text())
    assert [len(m['videos']) for m in (m0, m1)] == [1, 1] and m0['videos'][0]['video'] != m1['videos'][0]['video']
    ex = read_extraction(out / m0['videos'][0]['file'])
    assert ex.keyframes is None and ex.flow is not None
    assert main(['extract', str(tmp_path / 'nope'), '--out', str(out)]) == 1
    assert main(['extract', str(folder), '--shard', '5/2']) == 1
    err = capsys.readouterr().err
    assert 'no such file' in err and 'shard' in err


def test_console_script(folder, tmp_path):
    exe = shutil.which('vssl') or pytest.skip('vssl console script not on PATH')
    r = subprocess.run([exe, 'extract', str(folder), '--out', str(tmp_path / 'c'), '--quiet'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert '2 extracted' in r.stdout


def test_real_clips_folder(shared_videos, tmp_path):
    lst = tmp_path / 'list.txt'
    lst.write_text('\n'.join(str(shared_videos / n) for n in ('makeup_320x240_mpeg4.avi', 'arm_wrestling_340x256_h264.mp4')))
    assert extract(str(lst), out=str(tmp_path / 'c'), workers=2, keyframe_size=64, quiet=True) == 0
    ex = load_or_extract(shared_videos / 'arm_wrestling_340x256_h264.mp4', tmp_path / 'c', keyframe_size=64, per_frame=True)
    assert ex.keyframe_indices.tolist() == [0, 187, 206, 230, 268] and ex.flow.shape == (280, 2, 16, 22)
    m4 = load_or_extract(shared_videos / 'makeup_320x240_mpeg4.avi', tmp_path / 'c', keyframe_size=64, per_frame=True)
    assert 'B-frames' in m4.mv_note and not m4.motion.reliable.all()


def test_full_size_keyframes_cached_as_planes(shared_videos, tmp_path):
    "Full-size keyframes are stored as the decoder's 4:2:0 planes (half of RGB) and read back as the RGB a decode gives."
    path = shared_videos / 'arm_wrestling_340x256_h264.mp4'
    ex = load_or_extract(path, tmp_path / 'c')
    idx, rgb = CompressedVideo(path).keyframes()
    assert ex.keyframe_format == 'rgb24' and np.array_equal(ex.keyframe_indices, idx) and np.array_equal(ex.keyframes, rgb)
    with np.load(cache_file_for(path, tmp_path / 'c')) as z:
        meta = json.loads(z['meta'].tobytes())
        assert meta['keyframe_format'] == 'yuv420p' and z['keyframes'].shape == (5, 256 * 3 // 2, 340)
        assert z['keyframes'].nbytes * 2 == rgb.nbytes


def test_worker_memory_setup(tmp_path):
    "The worker set-up (mallopt + huge pages for the heap) runs, leaves the heap THP-eligible where the kernel allows, and extraction works after it."
    code = ("from vssl_nb.extract import _tune_worker_memory, extract_one, extraction_params\n"
            "from vssl_nb.codec import synthetic_pan\nimport sys\n_tune_worker_memory()\n"
            "p = synthetic_pan(sys.argv[1] + '/p.mp4', n_frames=8)\n"
            "print(extract_one(p, sys.argv[1] + '/c', extraction_params())['status'])\n"
            "smaps = open('/proc/self/smaps').read().split('[heap]', 1)\n"
            "print(next((l.split()[1] for l in smaps[1].splitlines() if l.startswith('THPeligible')), '?') if len(smaps) > 1 else '?')")
    r = subprocess.run([sys.executable, '-c', code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    status, eligible = r.stdout.split()
    assert status == 'ok'
    thp = Path('/sys/kernel/mm/transparent_hugepage/enabled')
    if thp.exists() and '[never]' not in thp.read_text(): assert eligible == '1'


def test_deflated_motion_is_smaller_and_reads_the_same(tmp_path):
    path = synthetic_pan(tmp_path / 'p.mp4', shift=(2, 1), n_frames=24)
    ex = CompressedVideo(path).extract(pixels='none', accumulate=False)
    plain = save_extraction(ex, tmp_path / 'plain.npz', extraction_params(pixels='none'), compress=False)
    small = save_extraction(ex, tmp_path / 'small.npz', extraction_params(pixels='none'))  # deflated by default
    assert small.stat().st_size < plain.stat().st_size / 2
    a, b = read_extraction(plain), read_extraction(small)
    assert np.array_equal(a.flow, b.flow) and np.array_equal(a.valid, b.valid) and a.frame_types == b.frame_types
    assert main(['extract', str(path), '--out', str(tmp_path / 'c'), '--no-compress', '--quiet']) == 0
    (entry,) = (tmp_path / 'c').glob('*.npz')
    assert read_extraction(entry).flow.shape == ex.flow.shape and entry.stat().st_size > small.stat().st_size


def test_a_video_that_kills_its_worker_fails_alone(folder, tmp_path, monkeypatch):
    "A worker that dies (here: os._exit on one video, as a decoder crash or an OOM kill would) fails only that video."
    import vssl_nb.extract as E
    real = E._extract_to
    def crashing(video_path, *a, **k):
        if video_path.name == 'a.mp4': os._exit(3)
        return real(video_path, *a, **k)
    monkeypatch.setattr(E, '_extract_to', crashing)  # fork: the workers inherit the patch
    vids = find_videos(folder) + [synthetic_pan(tmp_path / f'more{i}.mp4', n_frames=8, seed=i + 1) for i in range(3)]
    recs = {Path(r['video']).name: r for r in E.extract_videos(vids, tmp_path / 'c', extraction_params(), workers=2, quiet=True)}
    assert recs['a.mp4']['status'] == 'failed' and 'died' in recs['a.mp4']['error'] and 'exit code 3' in recs['a.mp4']['error']
    assert all(r['status'] == 'ok' for n, r in recs.items() if n != 'a.mp4'), recs
    manifest = json.loads((tmp_path / 'c' / 'manifest.json').read_text())
    assert manifest['finished'] and manifest['counts'] == {'ok': 4, 'cached': 0, 'failed': 1}


def test_entry_cut_short_is_redone(folder, tmp_path):
    "Cache entries are not fsync'd; one a power cut left partial or empty is found and redone, never trusted."
    out = tmp_path / 'c'
    assert extract(str(folder), out=str(out), quiet=True) == 0
    entries = sorted(out.glob('*.npz'))
    whole = entries[0].read_bytes()
    entries[0].write_bytes(whole[: len(whole) // 2]); entries[1].write_bytes(b'')
    assert extract(str(folder), out=str(out), quiet=True) == 0
    m = json.loads((out / 'manifest.json').read_text())
    assert m['counts'] == {'ok': 2, 'cached': 0, 'failed': 0} and entries[0].read_bytes() == whole
    entries[0].write_bytes(whole[:100])
    video = next(Path(r['video']) for r in m['videos'] if r['file'] == entries[0].name)
    assert load_or_extract(video, out, per_frame=True).n_frames == 16 and entries[0].read_bytes() == whole


def test_per_frame_is_its_own_cache_entry(tmp_path):
    "Raw and per-frame motion never share a cache entry; a raw entry keeps the key it had before per-frame motion existed."
    assert extraction_params() == dict(format=2, block=16, keyframe_size=None, pixels='keyframes')  # the old raw key
    assert extraction_params(per_frame=True) == dict(extraction_params(), per_frame=True)
    path = synthetic_pan(tmp_path / 'p.mp4', shift=(3, 1), n_frames=16, bframes=2)
    raw_file, pf_file = cache_file_for(path, tmp_path / 'c'), cache_file_for(path, tmp_path / 'c', per_frame=True)
    assert raw_file != pf_file
    raw = load_or_extract(path, tmp_path / 'c')
    pf = load_or_extract(path, tmp_path / 'c', per_frame=True)
    assert raw_file.exists() and pf_file.exists() and len(list((tmp_path / 'c').glob('*.npz'))) == 2
    assert not raw.motion.per_frame and pf.motion.per_frame and not np.array_equal(raw.flow, pf.flow)
    fresh = CompressedVideo(path).motion_field(per_frame=True)
    assert np.abs(fresh.flow - pf.flow).max() <= 1 / 8 and np.array_equal(fresh.valid, pf.valid)
    assert load_or_extract(path, tmp_path / 'c', per_frame=True).motion.per_frame  # read back from its own entry
    ex = CompressedVideo(path).extract(pixels='none')
    with pytest.raises(ValueError, match='raw motion'):  # an extraction is never written under the other kind's key
        save_extraction(ex, tmp_path / 'x.npz', extraction_params(pixels='none', per_frame=True))


def test_cli_per_frame(folder, tmp_path, vssl_env):
    "`vssl extract` stores per-frame motion (what ClipDataset reads) unless told `--raw-motion`."
    out = tmp_path / 'cache'
    assert main(['extract', str(folder), '--out', str(out), '--no-keyframes', '--quiet']) == 0
    man = json.loads((out / 'manifest.json').read_text())
    assert man['params']['per_frame'] is True and man['counts']['ok'] == 2
    assert all(read_extraction(out / r['file']).motion.per_frame for r in man['videos'])
    assert main(['extract', str(folder), '--out', str(out), '--no-keyframes', '--raw-motion', '--quiet']) == 0  # raw: other entries
    man = json.loads((out / 'manifest.json').read_text())
    assert 'per_frame' not in man['params'] and man['counts']['ok'] == 2 and len(list(out.glob('*.npz'))) == 4
    assert not any(read_extraction(out / r['file']).motion.per_frame for r in man['videos'])
