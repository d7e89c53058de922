"""Fault tests: runs that survive a kill -9, a SIGTERM, a damaged checkpoint and a full disk, and end identical to runs that never stopped.

The trainer-level tests train a tiny recipe on `SyntheticClips` in this process (or in a subprocess that kills itself); the
`vssl run` tests run the `pretrain` template on the bundled samples under papermill and stop it from outside, as a scheduler would.
"""
import errno
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from vssl_nb import train as vt
from vssl_nb.core import EXIT_INTERRUPTED, read_jsonl
from vssl_nb.models import build_backbone
from vssl_nb.train import (CHECKPOINT, CHECKPOINT_PREV, Callback, SyntheticClips, Trainer, TrainingInterrupted, build_recipe,
                           read_train_log, run_distributed)

from conftest import ROOT, vssl

pytestmark = pytest.mark.usefixtures('quiet_progress')
STEPS, LOG_EVERY = 14, 4     # 24 clips in batches of 4: 6 steps per epoch, so stops land mid-epoch and between log rows


def _trainer(run_dir, callbacks=(), steps=STEPS, **kw):
    "A tiny CMD run over a plain shuffled DataLoader (the trainer makes its batches resumable)."
    torch.manual_seed(0)
    recipe = build_recipe('cmd', build_backbone('tiny', widths=(4, 8, 8, 16)))
    loader = DataLoader(SyntheticClips(n=24, size=32), batch_size=4, shuffle=True, drop_last=True)
    kw = {'checkpoint_every': 3, **kw}
    return Trainer(recipe, loader, steps=steps, lr=0.05, run_dir=run_dir, log_every=LOG_EVERY, seed=0, show_progress=False,
                   device='cpu', callbacks=callbacks, **kw)


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor): return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict): return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)): return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_equal, a, b))
    return a == b


def _without_timing(rows): return [{k: v for k, v in r.items() if k != 'clips_per_s'} for r in rows]


def _assert_same_run(a: Path, b: Path):
    "Two run folders hold the same final weights, optimiser state, training log and metrics (timings aside)."
    wa, wb = torch.load(a / 'backbone.pt', weights_only=True), torch.load(b / 'backbone.pt', weights_only=True)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ca, cb = torch.load(a / CHECKPOINT, weights_only=True), torch.load(b / CHECKPOINT, weights_only=True)
    assert ca['step'] == cb['step'] and all(torch.equal(ca['model'][k], cb['model'][k]) for k in ca['model'])
    assert _equal(ca['optimizer'], cb['optimizer']) and _without_timing(ca['history']) == _without_timing(cb['history'])
    assert _without_timing(read_train_log(a)) == _without_timing(read_train_log(b))
    ma, mb = (json.loads((p / 'metrics.json').read_text()) for p in (a, b))
    drop = lambda m: {k: ({kk: vv for kk, vv in v.items() if kk != 'clips_per_s'} if isinstance(v, dict) else v)
                      for k, v in m.items() if 'seconds' not in k}
    assert drop(ma) == drop(mb)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    "The run that never stopped."
    folder = tmp_path_factory.mktemp('reference') / 'run'
    _trainer(folder).fit()
    return folder


class SendSignal(Callback):
    "Send `sig` to this process after step `at` (on process `rank` only)."
    def __init__(self, at, sig=signal.SIGTERM, rank=0): self.at, self.sig, self.rank = at, sig, rank
    def on_step_end(self, trainer, step, logs):
        if step == self.at and trainer.rank == self.rank: signal.raise_signal(self.sig)


class Crash(Callback):
    def __init__(self, at): self.at = at
    def on_step_end(self, trainer, step, logs):
        if step == self.at: raise RuntimeError(f'simulated crash at step {step}')


