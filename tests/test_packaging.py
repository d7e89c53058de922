"""The package builds as a wheel that installs into a fresh venv and works without jupyterlab."""
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

import vssl_nb

from conftest import ROOT


def _pip(python: Path, *args, timeout=900):
    r = subprocess.run([str(python), '-m', 'pip', *map(str, args)], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"pip {' '.join(map(str, args))} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope='module')
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('dist')
    r = subprocess.run([sys.executable, '-m', 'build', '--wheel', '--outdir', str(out), str(ROOT)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    (whl,) = out.glob('vssl_nb-*.whl')
    return whl


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert wheel.name.startswith(f'vssl_nb-{vssl_nb.__version__}-')
    assert 'vssl_nb/core.py' in names and 'vssl_nb/cli.py' in names
    assert 'vssl_nb/templates/hello.ipynb' in names, 'experiment templates must ship inside the package'
    meta = next(n for n in names if n.endswith('METADATA'))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert 'Requires-Dist: torch' in text and 'extra == "dev"' in text and 'extra == "lab"' in text
    assert 'Requires-Dist: jupyterlab' in text and 'jupyterlab' not in [l.split()[1] for l in text.splitlines()
                                                                      if l.startswith('Requires-Dist:') and 'extra ==' not in l]


def test_wheel_installs_in_fresh_venv_without_jupyterlab(wheel, tmp_path):
    env_dir = tmp_path / 'venv'
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / 'bin' / 'python'
    _pip(py, 'install', '-q', 'torch==2.13.0')  # first, so that no CUDA build is pulled
    _pip(py, 'install', '-q', wheel)
    check = ("import importlib.util, vssl_nb, vssl_nb.core, vssl_nb.experiments, vssl_nb.cli;"
             "assert importlib.util.find_spec('jupyterlab') is None, 'jupyterlab must not be a base dependency';"
             "print(vssl_nb.__version__)")
    r = subprocess.run([str(py), '-c', check], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == vssl_nb.__version__, r.stderr
    vssl = env_dir / 'bin' / 'vssl'
    r = subprocess.run([str(vssl), '--version'], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and vssl_nb.__version__ in r.stdout
    # the installed package runs its shipped template end to end, away from the checkout
    env = {**os.environ, 'VSSL_RUNS': str(tmp_path / 'runs'), 'PATH': f"{env_dir / 'bin'}:{os.environ['PATH']}"}
    r = subprocess.run([str(vssl), 'run', 'hello', '-p', 'repeats', '1', '-p', 'frames', '4', '--run-id', 'wheel'],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / 'runs' / 'hello' / 'wheel' / 'metrics.json').exists()
