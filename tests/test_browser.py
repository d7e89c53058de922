"""The motion explorer in a real browser: JupyterLab + headless Debian Chromium driven by Playwright.

Starts JupyterLab on 127.0.0.1 with a token in a temporary home (its own settings, with the news
pop-up off), opens a notebook that calls `explore_motion` on a sample clip (the real arm-wrestling
clip when the shared clips and the codec are there, else the in-memory toy clip), runs all cells,
waits for the widget and the plotly figure, moves the frame slider and checks that the figure
changed, in its title (DOM) and in its pixels (screenshots). Screenshots are kept under
`test-artifacts/browser/` in the repository root.

Never downloads a browser: it uses /usr/bin/chromium (CI installs Debian's `chromium` package) and
skips where that is missing.
"""
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, shared_videos_dir

CHROMIUM = Path('/usr/bin/chromium')
CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                  '--disable-background-networking', '--disable-component-update', '--disable-sync']
ARTIFACTS = ROOT / 'test-artifacts' / 'browser'
CLIP = 'arm_wrestling_340x256_h264.mp4'

pytestmark = [pytest.mark.timeout(420)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _explorer_source() -> tuple[str, str]:
    "The notebook line that builds the explorer, and what it shows (for the test's messages)."
    videos = shared_videos_dir()
    if videos is not None and (videos / CLIP).is_file():
        return f"ex = explore_motion({str(videos)!r}, max_frames=90)\nex.picker.value = [p for p in ex.videos if p.name == {CLIP!r}][0]", CLIP
    return "from vssl_nb.mvviz import toy_motion_clip\nex = explore_motion(toy_motion_clip(n=12, height=192, width=256))", 'toy clip'


def _write_notebook(path: Path, setup: str) -> None:
    cells = ["from vssl_nb.mvviz import explore_motion", setup, "ex"]
    nb = {'cells': [{'cell_type': 'code', 'execution_count': None, 'metadata': {}, 'outputs': [], 'source': c} for c in cells],
          'metadata': {'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'}},
          'nbformat': 4, 'nbformat_minor': 5}
    path.write_text(json.dumps(nb, indent=1))


def _jupyter_env(home: Path) -> dict:
    "Environment for a JupyterLab that reads and writes only under `home` (and has the news pop-up off)."
    settings = home / 'lab-settings'
    (settings / '@jupyterlab' / 'apputils-extension').mkdir(parents=True)
    (settings / '@jupyterlab' / 'apputils-extension' / 'notification.jupyterlab-settings').write_text(
        json.dumps({'fetchNews': 'false', 'checkForUpdates': False}))
    env = dict(os.environ)
    for var, sub in (('JUPYTERLAB_SETTINGS_DIR', 'lab-settings'), ('JUPYTERLAB_WORKSPACES_DIR', 'workspaces'),
                     ('JUPYTER_CONFIG_DIR', 'config'), ('JUPYTER_RUNTIME_DIR', 'runtime'), ('IPYTHONDIR', 'ipython'),
                     ('MPLCONFIGDIR', 'mpl')):
        (home / sub).mkdir(exist_ok=True)
        env[var] = str(home / sub)
    env['VSSL_PROGRESS'] = 'off'
    env.pop('JUPYTER_TOKEN', None)
    return env


@pytest.fixture
def jupyterlab(tmp_path):
    "A JupyterLab server on 127.0.0.1 with a random token, rooted in a temp dir; yields (base_url, token, root)."
    root = tmp_path / 'nbroot'
    root.mkdir()
    token, port = secrets.token_hex(16), _free_port()
    log = open(tmp_path / 'jupyterlab.log', 'w')
    proc = subprocess.Popen(
        [sys.executable, '-m', 'jupyterlab', '--no-browser', '--ip=127.0.0.1', f'--port={port}', '--port-retries=0',
         f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={root}', '--LabApp.expose_app_in_browser=True',
         '--LabApp.extension_manager=readonly', *(['--allow-root'] if hasattr(os, 'geteuid') and os.geteuid() == 0 else [])],
        cwd=root, env=_jupyter_env(tmp_path), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f'http://127.0.0.1:{port}'
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f'{base}/api/status?token={token}', timeout=2) as r:
                    if r.status == 200: break
            except OSError: pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"JupyterLab did not start (exit {proc.poll()}):\n{(tmp_path / 'jupyterlab.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield base, token, root
    finally:
        try: os.killpg(proc.pid, signal.SIGTERM)   # its own session: the server and the kernels it started
        except ProcessLookupError: pass
        try: proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL); proc.wait()
        log.close()


def _changed_fraction(a: Path, b: Path) -> float:
    "Fraction of pixels whose colour differs by more than 24 (of 255) in some channel between two screenshots."
    import numpy as np
    from PIL import Image
    x, y = (np.asarray(Image.open(f).convert('RGB'), dtype=np.int16) for f in (a, b))
    if x.shape != y.shape: return 1.0
    return float((np.abs(x - y).max(-1) > 24).mean())


def _plot_title(page) -> str:
    return page.locator('.vssl-motion-explorer .js-plotly-plot .gtitle').first.text_content() or ''



@contextlib.contextmanager
def chromium_page(playwright, tmp_path: Path, width: int, height: int):
    "A page of Debian's headless Chromium with a fresh profile under `tmp_path`, closed afterwards."
    with playwright.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path / 'chromium-profile'), executable_path=str(CHROMIUM),
                                                   headless=True, args=CHROMIUM_FLAGS, viewport={'width': width, 'height': height})
        try: yield ctx.pages[0] if ctx.pages else ctx.new_page()
        finally: ctx.close()

needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason='/usr/bin/chromium is missing: install Debian\'s chromium '
                                    'package (apt-get install -y chromium); this test never downloads a browser')


@needs_chromium
def test_explorer_in_jupyterlab(jupyterlab, tmp_path):
    playwright = pytest.importorskip('playwright.sync_api', reason='playwright is not installed (a dev requirement)')
    base, token, root = jupyterlab
    setup, shown = _explorer_source()
    _write_notebook(root / 'explore.ipynb', setup)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with chromium_page(playwright, tmp_path, 1280, 1100) as page:
        page.goto(f'{base}/lab/tree/explore.ipynb?token={token}', wait_until='domcontentloaded', timeout=90_000)
        page.wait_for_function("() => window.jupyterapp && document.querySelector('.jp-Notebook')", timeout=90_000)
        # wait for the kernel, then run every cell through JupyterLab's own command
        page.wait_for_function("""() => { const w = window.jupyterapp.shell.currentWidget;
            return w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel
                   && w.sessionContext.session.kernel.status === 'idle'; }""", timeout=120_000)
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        explorer = page.locator('.vssl-motion-explorer')
        explorer.wait_for(state='visible', timeout=180_000)
        page.locator('.vssl-motion-explorer .js-plotly-plot .main-svg').first.wait_for(state='visible', timeout=60_000)
        page.wait_for_timeout(500)
        before_title = _plot_title(page)
        assert re.search(r'frame 0 \(', before_title), f"explorer on the {shown} opened at {before_title!r}, not frame 0"
        shot_before = ARTIFACTS / 'explorer_frame_before.png'
        explorer.screenshot(path=str(shot_before))
        image_before = ARTIFACTS / 'plot_image_before.png'
        page.locator('.vssl-motion-explorer .js-plotly-plot .imagelayer image').first.screenshot(path=str(image_before))

        # move the frame slider: click its track at 40 % of its width
        track = page.locator('.vssl-motion-explorer .widget-slider .noUi-target').nth(0)
        box = track.bounding_box()
        page.mouse.click(box['x'] + 0.4 * box['width'], box['y'] + box['height'] / 2)
        page.wait_for_function("""(old) => { const t = document.querySelector('.vssl-motion-explorer .js-plotly-plot .gtitle');
            return t && t.textContent !== old; }""", arg=before_title, timeout=60_000)
        page.wait_for_timeout(800)   # let plotly finish drawing the new image
        after_title = _plot_title(page)
        m = re.search(r'frame (\d+) \(', after_title)
        assert m and int(m.group(1)) > 0, f"after moving the slider the figure shows {after_title!r}"
        shot_after = ARTIFACTS / 'explorer_frame_after.png'
        explorer.screenshot(path=str(shot_after))
        # the plotted pixels changed, not only the title
        image_after = ARTIFACTS / 'plot_image_after.png'
        page.locator('.vssl-motion-explorer .js-plotly-plot .imagelayer image').first.screenshot(path=str(image_after))
        changed = _changed_fraction(image_before, image_after)
        assert changed > 0.02, f"only {changed:.1%} of the plotted image changed after moving the frame slider"
        page.screenshot(path=str(ARTIFACTS / 'jupyterlab_page.png'))
        (ARTIFACTS / 'titles.txt').write_text(f"clip: {shown}\nbefore: {before_title}\nafter: {after_title}\n")


@needs_chromium
def test_animated_figure_needs_no_kernel(tmp_path):
    "`motion_figure` saved as a standalone page: its slider changes the frame in a browser with no Python behind it."
    playwright = pytest.importorskip('playwright.sync_api', reason='playwright is not installed (a dev requirement)')
    from vssl_nb.mvviz import motion_figure, toy_motion_clip
    clip = toy_motion_clip(n=10, height=160, width=224)
    page_path = tmp_path / 'motion.html'
    motion_figure(clip, view='side', max_frames=None, width=900).write_html(page_path, include_plotlyjs=True, auto_play=False)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with chromium_page(playwright, tmp_path, 1000, 700) as page:
        page.goto(page_path.as_uri(), wait_until='load', timeout=60_000)
        page.locator('.js-plotly-plot .imagelayer image').first.wait_for(state='visible', timeout=30_000)
        assert page.locator('.js-plotly-plot .imagelayer image').count() == 3          # frame, colour field, arrows panel
        title = lambda: page.locator('.js-plotly-plot .gtitle').first.text_content() or ''
        before = title()
        assert 'frame 0 (I)' in before, before
        page.locator('.js-plotly-plot .gtitle').first.wait_for()
        page.screenshot(path=str(ARTIFACTS / 'animated_before.png'))
        rail = page.locator('.js-plotly-plot .slider-rail-touch-rect').first
        box = rail.bounding_box()
        page.mouse.click(box['x'] + 0.75 * box['width'], box['y'] + box['height'] / 2)
        page.wait_for_function("(old) => document.querySelector('.js-plotly-plot .gtitle').textContent !== old",
                               arg=before, timeout=20_000)
        page.wait_for_timeout(300)
        after = title()
        m = re.search(r'frame (\d+) \(', after)
        assert m and int(m.group(1)) > 0, after
        page.screenshot(path=str(ARTIFACTS / 'animated_after.png'))
        assert _changed_fraction(ARTIFACTS / 'animated_before.png', ARTIFACTS / 'animated_after.png') > 0.02
