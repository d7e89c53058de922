"""The audio path: reading a file's sound with PyAV, clip windows, the errors for bad input, log-mel, k-means."""
import av
import numpy as np
import pytest
import torch

from vssl_nb.audio import (AudioError, AudioRateMismatch, MelSpec, NoAudioStream, audio_info, clip_audio, clip_window, hz_to_mel,
                           kmeans, load_track, log_mel, mel_filterbank, mel_to_hz, read_audio)
from vssl_nb.core import DataFormatError
from vssl_nb.world.encode import encode_h264

SR = 16000


def corrupt_audio(src, dst, seed: int = 0):
    "Copy `src` with every AAC packet's bytes replaced by random bytes in place: the file's structure intact, its audio corrupt."
    b = bytearray(src.read_bytes())
    with av.open(str(src)) as c: spans = [(p.pos, p.size) for p in c.demux(audio=0) if p.size and p.pos is not None and p.pos >= 0]
    assert spans
    rng = np.random.default_rng(seed)
    for pos, size in spans: b[pos:pos + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(b))


@pytest.fixture(scope='module')
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp('media')
    frames = np.zeros((32, 64, 64, 3), np.uint8)
    tone = (0.2 * np.sin(2 * np.pi * 1000 * np.arange(2 * SR) / SR)).astype(np.float32)
    tone[SR:SR + 10] = 0.9   # a click at 1.0 s
    m = dict(tone=tone, ok=d / 'ok.mp4', silent=d / 'silent.mp4', r22=d / 'r22.mp4', corrupt=d / 'corrupt.mp4', text=d / 'notes.mp4')
    m['ok'].write_bytes(encode_h264(frames, audio=tone))
    m['silent'].write_bytes(encode_h264(frames))
    m['r22'].write_bytes(encode_h264(frames, audio=(0.2 * np.sin(2 * np.pi * 1000 * np.arange(44100) / 22050)).astype(np.float32),
                                     sample_rate=22050))
    corrupt_audio(m['ok'], m['corrupt'])
    m['text'].write_text('not a video\n')
    return m


def test_read_whole_track_and_header(media):
    info = audio_info(media['ok'])
    assert (info.codec, info.sample_rate, info.channels) == ('aac', SR, 1) and abs(info.duration - 2.0) < 1e-6
    x = read_audio(media['ok'])
    assert x.dtype == np.float32 and x.shape == (2 * SR,)
    assert np.abs(x - media['tone']).max() < 0.05


