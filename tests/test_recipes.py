"""The recipe registry: every method found by name with no hand-kept list, old import paths that warn, and a
third-party method package installed beside the workbench and run by `vssl run pretrain -p method NAME`."""
import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest

import vssl_nb.recipes as R
from vssl_nb.models import build_backbone

from conftest import vssl

SMALL = dict(widths=(4, 8, 8, 16))
# every recipe name the workbench had before the methods became a package, and the arguments a tiny run needs
NAMES = {'cmd': {}, 'cmd_context_only': {}, 'cmd_motion_only': {}, 'cmd_motion_regression': {}, 'simclr': {}, 'none': {},
         'supervised': {'num_classes': 4}, 'supervised_motion': {'num_classes': 4}, 'moco': {'queue_size': 64},
         'be': {'queue_size': 64}, 'be_only': {'queue_size': 64}, 'simclr_be': {}, 'cmd_be': {},
         'dsm': {'queue_size': 64, 'clip_frames': 4}, 'dsm_triplet': {'clip_frames': 4}}


@pytest.fixture
def scratch_names():
    "Names a test registers are removed from the registry afterwards."
    before = (dict(R._REGISTRY), dict(R._ORIGIN), {k: dict(v) for k, v in R._BY_MODULE.items()})
    yield
    for live, old in zip((R._REGISTRY, R._ORIGIN, R._BY_MODULE), before): live.clear(); live.update(old)


def test_every_old_name_resolves_to_a_recipe_of_that_name():
    names = R.all_recipes()
    assert set(NAMES) <= set(names) and list(names) == sorted(names)
    for name, kwargs in NAMES.items():
        assert R.build_recipe(name, build_backbone('tiny', **SMALL), **kwargs).name == name
    origins = R.discover_recipes()
    assert origins['cmd'] == 'vssl_nb.methods.cmd' and origins['be'] == 'vssl_nb.methods.background_erasing'
    assert origins['supervised'] == 'vssl_nb.recipes' and origins['moco'] == 'vssl_nb.methods.moco'
    assert set(R.recipes_of('vssl_nb.methods.dsm')) == {'dsm', 'dsm_triplet'}


def test_methods_are_found_by_walking_the_package_not_by_a_list():
    from vssl_nb.methods.background_erasing import SCENE_RECIPES
    from vssl_nb.methods.dsm import DSM_RECIPES
    assert list(SCENE_RECIPES) == ['moco', 'be', 'be_only', 'simclr_be', 'cmd_be'] and list(DSM_RECIPES) == ['dsm', 'dsm_triplet']
    code = ("import sys, vssl_nb.recipes as R; R.build_recipe('dsm', 'tiny', clip_frames=4);"
            "print(sorted(m for m in sys.modules if m.startswith('vssl_nb.methods.')))")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert eval(r.stdout.strip()) == [f'vssl_nb.methods.{m}' for m in ('background_erasing', 'cmd', 'declutr', 'dsm', 'moco', 'reid', 'simclr', 'tot', 'xdc')]
    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group=R.RECIPE_GROUP)}
    if eps:   # installed with this checkout's setup.py (pip install -e .): the built-in methods are declared in the group too
        assert eps.get('cmd') == 'vssl_nb.methods.cmd' and eps.get('dsm') == 'vssl_nb.methods.dsm'


def test_registration_rules(scratch_names):
    class Toy(R.Recipe):
        def __init__(self, backbone, k=1): super().__init__(); self.backbone, self.k = backbone, k
    R.register_recipe('test_toy', k=3)(Toy)
    assert R.build_recipe('test_toy', 'tiny').k == 3 and R.recipes_of(__name__) == {'test_toy': R._REGISTRY['test_toy']}

    def factory(module):
        def make(backbone): return Toy(backbone)
        make.__module__ = module
        return make
    R.register_recipe('test_plugin')(factory('pkg_a.methods'))
    with pytest.raises(ValueError, match="'test_plugin' is taken: pkg_a.methods registered it, pkg_b registers it again"):
        R.register_recipe('test_plugin')(factory('pkg_b'))
    R.register_recipe('test_plugin')(factory('__main__'))      # a notebook's own definition replaces the package's ...
    R.register_recipe('test_plugin')(factory('pkg_a.methods'))  # ... and is not replaced back when the package is imported later
    assert R.discover_recipes()['test_plugin'] == '__main__'
    with pytest.raises(ValueError, match="unknown recipe 'test_toi' \\(did you mean 'test_toy'\\?\\); known: .*cmd"):
        R.build_recipe('test_toi', 'tiny')
    with pytest.raises(ValueError, match='without spaces'): R.register_recipe('two words')
    with pytest.raises(TypeError, match='class or factory'): R.register_recipe('test_x')(3)


def test_a_broken_plugin_warns_and_the_rest_still_work(monkeypatch, scratch_names):
    eps = [importlib.metadata.EntryPoint('broken', 'vssl_no_such_plugin_module', R.RECIPE_GROUP),
           importlib.metadata.EntryPoint('test_entry_object', 'vssl_nb.recipes:RandomInit', R.RECIPE_GROUP)]
    monkeypatch.setattr(R, '_plugin_entry_points', lambda: eps)
    with pytest.warns(RuntimeWarning, match="recipe plugin 'broken'.*skipped"):
        origins = R.discover_recipes(force=True)
    assert 'cmd' in origins and 'test_entry_object' not in origins   # RandomInit is registered already (as 'none')


