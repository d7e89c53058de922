"""Shared fixtures: where the real sample clips are, and a clean per-test VSSL_* environment."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def shared_videos_dir() -> Path | None:
    "The real sample clips: $VSSL_SAMPLES if set, else ../shared/videos beside the checkout; None if absent."
    env = os.environ.get('VSSL_SAMPLES')
    p = Path(env) if env else ROOT.parent / 'shared' / 'videos'
    return p if p.is_dir() and any(p.iterdir()) else None


@pytest.fixture(scope='session')
def shared_videos() -> Path:
    "Folder of the real sample clips; skips the test with a clear reason where they are absent."
    p = shared_videos_dir()
    if p is None:
        pytest.skip('real sample clips not found at ../shared/videos (set VSSL_SAMPLES to their folder); '
                    'they exist in CI and on the project machines, not in a plain clone')
    return p


@pytest.fixture
def vssl_env(tmp_path, monkeypatch):
    "Point VSSL_DATA / VSSL_CACHE / VSSL_RUNS at fresh folders under tmp_path for one test."
    dirs = {k: tmp_path / k for k in ('data', 'cache', 'runs')}
    for k, d in dirs.items(): monkeypatch.setenv(f'VSSL_{k.upper()}', str(d))
    monkeypatch.setenv('VSSL_PROGRESS', 'lines')
    return dirs


@pytest.fixture
def quiet_progress(monkeypatch):
    "No progress bars in this test's output (opt in with `pytestmark = pytest.mark.usefixtures('quiet_progress')`)."
    monkeypatch.setenv('VSSL_PROGRESS', 'off')


def vssl(*args, env=None, timeout=600):
    "Run the installed `vssl` console script of this interpreter's environment."
    exe = Path(sys.executable).with_name('vssl')
    assert exe.exists(), f'the console script {exe} is missing: install the package (pip install -e .)'
    return subprocess.run([str(exe)] + [str(a) for a in args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope='session')
def synthetic_videos():
    "16 rendered synthetic videos (4 classes, 32 px, 24 frames) as a (16, 3, 24, 32, 32) float tensor, and their labels."
    import torch
    from vssl_nb.world.render import render_video
    from vssl_nb.world.spec import WorldConfig, plan_dataset
    cfg = WorldConfig(width=32, height=32, n_frames=24, n_train=4, n_test=0, classes=('MoveLeft', 'MoveRight', 'RotateCW', 'Grow'))
    specs = plan_dataset(cfg, 0)
    x = torch.stack([torch.from_numpy(render_video(s, cfg)[0]).permute(3, 0, 1, 2).float() / 255 for s in specs])
    return x, torch.tensor([s.label for s in specs])
