"""The foundation: packaging, the `vssl` CLI, the papermill runner and the results table."""
import configparser
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest

import vssl_nb

from conftest import ROOT, vssl


def test_version_matches_settings_ini():
    cfg = configparser.ConfigParser(delimiters=['='])
    cfg.read(ROOT / 'settings.ini')
    assert vssl_nb.__version__ == cfg['DEFAULT']['version']


def test_pyproject_holds_only_nbdev_settings():
    data = tomllib.loads((ROOT / 'pyproject.toml').read_text())
    assert list(data) == ['tool'] and list(data['tool']) == ['nbdev']
    nb = data['tool']['nbdev']
    assert nb['allowed_cell_metadata_keys'] == ['tags']
    assert set(nb['tst_flags'].split()) >= {'slow', 'cuda'}


def test_readme_is_rendered_from_index_notebook():
    out = subprocess.run([sys.executable, str(ROOT / 'tools' / 'make_readme.py'), '--check'], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_cli_help_and_version():
    r = vssl('--help')
    assert r.returncode == 0 and 'run' in r.stdout and 'results' in r.stdout and 'quickstart' in r.stdout
    r = vssl('--version')
    assert r.returncode == 0 and r.stdout.strip() == f'vssl {vssl_nb.__version__}'
    r = vssl('run', '--help')
    assert r.returncode == 0 and '-p NAME VALUE' in r.stdout


@pytest.mark.parametrize('args,needle', [(['frobnicate'], "unknown command 'frobnicate'"),
                                         (['--frobnicate'], "unknown option '--frobnicate'"),
                                         (['results', '--no-such-option'], 'unrecognized arguments: --no-such-option')])
def test_cli_errors_are_one_line(args, needle, vssl_env):
    r = vssl(*args)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr


def test_run_hello_writes_metrics_and_injects_parameters(vssl_env):
    r = vssl('run', 'hello', '-p', 'frames', '4', '-p', 'repeats', '2', '--run-id', 'first')
    assert r.returncode == 0, r.stderr
    run_dir = vssl_env['runs'] / 'hello' / 'first'
    assert {'hello.ipynb', 'params.json', 'metrics.json', 'record.json'} <= {p.name for p in run_dir.iterdir()}
    metrics = json.loads((run_dir / 'metrics.json').read_text())
    assert metrics['ms_per_forward'] > 0 and metrics['n_params'] > 0
    assert json.loads((run_dir / 'params.json').read_text()) == {'frames': 4, 'repeats': 2}
    nb = nbformat.read(run_dir / 'hello.ipynb', as_version=4)
    injected = [c for c in nb.cells if 'injected-parameters' in c.metadata.get('tags', [])]
    assert injected and 'frames = 4' in injected[0].source and 'repeats = 2' in injected[0].source
    record = json.loads((run_dir / 'record.json').read_text())
    assert record['status'] == 'ok' and record['versions']['torch'] and record['finished'] >= record['started']
    assert 'metrics:' in r.stdout and str(run_dir / 'hello.ipynb') in r.stdout


def test_params_file_and_cli_override(vssl_env, tmp_path):
    pfile = tmp_path / 'params.yaml'
    pfile.write_text('frames: 4\nrepeats: 1\nsize: 16\n')
    r = vssl('run', 'hello', '-f', pfile, '-p', 'size', '24', '--run-id', 'fromfile')
    assert r.returncode == 0, r.stderr
    params = json.loads((vssl_env['runs'] / 'hello' / 'fromfile' / 'params.json').read_text())
    assert params == {'frames': 4, 'repeats': 1, 'size': 24}


def test_undeclared_parameter_is_an_error(vssl_env):
    r = vssl('run', 'hello', '-p', 'frmaes', '4')
    assert r.returncode == 1
    assert "'frmaes'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (vssl_env['runs'] / 'hello').exists()  # nothing was started


def test_missing_template_and_params_file_are_errors(vssl_env, tmp_path):
    r = vssl('run', 'no_such_template')
    assert r.returncode == 1 and 'no_such_template' in r.stderr and 'hello' in r.stderr
    r = vssl('run', 'hello', '-f', tmp_path / 'missing.yaml')
    assert r.returncode == 1 and 'missing.yaml' in r.stderr


def _failing_template(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'python3', 'language': 'python'}
    nb.cells = [nbformat.v4.new_code_cell('threshold = 1', metadata={'tags': ['parameters']}),
                nbformat.v4.new_code_cell('from vssl_nb.experiments import save_metrics\nsave_metrics({"before_failure": 1})'),
                nbformat.v4.new_code_cell('raise ValueError(f"threshold {threshold} is too small")'),
                nbformat.v4.new_code_cell('save_metrics({"never": 1})')]
    nbformat.write(nb, path)
    return path


def test_failing_template_keeps_partial_notebook(vssl_env, tmp_path):
    tpl = _failing_template(tmp_path / 'fails.ipynb')
    r = vssl('run', tpl, '-p', 'threshold', '3', '--run-id', 'boom')
    assert r.returncode == 1
    assert 'ValueError' in r.stderr and 'threshold 3 is too small' in r.stderr
    run_dir = vssl_env['runs'] / 'fails' / 'boom'
    nb = nbformat.read(run_dir / 'fails.ipynb', as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', [])]
    assert any(o.get('output_type') == 'error' and o.get('ename') == 'ValueError' for o in outputs)
    assert json.loads((run_dir / 'metrics.json').read_text()) == {'before_failure': 1}
    record = json.loads((run_dir / 'record.json').read_text())
    assert record['status'] == 'failed' and 'threshold 3 is too small' in record['error']


def test_results_over_two_runs(vssl_env, tmp_path):
    for seed in (0, 1):
        r = vssl('run', 'hello', '-p', 'frames', '4', '-p', 'repeats', '1', '-p', 'seed', seed, '--run-id', f's{seed}')
        assert r.returncode == 0, r.stderr
    r = vssl('results', '--experiment', 'hello')
    assert r.returncode == 0, r.stderr
    assert 's0' in r.stdout and 's1' in r.stdout and 'ms_per_forward' in r.stdout
    csv_rows = (vssl_env['runs'] / 'hello' / 'results.csv').read_text().strip().splitlines()
    assert len(csv_rows) == 3 and 'metric.ms_per_forward' in csv_rows[0]
    out = tmp_path / 'table'
    r = vssl('results', '--experiment', 'hello', '--aggregate', '--out', out, '--title', 'Hello')
    assert r.returncode == 0, r.stderr
    md = out.with_suffix('.md').read_text()
    assert md.startswith('## Hello') and '| 2 |' in md and '±' in md
    r = vssl('results', '--experiment', 'nothing_here')
    assert r.returncode == 1 and 'nothing_here' in r.stderr
