"""Throughput of the input pipeline: where a sample's time goes, the decoded-clip store against decoding the mp4, and training
end to end against the trainer on a fixed batch. Writes benchmarks/results/throughput.md (its CPU sections; the GPU section
is written by `--gpu`, and `--pair` adds the two-runs-side-by-side table).

Run by hand on an otherwise idle machine (every ratio is measured side by side in one run):
    python benchmarks/throughput_bench.py                 # profile, store vs mp4, end to end vs trainer (CPU)
    python benchmarks/throughput_bench.py --pair          # two identical runs at once vs one alone, per thread policy
    python benchmarks/throughput_bench.py --gpu           # on a machine with a GPU: R(2+1)D-18 and tiny CMD, end to end vs trainer
Data: the synthetic world `small` (64 px; generated into $VSSL_DATA/world-small-s0 if missing), a 128-px version of it for the
112-px rows (generated), and the real clips of ../shared/videos (skipped when absent).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vssl_nb.core import thread_env
os.environ.update(thread_env())   # the workbench's thread policy, before torch loads OpenMP (as `vssl run` does for its kernels)
import torch
from torch.utils.data import default_collate

from vssl_nb.codec import CompressedVideo, _rgb, decode_frames, open_video, sample_videos_dir
from vssl_nb.core import data_dir
from vssl_nb.data import BatchAugment, ClipSampler, ClipDataset, VideoItem, train_transform
from vssl_nb.extract import find_videos, load_or_extract
from vssl_nb.models import build_backbone
from vssl_nb.store import load_or_store
from vssl_nb.study import StudyData, batch_transform, pretext_loader, study_transform
from vssl_nb.train import Callback, SupervisedRecipe, Trainer, build_recipe

RESULTS = Path(__file__).resolve().parent / 'results' / 'throughput.md'


def world(preset: str = 'small', seed: int = 0, size: int | None = None, n_train: int | None = None) -> Path:
    "A synthetic world folder, generated once into $VSSL_DATA."
    from vssl_nb.world.dataset import generate_dataset
    from vssl_nb.world.presets import preset_config
    name = f"world-{preset}-s{seed}" + (f"-{size}px-{n_train}" if size else '')
    root = data_dir() / name
    if not (root / 'metadata.json').is_file():
        over = dict(width=size, height=size) if size else {}
        if n_train: over.update(n_train=n_train, n_test=max(2, n_train // 5))
        generate_dataset(preset_config(preset, **over), root, seed=seed, workers=2, show_progress=True, name=name)
    return root


# -- 1. where the time goes ----------------------------------------------------------------------------------------------
def profile_samples(videos, n_frames: int, stride: int, size: int, block: int, cache: Path, store: Path, n: int = 48, batch: int = 16,
                    store_size: int | None = None) -> dict:
    "Mean milliseconds per sample of each step, decoding the mp4 and slicing the store (frames at shorter side `store_size`), for `n` random clips of `videos`."
    rng = np.random.default_rng(0)
    tf = train_transform(size, (0.5, 1.0))
    sampler = ClipSampler(n_frames=n_frames, stride=stride, motion_frames=n_frames)
    picks = [videos[int(i)] for i in rng.integers(0, len(videos), n)]
    for v in set(picks): load_or_extract(v, cache, block=block, per_frame=True); load_or_store(v, store, store_size, block=block, extract_dir=cache)
    mp4 = dict(open=0., decode=0., convert=0., extraction=0., transform=0.)
    st = dict(open=0., slice=0., transform=0., draw=0.)
    samples, raw = [], []
    for k, v in enumerate(picks):
        g = torch.Generator().manual_seed(k)
        t0 = time.perf_counter(); ex = load_or_extract(v, cache, block=block, per_frame=True); t1 = time.perf_counter()
        c = sampler.clip(sampler.starts(ex.n_frames, np.random.default_rng(k))[0], ex.n_frames, ex.keyframe_indices)
        want, got = set(c['frames'].tolist()), {}
        t2 = time.perf_counter(); opened = open_video(v); t3 = time.perf_counter()
        t_conv = 0.
        for i, f in decode_frames(v, opened=opened, max_frames=int(c['frames'].max()) + 1):
            if i in want:
                tc = time.perf_counter(); got[i] = _rgb(f); t_conv += time.perf_counter() - tc
        t4 = time.perf_counter()
        mp4['extraction'] += t1 - t0; mp4['open'] += t3 - t2; mp4['decode'] += t4 - t3 - t_conv; mp4['convert'] += t_conv
        frames = np.stack([got[i] for i in c['frames'].tolist()])
        s = dict(clip=torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255), block=block,
                 motion=torch.from_numpy(ex.motion.flow[c['motion']]), motion_valid=torch.from_numpy(ex.motion.valid[c['motion']]))
        t5 = time.perf_counter(); s = tf(s, g); mp4['transform'] += time.perf_counter() - t5
        t6 = time.perf_counter(); sv = load_or_store(v, store, store_size, block=block, extract_dir=cache); t7 = time.perf_counter()
        clip = torch.from_numpy(sv.frames[c['frames']]); mo = torch.from_numpy(sv.flow[c['motion']]); va = torch.from_numpy(sv.valid[c['motion']])
        t8 = time.perf_counter()
        s2 = dict(clip=clip.permute(0, 3, 1, 2).float().div_(255), block=block, motion=mo, motion_valid=va, cell=sv.cell)
        t9 = time.perf_counter(); tf(s2, torch.Generator().manual_seed(k)); t10 = time.perf_counter()
        aug = tf.draw(*clip.shape[1:3], torch.Generator().manual_seed(k)); t11 = time.perf_counter()
        st['open'] += t7 - t6; st['slice'] += t8 - t7; st['transform'] += t10 - t9; st['draw'] += t11 - t10
        samples.append(dict(clip=s['clip'], motion=s['motion'], motion_valid=s['motion_valid']))
        raw.append(dict(clip=clip, aug=aug, block=block, motion=mo, motion_valid=va, cell=torch.tensor(sv.cell, dtype=torch.float32)))
    n_b = len(samples) // batch
    t0 = time.perf_counter()
    for b in range(n_b): default_collate(samples[b * batch:(b + 1) * batch])
    t1 = time.perf_counter()
    groups = {}
    for r in raw: groups.setdefault(tuple(r['clip'].shape), []).append(r)   # one frame size per batch
    batches = [default_collate(g[i:i + batch]) for g in groups.values() for i in range(0, len(g), batch)]
    t2 = time.perf_counter()
    ba = BatchAugment(tf)
    for b in batches: ba(b)
    t3 = time.perf_counter()
    per = lambda d: {k: 1e3 * v / len(picks) for k, v in d.items()}
    out = dict(mp4=per(mp4), store=per(st))
    out['mp4']['collate'] = 1e3 * (t1 - t0) / (n_b * batch)
    out['store']['collate'] = 1e3 * (t2 - t1) / len(raw)
    out['store']['batch augment'] = 1e3 * (t3 - t2) / len(raw)
    return out


# -- 2. the store against decoding, through the data set -------------------------------------------------------------------
def dataset_rate(datasets, n: int, seed0: int = 0) -> float:
    "Clips per second of `ds.load` over `n` samples taken in turn from `datasets` (their videos in turn, fixed seeds), after one untimed pass."
    for ds in datasets:
        for v in range(len(ds.items)): ds.load(v, seed=seed0)
    t0 = time.perf_counter()
    for k in range(n):
        ds = datasets[k % len(datasets)]
        ds.load((k // len(datasets)) % len(ds.items), seed=seed0 + k)
    return n / (time.perf_counter() - t0)


def store_vs_mp4(videos, n_frames: int, stride: int, size: int, block: int, cache: Path, store: Path, n: int, store_size=None) -> dict:
    """Clips/s decoding the mp4 against slicing the store, for three kinds of sample: 'none' (untransformed float sample),
    'train' (the per-sample training transform), 'deferred' (uint8 frames + drawn parameters: what a loader worker does when the
    batch is augmented on the device). One data set per frame size (a deferred data set holds one size)."""
    items = [VideoItem(Path(v), 0, Path(v).name) for v in videos]
    by_size = {}
    for it in items:
        info = CompressedVideo(it.path).info
        by_size.setdefault((info.width, info.height), []).append(it)
    kw = dict(sampler=ClipSampler(n_frames=n_frames, stride=stride, motion_frames=n_frames), cache_dir=cache, block=block, store_dir=store)
    rows = {}
    for tname, tf, defer in (('none', None, False), ('train', train_transform(size, (0.5, 1.0)), False),
                             ('deferred', train_transform(size, (0.5, 1.0)), True)):
        rate = {}
        for mode in ('off', 'on'):
            sets = [ClipDataset(group, transform=tf, store=mode, store_size=store_size if mode == 'on' else None, defer_transform=defer, **kw)
                    for group in by_size.values()]
            rate['mp4' if mode == 'off' else 'store'] = dataset_rate(sets, n)
        rows[tname] = rate
    return rows


# -- 3. end to end against the trainer on a fixed batch ------------------------------------------------------------------
class StepClock(Callback):
    def __init__(self): self.t = []
    def on_step_end(self, trainer, step, logs):
        if trainer.device.type == 'cuda': torch.cuda.synchronize(trainer.device)
        self.t.append(time.perf_counter())


def _rate(clock: StepClock, warmup: int, batch: int) -> float:
    t = clock.t[warmup - 1:]
    return (len(t) - 1) * batch / (t[-1] - t[0])


def make_recipe(kind: str, backbone: str, n_cls: int):
    torch.manual_seed(0)
    bb = build_backbone(backbone)
    return SupervisedRecipe(bb, n_cls, motion_weight=0.0) if kind == 'supervised' else build_recipe(kind, bb)


def _train(kind: str, backbone: str, loader, device, steps: int, warmup: int, batch: int, bt=None) -> float:
    clock = StepClock()
    Trainer(make_recipe(kind, backbone, 12), loader, steps=warmup + steps, lr=1e-3, optimizer='adamw', device=device, log_every=10**9,
            show_progress=False, callbacks=[clock], batch_transform=bt, checkpoint_minutes=None).fit()
    return _rate(clock, warmup, batch)


def end_to_end(data: StudyData, kind: str, backbone: str, device, steps: int, warmup: int, defer: bool, threads: int) -> dict:
    """Clips/s of training with the study's loader (`defer`: augmentation per batch on the device) and of the trainer alone on
    one of its finished batches, `threads` intra-op threads; the trainer alone is timed before and after, and averaged (drift)."""
    torch.set_num_threads(threads)
    keys = ('clip', 'label') if kind == 'supervised' else build_recipe(kind, build_backbone('tiny')).required_keys + ('label',)
    loader = pretext_loader(data, keys, seed=0, defer=defer)
    bt = batch_transform(data, defer)
    from vssl_nb.train import _to_device
    fixed = _to_device(next(iter(loader)), device)
    if bt is not None: fixed = bt(fixed)
    alone = [_train(kind, backbone, [fixed] * (warmup + steps), device, steps, warmup, data.batch_size)]
    e2e = _train(kind, backbone, loader, device, steps, warmup, data.batch_size, bt)
    alone.append(_train(kind, backbone, [fixed] * (warmup + steps), device, steps, warmup, data.batch_size))
    return dict(end_to_end=e2e, trainer=float(np.mean(alone)), ratio=e2e / float(np.mean(alone)))


# -- 4. two runs side by side ----------------------------------------------------------------------------------------------
PAIR_CODE = """
import os, sys, time
from vssl_nb.core import apply_thread_policy
policy = sys.argv[1]
if policy == 'passive': os.environ['OMP_WAIT_POLICY'] = 'PASSIVE'
if policy.startswith('spin'): os.environ['GOMP_SPINCOUNT'] = policy[4:]
if policy == 'share': apply_thread_policy(0)   # before torch is imported: it also sets the passive wait policy
import torch
if policy == 'one': torch.set_num_threads(1)
from vssl_nb.models import build_backbone
from vssl_nb.train import build_recipe
torch.manual_seed(0)
r = build_recipe('cmd', build_backbone('tiny'))
opt = torch.optim.AdamW(r.parameters(), lr=1e-3)
b = {'clip': torch.randn(16, 3, 8, 56, 56), 'keyframe': torch.randn(16, 3, 56, 56), 'motion': torch.randn(16, 2, 8, 7, 7),
     'motion_valid': torch.ones(16, 8, 7, 7, dtype=torch.bool), 'label': torch.zeros(16, dtype=torch.long), 'video_index': torch.arange(16)}
