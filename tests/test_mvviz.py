"""Motion-vector visualisation: colour convention, figure contents, overlay export, the explorer shell.

The pure functions are tested on synthetic fields (no codec needed); the file-level functions on a
pan encoded here with PyAV (always) and on the real sample clips (skipped where they are absent).
"""
import numpy as np
import pytest
from PIL import Image

import vssl_nb.mvviz as mv
from vssl_nb.mvviz import (MotionClip, arrow_segments, clip_max_magnitude, colorwheel_legend, explore_motion,
                           export_overlay, flow_to_color, frame_figure, motion_figure, plot_arrows, plot_frame_types,
                           plot_trajectories, toy_motion_clip, trace_back)


def rgb(dx, dy, m=None):
    return flow_to_color(np.array([[[dx, dy]]], np.float32), m)[0, 0].astype(int)


def hue_deg(c):
    "HSV hue of an RGB triple, degrees."
    import colorsys
    return 360 * colorsys.rgb_to_hsv(*(np.asarray(c) / 255))[0]


# ---- colour convention ------------------------------------------------------------------------
@pytest.mark.parametrize('d, name, lo, hi', [((1, 0), 'red (+x right)', -20, 20), ((-1, 0), 'cyan (-x left)', 170, 215),
                                           ((0, 1), 'yellow (+y down)', 40, 70), ((0, -1), 'violet-blue (-y up)', 240, 285)])
def test_direction_hues(d, name, lo, hi):
    h = hue_deg(rgb(*d, m=1.0))
    h = h - 360 if h > 180 and lo < 0 else h
    assert lo <= h <= hi, f"{d} should be {name}, got hue {h:.0f} deg ({rgb(*d, m=1.0)})"


def test_full_saturation_and_white_at_rest():
    np.testing.assert_array_equal(rgb(0, 0, 1.0), [255, 255, 255])
    np.testing.assert_array_equal(rgb(0, 0), [255, 255, 255])            # an all-zero field is white too
    assert rgb(1, 0, 1.0).min() == 0 and rgb(1, 0, 1.0).max() == 255      # pure hue at max magnitude
    assert np.ptp(rgb(0.2, 0, 1.0)) < np.ptp(rgb(0.8, 0, 1.0))            # saturation grows with speed
    assert (rgb(2, 0, 1.0) < rgb(1, 0, 1.0) + 1).all() and rgb(2, 0, 1.0).max() < 255   # beyond max: darkened


def test_one_scale_per_clip():
    "The same vector gets the same colour in every frame when the clip-wide max is used, whatever else moves."
    calm, busy = np.zeros((4, 4, 2), np.float32), np.zeros((4, 4, 2), np.float32)
    calm[0, 0] = busy[0, 0] = (2, 0)
    busy[3, 3] = (8, 0)
    per_frame = flow_to_color(calm)[0, 0], flow_to_color(busy)[0, 0]
    assert not np.array_equal(*per_frame)                                  # per-frame scaling lies
    clip = np.stack([calm, busy]).transpose(0, 3, 1, 2)                     # (T, 2, h, w)
    m = clip_max_magnitude(clip, percentile=100)
    assert m == pytest.approx(8)
    np.testing.assert_array_equal(flow_to_color(calm, m)[0, 0], flow_to_color(busy, m)[0, 0])


def test_clip_max_magnitude_ignores_invalid_and_handles_stillness():
    flow = np.zeros((2, 2, 3, 3), np.float32)
    flow[1, 0, 0, 0] = 100                    # a wild vector in a block marked invalid
    valid = np.ones((2, 3, 3), bool); valid[1, 0, 0] = False
    assert clip_max_magnitude(flow, valid) == 1.0          # nothing valid moves: a neutral scale
    with pytest.raises(ValueError, match=r'\(T, 2, h, w\)'): clip_max_magnitude(np.zeros((3, 3, 2)))


def test_flow_to_color_shapes_and_errors():
    assert flow_to_color(np.zeros((2, 5, 6, 2))).shape == (2, 5, 6, 3)
    assert flow_to_color(np.full((3, 3, 2), np.nan)).tolist() == [[[255] * 3] * 3] * 3   # NaN counts as no motion
    with pytest.raises(ValueError, match=r'\(\.\.\., 2\)'): flow_to_color(np.zeros((4, 3)))
    with pytest.raises(ValueError, match='max_magnitude'): flow_to_color(np.zeros((2, 2, 2)), -1)