def test_sigterm_saves_at_the_step_boundary_then_resume_is_identical(tmp_path, reference):
    run = tmp_path / 'run'
    with pytest.raises(TrainingInterrupted) as stop:
        _trainer(run, [SendSignal(7)], checkpoint_every=0).fit()      # step 7: mid-epoch, between the log rows of 4 and 8
    assert stop.value.code == EXIT_INTERRUPTED and stop.value.reason == 'SIGTERM' and stop.value.step == 7
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL       # the trainer's handler is gone again
    sd = torch.load(run / CHECKPOINT, weights_only=True)
    assert sd['step'] == 7 and len(sd['window']) == 3 and [r['step'] for r in sd['history']] == [4]
    events = read_jsonl(run / 'events.jsonl')
    assert [e['event'] for e in events][-2:] == ['checkpoint', 'stop'] and events[-1]['reason'] == 'SIGTERM'
    assert not (run / 'backbone.pt').exists()                        # a stopped run has not produced its result
    resumed = _trainer(run, checkpoint_every=0)
    resumed.fit()
    assert resumed.start_step == 7
    _assert_same_run(reference, run)


def test_kill9_at_a_random_step_then_resume_is_identical(tmp_path):
    "A process killed outright (SIGKILL: no handler runs) resumes from its last periodic checkpoint, in a new process."
    kill_at = random.Random().randint(2, STEPS - 1)
    script = textwrap.dedent(f'''
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_resume import _trainer
        from vssl_nb.train import Callback
        class Kill(Callback):
            def on_step_end(self, trainer, step, logs):
                if step == {kill_at}: os.kill(os.getpid(), signal.SIGKILL)
        _trainer(sys.argv[1], [Kill()] if sys.argv[2] == 'kill' else []).fit()
    ''')
    def run(folder, mode):   # fresh processes all three, so that no global torch setting of this one plays a part
        return subprocess.run([sys.executable, '-c', script, str(tmp_path / folder), mode], capture_output=True, text=True, timeout=300,
                              env={**os.environ, 'VSSL_PROGRESS': 'off'})
    r = run('run', 'kill')
    assert r.returncode == -signal.SIGKILL, (kill_at, r.stderr[-2000:])
    ckpt = tmp_path / 'run' / CHECKPOINT
    assert (torch.load(ckpt, weights_only=True)['step'] if ckpt.exists() else 0) == 3 * ((kill_at - 1) // 3), kill_at
    for folder in ('run', 'reference'): assert run(folder, 'go').returncode == 0
    start = [e for e in read_jsonl(tmp_path / 'run' / 'events.jsonl') if e['event'] == 'start'][-1]
    assert start['step'] == 3 * ((kill_at - 1) // 3), kill_at          # the last checkpoint before the kill (every 3 steps)
    _assert_same_run(tmp_path / 'reference', tmp_path / 'run')


def test_corrupted_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, reference):
    run = tmp_path / 'run'
    with pytest.raises(RuntimeError, match='simulated crash'): _trainer(run, [Crash(11)]).fit()
    latest = run / CHECKPOINT
    assert torch.load(latest, weights_only=True)['step'] == 9 and torch.load(run / CHECKPOINT_PREV, weights_only=True)['step'] == 6
    latest.write_bytes(latest.read_bytes()[:1000])                    # truncated, as by a crash while the disk wrote it
    with pytest.warns(RuntimeWarning, match='cannot be read'):
        resumed = _trainer(run); resumed.fit()
    assert resumed.start_step == 6
    start = [e for e in read_jsonl(run / 'events.jsonl') if e['event'] == 'start'][-1]
    assert start['resumed_from'] == CHECKPOINT_PREV and start['skipped'][0]['file'] == CHECKPOINT
    assert (run / (CHECKPOINT + '.unreadable')).exists()             # kept for a look, out of the rotation
    _assert_same_run(reference, run)


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, reference, monkeypatch):
    run = tmp_path / 'run'
    real = vt._save_state
    def full_disk(state, f):
        if state['step'] >= 6:   # from step 6 on, the disk is full half-way through every checkpoint
            f.write(b'\0' * 4096); raise OSError(errno.ENOSPC, 'No space left on device')
        real(state, f)
    monkeypatch.setattr(vt, '_save_state', full_disk)
    with pytest.warns(RuntimeWarning, match='No space left'), pytest.raises(RuntimeError, match='simulated crash'):
        _trainer(run, [Crash(10)]).fit()                               # training goes on after a failed checkpoint
    digest = hashlib.sha256((run / CHECKPOINT).read_bytes()).hexdigest()
    assert torch.load(run / CHECKPOINT, weights_only=True)['step'] == 3
    assert sorted(p.name for p in run.iterdir() if 'checkpoint' in p.name) == [CHECKPOINT]   # no partial file left behind
    failed = [e for e in read_jsonl(run / 'events.jsonl') if e['event'] == 'checkpoint_failed']
    assert [e['step'] for e in failed] == [6, 9] and 'No space left' in failed[0]['error']
    with pytest.raises(TrainingInterrupted, match='no checkpoint written'):   # a stop whose checkpoint cannot be written says so
        _trainer(tmp_path / 'stop', [SendSignal(7)], checkpoint_every=0).fit()
    monkeypatch.setattr(vt, '_save_state', real)
    assert hashlib.sha256((run / CHECKPOINT).read_bytes()).hexdigest() == digest
    resumed = _trainer(run); resumed.fit()
    assert resumed.start_step == 3
    _assert_same_run(reference, run)


