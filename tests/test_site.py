"""The course website in a real browser.

The site is built once per session with `vssl_nb.course.build_site` (the code behind `vssl docs`) into a
temporary folder, with the execution cache of `vssl docs` itself (`$VSSL_CACHE/docs/jupyter_cache`), so a
notebook whose code did not change is not executed again. It is served by `python -m http.server` on
127.0.0.1 and read by Debian's headless Chromium through Playwright:

- every page loads without a console error, a page error, a failed request or an HTTP error;
- every link of the sidebar resolves, from the home page and from pages one folder down, the sidebar
  lists every page, and the course comes first, in the order of the index's course section;
- a plotly figure of a lesson page moves to another frame when its slider is clicked (no kernel behind it);
- a widget of a lesson page shows its first state (its controls and the plotly figure of its output);
- each lesson page, and each library page that ends with exercises, offers its student edition, which has
  no answers, and folds its solution cells;
- a screenshot of every lesson page is kept under `test-artifacts/site/`, with the build's page table.

Also, without a browser: a link to a page that does not exist fails the build, naming the link.
Never downloads a browser: it uses /usr/bin/chromium and skips where that is missing.
"""
import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT
from test_browser import _changed_fraction, _free_port, chromium_page, needs_chromium

pytest.importorskip('sphinx', reason='Sphinx is not installed (a dev requirement: pip install -e ".[dev]")')
pytest.importorskip('myst_nb', reason='MyST-NB is not installed (a dev requirement: pip install -e ".[dev]")')

from vssl_nb.core import cache_dir
from vssl_nb.course import build_site, course_order, exercise_notebooks, is_solution

ARTIFACTS = ROOT / 'test-artifacts' / 'site'
NBS = ROOT / 'nbs'

pytestmark = [pytest.mark.timeout(2400)]


@pytest.fixture(scope='session')
def site(tmp_path_factory):
    "The built site (a `SiteBuild`); its page table is kept as test-artifacts/site/build.md."
    work = tmp_path_factory.mktemp('site')
    t0 = time.perf_counter()
    b = build_site(out=work / 'site', work=work / 'work', exec_cache=cache_dir() / 'docs' / 'jupyter_cache', workers=2)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / 'build.md').write_text(f"# Site built by tests/test_site.py in {time.perf_counter() - t0:.0f}s\n\n{b.markdown()}\n")
    return b


