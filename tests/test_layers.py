"""The map stays true: no module imports from a layer above its own, every module has a layer, the map lists every notebook.

The layers are the table under '## Layers' in nbs/index.ipynb (and so in the README), lowest first."""
import ast
import fnmatch
import json
import re
from pathlib import Path

from conftest import ROOT

PKG = ROOT / 'vssl_nb'
INDEX = ROOT / 'nbs' / 'index.ipynb'


def _markdown(heading: str) -> str:
    "The markdown cell of the index that starts with `heading`."
    nb = json.loads(INDEX.read_text(encoding='utf-8'))
    cells = [''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'markdown']
    found = [c for c in cells if c.lstrip().startswith(heading)]
    assert found, f"nbs/index.ipynb has no markdown cell starting with {heading!r}"
    return found[0]


def _table(text: str) -> list[list[str]]:
    "The body rows of the first markdown table in `text`, as lists of cell texts."
    rows = [l for l in text.splitlines() if l.startswith('|')]
    return [[c.strip() for c in r.strip().strip('|').split('|')] for r in rows[2:]]


def layers() -> list[tuple[str, list[str]]]:
    "(layer, module patterns) from the index's layer table, lowest layer first."
    return [(row[0], re.findall(r'`([\w.*]+)`', row[1])) for row in _table(_markdown('## Layers'))]


def package_modules() -> dict[str, Path]:
    "Every module of the package by dotted name below `vssl_nb` ('' is the package itself), without nbdev's index."
    out = {}
    for p in sorted(PKG.rglob('*.py')):
        parts = p.relative_to(PKG).with_suffix('').parts
        if parts[-1] == '_modidx': continue
        if parts[-1] == '__init__': parts = parts[:-1]
        out['.'.join(parts)] = p
    return out


def layer_of(module: str, table) -> int | None:
    "Index of the layer holding `module` (the package's own `__init__` belongs to the lowest layer)."
    if module == '': return 0
    for i, (_, patterns) in enumerate(table):
        if any(fnmatch.fnmatchcase(module, p) or module == p.removesuffix('.*') for p in patterns): return i
    return None


def imported_modules(source: str, module: str, is_package: bool, known) -> list[tuple[int, str]]:
    "(line, module below `vssl_nb`) of every import of the package in `source`, at any depth (function bodies too)."
    here = module.split('.') if module else []
    base = here if is_package else here[:-1]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == 'vssl_nb' or a.name.startswith('vssl_nb.'): out.append((node.lineno, a.name[len('vssl_nb.'):]))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                up = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                full = '.'.join(up + (node.module.split('.') if node.module else []))
            elif node.module == 'vssl_nb' or (node.module or '').startswith('vssl_nb.'):
                full = node.module[len('vssl_nb.'):] if node.module != 'vssl_nb' else ''
            else: continue
            for a in node.names:   # `from . import synth` imports the module synth
                sub = f'{full}.{a.name}' if full else a.name
                out.append((node.lineno, sub if sub in known else full))
    return out


def test_every_module_has_a_layer_and_every_layer_entry_a_module():
    table, mods = layers(), package_modules()
    assert [name for name, _ in table][:3] == ['core', 'video', 'world'], table
    unplaced = sorted(m for m in mods if layer_of(m, table) is None)
    assert not unplaced, f"modules missing from the layer table in nbs/index.ipynb: {unplaced}"
    for name, patterns in table:
        for p in patterns:
            assert any(fnmatch.fnmatchcase(m, p) or m == p for m in mods), f"layer {name!r} names {p!r}, which is no module of vssl_nb"


def test_no_module_imports_from_a_higher_layer():
    table, mods = layers(), package_modules()
    wrong = []
    for mod, path in mods.items():
        mine = layer_of(mod, table)
        for line, target in imported_modules(path.read_text(encoding='utf-8'), mod, path.name == '__init__.py', mods):
            theirs = layer_of(target, table)
            assert theirs is not None, f"{path}:{line} imports vssl_nb.{target}, which the layer table does not place"
            if theirs > mine:
                wrong.append(f"vssl_nb.{mod or '__init__'} ({table[mine][0]}) imports vssl_nb.{target} ({table[theirs][0]}) "
                             f"at {path.relative_to(ROOT)}:{line}")
    assert not wrong, 'imports that go up a layer:\n' + '\n'.join(wrong)


def test_the_check_sees_every_kind_of_import():
    known = {'core', 'synth', 'data', 'losses', 'train', 'methods', 'methods.cmd', 'methods.moco'}
    top = ("import os\nfrom .core import x\nfrom . import synth\nimport vssl_nb.data\n"
           "def f():\n    from .methods.cmd import CMDRecipe   # a lazy import counts too\n")
    assert [m for _, m in imported_modules(top, 'train', False, known)] == ['core', 'synth', 'data', 'methods.cmd']
    sub = "from ..losses import nt_xent\nfrom .cmd import CMDRecipe\nfrom vssl_nb import core\n"
    assert [m for _, m in imported_modules(sub, 'methods.moco', False, known)] == ['losses', 'methods.cmd', 'core']
    table = [('low', ['core']), ('high', ['methods.*'])]
    assert layer_of('methods.cmd', table) == 1 and layer_of('core', table) == 0 and layer_of('nowhere', table) is None


def test_map_lists_every_notebook_with_its_module():
    rows = _table(_markdown('## Map of the notebooks'))
    listed = {}
    for row in rows:
        nbs, mods = re.findall(r'`([\w./-]+)`', row[0]), re.findall(r'`vssl_nb\.([\w.]+)`', row[1])
        assert not mods or len(mods) == len(nbs), row
        for i, nb in enumerate(nbs): listed[nb] = mods[i] if mods else None
    present = {str(p.relative_to(ROOT / 'nbs').with_suffix('')) for p in (ROOT / 'nbs').rglob('*.ipynb')
               if '.ipynb_checkpoints' not in p.parts and p.name != 'index.ipynb'}
    assert sorted(present - set(listed)) == [], 'notebooks missing from the map in nbs/index.ipynb'
    assert sorted(set(listed) - present) == [], 'the map in nbs/index.ipynb lists notebooks that do not exist'
    for nb, mod in listed.items():
        text = (ROOT / 'nbs' / f'{nb}.ipynb').read_text(encoding='utf-8')
        exp = re.search(r'#\| default_exp ([\w.]+)', text)
        assert (exp.group(1) if exp else None) == mod, f"the map says {nb} holds {mod}, the notebook exports {exp and exp.group(1)}"
