"""vssl_nb.codec against a plain single-threaded PyAV decode, a synthetic pan with known motion, and bad input."""
import gc
import os
import subprocess
import sys
import textwrap
import warnings

import av
import numpy as np
import pytest

from vssl_nb.world.dataset import generate_dataset
from vssl_nb.world.presets import PRESETS, preset_config
from vssl_nb.world.truth import motion_error_on_actor
from vssl_nb.codec import (MV_DTYPE, CompressedVideo, MotionVectorsUnavailable, VideoDecodeError, _open_writer, _texture,
                           accumulate_motion, decode_frames, frame_vectors, planes_to_rgb, reencode, synthetic_pan,
                           reference_distances, vectors_to_field)

PICT = {1: 'I', 2: 'P', 3: 'B', 4: 'P'}
CLIPS = ['arm_wrestling_340x256_h264.mp4', 'basketball_426x240_h264.mp4', 'makeup_320x240_mpeg4.avi',
         'big_buck_bunny_mpeg4_part2.mp4', 'pool_cleaning_340x256_h264.mp4']


def plain_decode(path):
    "Reference: PyAV's own loop, single-threaded, vectors exported; (types, vectors per frame)."
    types, mvs = [], []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type, s.thread_count = 'SLICE', 1
        s.codec_context.options = {'flags2': '+export_mvs'}
        for f in c.decode(s):
            types.append(PICT[int(f.pict_type)])
            sd = f.side_data.get('MOTION_VECTORS')
            mvs.append(sd.to_ndarray() if sd is not None else np.empty(0, MV_DTYPE))
    return ''.join(types), mvs


@pytest.mark.parametrize('name', CLIPS)
def test_matches_plain_pyav_decode(shared_videos, name):
    path = shared_videos / name
    types, mvs = plain_decode(path)
    v = CompressedVideo(path)
    raw = v.raw_motion_vectors()  # our pass skips loop filter / IDCT: vectors must not change
    assert v.frame_types == types
    assert len(raw) == len(mvs)
    for k, (a, b) in enumerate(zip(raw, mvs)):
        assert a.dtype == b.dtype and np.array_equal(a, b), f'{name}: frame {k} vectors differ'
    idx, kf = v.keyframes()
    assert idx.tolist() == [i for i, t in enumerate(types) if t == 'I']
    assert kf.dtype == np.uint8 and kf.shape == (len(idx), v.info.height, v.info.width, 3)
    assert v.info.n_frames == len(types)


def test_keyframes_exact_and_info(shared_videos):
    v = CompressedVideo(shared_videos / 'arm_wrestling_340x256_h264.mp4')
    assert (v.info.codec, v.info.width, v.info.height, round(v.info.fps)) == ('h264', 340, 256, 28)
    assert v.info.mv_support and abs(v.info.duration - 10) < 0.1
    idx, kf = v.keyframes()
    assert idx.tolist() == [0, 187, 206, 230, 268]  # 206 is a non-IDR I-frame
    assert np.array_equal(kf, v.frames(idx))  # fast path (non-intra frames skipped) == full decode pixels
    ex = v.extract(pixels='keyframes', keyframe_size=128)
    assert ex.keyframes.shape == (5, 128, 170, 3) and ex.keyframe_indices.tolist() == idx.tolist()


@pytest.mark.parametrize('name', ['basketball_426x240_h264.mp4', 'makeup_320x240_mpeg4.avi'])
def test_two_extractions_identical(shared_videos, name):
    a = CompressedVideo(shared_videos / name).extract()
    b = CompressedVideo(shared_videos / name).extract()
    assert a.frame_types == b.frame_types
    for x, y in [(a.flow, b.flow), (a.valid, b.valid), (a.accumulated, b.accumulated), (a.keyframes, b.keyframes)]:
        assert x.dtype == y.dtype and np.array_equal(x, y)