@pytest.fixture(scope='session')
def served(site):
    "Base URL of the built site served by `python -m http.server` on 127.0.0.1."
    port = _free_port()
    proc = subprocess.Popen([sys.executable, '-m', 'http.server', str(port), '--bind', '127.0.0.1', '--directory', str(site.out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f'http://127.0.0.1:{port}'
    try:
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f'{base}/index.html', timeout=2) as r:
                    if r.status == 200: break
            except OSError:
                if time.time() > deadline or proc.poll() is not None: raise RuntimeError('python -m http.server did not start')
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate(); proc.wait(timeout=10)


def _html_pages(site) -> list[str]:
    return sorted(p.relative_to(site.out).as_posix() for p in site.out.rglob('*.html')
                  if not {'_static', '_sources', '_downloads', '_images'} & set(p.relative_to(site.out).parts))


def _course(site) -> list[str]:
    return [p.rel for p in site.pages if p.section == 'course']


def _watch(page, problems: list, where: dict):
    "Record console errors, page errors, failed requests and HTTP errors of `page`, each with the page it happened on."
    page.on('console', lambda m: m.type == 'error' and problems.append(f"{where['page']}: console error: {m.text}"))
    page.on('pageerror', lambda e: problems.append(f"{where['page']}: page error: {e}"))
    page.on('requestfailed', lambda r: problems.append(f"{where['page']}: request failed: {r.url} ({r.failure})"))
    page.on('response', lambda r: r.status >= 400 and problems.append(f"{where['page']}: HTTP {r.status}: {r.url}"))


def _wait_for_figures(page, timeout=30_000):
    "Wait until every plotly figure of the page is drawn and MathJax (if any) has typeset."
    page.wait_for_function("""() => [...document.querySelectorAll('.plotly-graph-div')].every(d => d.querySelector('.main-svg'))""",
                           timeout=timeout)
    page.evaluate("() => window.MathJax && MathJax.startup && MathJax.startup.promise ? MathJax.startup.promise.then(() => true) : true")


@needs_chromium
def test_every_page_loads_without_console_errors(site, served, tmp_path):
    playwright = pytest.importorskip('playwright.sync_api', reason='playwright is not installed (a dev requirement)')
    pages = _html_pages(site)
    course = {f'{rel}.html' for rel in _course(site)}
    assert len(pages) >= len(site.pages), pages
    problems, where, shots = [], {'page': None}, []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with chromium_page(playwright, tmp_path, 1280, 900) as page:
        _watch(page, problems, where)
        for rel in pages:
            where['page'] = rel
            response = page.goto(f'{served}/{rel}', wait_until='load', timeout=60_000)
            assert response.status == 200, rel
            _wait_for_figures(page)
            page.wait_for_timeout(150)
            if rel in course:
                shot = ARTIFACTS / (rel.removesuffix('.html').replace('/', '__') + '.png')
                page.screenshot(path=str(shot), full_page=True)
                shots.append(shot)
    assert not problems, '\n'.join(problems)
    assert len(shots) == len(course) and all(s.stat().st_size > 20_000 for s in shots), shots


@needs_chromium
def test_sidebar_links_resolve_and_the_course_comes_first(site, served, tmp_path):
    playwright = pytest.importorskip('playwright.sync_api', reason='playwright is not installed (a dev requirement)')
    course = _course(site)
    assert course == course_order(NBS)
    starts = ['index.html', f'{course[0]}.html', next(f'{p.rel}.html' for p in site.pages if '/' in p.rel and p.section != 'course')]
    with chromium_page(playwright, tmp_path, 1280, 900) as page:
        for start in starts:
            page.goto(f'{served}/{start}', wait_until='load')
            captions = page.eval_on_selector_all('nav.bd-docs-nav p.caption', 'els => els.map(e => e.textContent.trim())')
            links = page.eval_on_selector_all('nav.bd-docs-nav a.reference.internal', 'els => els.map(e => e.href)')
            first = page.evaluate("""() => { const c = [...document.querySelectorAll('nav.bd-docs-nav p.caption')][0];
                let ul = c && c.nextElementSibling; while (ul && ul.tagName !== 'UL') ul = ul.nextElementSibling;
                return ul ? [...ul.querySelectorAll(':scope > li > a')].map(a => a.href) : []; }""")
            assert captions[0] == 'Course', (start, captions)
            assert [u.split('#')[0].removeprefix(f'{served}/').removesuffix('.html') for u in first] == course, (start, first)
            listed = {u.removeprefix(f'{served}/').split('#')[0] for u in links}
            assert {f'{p.rel}.html' for p in site.pages if p.rel != 'index'} <= listed, (start, sorted(listed))
            for url in sorted(set(links)):
                with urllib.request.urlopen(url.split('#')[0], timeout=10) as r:
                    assert r.status == 200, (start, url)


@needs_chromium
def test_a_lesson_figure_responds_to_its_slider(site, served, tmp_path):
    playwright = pytest.importorskip('playwright.sync_api', reason='playwright is not installed (a dev requirement)')
    with chromium_page(playwright, tmp_path, 1280, 1000) as page:
        for rel in _course(site):
            page.goto(f'{served}/{rel}.html', wait_until='load')
            _wait_for_figures(page)
            figures = page.locator('.js-plotly-plot:has(.slider-rail-touch-rect)')
            if figures.count(): break
        else:
            pytest.fail(f"no lesson page ({', '.join(_course(site))}) has a plotly figure with a slider")
        fig = figures.first
        fig.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        grip = fig.locator('.slider-grip-rect').first
        title = lambda: fig.locator('.gtitle').first.text_content() if fig.locator('.gtitle').count() else ''
        before_x, before_title = grip.bounding_box()['x'], title()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        fig.screenshot(path=str(ARTIFACTS / 'slider_before.png'))
        rail = fig.locator('.slider-rail-touch-rect').first.bounding_box()
        page.mouse.click(rail['x'] + 0.75 * rail['width'], rail['y'] + rail['height'] / 2)
        page.wait_for_function("(g) => g.getBoundingClientRect().x > 0", arg=grip.element_handle())
        page.wait_for_timeout(1000)   # plotly animates to the new frame
        fig.screenshot(path=str(ARTIFACTS / 'slider_after.png'))
        assert grip.bounding_box()['x'] > before_x + 20, f"the slider of the figure on {rel} did not move"
        if before_title: assert title() != before_title, f"the figure on {rel} still shows {before_title!r}"
        changed = _changed_fraction(ARTIFACTS / 'slider_before.png', ARTIFACTS / 'slider_after.png')
        assert changed > 0.02, f"only {changed:.1%} of the figure on {rel} changed after its slider moved"
        (ARTIFACTS / 'slider.txt').write_text(f"page: {rel}\nbefore: {before_title}\nafter: {title()}\nchanged: {changed:.1%}\n")


@needs_chromium
def test_a_lesson_widget_shows_its_first_state(site, served, tmp_path):
    playwright = pytest.importorskip('playwright.sync_api', reason='playwright is not installed (a dev requirement)')
    with chromium_page(playwright, tmp_path, 1280, 1000) as page:
        found = []
        for rel in _course(site):
            page.goto(f'{served}/{rel}.html', wait_until='load')
            _wait_for_figures(page)
            for i in range(page.locator('.vssl-widget-snapshot').count()):
                w = page.locator('.vssl-widget-snapshot').nth(i)
                found.append((rel, w.locator('.vssl-control').count(), w.locator('.js-plotly-plot .main-svg').count()))
                if found[-1][1] and found[-1][2]:
                    w.scroll_into_view_if_needed(); page.wait_for_timeout(300)
                    w.screenshot(path=str(ARTIFACTS / 'widget_first_state.png'))
                    assert w.locator('input[type=range]').count() + w.locator('select').count() > 0
                    return
    pytest.fail(f"no lesson widget shows controls and a drawn figure; widgets found (page, controls, figures): {found}")


@needs_chromium
def test_lessons_offer_a_student_edition_and_fold_their_solutions(site, served, tmp_path):
    playwright = pytest.importorskip('playwright.sync_api', reason='playwright is not installed (a dev requirement)')
    with chromium_page(playwright, tmp_path, 1280, 900) as page:
        built = {p.rel for p in site.pages}
        exercises = [r for r in exercise_notebooks(NBS) if r in built]
        assert {'01_codec', '07_train', '08b_calibrate'} <= set(exercises), exercises
        for rel in exercises:
            page.goto(f'{served}/{rel}.html', wait_until='load')
            links = page.eval_on_selector_all('a.download', 'els => els.map(e => e.href)')
            student = [u for u in links if u.endswith('-student.ipynb')]
            assert len(student) == 1, (rel, links)
            with urllib.request.urlopen(student[0], timeout=10) as r:
                nb = nbformat.reads(r.read().decode(), as_version=4)
            assert nb.metadata['vssl']['edition'] == 'student' and not any(is_solution(c) for c in nb.cells), rel
            assert not any('<details' in c.source for c in nb.cells if c.cell_type == 'markdown'), rel
            solutions = sum(is_solution(c) for c in nbformat.read(NBS / f'{rel}.ipynb', as_version=4).cells)
            folded = page.locator('details.hide:has(> summary:has-text("Show the solution"))')
            assert folded.count() == solutions, (rel, folded.count(), solutions)
            assert all(not folded.nth(i).evaluate('d => d.open') for i in range(folded.count())), rel


def test_a_broken_link_fails_the_build(tmp_path):
    nbs = tmp_path / 'nbs'
    (nbs / 'lessons').mkdir(parents=True)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell('# Home\n\n## The course\n\n`lessons/01_one`')]),
                   nbs / 'index.ipynb')
    good = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell('# One\n\nSee [home](../index.ipynb).'),
                                           nbformat.v4.new_code_cell('#| solution\nprint(6 * 7)')])
    nbformat.write(good, nbs / 'lessons' / '01_one.ipynb')
    b = build_site(out=tmp_path / 'ok', nbs=nbs, work=tmp_path / 'work', workers=1)
    assert [p.rel for p in b.pages] == ['index', 'lessons/01_one', 'about']
    page = (tmp_path / 'ok' / 'lessons' / '01_one.html').read_text()
    assert '42' in page and re.search(r'<details class="[^"]*\bhide\b[^"]*">\s*<summary[^>]*>\s*<p[^>]*>Show the solution', page), page[-3000:]
    assert '#| solution' not in page and (tmp_path / 'work' / 'src' / '_student' / 'lessons' / '01_one-student.ipynb').is_file()
    good.cells.append(nbformat.v4.new_markdown_cell('Next: [lesson two](02_two.ipynb).'))
    nbformat.write(good, nbs / 'lessons' / '01_one.ipynb')
    with pytest.raises(RuntimeError, match=r"(?s)Sphinx failed.*02_two"):
        build_site(out=tmp_path / 'bad', nbs=nbs, work=tmp_path / 'work', workers=1)