@pytest.mark.parametrize('path, name, new', [
    ('vssl_nb.train', 'CMDRecipe', 'vssl_nb.methods.cmd'), ('vssl_nb.train', 'ContextMatching', 'vssl_nb.methods.cmd'),
    ('vssl_nb.train', 'SimCLRRecipe', 'vssl_nb.methods.simclr'),
    ('vssl_nb.background_erasing', 'BERecipe', 'vssl_nb.methods.background_erasing'),
    ('vssl_nb.background_erasing', 'SCENE_RECIPES', 'vssl_nb.methods.background_erasing'),
    ('vssl_nb.background_erasing', 'MoCoRecipe', 'vssl_nb.methods.moco'),
    ('vssl_nb.background_erasing', 'with_background_erasing', 'vssl_nb.methods.background_erasing'),
    ('vssl_nb.dsm', 'DSMRecipe', 'vssl_nb.methods.dsm'), ('vssl_nb.dsm', 'DSM_RECIPES', 'vssl_nb.methods.dsm'),
    ('vssl_nb.dsm', 'spatial_local_disturbance', 'vssl_nb.methods.dsm')])
def test_old_paths_of_moved_names_work_and_warn(path, name, new):
    with pytest.warns(DeprecationWarning, match=f'{path}.{name} has moved to {new}.{name}'):
        old = getattr(importlib.import_module(path), name)
    assert old is getattr(importlib.import_module(new), name)


def test_old_paths_that_did_not_move_layer_stay_silent():
    import vssl_nb.experiments as E
    import vssl_nb.train as T
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        for name in ('Recipe', 'SupervisedRecipe', 'RandomInit', 'MotionPrediction', 'SyntheticClips', 'PRESETS', 'resolve_preset',
                     'build_recipe', 'all_recipes', 'Trainer', 'make_loader', 'train_losses'):
            assert getattr(T, name) is not None
        assert T.Recipe is R.Recipe and T.build_recipe is R.build_recipe and E.save_metrics is importlib.import_module('vssl_nb.core').save_metrics
    with pytest.warns(DeprecationWarning, match='RECIPES is deprecated'):
        old = T.RECIPES
    assert list(old) == ['cmd', 'cmd_context_only', 'cmd_motion_only', 'cmd_motion_regression', 'simclr', 'none', 'supervised',
                         'supervised_motion']
    with pytest.raises(AttributeError): T.METHOD_RECIPES


PLUGIN = '''
"A third-party method for vssl-nb: the pooled features of two views of a clip pulled together (cosine)."
import torch.nn.functional as F
from vssl_nb.recipes import Recipe, register_recipe


@register_recipe('mean_pool')
class MeanPoolRecipe(Recipe):
    name, required_keys = 'mean_pool', ('clip', 'clip2')
    def __init__(self, backbone):
        super().__init__(); self.backbone = backbone
    def forward(self, batch):
        self.check_batch(batch)
        cos = F.cosine_similarity(self.backbone(batch['clip']), self.backbone(batch['clip2']), dim=1).mean()
        return {'loss': 1 - cos, 'cosine': cos}


class UndecoratedRecipe(MeanPoolRecipe):   # named by its entry point only
    name = 'mean_pool_plain'
'''

PYPROJECT = '''
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "vssl-mean-pool"
version = "0.1.0"
description = "A tiny third-party method for vssl-nb"

[project.entry-points."vssl_nb.recipes"]
mean_pool = "vssl_mean_pool"
mean_pool_plain = "vssl_mean_pool:UndecoratedRecipe"

[tool.setuptools]
py-modules = ["vssl_mean_pool"]
'''


def test_a_third_party_method_package_is_found_and_trained(tmp_path, vssl_env):
    src = tmp_path / 'vssl-mean-pool'
    src.mkdir()
    (src / 'pyproject.toml').write_text(textwrap.dedent(PYPROJECT))
    (src / 'vssl_mean_pool.py').write_text(textwrap.dedent(PLUGIN))
    site = tmp_path / 'site'
    isolation = [] if importlib.util.find_spec('setuptools') is None else ['--no-build-isolation']
    r = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', *isolation, '--target', str(site), str(src)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    env = {**os.environ, 'PYTHONPATH': str(site)}   # the installed plugin is on the path of the CLI and of the notebook kernel
    code = "import json, vssl_nb.recipes as R; print(json.dumps(R.discover_recipes()))"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    origins = json.loads(r.stdout)
    assert origins['mean_pool'] == 'vssl_mean_pool' and origins['mean_pool_plain'] == 'vssl_mean_pool' and set(NAMES) <= set(origins)
    r = vssl('run', 'pretrain', '-p', 'method', 'mean_pool', '-p', 'steps', 2, '-p', 'batch_size', 8, '-p', 'eval_clips', 1,
             '-p', 'threads', 1, '--run-id', 'plugin', env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((vssl_env['runs'] / 'pretrain' / 'plugin' / 'metrics.json').read_text())
    assert m['train']['recipe'] == 'mean_pool' and m['train']['steps'] == 2 and 0 <= m['R@1'] <= 1
    assert 'mean_pool' not in R.all_recipes()   # this process never imported the plugin: it is not on its path


def test_template_recipe_options_reach_the_recipe():
    from vssl_nb.models import build_backbone
    from vssl_nb.recipes import build_recipe
    from vssl_nb.study import method_kwargs
    kw = method_kwargs('cmd', 8, options='{"context_weight": 0.1}')
    assert build_recipe('cmd', build_backbone('tiny'), **kw).context_weight == 0.1
    assert method_kwargs('moco', 8, 1024, 0.99, {'queue_size': 64}) == {'queue_size': 64, 'momentum': 0.99}
    for bad in ('[1]', '{bad', '3'):
        with pytest.raises(ValueError, match='JSON object'): method_kwargs('cmd', 8, options=bad)