def test_checkpoints_every_n_minutes_of_wall_time(tmp_path):
    now = [0.0]
    class Clock(Callback):   # a clock that moves 40 s per step
        def on_step_end(self, trainer, step, logs): now[0] += 40.0
    t = _trainer(tmp_path, [Clock()], checkpoint_every=0, checkpoint_minutes=2)
    (ckpt,) = [cb for cb in t.callbacks if isinstance(cb, vt.CheckpointCallback)]
    ckpt.clock = lambda: now[0]
    t.fit()
    steps = [e['step'] for e in read_jsonl(tmp_path / 'events.jsonl') if e['event'] == 'checkpoint']
    assert steps == [3, 6, 9, 12, STEPS]                               # every 120 s = 3 steps, and at the end


def _ddp_stop_and_resume(folder: str) -> dict:
    "In each of 2 processes: a reference run, a run that rank 0 alone gets SIGTERM in, its resumption; what each saw."
    folder = Path(folder)
    ref = _trainer(folder / 'ref', steps=8); ref.fit()
    try:
        _trainer(folder / 'cut', [SendSignal(5, rank=0)], steps=8, checkpoint_every=0).fit()
        stopped = None
    except TrainingInterrupted as e: stopped = (e.step, e.reason)
    resumed = _trainer(folder / 'cut', steps=8, checkpoint_every=0); resumed.fit()
    same = all(torch.equal(a, b) for a, b in zip(ref.recipe.state_dict().values(), resumed.recipe.state_dict().values()))
    return {'stopped': stopped, 'start_step': resumed.start_step, 'same': same}


def test_sigterm_to_one_process_of_two_stops_every_process_at_the_same_step(tmp_path):
    a, b = run_distributed(_ddp_stop_and_resume, (str(tmp_path),), world_size=2)
    assert a['stopped'] == (5, 'SIGTERM') and b['stopped'] == (5, 'a stop request to another process')
    assert a['start_step'] == b['start_step'] == 5 and a['same'] and b['same']
    assert torch.load(tmp_path / 'cut' / CHECKPOINT, weights_only=True)['step'] == 8


# -- `vssl run`: the same faults from outside, as a scheduler or a person causes them ---------------------------------

RUN = ['pretrain', '-p', 'method', 'cmd', '-p', 'steps', '16', '-p', 'batch_size', '8', '-p', 'eval_clips', '1', '-p', 'threads', '1',
       '-p', 'label_fractions', '""', '-p', 'checkpoint_minutes', '0.002']


