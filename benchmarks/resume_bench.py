"""Kill-and-resume trials, and what resuming costs (benchmarks/results/resume.md).

Run by hand:  python benchmarks/resume_bench.py [--kill-trials 20] [--term-trials 5] [--steps 60] [--seed 0]

Everything goes through `vssl run` / `vssl resume` and the `pretrain` template (CMD, tiny backbone) on the bundled
data_samples/ (the `tiny` preset), as a person or a scheduler would use them:

1. one uninterrupted run, the twin every trial is compared with;
2. `--kill-trials` trials in which `vssl run` and its kernel are killed outright (SIGKILL, as by a power cut or the OOM killer:
   nothing gets to write) at a random moment, once or twice (a resumed attempt can be killed again), then resumed with
   `vssl resume` until the run finishes;
3. `--term-trials` trials stopped with SIGTERM sent to `vssl run` alone (what a cloud scheduler sends before it kills), which
   must exit with status 3 after a checkpoint at the next step boundary, then resumed.

A trial passes when its final weights, optimiser state, training log and metrics are identical to the twin's (timings aside).
Kill moments are uniform over [0.15, 0.95] of the twin's wall time, so some land during start-up (nothing saved yet), most
during training, some during evaluation. Checkpoints every `--checkpoint-minutes` (default 0.05 min = 3 s) give the kills
something to resume from.

Resume overhead: for each resumption from a checkpoint in the middle of training, the time from launching `vssl resume` to
the end of the first step it trains, minus that step's own duration (the trainer's `first_step` event), beside the same
figure for a fresh start (the twin's and the trials' first attempts) and the checkpoint-loading time inside the trainer.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil
import torch

RESULTS = Path(__file__).resolve().parent / 'results' / 'resume.md'
VSSL = str(Path(sys.executable).with_name('vssl'))


def read_jsonl(path: Path) -> list[dict]:
    out = []
    for line in (path.read_text().splitlines() if path.exists() else []):
        try: out.append(json.loads(line))
        except json.JSONDecodeError: pass
    return out


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor): return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict): return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)): return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_equal, a, b))
    return a == b


def _no_timing(obj):
    if isinstance(obj, dict): return {k: _no_timing(v) for k, v in obj.items() if 'seconds' not in k and k != 'clips_per_s'}
    if isinstance(obj, list): return [_no_timing(v) for v in obj]
    return obj


def compare(a: Path, b: Path) -> dict:
    "Which of weights, optimiser state, training log and metrics of run folders `a` and `b` are identical."
    ca, cb = (torch.load(p / 'checkpoint.pt', weights_only=True) for p in (a, b))
    wa, wb = (torch.load(p / 'backbone.pt', weights_only=True) for p in (a, b))
    ma, mb = (json.loads((p / 'metrics.json').read_text()) for p in (a, b))
    return {'weights': _equal(wa, wb) and _equal(ca['model'], cb['model']), 'optimizer': _equal(ca['optimizer'], cb['optimizer']),
            'log': _no_timing(read_jsonl(a / 'train_log.jsonl')) == _no_timing(read_jsonl(b / 'train_log.jsonl')),
            'metrics': _no_timing(ma) == _no_timing(mb)}


class Bench:
    def __init__(self, args):
        self.args, self.rng = args, random.Random(args.seed)
        self.root = Path(args.runs or tempfile.mkdtemp(prefix='vssl-resume-bench-'))
        self.env = {**os.environ, 'VSSL_RUNS': str(self.root), 'VSSL_PROGRESS': 'off', 'OMP_NUM_THREADS': '1'}
        self.params = ['-p', 'method', 'cmd', '-p', 'steps', str(args.steps), '-p', 'batch_size', '8', '-p', 'eval_clips', '1',
                       '-p', 'threads', '1', '-p', 'checkpoint_minutes', str(args.checkpoint_minutes)]
        self.exp = self.root / 'pretrain'

    def launch(self, run_id: str, resume: bool = False) -> tuple[subprocess.Popen, float]:
        cmd = [VSSL, 'resume', f'pretrain/{run_id}'] if resume else [VSSL, 'run', 'pretrain', *self.params, '--run-id', run_id]
        t = time.time()
        return subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True), t

    def first_step(self, run_id: str, attempt: int, t_launch: float) -> dict | None:
        "Time from launch to the end of the attempt's first trained step, that step's duration, and the checkpoint-loading time."
        ev = [e for e in read_jsonl(self.exp / run_id / 'events.jsonl') if e.get('attempt') == attempt]
        start = next((e for e in ev if e['event'] == 'start'), None)
        first = next((e for e in ev if e['event'] == 'first_step'), None)
        if not start: return None
        out = {'start_step': start['step'], 'resumed_from': start.get('resumed_from'), 'skipped': start.get('skipped'),
               'load_seconds': start.get('load_seconds')}
        if first: out.update(to_first_step=first['t'] - t_launch, step_seconds=first['seconds'], overhead=first['t'] - t_launch - first['seconds'])
        return out

    def reference(self) -> float:
        p, t = self.launch('twin')
        err = p.communicate()[1]
        if p.returncode != 0: sys.exit(f"the uninterrupted run failed:\n{err[-3000:]}")
        self.t_ref = time.time() - t
        self.fresh = [f for f in [self.first_step('twin', 1, t)] if f and 'overhead' in f]
        return self.t_ref

    def kill_all(self, p: subprocess.Popen):
        procs = [psutil.Process(p.pid)]
        try: procs = procs[0].children(recursive=True) + procs
        except psutil.NoSuchProcess: pass
        for proc in procs:
            try: proc.kill()
            except psutil.NoSuchProcess: pass
        p.wait()

    def step_reached(self, run_id: str) -> int:
        log = read_jsonl(self.exp / run_id / 'train_log.jsonl')
        ev = read_jsonl(self.exp / run_id / 'events.jsonl')
        return max([r.get('step', 0) for r in log[-1:]] + [e.get('step', 0) for e in ev[-1:] if isinstance(e.get('step'), int)] + [0])

    def trial(self, k: int, sig: str, retry: int = 0) -> dict:
        run_id = f"{sig.lower()}-{k:02d}" + (f"-again{retry}" if retry else '')
        kills = 1 if sig == 'TERM' else self.rng.choice([1, 1, 2])
        out = {'trial': run_id, 'signal': 'SIG' + sig, 'kills': [], 'resumes': []}
        p, t = self.launch(run_id)
        attempt = 1
        for n in range(kills):
            delay = self.rng.uniform(0.15, 0.95) * self.t_ref
            try:
                p.wait(timeout=delay)
                out['kills'].append({'at': round(delay, 1), 'missed': 'the attempt had finished'}); break
            except subprocess.TimeoutExpired: pass
            if sig == 'KILL': self.kill_all(p); rc = -9
            else:
                p.send_signal(signal.SIGTERM); p.wait(); rc = p.returncode
            fs = self.first_step(run_id, attempt, t)
            if attempt == 1 and fs and 'overhead' in fs: self.fresh.append(fs)
            elif fs and attempt > 1: out['resumes'][-1].update(fs)
            out['kills'].append({'at': round(delay, 1), 'step': self.step_reached(run_id), 'rc': rc})
            attempt += 1
            p, t = self.launch(run_id, resume=True)
            out['resumes'].append({'attempt': attempt, 't_launch': t})
        err = p.communicate()[1]
        out['rc'] = p.returncode
        for r in out['resumes']:
            if 'start_step' not in r:
                fs = self.first_step(run_id, r['attempt'], r['t_launch'])
                if fs: r.update(fs)
        rec = json.loads((self.exp / run_id / 'record.json').read_text())
        out['attempts'] = [(a['status'], a.get('reason')) for a in rec['attempts']]
        out['status'] = rec['status']
        out['same'] = compare(self.exp / 'twin', self.exp / run_id) if rec['status'] == 'ok' else {}
        out['identical'] = bool(out['same']) and all(out['same'].values())
        if p.returncode != 0: out['error'] = err[-2000:]
        return out


def stopped(t: dict) -> bool:
    "Did a stop land before the run finished? (a drawn moment after the end, or a SIGTERM the finished run exited 0 on, does not count)"
    return any('missed' not in k and k.get('rc') != 0 for k in t['kills'])


def median(xs): return statistics.median(xs) if xs else float('nan')


def report(b: Bench, trials: list[dict], t0: float, load0) -> str:
    a = b.args
    kill = [t for t in trials if t['signal'] == 'SIGKILL' and stopped(t)]
    term = [t for t in trials if t['signal'] == 'SIGTERM' and stopped(t)]
    missed = [t['trial'] for t in trials if not stopped(t)]
    resumed = [r for t in trials for r in t['resumes'] if r.get('resumed_from') and 0 < r['start_step'] < a.steps and 'overhead' in r]
    fresh = [f for f in b.fresh if f]
    lines = ["# Runs that survive: kill-and-resume trials", "",
             f"Generated by `python benchmarks/resume_bench.py --kill-trials {a.kill_trials} --term-trials {a.term_trials} --steps {a.steps} "
             f"--seed {a.seed}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC ({os.cpu_count()} CPU cores, {platform.machine()}, "
             f"torch {torch.__version__}; load average {load0[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end: the machine was shared), "
             f"{(time.time() - t0) / 60:.1f} min in all.",
             "",
             f"Each trial is `vssl run pretrain` (CMD, tiny backbone, bundled data_samples/ = the `tiny` preset, {a.steps} steps of 8 clips, "
             f"threads 1, a checkpoint every {a.checkpoint_minutes} min = {a.checkpoint_minutes * 60:.0f} s of wall time) stopped at a "
             f"random moment (uniform over 0.15–0.95 of the uninterrupted run's {b.t_ref:.1f} s), then `vssl resume` until it finishes, "
             "and is compared with the uninterrupted twin: final weights (backbone.pt and the checkpoint's model), optimiser state, "
             "every training-log row, every metric (timings aside).",
             "",
             f"**SIGKILL (`vssl run` and its kernel killed at once, 1–2 times per trial): {sum(t['identical'] for t in kill)} of {len(kill)} "
             f"runs ended identical to their uninterrupted twin.**",
             f"**SIGTERM (to `vssl run` alone; exit status 3, a checkpoint at the next step boundary): {sum(t['identical'] for t in term)} "
             f"of {len(term)} identical.**" if term else "",
             f"(Not counted, and drawn again: {', '.join(missed)}, which finished before the stop came.)" if missed else "",
             f"Where the stops landed: {sum(k.get('step', 0) == 0 for t in trials for k in t['kills'] if 'missed' not in k and k.get('rc') != 0)} before the "
             f"first step, {sum(0 < k.get('step', 0) < a.steps for t in trials for k in t['kills'] if 'missed' not in k and k.get('rc') != 0)} during training, "
             f"{sum(k.get('step', 0) >= a.steps for t in trials for k in t['kills'] if 'missed' not in k and k.get('rc') != 0)} after it (evaluation).", "",
             "| trial | signal | stopped after (s) | step reached | exit | resumed from | attempts | identical |",
             "|---|---|---|---|---|---|---|---|"]
    for t in trials:
        at = ', '.join(str(k['at']) for k in t['kills'])
        steps = ', '.join(str(k.get('step', '—')) for k in t['kills'])
        rcs = ', '.join(str(k.get('rc', '—')) for k in t['kills'])
        frm = ', '.join('(killed before training)' if 'start_step' not in r else
                        f"{r.get('resumed_from') or 'scratch'}@{r['start_step']}" + (' (newest unreadable)' if r.get('skipped') else '')
                        for r in t['resumes'])
        att = ' → '.join(f"{s}" + (f" ({r})" if r and r not in ('finished',) else '') for s, r in t['attempts'])
        ok = 'yes' if t['identical'] else f"NO {t.get('same')} {t.get('error', '')[:200]}"
        lines.append(f"| {t['trial']} | {t['signal']} | {at} | {steps} | {rcs} | {frm} | {att} | {ok} |")
    lines += ["", "## Resume overhead", "",
              "Time from launching the command to the end of the first step it trains, minus that step's own duration (the",
              "trainer's `first_step` event): process start, papermill, kernel start, imports, the data set, the recipe, and for a",
              "resumption also reading the checkpoint and skipping to its place in the epoch.", "",
              "| start | n | median (s) | max (s) | checkpoint load, median (s) | first step, median (s) |", "|---|---|---|---|---|---|"]
    for name, xs in (('fresh `vssl run`', fresh), ('`vssl resume` from a mid-training checkpoint', resumed)):
        if not xs: continue
        lines.append(f"| {name} | {len(xs)} | {median([x['overhead'] for x in xs]):.2f} | {max(x['overhead'] for x in xs):.2f} | "
                     f"{median([x['load_seconds'] for x in xs if x.get('load_seconds') is not None]):.3f} | "
                     f"{median([x['step_seconds'] for x in xs]):.2f} |")
    if resumed:
        worst = max(x['overhead'] for x in resumed)
        lines += ["", f"Target: less than 10 s plus one step. Measured: median {median([x['overhead'] for x in resumed]):.2f} s, worst "
                      f"{worst:.2f} s beyond the step ({'met' if worst < 10 else 'NOT met'} on this machine); the difference to a fresh "
                      f"start, {median([x['overhead'] for x in resumed]) - median([x['overhead'] for x in fresh]):+.2f} s (median), is what "
                      "resuming itself adds."]
    return '\n'.join(l for l in lines if l is not None) + '\n'


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--kill-trials', type=int, default=20)
    ap.add_argument('--term-trials', type=int, default=5)
    ap.add_argument('--steps', type=int, default=60)
    ap.add_argument('--checkpoint-minutes', type=float, default=0.05)
    ap.add_argument('--seed', type=int, default=0, help='seed of the kill moments')
    ap.add_argument('--runs', help='runs folder (default: a new temporary folder, removed at the end)')
    ap.add_argument('--out', default=str(RESULTS))
    args = ap.parse_args()
    t0, load0 = time.time(), os.getloadavg()
    b = Bench(args)
    print(f"runs in {b.root}; uninterrupted twin ...", flush=True)
    print(f"  {b.reference():.1f}s", flush=True)
    trials = []
    for k, sig in enumerate(['KILL'] * args.kill_trials + ['TERM'] * args.term_trials):
        for retry in range(4):   # a trial whose run finished before the stop came is drawn again (and reported)
            t = b.trial(k, sig, retry)
            print(f"{t['trial']}: kills {t['kills']} attempts {t['attempts']} identical {t['identical']}", flush=True)
            trials.append(t)
            if stopped(t): break
    text = report(b, trials, t0, load0)
    Path(args.out).write_text(text)
    print(text)
    if not args.runs: shutil.rmtree(b.root, ignore_errors=True)
    return 0 if all(t['identical'] for t in trials) else 1


if __name__ == '__main__':
    sys.exit(main())