def step():
    out = r(b); opt.zero_grad(); out['loss'].backward(); opt.step()
for _ in range(3): step()
t0 = time.perf_counter(); n = 0
while time.perf_counter() - t0 < float(sys.argv[2]): step(); n += 1
print(16 * n / (time.perf_counter() - t0), torch.get_num_threads())
"""


def pair_runs(policies, seconds: float) -> list[dict]:
    "Each policy: one run alone, then two at once (clips/s of each)."
    rows = []
    for pol in policies:
        env = {**os.environ}
        run = lambda: subprocess.Popen([sys.executable, '-c', PAIR_CODE, pol, str(seconds)], stdout=subprocess.PIPE, text=True, env=env)
        p = run(); alone, threads = p.communicate()[0].split()
        ps = [run(), run()]
        both = [float(q.communicate()[0].split()[0]) for q in ps]
        rows.append(dict(policy=pol, alone=float(alone), threads=int(threads), pair=both, share=[b / float(alone) for b in both]))
        print(rows[-1], flush=True)
    return rows


def machine() -> str:
    return f"{platform.node()} ({os.cpu_count()} CPUs; torch {torch.__version__}, python {platform.python_version()})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--pair', action='store_true', help='only the two-runs-side-by-side table')
    ap.add_argument('--gpu', action='store_true', help='the GPU rows (needs CUDA)')
    ap.add_argument('--steps', type=int, default=40)
    ap.add_argument('--warmup', type=int, default=5)
    ap.add_argument('--seconds', type=float, default=25.0)
    ap.add_argument('--sections', default='profile,store,e2e', help='which CPU sections to measure (the others keep their last results)')
    args = ap.parse_args()
    lines = []
    if args.pair:
        rows = pair_runs(['torch-default', 'passive', 'spin200', 'spin3000', 'one', 'share'], args.seconds)
        lines += ['## Two identical runs at once against one alone', '',
                  f"Measured by `benchmarks/throughput_bench.py --pair` on {machine()}, nothing else running. Tiny backbone, CMD updates "
                  f"on a fixed batch of 16 clips (8x56x56), {args.seconds:.0f} s per run. Policies (`vssl_nb.core.apply_thread_policy`): "
                  "`torch-default` (torch's own: one intra-op thread per core, OpenMP threads spin while waiting), `passive` (the same "
                  "threads, OMP_WAIT_POLICY=PASSIVE), `spinN` (the same threads, GOMP_SPINCOUNT=N: spin N times, then sleep), `one` (one "
                  "thread per process), `share` (the workbench's default, `apply_thread_policy`: GOMP_SPINCOUNT=1000 and as many "
                  "threads as cores are free when the process starts). Spinning runs are erratic side by side: torch's default gave "
                  "0.02 in one repetition and 0.23 in another.", '',
                  '| policy | threads (alone) | alone (clips/s) | side by side (clips/s, each) | share of the lone speed |', '|---|---|---|---|---|']
        for r in rows:
            lines.append(f"| {r['policy']} | {r['threads']} | {r['alone']:.1f} | {' / '.join(f'{v:.1f}' for v in r['pair'])} | "
                         f"{' / '.join(f'{v:.2f}' for v in r['share'])} |")
        write_section('pair', lines)
        return
    if args.gpu:
        return gpu_rows(args)
    sections = set(args.sections.split(','))
    torch.set_num_threads(1)   # the profile and the data set rows: one thread, as in a loader worker
    tmp = Path(tempfile.mkdtemp(prefix='throughput-'))
    cache, store = tmp / 'extract', tmp / 'store'
    small = world('small')
    vids = find_videos(small)
    real_dir = sample_videos_dir()
    real = [v for v in find_videos(real_dir) if 'big_buck_bunny_1280' not in v.name and 'two_people' not in v.name] if real_dir else []
    if 'profile' in sections: write_section('profile', profile_section(vids, real, cache, store))
    if 'store' in sections: write_section('store', store_section(vids, real, cache, store))
    if 'e2e' in sections: write_section('e2e', e2e_section(small, cache, args))


def profile_section(vids, real, cache, store) -> list[str]:
    prof = profile_samples(vids, 8, 2, 56, 8, cache, store)
    prof_real = profile_samples(real, 16, 1, 112, 16, cache, store, n=32, store_size=128) if real else None
    lines = ['## Where the time of one sample goes', '',
              f"Measured by `benchmarks/throughput_bench.py` on {machine()}, nothing else running, one thread (as in a loader worker). "
              "Milliseconds per sample, mean over random clips with the training transform (random resized crop, colour jitter, "
              "grayscale, normalisation) and the motion target. mp4: open the file, decode from the first frame to the clip's last "
              "(decode), turn the clip's frames into RGB arrays (convert), read keyframe and motion from the extraction cache "
              "(extraction), transform, collate. store: find the entry (open), copy the clip's frames and motion out of the memory "
              "map (slice), then either transform the sample or only draw its parameters (draw; the batch is augmented on the device "
              "afterwards: batch augment, per sample).", '']
    for name, p in (('world `small`, 8 frames stride 2 → 56 px', prof), ('real clips (shared/videos, 5 files), 16 frames → 112 px; the store holds them at shorter side 128 (`StudyData` default for 112-px crops)', prof_real)):
        if p is None: continue
        lines += [f"**{name}**", '', '| path | ' + ' | '.join(['open', 'decode', 'convert', 'extraction', 'transform', 'collate', 'total']) + ' |',
                  '|---|' + '---|' * 7]
        m = p['mp4']
        lines.append('| mp4 | ' + ' | '.join(f"{m[k]:.2f}" for k in ('open', 'decode', 'convert', 'extraction', 'transform', 'collate')) + f" | {sum(m.values()):.2f} |")
        s = p['store']
        lines += ['', '| path | open | slice | transform | draw | collate | batch augment | total, per-sample transform | total, batch augment |',
                  '|---|---|---|---|---|---|---|---|---|',
                  f"| store | {s['open']:.2f} | {s['slice']:.2f} | {s['transform']:.2f} | {s['draw']:.2f} | {s['collate']:.2f} | {s['batch augment']:.2f} | "
                  f"{s['open'] + s['slice'] + s['transform'] + s['collate']:.2f} | {s['open'] + s['slice'] + s['draw'] + s['collate'] + s['batch augment']:.2f} |", '']
    return lines


def store_section(vids, real, cache, store) -> list[str]:
    lines = ['## The store against decoding the mp4', '',
              f"Measured on {machine()}, nothing else running. Clips per second of `ClipDataset.load` (one thread, fixed seeds, after one untimed pass so that both the extraction "
              "cache and the store are filled): `store='off'` decodes the clip from the mp4, `store='on'` slices it. 'none': the "
              "untransformed sample (clip, keyframe, motion) as floats; 'train': with the per-sample training transform; 'deferred': "
              "uint8 frames and the drawn augmentation parameters, what a loader worker does when the batch is augmented on the "
              "device (`augment='batch'`).", '',
              '| data | transform | mp4 (clips/s) | store (clips/s) | store / mp4 |', '|---|---|---|---|---|']
    for name, vs, nf, st_, sz, bl, n, ssize in (('world small (64 px, 8x2)', vids[:60], 8, 2, 56, 8, 240, None),
                                                 ('real clips (16x1)', real, 16, 1, 112, 16, 60, None),
                                                 ('real clips (16x1), stored at shorter side 128', real, 16, 1, 112, 16, 60, 128)):
        if not vs: continue
        rows = store_vs_mp4(vs, nf, st_, sz, bl, cache, store, n, ssize)
        for t, r in rows.items():
            lines.append(f"| {name} | {t} | {r['mp4']:.1f} | {r['store']:.1f} | **{r['store'] / r['mp4']:.1f}x** |")
        print(lines[-1], flush=True)
    return lines


def e2e_section(small, cache, args) -> list[str]:
    lines = ['## Training end to end against the trainer on a fixed batch (CPU)', '',
              f"Measured on {machine()}, nothing else running. Tiny backbone, AdamW, batch 16, {args.steps} timed steps after {args.warmup}; threads: the training process's intra-op "
              "threads (the thread policy's spin limit set). 'trainer' repeats one finished batch (no loading) with the same threads, "
              "timed before and after the end-to-end run and averaged; "
              "'end to end' trains from the study's loader. Loader: "
              "`old` = decode the mp4 and transform per sample (the pipeline before the store), `store` = slice the store and "
              "transform per sample, `store+batch` = slice the store, draw the parameters per sample, augment the whole batch in the "
              "training process (`BatchAugment`); workers = DataLoader worker processes.", '',
              '| data | method | loader | workers | threads | trainer (clips/s) | end to end (clips/s) | end to end / trainer |', '|---|---|---|---|---|---|---|---|']
    big = world('small', size=128, n_train=20)
    for dname, root, size, block in (('64 px → 56', small, 56, 8), ('128 px → 112', big, 112, 16)):
        for kind in ('cmd', 'supervised'):
            for lname, st_mode, aug, workers, threads in (('old', 'off', 'sample', 0, 2), ('store', 'on', 'sample', 0, 2),
                                                          ('store+batch', 'on', 'batch', 0, 2), ('store+batch', 'on', 'batch', 1, 1),
                                                          ('store+batch', 'on', 'batch', 1, 2)):
                data = StudyData(root, size=size, block=block, batch_size=16, workers=workers, store=st_mode, augment=aug, min_crop=0.5,
                                 flip=False, cache=str(cache))
                r = end_to_end(data, kind, 'tiny', torch.device('cpu'), args.steps, args.warmup, aug == 'batch', threads)
                lines.append(f"| {dname} | {kind} | {lname} | {workers} | {threads} | {r['trainer']:.1f} | {r['end_to_end']:.1f} | **{r['ratio']:.2f}** |")
                print(lines[-1], flush=True)
    return lines


def gpu_rows(args):
    """The GPU rows: R(2+1)D-18 and tiny CMD, 16x112x112 clips, batch 32, end to end against the trainer, with 0, 2, 4, 8, ...
    loader workers until the target ratio is met (0.8 for R(2+1)D-18, 0.5 for tiny)."""
    if not torch.cuda.is_available(): raise SystemExit("--gpu needs a CUDA device (torch.cuda.is_available() is False here)")
    dev = torch.device('cuda')
    big = world('small', size=128, n_train=20)
    cache = Path(tempfile.mkdtemp(prefix='throughput-gpu-')) / 'extract'
    lines = ['## On a GPU: end to end against the trainer', '',
             f"Measured on {machine()} with {torch.cuda.get_device_name(dev)}. CMD, 16 frames of 112x112 (the 128-px world), batch 32, "
             "bf16 autocast, store + batch augmentation on the GPU; workers added until the target is met.", '',
             '| backbone | workers | trainer (clips/s) | end to end (clips/s) | end to end / trainer | target |', '|---|---|---|---|---|---|']
    cpus = os.cpu_count() or 1
    for backbone, target in (('r2plus1d18', 0.8), ('tiny', 0.5)):
        for workers in [w for w in (0, 2, 4, 8, 12, 16) if w < cpus]:
            data = StudyData(big, size=112, frames=16, stride=1, motion_frames=16, block=16, batch_size=32, workers=workers, store='on',
                             augment='batch', min_crop=0.5, flip=False, cache=str(cache))
            r = end_to_end(data, 'cmd', backbone, dev, args.steps, args.warmup, True, threads=max(1, cpus - workers))
            lines.append(f"| {backbone} | {workers} | {r['trainer']:.1f} | {r['end_to_end']:.1f} | **{r['ratio']:.2f}** | {target} |")
            print(lines[-1], flush=True)
            if r['ratio'] >= target: break
    write_section('gpu', lines)


def write_section(name: str, lines: list[str]):
    "Replace (or add) this run's section of the results file, between markers."
    start, end = f'<!-- {name} -->', f'<!-- /{name} -->'
    text = RESULTS.read_text() if RESULTS.is_file() else '# Throughput of the input pipeline\n'
    block = '\n'.join([start, *lines, end])
    if start in text: text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else: text = text.rstrip('\n') + '\n\n' + block + '\n'
    RESULTS.write_text(text)
    print(block)


if __name__ == '__main__':
    main()
