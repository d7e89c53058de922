"""vssl_nb.codec against a plain single-threaded PyAV decode, a synthetic pan with known motion, and bad input."""
import warnings
from pathlib import Path

import av
import numpy as np
import pytest

from vssl_nb.codec import (MV_DTYPE, CompressedVideo, MotionVectorsUnavailable, VideoDecodeError, _open_writer, _texture,
                           accumulate_motion, reencode, synthetic_pan, vectors_to_field)

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