def test_clip_window_lines_up_with_frames(media):
    assert clip_window(np.arange(8, 24), 16) == (0.5, 1.5)
    w = clip_audio(media['ok'], np.arange(8, 24))
    assert w.shape == (SR,)
    click = int(np.argmax(np.abs(w - media['tone'][SR // 2:SR // 2 + SR])))
    assert abs(click - SR // 2) <= 16, click   # the click at 1.0 s, 0.5 s into the window, within 1 ms
    late = read_audio(media['ok'], start=1.25, duration=0.5)   # seeks first
    assert np.abs(late - media['tone'][20000:28000]).max() < 0.05
    strided = clip_audio(media['ok'], np.arange(0, 32, 2), n_frames=31)
    assert strided.shape == (31 * 1000,)


def test_clip_past_the_end_is_zero_only_past_the_last_frame(media):
    w = clip_audio(media['ok'], np.minimum(np.arange(24, 40), 31), n_frames=16)
    assert w.shape == (SR,) and np.abs(w[SR // 2:]).max() == 0.0 and np.abs(w[:SR // 2]).max() > 0.1


def test_decoded_track_gives_the_same_windows(media):
    tr = load_track(media['ok'])
    for frames, n in ((np.arange(8, 24), None), (np.arange(0, 32, 2), 31), (np.minimum(np.arange(24, 40), 31), 16), (np.arange(16), 16)):
        np.testing.assert_array_equal(tr.window(frames, n), clip_audio(media['ok'], frames, n))


def test_no_audio_stream_is_an_error_naming_the_file(media):
    for f in (lambda: read_audio(media['silent'], duration=1), lambda: clip_audio(media['silent'], np.arange(16)),
              lambda: load_track(media['silent']), lambda: audio_info(media['silent'])):
        with pytest.raises(NoAudioStream, match='silent.mp4: no audio stream'): f()


def test_sample_rate_mismatch_is_an_error_unless_resampling(media):
    with pytest.raises(AudioRateMismatch, match=r'r22\.mp4: audio at 22050 Hz, 16000 Hz asked for'): read_audio(media['r22'], duration=1)
    with pytest.raises(AudioRateMismatch, match='r22.mp4'): load_track(media['r22'])
    x = read_audio(media['r22'], duration=1.5, resample=True)
    assert x.shape == (24000,)
    spec = np.abs(np.fft.rfft(x[2000:18000]))
    assert abs(np.argmax(spec) * SR / 16000 - 1000) <= 2   # still a 1 kHz tone after resampling


def test_corrupt_audio_stream_is_an_error_naming_the_file(media):
    with pytest.raises(AudioError, match='corrupt.mp4: corrupt audio stream'): read_audio(media['corrupt'], duration=1)
    with pytest.raises(AudioError, match='corrupt.mp4'): load_track(media['corrupt'])


def test_other_bad_input(media, tmp_path):
    with pytest.raises(AudioError, match='nothing.mp4: no such file'): read_audio(tmp_path / 'nothing.mp4')
    with pytest.raises(AudioError, match='notes.mp4'): read_audio(media['text'])
    with pytest.raises(AudioError, match=r'ok\.mp4: audio ends at'): read_audio(media['ok'], start=1.5, duration=1.0)
    with pytest.raises(ValueError, match='duration'): read_audio(media['ok'], duration=-1)
    assert issubclass(AudioError, DataFormatError)


def test_mel_filterbank_and_log_mel():
    fb = mel_filterbank()
    assert fb.shape == (64, 257) and float(fb.max()) == pytest.approx(1.0, abs=0.05)
    edges = mel_to_hz(np.linspace(hz_to_mel(60), hz_to_mel(8000), 66))
    f = np.fft.rfftfreq(512, 1 / SR)
    inside = torch.from_numpy((f >= edges[1]) & (f <= edges[-2]))
    torch.testing.assert_close(fb.sum(0)[inside], torch.ones(int(inside.sum())), atol=1e-5, rtol=0)
    np.testing.assert_allclose(mel_to_hz(hz_to_mel([0.0, 440.0, 8000.0])), [0.0, 440.0, 8000.0], atol=1e-6)
    with pytest.raises(ValueError, match='fmin'): mel_filterbank(fmin=9000)
    spec = MelSpec()
    centre = edges[1:-1]
    t = torch.arange(SR) / SR
    for hz in (250, 1000, 3000, 6000):
        m = log_mel(torch.sin(2 * np.pi * hz * t), spec)
        assert m.shape == (64, 101)
        assert int(m.mean(-1).argmax()) == int(np.abs(centre - hz).argmin()), hz
    assert log_mel(torch.zeros(2, 3, SR)).shape == (2, 3, 64, 101)
    assert torch.isfinite(log_mel(torch.zeros(SR))).all()


@pytest.mark.parametrize('backend', ['sklearn', 'faiss'])
def test_kmeans_recovers_blobs_is_deterministic_and_refills_empty_clusters(backend):
    from sklearn.metrics import normalized_mutual_info_score as nmi
    if backend == 'faiss': pytest.importorskip('faiss')
    rng = np.random.default_rng(0)
    c = rng.standard_normal((6, 32)) * 6
    truth = np.repeat(np.arange(6), 40)
    x = (c[truth] + rng.standard_normal((240, 32))).astype(np.float32)
    r = kmeans(x, 6, seed=1, backend=backend)
    assert r['backend'] == backend and nmi(truth, r['labels']) > 0.9 and r['centres'].shape == (6, 32)
    np.testing.assert_array_equal(kmeans(x, 6, seed=1, backend=backend)['labels'], r['labels'])
    np.testing.assert_array_equal(kmeans(torch.from_numpy(x), 6, seed=1, backend=backend)['labels'], r['labels'])
    dup = np.repeat(np.eye(3, dtype=np.float32), 4, axis=0)   # 3 distinct points: 5 clusters cannot all be non-empty by Lloyd
    r = kmeans(dup, 5, seed=0, backend=backend)
    assert np.bincount(r['labels'], minlength=5).min() >= 1 and r['empty'] >= 1
    with pytest.raises(ValueError, match='k must be'): kmeans(x, 0)
    with pytest.raises(ValueError, match='k must be'): kmeans(x[:3], 4)
    with pytest.raises(ValueError, match=r'\(n, d\)'): kmeans(x[0], 2)
    with pytest.raises(ValueError, match='NaN'): kmeans(np.full((4, 2), np.nan), 2)
    with pytest.raises(ValueError, match='backend'): kmeans(x, 6, backend='torch')


def test_kmeans_auto_takes_faiss_where_installed():
    import importlib.util
    x = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    assert kmeans(x, 3)['backend'] == ('faiss' if importlib.util.find_spec('faiss') else 'sklearn')


# --- XDC's parts (nbs/methods/xdc.ipynb) ---------------------------------------------------------------

def test_audio_encoders_and_cross_modal_targets():
    import torch.nn.functional as F
    from vssl_nb.methods.xdc import AudioEncoder2D, cluster_purity, cluster_targets, label_quality, xdc_loss
    x = torch.randn(2, 1, 64, 101)
    assert AudioEncoder2D('small')(x).shape == (2, 128) and AudioEncoder2D('resnet18')(x).shape == (2, 512)
    with pytest.raises(ValueError, match='arch'): AudioEncoder2D('vgg')
    assert cluster_purity([0, 0, 1, 1, 1], [3, 3, 3, 4, 4]) == pytest.approx(0.8)
    rng = np.random.default_rng(1)
    truth = np.repeat(np.arange(3), 15)
    video = rng.standard_normal((3, 6))[truth] * 4 + rng.standard_normal((45, 6))
    audio = rng.standard_normal((3, 5))[truth] * 4 + rng.standard_normal((45, 5))
    xdc, sdc = cluster_targets(video, audio, 'xdc', 3), cluster_targets(video, audio, 'sdc', 3)
    np.testing.assert_array_equal(xdc['video'][0], sdc['audio'][0])   # the video encoder learns the audio's clusters
    np.testing.assert_array_equal(xdc['audio'][0], sdc['video'][0])
    assert label_quality(xdc['video'][0], truth)['nmi'] > 0.9
    mdc, cdc = cluster_targets(video, audio, 'mdc', 3), cluster_targets(video, audio, 'cdc', 3)
    assert len(mdc['video']) == len(mdc['audio']) == 2 and np.array_equal(cdc['video'][0], cdc['audio'][0])
    with pytest.raises(ValueError, match='variant'): cluster_targets(video, audio, 'xyz', 3)
    with pytest.raises(ValueError, match='audio features'): cluster_targets(video, audio[:40], 'xdc', 3)
    vl, al = [torch.randn(3, 3)], [torch.randn(3, 3)]
    tg = dict(video=[torch.tensor([2, 1, 0])], audio=[torch.tensor([0, 0, 1])])
    idx = torch.tensor([2, 2, 0])
    torch.testing.assert_close(xdc_loss(vl, al, tg, idx), F.cross_entropy(vl[0], torch.tensor([0, 0, 2])) + F.cross_entropy(al[0], torch.tensor([1, 1, 0])))


def test_train_xdc_runs_on_the_sound_tiny_world(tmp_path):
    from vssl_nb.methods.xdc import train_xdc
    from vssl_nb.world.dataset import generate_dataset
    from vssl_nb.world.presets import preset_config
    torch.set_num_threads(1)
    generate_dataset(preset_config('sound-tiny', n_train=2, n_test=0), tmp_path / 'w', seed=0, show_progress=False)
    r = train_xdc(tmp_path / 'w', 'mdc', epochs=1, batch_size=3, n_frames=4, cache_dir=tmp_path / 'cache', log=None)
    h = r['history']
    assert r['k'] == 3 and len(h) == 2 and np.isfinite(h[0]['loss']) and set(h[0]['quality']) == {'video0', 'video1', 'audio0', 'audio1'}
    assert all(0 < q['purity'] <= 1 and 0 <= q['nmi'] <= 1 for row in h for q in row['quality'].values())