@pytest.fixture(scope='module')
def runs_env(tmp_path_factory):
    "One runs folder for the `vssl run` tests, with the run that never stopped."
    base = tmp_path_factory.mktemp('vssl')
    env = {**os.environ, 'VSSL_RUNS': str(base / 'runs'), 'VSSL_CACHE': str(base / 'cache'), 'VSSL_DATA': str(base / 'data'),
           'VSSL_PROGRESS': 'off', 'OMP_NUM_THREADS': '1'}
    r = vssl('run', *RUN, '--run-id', 'full', env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return env, base / 'runs' / 'pretrain'


def _start(env, run_id):
    exe = Path(sys.executable).with_name('vssl')
    return subprocess.Popen([str(exe), 'run', *RUN, '--run-id', run_id], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _wait_for(path: Path, what, timeout=240):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if what(read_jsonl(path)): return
        time.sleep(0.05)
    raise TimeoutError(f'{path}: not reached in {timeout}s')


def test_vssl_run_sigterm_is_interrupted_then_resume_is_identical(runs_env):
    env, runs = runs_env
    p = _start(env, 'cut')
    _wait_for(runs / 'cut' / 'events.jsonl', lambda ev: any(e['event'] == 'first_step' for e in ev))
    p.send_signal(signal.SIGTERM)            # to `vssl run` only: it passes the signal on to the kernel
    out, err = p.communicate(timeout=240)
    assert p.returncode == EXIT_INTERRUPTED, err[-3000:]
    assert 'INTERRUPTED (SIGTERM)' in err and 'vssl resume pretrain/cut' in err
    rec = json.loads((runs / 'cut' / 'record.json').read_text())
    (a,) = rec['attempts']
    assert rec['status'] == a['status'] == 'interrupted' and a['reason'] == 'SIGTERM'
    if a['training'][0]['step'] < 16:        # it landed in the training loop: a checkpoint at the step it stopped at
        assert a['training'][0]['stopped_by'] == 'SIGTERM' and a['training'][0]['checkpoint_step'] == a['training'][0]['step']
    r = vssl('results', '--experiment', 'pretrain', env=env)
    assert r.returncode == 0 and '| cut | interrupted |' in r.stdout and '1 of 2 runs are not finished' in r.stdout
    r = vssl('run', 'pretrain', '-p', 'steps', '17', '--resume', 'cut', env=env)      # other parameters: refused, nothing run
    assert r.returncode == 1 and 'steps=16 (given 17)' in r.stderr
    r = vssl('run', *RUN, '--run-id', 'cut', env=env)                                # starting it again instead: refused, with the way
    assert r.returncode == 1 and 'status interrupted' in r.stderr and 'vssl resume pretrain/cut' in r.stderr
    r = vssl('resume', 'no-such-run', env=env)
    assert r.returncode == 1 and "no run 'no-such-run'" in r.stderr
    r = vssl('resume', 'pretrain/cut', env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads((runs / 'cut' / 'record.json').read_text())
    assert [x['status'] for x in rec['attempts']] == ['interrupted', 'ok'] and rec['status'] == 'ok' and rec['error'] is None
    assert rec['attempts'][1]['training'][0]['start_step'] == a['training'][0]['checkpoint_step']
    _assert_same_run(runs / 'full', runs / 'cut')
    r = vssl('run', *RUN, '--resume', 'cut', env=env)       # a finished run: nothing to do
    assert r.returncode == 0 and 'already finished' in r.stdout


def test_vssl_run_kill9_and_a_truncated_checkpoint_then_resume_is_identical(runs_env):
    psutil = pytest.importorskip('psutil')
    env, runs = runs_env
    p = _start(env, 'killed')
    _wait_for(runs / 'killed' / 'events.jsonl', lambda ev: sum(e['event'] == 'checkpoint' for e in ev) >= 2)
    time.sleep(random.Random().uniform(0, 1.5))
    for proc in psutil.Process(p.pid).children(recursive=True) + [psutil.Process(p.pid)]:
        proc.kill()                          # kill -9 of `vssl run` and of its kernel: nothing gets to write
    p.wait(timeout=60)
    time.sleep(0.2)
    assert json.loads((runs / 'killed' / 'record.json').read_text())['status'] == 'running'
    r = vssl('results', '--experiment', 'pretrain', env=env)
    assert '| killed | interrupted | interrupted (killed)' in r.stdout, r.stdout
    latest, in_flight = runs / 'killed' / CHECKPOINT, runs / 'killed' / 'checkpoint.next.pt'
    if in_flight.exists(): os.replace(in_flight, latest)   # killed while rotating a new checkpoint in: finish the rotation
    latest.write_bytes(latest.read_bytes()[:2000])
    r = vssl('run', *RUN, '--resume', 'killed', env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    first, second = json.loads((runs / 'killed' / 'record.json').read_text())['attempts']
    assert first['status'] == 'interrupted' and first['reason'] == 'killed'
    t = second['training'][0]
    assert t['resumed_from'] == CHECKPOINT_PREV and t['skipped_checkpoints'][0]['file'] == CHECKPOINT
    _assert_same_run(runs / 'full', runs / 'killed')
