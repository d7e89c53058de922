"""How long supervised training from scratch sits on its plateau at chance (loss ln C) before the loss starts to fall.

The step reported is `vssl_nb.calibrate.plateau_end` of the training log: the first logged step (every 25) whose mean loss
is below 0.9 ln C. A run stops 100 steps after it, or at --max-steps. The learning-rate schedule is that of a --total-steps
run (warm-up over total/20 steps, then cosine), so the first few hundred steps are those of the full protocol.
This measured why `experiments/calibrate` trains with batches of 32 (benchmarks/results/world_notes.md).

    python benchmarks/plateau_probe.py DATA --seeds 1 2 3 4 --config '{"batch_size": 32}' --name bs32 >> plateau.jsonl

--config keys: batch_size, lr, warmup_steps, weight_decay, optimizer, dropout, frames, stride, min_crop. Run it alone on
the machine: its clips/s are meaningless beside another torch process.
"""
import argparse, json, time
from pathlib import Path
import torch
from vssl_nb.calibrate import plateau_end
from vssl_nb.data import read_class_index
from vssl_nb.study import StudyData, train_supervised
from vssl_nb.train import Callback

class _Stop(Exception): pass

class _StopAfterPlateau(Callback):
    "Ends a fit (by raising `_Stop`) 100 steps after the plateau's end or at `max_steps`; keeps the trainer's step and log."
    def __init__(self, num_classes, max_steps, after=100): self.num_classes, self.max_steps, self.after, self.end = num_classes, max_steps, after, None
    def on_log(self, trainer, row):
        if self.end is None: self.end = plateau_end([row], self.num_classes)
        self.step, self.history = trainer.step, trainer.history
        if row['step'] >= self.max_steps or (self.end is not None and row['step'] >= self.end + self.after): raise _Stop

def probe(data: str, seed: int, config: dict, max_steps: int, total_steps: int) -> dict:
    "`train_supervised` with the calibrated protocol changed by `config`, on a `total_steps` schedule, stopped by `_StopAfterPlateau`."
    cfg = dict(config)
    study = StudyData(data, size=56, frames=cfg.pop('frames', 8), stride=cfg.pop('stride', 2), min_crop=cfg.pop('min_crop', 0.5),
                      flip=False, batch_size=cfg.pop('batch_size', 16), workers=0, eval_clips=4)
    stop = _StopAfterPlateau(len(read_class_index(Path(data) / 'classInd.txt')), max_steps)
    t0 = time.perf_counter()
    try: train_supervised(study, steps=total_steps, seed=seed, show_progress=False, callbacks=[stop], log_every=25,
                          checkpoint_minutes=None, **{'optimizer': 'adamw', 'lr': 2e-3, 'weight_decay': 0.05, 'dropout': 0.2, **cfg})
    except _Stop: pass
    else: raise RuntimeError(f"the probe trained all {total_steps} steps: give --max-steps below --total-steps")
    dt = time.perf_counter() - t0
    return {'plateau_end': stop.end, 'last_step': stop.step, 'seconds': round(dt, 1),
            'clips_per_s': round(stop.step * study.batch_size / dt, 1), 'losses': [r['loss'] for r in stop.history]}

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('data'); ap.add_argument('--seeds', type=int, nargs='+', default=[1, 2, 3])
    ap.add_argument('--config', default='{}'); ap.add_argument('--name', default='')
    ap.add_argument('--max-steps', type=int, default=1000); ap.add_argument('--total-steps', type=int, default=3000)
    ap.add_argument('--threads', type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for s in a.seeds:
        print(json.dumps({'name': a.name, 'config': json.loads(a.config), 'seed': s,
                          **probe(a.data, s, json.loads(a.config), a.max_steps, a.total_steps)}), flush=True)