def test_legend_wheel():
    img = colorwheel_legend(65)
    assert img.shape == (65, 65, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[32, 32], [255, 255, 255])      # centre: no motion
    np.testing.assert_array_equal(img[0, 0], [255, 255, 255])        # outside the disc
    assert abs(hue_deg(img[32, 63]) % 360) < 20 or hue_deg(img[32, 63]) > 340   # right edge red
    assert 40 <= hue_deg(img[63, 32]) <= 70                            # bottom (+y) yellow


# ---- figures ----------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def toy():
    return toy_motion_clip(n=9)


def test_arrow_count_and_subsampling(toy):
    from matplotlib.quiver import Quiver
    import matplotlib.pyplot as plt
    for step in (1, 2, 3):
        fig = plot_arrows(toy, 3, step=step)
        q = next(c for c in fig.axes[0].collections if isinstance(c, Quiver))
        assert q.N == toy.valid[3][::step, ::step].sum()
        plt.close(fig)
    tails, tips = arrow_segments(toy.flow[3], toy.valid[3], toy.block)
    np.testing.assert_allclose(tips - tails, np.moveaxis(toy.flow[3], 0, -1)[toy.valid[3]])
    assert ((tips - toy.block / 2) % toy.block == 0).all()               # tips on block centres


def test_plotly_slider_steps_equal_frames(toy):
    fig = motion_figure(toy, view='both', max_frames=None)
    assert len(fig.frames) == len(toy) == len(fig.layout.sliders[0].steps)
    assert [s.label for s in fig.layout.sliders[0].steps] == [str(i) for i in toy.indices]
    assert all(len(f.data) == len(fig.data) for f in fig.frames)
    assert len(motion_figure(toy, max_frames=4).frames) == 4
    # the slider needs no kernel: every step animates to a frame stored in the figure's JSON
    names = {f.name for f in fig.frames}
    assert all(s.method == 'animate' and s.args[0][0] in names for s in fig.layout.sliders[0].steps)


def test_plotly_arrow_count_and_holes(toy):
    for view in ('arrows', 'both', 'side'):
        fig = frame_figure(toy, 3, view=view)
        arrows = [tr for tr in fig.data if tr.meta and 'arrows' in tr.meta]
        assert len(arrows) == 1 and arrows[0].meta['arrows'] == toy.valid[3].sum()
        holes = [tr for tr in fig.data if tr.name == 'no vector'][0]
        assert len(holes.x) == (~toy.valid[3]).sum()
    i_frame = frame_figure(toy, 0, view='both')
    assert [tr for tr in i_frame.data if tr.name == 'no vector'][0].x in (None, ()) or \
        len([tr for tr in i_frame.data if tr.name == 'no vector'][0].x) == 0          # no x all over an I-frame
    assert 'I-frame' in i_frame.layout.title.text
    assert len([tr for tr in frame_figure(toy, 3, view='side').data if tr.type == 'image']) == 3
    with pytest.raises(ValueError, match='unknown view'): frame_figure(toy, 3, view='nope')
    with pytest.raises(IndexError): frame_figure(toy, len(toy))


def test_timeline_and_trajectories(toy):
    fig = plot_frame_types('IPBBPBBIPB', vectors_per_frame=np.arange(10))
    assert len(fig.axes) == 2 and len(fig.axes[0].patches) == 10
    gops = [l for l in fig.axes[0].lines if l.get_linestyle() == '--']
    assert len(gops) == 2                                                     # two I-frames open two GOPs
    fig = plot_trajectories(toy, 8, step=1)                                   # frame 8 is a B-frame: start at P 6
    assert list(fig.times) == [0, 3, 6]
    bg = np.hypot(*(fig.paths[-1] - fig.paths[0]).T)
    assert np.median(bg) == pytest.approx(12.0)
    with pytest.raises(ValueError, match='start <= end'): trace_back(toy.flow, toy.valid, 2, 5, [[1, 1]])


def test_motion_clip_validates(toy):
    with pytest.raises(ValueError, match='flow must be'): MotionClip(toy.frames, toy.flow[:2])
    with pytest.raises(ValueError, match='does not cover'): MotionClip(toy.frames, toy.flow[:, :, :2, :2])
    with pytest.raises(ValueError, match='frame types'): MotionClip(toy.frames, toy.flow, frame_types='IP')


