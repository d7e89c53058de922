"""The package builds as a wheel that installs into a fresh venv, works without jupyterlab, and runs the quickstart outside the checkout."""
import json
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


@pytest.fixture(scope='module')
def installed(wheel, tmp_path_factory) -> Path:
    "A fresh venv with torch and the wheel installed (no dev extra, no jupyterlab): its folder."
    env_dir = tmp_path_factory.mktemp('installed') / 'venv'
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / 'bin' / 'python'
    _pip(py, 'install', '-q', 'torch==2.13.0')  # first, so that no CUDA build is pulled
    _pip(py, 'install', '-q', wheel)
    return env_dir


def test_wheel_installs_in_fresh_venv_without_jupyterlab(installed, tmp_path):
    env_dir = installed
    py = env_dir / 'bin' / 'python'
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


def test_installed_wheel_finds_its_methods_and_ships_no_samples(installed, wheel, tmp_path):
    names = zipfile.ZipFile(wheel).namelist()
    assert not any('data_samples' in n for n in names), 'the samples are generated on first use, not shipped'
    assert {f'vssl_nb/methods/{m}.py' for m in ('cmd', 'simclr', 'moco', 'background_erasing', 'dsm')} <= set(names)
    eps = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith('entry_points.txt'))).decode()
    assert '[vssl_nb.recipes]' in eps and 'cmd = vssl_nb.methods.cmd' in eps
    code = "import json, vssl_nb.recipes as R; print(json.dumps(sorted(R.all_recipes())))"
    r = subprocess.run([str(installed / 'bin' / 'python'), '-c', code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert {'cmd', 'simclr', 'moco', 'be', 'dsm', 'none', 'supervised_motion'} <= set(json.loads(r.stdout))
    world = ('actions', 'scenes', 'sprites', 'spec', 'render', 'encode', 'presets', 'dataset', 'truth')
    assert {f'vssl_nb/world/{m}.py' for m in world} <= set(names)
    code = "import json, vssl_nb.world.presets as P; print(json.dumps(list(P.PRESETS)))"   # presets found in the installed package
    r = subprocess.run([str(installed / 'bin' / 'python'), '-c', code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0 and {'tiny', 'small', 'scenebias'} <= set(json.loads(r.stdout)), r.stderr[-3000:]


def test_quickstart_runs_from_the_installed_wheel_outside_the_checkout(installed, tmp_path):
    "A new user's main job: `vssl quickstart` (shortened) from another folder; the samples are generated into the cache."
    env = {k: v for k, v in os.environ.items() if not k.startswith('VSSL_')}
    env.update(VSSL_RUNS=str(tmp_path / 'runs'), VSSL_CACHE=str(tmp_path / 'cache'), VSSL_DATA=str(tmp_path / 'data'),
               VSSL_PROGRESS='lines', OMP_NUM_THREADS='1', PATH=f"{installed / 'bin'}:{os.environ['PATH']}")
    work = tmp_path / 'somewhere'
    work.mkdir()
    r = subprocess.run([str(installed / 'bin' / 'vssl'), 'quickstart', '--steps', '2', '--seeds', '1'],
                       capture_output=True, text=True, cwd=work, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert 'generating the sample data set once' in r.stderr and 'sample data set ready' in r.stderr
    samples = next((tmp_path / 'cache').glob('data_samples-v*-0'))
    assert (samples / 'classInd.txt').is_file() and len(list(samples.glob('*/*.mp4'))) == 96
    assert not [p for p in (tmp_path / 'cache').iterdir() if p.name.startswith('.')], 'no temporary folder may stay behind'
    assert '| cmd |' in r.stdout and '| none |' in r.stdout and 'R@1' in r.stdout
    # a second quickstart finds the samples: no second generation
    r = subprocess.run([str(installed / 'bin' / 'vssl'), 'quickstart', '--steps', '1', '--seeds', '1'],
                       capture_output=True, text=True, cwd=work, env=env, timeout=900)
    assert r.returncode == 0 and 'generating' not in r.stderr, r.stderr[-3000:]