def test_motion_field_shapes(shared_videos):
    v = CompressedVideo(shared_videos / 'basketball_426x240_h264.mp4')  # 426 is not a multiple of 16
    for block in (16, 8):
        mf = v.motion_field(block)
        assert mf.flow.shape == (300, 2, -(-240 // block), -(-426 // block)) and mf.flow.dtype == np.float32
        assert mf.valid.shape == (300, -(-240 // block), -(-426 // block)) and mf.block == block
        i_frames = np.array([t == 'I' for t in v.frame_types])
        assert not mf.valid[i_frames].any() and mf.valid[~i_frames].mean() > 0.5
        assert not mf.flow[~mf.valid[:, None].repeat(2, 1)].any()  # invalid cells are 0
    acc = v.accumulated_motion()
    assert acc.shape == mf.flow.shape[:1] + (2, 15, 27) and not acc[i_frames].any()


def test_mpeg4_b_frames_flagged(shared_videos):
    ex = CompressedVideo(shared_videos / 'makeup_320x240_mpeg4.avi').extract(pixels='none')
    b = np.array([t == 'B' for t in ex.frame_types])
    assert b.sum() == 108 and ex.mv_available
    assert not ex.motion.reliable[b].any() and ex.motion.reliable[~b].all()
    assert not ex.valid[b].any() and 'B-frames' in ex.mv_note


@pytest.mark.parametrize('codec', ['h264', 'mpeg4'])
def test_synthetic_pan_recovered(tmp_path, codec):
    shift = (3, -2)  # window moves right 3, up 2 per frame: content moves (-3, +2)
    path = synthetic_pan(tmp_path / f'pan_{codec}.mp4', codec, shift=shift, n_frames=20, size=(176, 144))
    v = CompressedVideo(path)
    mf = v.motion_field(16)
    assert v.frame_types[0] == 'I' and set(v.frame_types[1:12]) == {'P'}
    flow, valid = mf.flow[:, :, 1:-1, 1:-1], mf.valid[:, 1:-1, 1:-1]  # border cells see new content
    for t, ty in enumerate(v.frame_types):
        if ty != 'P': continue
        assert valid[t].mean() > 0.8, (t, valid[t].mean())
        for c, truth in enumerate((-shift[0], -shift[1])):
            med = np.median(flow[t, c][valid[t]])
            assert abs(med - truth) <= 0.25, (codec, t, c, med, truth)
        frac = np.mean(np.abs(flow[t, 0][valid[t]] + shift[0]) <= 0.25)
        assert frac > 0.9, (codec, t, frac)
    acc = v.accumulated_motion()
    assert abs(np.median(acc[5, 0, 3:-3, 3:-3]) - 5 * -shift[0]) <= 0.25  # 5 frames after the I-frame


def test_vectors_to_field_by_hand():
    def mv(source, w, h, dst_x, dst_y, mx, my, scale=4):
        a = np.zeros(1, MV_DTYPE)
        a[0] = (source, w, h, dst_x, dst_y, dst_x, dst_y, 0, mx, my, scale)
        return a
    # two 8x8 halves of one 16x16 cell (area-weighted mean), a bi-predicted block (both rows averaged)
    f0 = np.concatenate([mv(-1, 8, 8, 4, 4, -8, 0), mv(-1, 8, 16, 12, 8, -4, 0), mv(-1, 16, 16, 24, 8, 4, 4), mv(1, 16, 16, 24, 8, 4, 4)])
    flow, valid = vectors_to_field([f0], 16, 32, 16)
    assert np.isclose(flow[0, 0, 0, 0], (2 * 1 + 1 * 2) / 3)  # 8x8 (1 unit-area) moved 2, 8x16 (2) moved 1
    assert np.allclose(flow[0, :, 0, 1], [0, 0])  # past (-1,-1)*(-1) and future (+1,+1)*(+1) average to 0
    assert valid.all()
    # a 16x16 block split over four 8x8 cells
    flow8, valid8 = vectors_to_field([mv(-1, 16, 16, 8, 8, -8, 4)], 16, 16, 8)
    assert valid8.all() and np.allclose(flow8[0, 0], 2) and np.allclose(flow8[0, 1], -1)
    assert accumulate_motion(np.ones((3, 2, 1, 1), np.float32), 'IPP')[:, 0, 0, 0].tolist() == [0, 1, 2]


def test_mpeg4_reencode_and_b_frames(tmp_path):
    src = synthetic_pan(tmp_path / 'src.mp4', 'h264', n_frames=26, size=(160, 96))
    dst = reencode(src, tmp_path / 'out.avi', codec='mpeg4', gop=12, bframes=0, size=(120, 72))
    v = CompressedVideo(dst)
    assert (v.info.codec, v.info.width, v.info.height) == ('mpeg4', 120, 72)
    assert v.frame_types == ('I' + 'P' * 11) * 2 + 'IP'
    b = CompressedVideo(reencode(src, tmp_path / 'b.mp4', codec='h264', gop=8, bframes=2))
    assert 'B' in b.frame_types and b.frame_types[0] == 'I' and b.frame_types[8] == 'I'


def test_codec_without_vectors_says_so(tmp_path):
    path = tmp_path / 'clip.mkv'
    out, st = _open_writer(path, 'mjpeg', 64, 48, 10, 1, 0, None)
    for t in range(4):
        for p in st.encode(av.VideoFrame.from_ndarray(_texture(48, 64, t), format='rgb24')): out.mux(p)
    for p in st.encode(): out.mux(p)
    out.close()
    v = CompressedVideo(path)
    assert not v.info.mv_support and 'mjpeg' in v.info.mv_note
    ex = v.extract()
    assert not ex.mv_available and ex.flow is None and ex.accumulated is None and 'no motion vectors' in ex.mv_note
    assert ex.keyframes.shape == (4, 48, 64, 3)
    with pytest.raises(MotionVectorsUnavailable, match='clip.mkv'): v.motion_field()
    with pytest.raises(MotionVectorsUnavailable): v.raw_motion_vectors()


def _bad_inputs(tmp_path):
    (tmp_path / 'empty.mp4').write_bytes(b'')
    (tmp_path / 'random.mp4').write_bytes(np.random.default_rng(1).bytes(64_000))
    (tmp_path / 'notes.txt').write_text('hello\n' * 200)
    (tmp_path / 'notes.mp4').write_text('hello\n' * 200)
    av.VideoFrame.from_ndarray(_texture(32, 32), format='rgb24').to_image().save(tmp_path / 'picture.png')
    av.VideoFrame.from_ndarray(_texture(32, 32), format='rgb24').to_image().save(tmp_path / 'picture.jpg')
    with av.open(str(tmp_path / 'audio.m4a'), 'w') as c:
        s = c.add_stream('aac', rate=16000)
        for i in range(8):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format='fltp', layout='mono')
            f.sample_rate, f.pts = 16000, i * 1024
            for p in s.encode(f): c.mux(p)
        for p in s.encode(): c.mux(p)
    whole = synthetic_pan(tmp_path / 'whole.mp4', n_frames=30).read_bytes()
    (tmp_path / 'head_only.mp4').write_bytes(whole[:300])
    return [tmp_path / n for n in ('empty.mp4', 'random.mp4', 'notes.txt', 'notes.mp4', 'picture.png', 'picture.jpg',
                                   'audio.m4a', 'head_only.mp4', 'missing.mp4')] + [tmp_path]


@pytest.mark.timeout(60)
def test_bad_inputs_raise_video_decode_error(tmp_path):
    bad = tmp_path / 'bad'; bad.mkdir()
    for p in _bad_inputs(bad):
        with pytest.raises(VideoDecodeError) as e:
            CompressedVideo(p).extract()
        assert str(p) in str(e.value) and e.value.path == p, str(e.value)


@pytest.mark.timeout(60)
def test_truncated_video_returns_what_decodes(tmp_path):
    data = synthetic_pan(tmp_path / 'whole.mp4', n_frames=40).read_bytes()
    cut = tmp_path / 'cut.mp4'
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.warns(UserWarning, match='cut.mp4.*truncated'):
        ex = CompressedVideo(cut).extract()
    assert 5 < ex.n_frames < 40 and ex.flow.shape[0] == ex.n_frames
    cut_mkv = tmp_path / 'cut.mkv'
    mkv = reencode(tmp_path / 'whole.mp4', tmp_path / 'whole.mkv', codec='h264', gop=10).read_bytes()
    cut_mkv.write_bytes(mkv[: len(mkv) // 2])
    with warnings.catch_warnings(record=True):
        warnings.simplefilter('always')
        assert 0 < CompressedVideo(cut_mkv).extract().n_frames < 40


def test_frames_selection(tmp_path):
    v = CompressedVideo(synthetic_pan(tmp_path / 'p.mp4', n_frames=12))
    allf = v.frames()
    assert allf.shape == (12, 128, 192, 3)
    assert np.array_equal(v.frames([5, 2]), allf[[5, 2]])
    with pytest.raises(IndexError, match='p.mp4'): v.frames([40])
    ex = v.extract(pixels='all')
    assert np.array_equal(ex.frames, allf) and np.array_equal(ex.keyframes, allf[ex.keyframe_indices])


def _live_frames() -> int:
    return sum(type(o) is av.VideoFrame for o in gc.get_objects())


def test_frame_vectors_keep_no_frame_alive(shared_videos):
    "Reading vectors must not tie the decoded frame (its pixels) to the result: memory stays flat over a long clip."
    path = shared_videos / 'big_buck_bunny_mpeg4_part2.mp4'  # 337 frames of 1280x720
    gc.collect()
    alive, n = [], 0
    for i, f in decode_frames(path, vectors=True, exact_pixels='none'):
        refs = sys.getrefcount(f)
        v = frame_vectors(f)
        assert sys.getrefcount(f) == refs, 'frame_vectors left a reference to the frame'
        assert v.base is None or not isinstance(v.base, memoryview) or v.base.obj is not f
        del f
        n += 1
        if i % 50 == 25: alive.append(_live_frames())
    assert n == 337 and max(alive) <= 3, alive  # PyAV's frame.side_data cycle kept dozens alive


def test_raw_motion_vectors_memory_is_what_it_returns(shared_videos, tmp_path):
    "Peak memory of a vectors pass grows with the vectors it returns, not with the decoded frames (~1.4 MB each here)."
    if not os.path.exists('/proc/self/clear_refs'): pytest.skip('needs Linux /proc to measure peak memory')
    code = textwrap.dedent('''
        import sys
        from vssl_nb.codec import CompressedVideo
        def status():  # kB; ru_maxrss would carry the parent's peak over fork + exec
            return {k: int(v.split()[0]) for k, v in (l.split(':', 1) for l in open('/proc/self/status')) if k in ('VmHWM', 'VmRSS')}
        v = CompressedVideo(sys.argv[1])
        open('/proc/self/clear_refs', 'w').write('5')  # reset the peak to the current RSS
        before = status()['VmRSS']
        vecs = v.raw_motion_vectors()
        print((status()['VmHWM'] - before) * 1024, sum(a.nbytes for a in vecs))''')
    r = subprocess.run([sys.executable, '-c', code, str(shared_videos / 'big_buck_bunny_mpeg4_part2.mp4')],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    grown, returned = map(int, r.stdout.split())
    assert grown < returned + 64 * 2**20, (grown / 2**20, returned / 2**20)  # before the fix: ~250 MB over


@pytest.fixture(scope='module')
def edge_vectors(shared_videos):
    "The first 40 frames' vectors of a 426-px-wide clip (blocks over the frame edge), and its height and width."
    v = CompressedVideo(shared_videos / 'basketball_426x240_h264.mp4')
    return v.raw_motion_vectors()[:40], v.info.height, v.info.width


@pytest.mark.parametrize('block', [16, 8, 12])
def test_vectors_to_field_matches_unit_by_unit_pooling(edge_vectors, block):
    "The vectorised pooling equals the definition: every 4x4 unit inside the frame adds its vector to the cell of its centre."
    vecs, H, W = edge_vectors
    flow, valid = vectors_to_field(vecs, H, W, block)
    gh, gw = -(-H // block), -(-W // block)
    sums, count = np.zeros((len(vecs), 2, gh, gw)), np.zeros((len(vecs), gh, gw))
    for t, a in enumerate(vecs):
        for r in a.tolist():  # plain ints, in MV_DTYPE's field order
            src, w, h, _, _, dx, dy, _, mx, my, scale = r
            d = np.array([mx, my]) / scale * (1 if src > 0 else -1)
            x0, y0 = dx - w // 2, dy - h // 2
            for uy in range(y0 + 2, y0 + h, 4):
                for ux in range(x0 + 2, x0 + w, 4):
                    if 0 <= ux < W and 0 <= uy < H:
                        sums[t, :, uy // block, ux // block] += d; count[t, uy // block, ux // block] += 1
    assert np.array_equal(valid, count > 0)
    ref = np.where(count[:, None] > 0, sums / np.maximum(count, 1)[:, None], 0)
    assert np.allclose(flow, ref, atol=1e-5)


def test_native_keyframes_convert_to_the_same_rgb(shared_videos):
    "keyframe_format='native' keeps 4:2:0 planes (half the bytes); Extraction.rgb() gives the RGB a decode gives, bit for bit."
    for name in ('arm_wrestling_340x256_h264.mp4', 'makeup_320x240_mpeg4.avi'):
        v = CompressedVideo(shared_videos / name)
        rgb = v.extract(pixels='keyframes', accumulate=False)
        nat = v.extract(pixels='keyframes', accumulate=False, keyframe_format='native')
        H, W = v.info.height, v.info.width
        assert nat.keyframe_format == v.info.pix_fmt and nat.keyframes.shape == (len(nat.keyframe_indices), H * 3 // 2, W)
        assert np.array_equal(nat.rgb().keyframes, rgb.keyframes) and rgb.rgb() is rgb
        assert np.array_equal(nat.flow, rgb.flow)
    small = v.extract(keyframe_size=64, keyframe_format='native')  # resized keyframes are always RGB
    assert small.keyframe_format == 'rgb24' and small.keyframes.shape[-1] == 3
    with pytest.raises(ValueError, match='keyframe_format'): v.extract(keyframe_format='yuv')
    with pytest.raises(ValueError, match='planes_to_rgb'): planes_to_rgb(nat.keyframes, 'rgb24')


def test_construction_keeps_few_files_open(shared_videos):
    "A CompressedVideo keeps the container it opened for its first decode, but only a few objects at a time do."
    from vssl_nb import codec
    path = shared_videos / 'makeup_320x240_mpeg4.avi'
    vids = [CompressedVideo(path) for _ in range(3 * codec._MAX_KEPT_OPEN)]
    assert sum(v._opened is not None for v in vids) <= codec._MAX_KEPT_OPEN
    types = {v.frame_types for v in vids[:: codec._MAX_KEPT_OPEN - 1]}  # with and without a kept container
    assert len(types) == 1 and all(v._opened is None for v in vids[:: codec._MAX_KEPT_OPEN - 1])
    with CompressedVideo(path) as v: pass
    assert v._opened is None


# --- motion per frame of time ------------------------------------------------------------------

def _median_vectors(mf):
    "Per frame, the median (dx, dy) over the valid cells away from the border (NaN where none)."
    inner = mf.valid[:, 1:-1, 1:-1]
    return np.array([[np.median(mf.flow[t, c, 1:-1, 1:-1][inner[t]]) for c in range(2)] if inner[t].any() else [np.nan] * 2
                     for t in range(len(mf))])


def test_reference_distances_by_hand():
    past, future = reference_distances('IBBPBBP')  # no flags: I/P are the references, B-frames are not
    assert past.tolist() == [0, 1, 2, 3, 1, 2, 3] and future.tolist() == [0, 2, 1, 0, 2, 1, 0]
    assert [d.tolist() for d in reference_distances('IPPIP')] == [[0, 1, 1, 0, 1], [0, 0, 0, 0, 0]]
    # x264's B-pyramid: I B b B P, the middle b a reference, decoded I P b B B
    past, future = reference_distances('IBBBP', references=[1, 0, 1, 0, 1], decode_order=[0, 3, 2, 4, 1])
    assert past.tolist() == [0, 1, 2, 1, 4] and future.tolist() == [0, 1, 2, 1, 0]
    # two B-frames before the next GOP's I-frame point at it; B-frames at the end of a stream cut short have no future reference
    assert reference_distances('IPBBI')[1].tolist() == [0, 0, 2, 1, 0]
    assert reference_distances('IPBB')[1].tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match='reference flags'): reference_distances('IBP', references=[1, 0])


def test_vectors_to_field_per_frame_by_hand():
    def mv(source, w, h, dst_x, dst_y, mx, my, scale=4):
        a = np.zeros(1, MV_DTYPE)
        a[0] = (source, w, h, dst_x, dst_y, dst_x, dst_y, 0, mx, my, scale)
        return a
    none = np.empty(0, MV_DTYPE)
    # frame 1 of I B B P: past vector over 1 frame, future vector over 2 frames, both (2, -1) px per frame; frame 3 over 3 frames
    vecs = [none, np.concatenate([mv(-1, 16, 16, 8, 8, -8, 4), mv(1, 16, 16, 8, 8, 16, -8)]), none, mv(-1, 16, 16, 8, 8, -24, 12)]
    raw, _ = vectors_to_field(vecs, 16, 16, 16)
    per, valid = vectors_to_field(vecs, 16, 16, 16, per_frame=True, frame_types='IBBP')
    assert raw[1, :, 0, 0].tolist() == [3, -1.5] and raw[3, :, 0, 0].tolist() == [6, -3]
    assert per[1, :, 0, 0].tolist() == [2, -1] and per[3, :, 0, 0].tolist() == [2, -1] and valid[[1, 3]].all()
    same, _ = vectors_to_field(vecs, 16, 16, 16, per_frame=True, distances=([0, 1, 2, 3], [0, 2, 1, 0]))
    assert np.array_equal(same, per)
    with pytest.raises(ValueError, match='frame types'): vectors_to_field(vecs, 16, 16, 16, per_frame=True)
    with pytest.raises(ValueError, match='distances'): vectors_to_field(vecs, 16, 16, 16, per_frame=True, distances=([1], [1]))


@pytest.mark.parametrize('suffix', ['mp4', 'ts'])  # MP4: length-prefixed NAL units; MPEG-TS: Annex B start codes
def test_per_frame_pan_with_b_frames(tmp_path, suffix):
    "The issue's case: a pan of exactly (3, 1) px per frame with B-frames (and x264's B-pyramid) is (3, 1) per frame, every frame."
    path = synthetic_pan(tmp_path / f'pan_b.{suffix}', 'h264', shift=(3, 1), n_frames=24, bframes=2)
    v = CompressedVideo(path)
    raw, per = v.motion_field(16), v.motion_field(16, per_frame=True)
    types = v.frame_types
    assert 'B' in types and not raw.per_frame and per.per_frame
    pred, p = np.array([t != 'I' for t in types]), np.array([t == 'P' for t in types])
    mr, mp = _median_vectors(raw), _median_vectors(per)
    err = np.abs(mp[pred] - [-3, -1]).max()
    assert err <= 0.25, (types, mp.tolist())
    past, _ = reference_distances(types)
    assert (past[p] >= 2).all() and np.abs(mr[p] - past[p, None] * np.array([-3, -1])).max() <= 0.25  # raw: pan x distance
    assert (np.abs(mr[p]) >= 2 * np.array([3, 1]) - 0.25).all()
    for chunk in (1, 3):  # pooled in chunks while decoding: a B-frame waits for its future reference, same result
        small = CompressedVideo(path, chunk=chunk).motion_field(16, per_frame=True)
        assert np.array_equal(small.flow, per.flow) and np.array_equal(small.valid, per.valid)
    ex = CompressedVideo(path).extract(pixels='keyframes', per_frame=True)
    assert np.array_equal(ex.flow, per.flow) and ex.params['per_frame'] and ex.accumulated.shape == ex.flow.shape
    acc = np.median(ex.accumulated[:8, 0, 3:-3, 3:-3], axis=(1, 2))  # accumulating per-frame motion counts each frame once
    assert np.abs(acc - (-3) * np.arange(8)).max() <= 0.25, acc


def test_per_frame_is_raw_on_p_only_one_reference(tmp_path):
    for codec in ('h264', 'mpeg4'):
        v = CompressedVideo(synthetic_pan(tmp_path / f'pan_{codec}.mp4', codec, shift=(2, 1), n_frames=16))
        assert 'B' not in v.frame_types and 'P' in v.frame_types
        a, b = v.motion_field(16), v.motion_field(16, per_frame=True)
        assert np.array_equal(a.flow, b.flow) and np.array_equal(a.valid, b.valid)


def _preset_world(name):
    "The preset's own config, one video per class, forced to P-only with one reference if it has B-frames or several references."
    cfg = preset_config(name, n_train=1, n_test=0)
    forced = {}
    if cfg.bframes or cfg.refs != 1: forced.update(bframes=0, refs=1)
    if cfg.width * cfg.height * cfg.n_frames * len(cfg.classes) > 64 * 64 * 48 * 12:  # keep the test short
        forced.update(n_frames=min(cfg.n_frames, 32), classes=cfg.classes[:6])
    return preset_config(name, n_train=1, n_test=0, **forced), forced


# the sound presets render and encode their pictures with the same code as the silent ones (covered here); their soundtracks
# are tested in test_audio/test_synth. sound-tiny's 3 classes x 32 frames give too few actor cells for a stable median.
@pytest.mark.parametrize('preset', [name for name, p in PRESETS.items() if p.kind == 'actions' and not name.startswith('sound')])
def test_per_frame_matches_synthetic_ground_truth(tmp_path, preset):
    "Per-frame field vs the synthetic world's true per-frame velocity of the actor: median error <= 0.25 px, P-only ref=1."
    cfg, forced = _preset_world(preset)
    meta = generate_dataset(cfg, tmp_path, show_progress=False, name=preset)
    block = 8  # the presets' frames are small: few 16-px cells lie wholly inside the actor
    errs = []
    for rec in meta['videos']:
        path = tmp_path / rec['video']
        v = CompressedVideo(path)
        mf = v.motion_field(block, per_frame=True)
        errs.append(motion_error_on_actor(path, mf.flow, mf.valid, block))
    e = np.concatenate(errs)
    used = (f"preset {preset!r}: {cfg.width}x{cfg.height}, {cfg.n_frames} frames, {len(cfg.classes)} classes, bframes={cfg.bframes}, "
            f"refs={cfg.refs}, gop={cfg.gop}, crf={cfg.crf}" + (f" (forced: {forced})" if forced else " (the preset's own settings)"))
    print(f'{used}: median error {np.median(e):.3f} px, p90 {np.percentile(e, 90):.2f} px over {len(e)} cells')
    assert len(e) >= 100, f'only {len(e)} actor cells measured; {used}'
    assert np.median(e) <= 0.25, f'median error {np.median(e):.3f} px (p90 {np.percentile(e, 90):.2f}) over {len(e)} cells; {used}'


@pytest.mark.parametrize('name', ['basketball_426x240_h264.mp4', 'makeup_320x240_mpeg4.avi'])
def test_per_frame_on_real_clips(shared_videos, name):
    "Per frame differs from raw exactly on the frames whose references are more than one frame away; deterministic."
    v = CompressedVideo(shared_videos / name)
    raw, per = v.motion_field(16), v.motion_field(16, per_frame=True)
    assert per.flow.shape == raw.flow.shape and np.array_equal(per.valid, raw.valid) and np.array_equal(per.reliable, raw.reliable)
    assert np.array_equal(CompressedVideo(shared_videos / name).motion_field(16, per_frame=True).flow, per.flow)
    types = v.frame_types
    past, future = reference_distances(types)  # without B-pyramid flags: an upper bound of which frames can change
    adjacent = np.array([t == 'P' and past[i] == 1 for i, t in enumerate(types)])
    assert adjacent.any() and np.array_equal(per.flow[adjacent], raw.flow[adjacent])
    far = np.array([t == 'P' and past[i] > 1 for i, t in enumerate(types)]) & per.valid.any(axis=(1, 2))
    assert far.any()
    mag_raw, mag_per = raw.magnitude()[far][per.valid[far]], per.magnitude()[far][per.valid[far]]
    assert np.median(mag_per) < 0.6 * np.median(mag_raw)  # P-frames two or more frames from their anchor shrink


def test_codec_does_not_depend_on_the_synthetic_world():
    "The codec is a lower layer than the synthetic world that checks it."
    r = subprocess.run([sys.executable, '-c', "import sys, vssl_nb.codec; print(any(m == 'vssl_nb.synth' or m.startswith('vssl_nb.world') for m in sys.modules))"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == 'False', r.stdout + r.stderr