# ---- explorer shell ---------------------------------------------------------------------------
def test_explorer_follows_its_widgets(toy):
    ex = explore_motion(toy)
    assert 'frame 0 (I)' in ex.figure.layout.title.text
    ex.slider.value = 5
    assert 'frame 5 (B)' in ex.figure.layout.title.text
    assert ex.play.max == ex.slider.max == len(toy) - 1
    ex.view.value = 'color'
    assert not any(tr.meta and 'arrows' in tr.meta for tr in ex.figure.data)
    ex.view.value = 'arrows'
    assert any(tr.meta and 'arrows' in tr.meta for tr in ex.figure.data)
    ex.max_magnitude.value = 3.0
    assert 'max |v| = 3.0' in ex.figure.layout.title.text
    assert ex.block.disabled and ex.picker.disabled     # an in-memory clip has one block size and no folder


# ---- from files -------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def pan_mp4(tmp_path_factory):
    from vssl_nb.codec import synthetic_pan
    return synthetic_pan(tmp_path_factory.mktemp('pan') / 'pan.mp4', shift=(2, 1), n_frames=24, bframes=2)


def test_export_overlay_mp4_and_gif(pan_mp4, tmp_path):
    import av
    clip = mv.load_motion_clip(pan_mp4, block=16)
    assert len(clip) == 24 and clip.frame_types[0] == 'I' and 'B' in clip.frame_types
    for view in ('arrows', 'color', 'both'):
        out = export_overlay(clip, tmp_path / f'{view}.mp4', view=view)
        with av.open(str(out)) as c:
            assert c.streams.video[0].codec_context.name == 'h264'
            frames = [f.to_ndarray(format='rgb24') for f in c.decode(video=0)]
        assert len(frames) == len(clip)
        assert frames[0].shape[:2] == clip.frames.shape[1:3]
    gif = export_overlay(pan_mp4, tmp_path / 'pan.gif', view='both', block=8)   # from the file, another block size
    assert Image.open(gif).n_frames == 24
    with pytest.raises(ValueError, match='H.264'): mv.write_video(clip.frames, tmp_path / 'x.avi')


def test_odd_sized_frames_are_padded(tmp_path):
    import av
    frames = np.random.default_rng(0).integers(0, 255, (5, 33, 47, 3), dtype=np.uint8)
    out = mv.write_video(frames, tmp_path / 'odd.mp4', fps=10)
    with av.open(str(out)) as c:
        got = [f.to_ndarray(format='rgb24') for f in c.decode(video=0)]
    assert len(got) == 5 and got[0].shape == (34, 48, 3)


def test_pan_vectors_point_the_right_way(pan_mp4):
    "The window moves (+2, +1) px/frame, so content moves (-2, -1): P-frames' median vector points left and up."
    clip = mv.load_motion_clip(pan_mp4, block=16)
    p = [t for t, c in enumerate(clip.frame_types) if c == 'P']
    span = np.array([t - mv.last_anchor(clip.frame_types, t - 1) for t in p])
    med = np.array([np.median(clip.flow[t][:, clip.valid[t]], axis=1) for t in p]) / span[:, None]
    np.testing.assert_allclose(np.median(med, 0), [-2, -1], atol=0.25)
    assert hue_deg(flow_to_color(np.array([[[-2.0, -1.0]]]), 3)[0, 0]) > 180      # cyan-blue side of the wheel


def test_real_clip(shared_videos):
    clip = mv.load_motion_clip(shared_videos / 'arm_wrestling_340x256_h264.mp4', block=16, max_frames=40)
    assert clip.size == (340, 256) and clip.flow.shape == (40, 2, 16, 22)
    assert clip.frame_types.startswith('IP') and not clip.valid[0].any()
    assert clip.vectors_per_frame[1] > 100
    fig = motion_figure(clip, view='arrows', max_frames=10)
    assert len(fig.layout.sliders[0].steps) == 10
    ex = explore_motion(shared_videos, max_frames=20)
    assert [p.name for p in ex.videos][0] == 'arm_wrestling_340x256_h264.mp4'
    ex.block.value = 8
    assert ex.clip.flow.shape[2:] == (32, 43) and ex.clip.frames is ex._cache[str(ex.videos[0]), 16].frames
