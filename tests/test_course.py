"""The course's student editions and `vssl lab` (vssl_nb.course, notebook 00c_course).

- the student edition (solution cells emptied to '# your answer here', `<details>` answers removed) of
  every lesson, and of every library notebook that ends with exercises (`01_codec`, `07_train`,
  `08b_calibrate`), runs from top to bottom in its notebook's folder, `#| slow` cells skipped as
  nbdev-test skips them; the full notebooks' asserts are nbdev-test's part;
- every lesson and every notebook with exercises has at least one solution cell, and each solution
  cell is answered: a `<details>` answer follows it before the next exercise;
- `vssl student` writes one student notebook per lesson and per notebook with exercises;
- `vssl lab` starts JupyterLab on nbs/lessons/, prints an address that serves the lessons, and stops on SIGTERM.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT, vssl
from test_browser import _free_port, _jupyter_env

from vssl_nb.course import (ANSWER_PLACEHOLDER, course_order, docs_kernel_env, exercise_notebooks, is_solution, run_notebook,
                            student_edition, tag_cells)

NBS = ROOT / 'nbs'
LESSONS = [rel for rel in course_order(NBS) if rel.startswith('lessons/')]
EXERCISES = exercise_notebooks(NBS)   # the lessons, then the library notebooks that end with exercises

pytestmark = [pytest.mark.timeout(900)]


def test_library_notebooks_with_exercises_get_student_editions():
    assert EXERCISES[:len(LESSONS)] == LESSONS
    assert {'01_codec', '07_train', '08b_calibrate'} <= set(EXERCISES[len(LESSONS):]), EXERCISES


@pytest.mark.parametrize('lesson', ['lessons/01_motion_vectors', '01_codec', '07_train', '08b_calibrate'])
def test_each_solution_has_a_written_answer(lesson):
    "A solution cell is followed, before the next exercise heading or solution, by a `<details>` answer with a difficulty tag."
    cells = nbformat.read(NBS / f'{lesson}.ipynb', as_version=4).cells
    solutions = [i for i, c in enumerate(cells) if is_solution(c)]
    assert solutions, f"{lesson} has no solution cell"
    for i in solutions:
        after = ''
        for c in cells[i + 1:]:
            if is_solution(c) or (c.cell_type == 'markdown' and c.source.lstrip().startswith('### Exercise')): break
            if c.cell_type == 'markdown': after += c.source
        assert re.search(r'<details\b', after) and '★' in after, f"{lesson}, cell {i}: its solution has no <details> answer with a difficulty tag"


@pytest.mark.parametrize('lesson', EXERCISES)
def test_student_edition_runs(lesson):
    full = nbformat.read(NBS / f'{lesson}.ipynb', as_version=4)
    student = student_edition(full, lesson)
    solutions = sum(is_solution(c) for c in full.cells)
    assert sum(c.cell_type == 'code' and c.source == ANSWER_PLACEHOLDER for c in student.cells) == solutions
    assert not any(is_solution(c) for c in student.cells)
    assert not any(re.search(r'<details\b', c.source, re.I) for c in student.cells if c.cell_type == 'markdown')
    ran, seconds, error = run_notebook(tag_cells(student, lesson), NBS / Path(lesson).parent, timeout=600, env=docs_kernel_env(1))
    assert error is None, f"the student edition of {lesson} fails after {seconds:.0f}s:\n{error}"
    assert any(c.get('outputs') for c in ran.cells if c.cell_type == 'code'), f"the student edition of {lesson} produced no output"


def test_vssl_student_writes_every_lesson(tmp_path):
    r = vssl('student', '--out', tmp_path / 'student')
    assert r.returncode == 0, r.stderr
    written = sorted(p.name for p in (tmp_path / 'student').glob('*.ipynb'))
    assert written == sorted(f'{Path(l).name}.ipynb' for l in EXERCISES), (written, r.stdout)
    for name in written:
        nb = json.loads((tmp_path / 'student' / name).read_text())
        assert nb['metadata']['vssl']['edition'] == 'student'
        assert all(not ''.join(c['source']).lstrip().startswith('#| solution') for c in nb['cells'])
    assert r.stdout.count('removed') == len(EXERCISES)


def test_vssl_student_names_an_unclosed_answer(tmp_path):
    nbs = tmp_path / 'nbs'
    (nbs / 'lessons').mkdir(parents=True)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell('# Home')]), nbs / 'index.ipynb')
    lesson = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell('# L'), nbformat.v4.new_markdown_cell('Q?\n\n<details>\nA')])
    nbformat.write(lesson, nbs / 'lessons' / '01_l.ipynb')
    r = vssl('student', '--out', tmp_path / 'out', '--nbs', nbs)
    assert r.returncode == 1 and 'lessons/01_l`, cell 1: the <details> block opened on line 3 is never closed' in r.stderr, r.stderr


def test_vssl_lab_serves_the_lessons_and_stops(tmp_path):
    pytest.importorskip('jupyterlab', reason='JupyterLab is not installed (the lab and dev extras have it)')
    port = _free_port()
    exe = Path(sys.executable).with_name('vssl')
    proc = subprocess.Popen([str(exe), 'lab', '--no-browser', '--port', str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=_jupyter_env(tmp_path), start_new_session=True)
    lines = []
    try:
        deadline = time.time() + 120
        url = None
        while time.time() < deadline and url is None:
            line = proc.stdout.readline()
            if not line:
                if proc.poll() is not None: break
                continue
            lines.append(line)
            m = re.search(r'JupyterLab on (\S+): (http://127\.0\.0\.1:\d+/lab\?token=\w+)', line)
            if m: url = m.group(2); assert Path(m.group(1)) == NBS / 'lessons'
        assert url, f"vssl lab printed no address:\n{''.join(lines)[-3000:]}"
        assert f':{port}/' in url
        base, token = url.split('/lab?token=')
        with urllib.request.urlopen(f'{base}/api/contents?token={token}', timeout=10) as r:
            names = {item['name'] for item in json.load(r)['content']}
        assert {f'{Path(l).name}.ipynb' for l in LESSONS if l.startswith('lessons/')} <= names, names
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200 and 'JupyterLab' in r.read().decode()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        with pytest.raises(OSError):
            urllib.request.urlopen(f'{base}/api/status?token={token}', timeout=3)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL); proc.wait()


def test_vssl_lab_refuses_a_missing_folder(tmp_path):
    r = vssl('lab', '--no-browser', '--root', tmp_path / 'nowhere')
    assert r.returncode == 1 and 'is not a folder' in r.stderr, r.stderr
