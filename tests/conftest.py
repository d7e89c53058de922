"""Shared fixtures: where the real sample clips are, and a clean per-test VSSL_* environment."""
import os
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
