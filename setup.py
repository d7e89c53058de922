"""Builds the vssl-nb package from settings.ini (the classic nbdev setup.py, without pkg_resources)."""
from configparser import ConfigParser
from pathlib import Path

import shutil

import setuptools
from setuptools.command.build_py import build_py

here = Path(__file__).resolve().parent
config = ConfigParser(delimiters=['='])
config.read(here / 'settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

for key in 'version description keywords author author_email license min_python lib_name lib_path'.split():
    if key not in cfg: raise KeyError(f'settings.ini is missing the key {key!r}')

licenses = {'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License')}
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable']
license_name, license_classifier = licenses[cfg['license']]


def _reqs(key): return cfg.get(key, '').split()


def _recipe_entry_points() -> list[str]:
    "settings.ini's `recipes` as entry points of the group `vssl_nb.recipes`; `pkg.*` becomes one `module = pkg.module` per module."
    out = []
    for spec in cfg.get('recipes', '').split():
        if not spec.endswith('.*'): out.append(spec); continue
        pkg = spec[:-2]
        folder = here.joinpath(*pkg.split('.'))
        if not folder.is_dir(): raise FileNotFoundError(f"settings.ini's recipes names {spec}, but {folder} is not a folder")
        out += [f"{p.stem} = {pkg}.{p.stem}" for p in sorted(folder.glob('*.py')) if not p.name.startswith('_')]
    return out


class BuildPyWithTemplates(build_py):
    "Ship the papermill templates of nbs/experiments inside the package as `templates/`."
    def run(self):
        super().run()
        dst = Path(self.build_lib) / cfg['lib_path'] / 'templates'
        dst.mkdir(parents=True, exist_ok=True)
        for nb in sorted((here / 'nbs' / 'experiments').glob('*.ipynb')): shutil.copy2(nb, dst / nb.name)


readme = here / 'README.md'
setuptools.setup(
    name=cfg['lib_name'],
    version=cfg['version'],
    description=cfg['description'],
    long_description=readme.read_text(encoding='utf-8') if readme.exists() else cfg['description'],
    long_description_content_type='text/markdown',
    keywords=cfg['keywords'].split(),
    author=cfg['author'],
    author_email=cfg['author_email'],
    license=license_name,
    classifiers=['Development Status :: ' + statuses[int(cfg['status'])],
                 'Intended Audience :: ' + cfg['audience'].title(),
                 'License :: ' + license_classifier,
                 'Natural Language :: ' + cfg['language'].title(),
                 'Programming Language :: Python :: 3',
                 'Programming Language :: Python :: ' + cfg['min_python']],
    python_requires='>=' + cfg['min_python'],
    packages=setuptools.find_packages(include=[cfg['lib_path'], cfg['lib_path'] + '.*']),
    include_package_data=True,
    install_requires=_reqs('requirements'),
    extras_require={'lab': _reqs('lab_requirements'), 'dev': _reqs('dev_requirements')},
    entry_points={'console_scripts': cfg['console_scripts'].split('\n'),
                  'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"],
                  'vssl_nb.recipes': _recipe_entry_points()},
    cmdclass={'build_py': BuildPyWithTemplates},
    zip_safe=False,
)
