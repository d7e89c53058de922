"""Render nbs/index.ipynb (nbdev's readme_nb) to README.md without Quarto.

nbdev's own `nbdev-readme` needs the Quarto binary, which cannot be installed on the project's
machines; this script does the part the project needs: markdown cells as they are, code cells as
fenced python blocks, text outputs as fenced text blocks, cells marked `#| hide` left out and
directive lines (`#| ...`) removed. Usage: `python tools/make_readme.py [--check]`.
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INDEX, README = ROOT / 'nbs' / 'index.ipynb', ROOT / 'README.md'
HEADER = '<!-- generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file -->\n\n'


def _src(cell) -> str:
    s = cell['source']
    return ''.join(s) if isinstance(s, list) else s


def render(index: Path = INDEX) -> str:
    "The README text for the notebook `index`."
    nb = json.loads(index.read_text(encoding='utf-8'))
    parts = []
    for cell in nb['cells']:
        lines = _src(cell).splitlines()
        directives = [l for l in lines if l.startswith('#|')]
        if any(d[2:].split()[:1] in (['hide'], ['exporti']) for d in directives): continue
        body = '\n'.join(l for l in lines if not l.startswith('#|')).strip('\n')
        if not body.strip(): continue
        if cell['cell_type'] == 'markdown': parts.append(body)
        elif cell['cell_type'] == 'code':
            parts.append(f"```python\n{body}\n```")
            for out in cell.get('outputs', []):
                text = out.get('text') or out.get('data', {}).get('text/plain')
                if text: parts.append("```\n" + (''.join(text) if isinstance(text, list) else text).rstrip('\n') + "\n```")
    return HEADER + '\n\n'.join(parts) + '\n'


if __name__ == '__main__':
    text = render()
    if '--check' in sys.argv[1:]:
        if not README.exists() or README.read_text(encoding='utf-8') != text:
            sys.exit('README.md is out of date with nbs/index.ipynb: run `python tools/make_readme.py`')
        print('README.md is up to date')
    else:
        README.write_text(text, encoding='utf-8')
        print(f'wrote {README}')
