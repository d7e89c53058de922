"""TOT's batched Sinkhorn (`sinkhorn_plan`) against POT's `ot.sinkhorn`, where its time goes, and the memory of `fit_tot`
online; writes results/tot.md.

Sinkhorn: the same cost matrices (M = -(P + eps log T), reg = eps, 3 iterations, uniform marginals) at N=256 frames, K=10,
batch 2, CPU, one thread (`torch.set_num_threads(1)`; run it with OMP_NUM_THREADS=1 so numpy's BLAS uses one thread too).
All contestants are timed in the same run, call by call in a shuffled round-robin, and the medians compared.
Profile: torch.profiler on the torch path, and the cost of each numpy operation of the numpy path on these shapes.
Memory: `fit_tot` for one pass over 50 and over 500 small synthetic videos, each in a fresh process (peak RSS), the
videos made on demand by a sequence object, so the number of videos is the only thing that changes.

    OMP_NUM_THREADS=1 python benchmarks/tot_sinkhorn_bench.py            # about two minutes
"""
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from vssl_nb.core import atomic_write
from vssl_nb.methods.tot import (NUMPY_MAX_SCORES, _sinkhorn_numpy, _sinkhorn_torch, log_temporal_prior, sinkhorn_plan,
                                 temporal_prior)

HERE = Path(__file__).resolve().parent
N, K, B, EPS, ITERS, ROUNDS = 256, 10, 2, 0.08, 3, 3000


class LazyVideos:
    "n synthetic videos (60-100 frames of 32 features, 5 ordered sub-actions), each made when read: nothing is held."
    def __init__(self, n: int): self.n = n
    def __len__(self): return self.n
    def __getitem__(self, i):
        g = torch.Generator().manual_seed(1000 + i)
        centres = torch.randn(5, 32, generator=torch.Generator().manual_seed(0))
        y = torch.repeat_interleave(torch.arange(5), torch.randint(12, 21, (5,), generator=g))
        return centres[y] + torch.randn(len(y), 32, generator=g)


def memory_child(n_videos: int) -> dict:
    "In this (fresh) process: peak RSS after one online pass of fit_tot over n_videos videos."
    import resource
    from vssl_nb.methods.tot import fit_tot
    torch.set_num_threads(1)
    videos = LazyVideos(n_videos)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    _, hist = fit_tot(videos, 5, steps=(n_videos + 1) // 2, freeze_prototypes_steps=10, frames_per_video=256, n_splits=16)
    return {'videos': n_videos, 'steps': len(hist), 'seconds': time.perf_counter() - t,
            'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 'rss_before_fit_mib': before / 1024}


def paired(ours, pot, rounds: int) -> tuple[float, float]:
    "Median seconds per call of `ours` and of `pot`, timed alternately call by call (who goes first alternates too), so both see the same load."
    for _ in range(20): ours(); pot()                                # warm-up
    t_ours, t_pot = [], []
    for r in range(rounds):
        for f, ts in ((ours, t_ours), (pot, t_pot))[::1 if r % 2 else -1]:
            t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return statistics.median(t_ours), statistics.median(t_pot)


def median_us(f, n: int = 2000) -> float:
    "Median microseconds of f() called alone, warm."
    for _ in range(20): f()
    ts = []
    for _ in range(n):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e6


def numpy_op_costs(P: torch.Tensor, LT: torch.Tensor) -> list[tuple[str, int, float]]:
    """(operation, calls per `sinkhorn_plan` call, median µs per call alone) for the operations of the numpy path on (B, N, K)
    float32 arrays (see `_sinkhorn_numpy`), to show where its time goes."""
    Pn, lp = P.numpy(), LT.numpy()
    G = np.exp(Pn / EPS + lp)
    Gt = np.ascontiguousarray(G.transpose(0, 2, 1)); Gv = Gt.transpose(0, 2, 1)
    u, v = np.ones((B, 1, N), np.float32), np.empty((B, 1, K), np.float32)
    scratch = Gt.copy()
    def enter_exit():
        with np.errstate(over='raise', under='raise', divide='raise', invalid='raise'): pass
    return [
        ('checks, dispatch, `P.numpy()`, `log_prior.numpy()`, `torch.from_numpy` (Python)', 1,
         median_us(lambda: sinkhorn_plan(P, EPS, ITERS, log_prior=LT)) - median_us(lambda: _sinkhorn_numpy(P, LT, EPS, ITERS, 1 / N))
         + median_us(lambda: (P.numpy(), LT.numpy(), torch.from_numpy(Pn)))),
        ('`np.errstate` enter + exit', 1, median_us(enter_exit)),
        ('log G = P/eps + log T (`np.multiply`, `+=`)', 1, median_us(lambda: np.add(np.multiply(Pn, 1 / EPS), lp))),
        ('`np.exp` in place', 1, median_us(lambda: np.exp(scratch, out=scratch))),
        ('transposed copy to (B, K, N) (`np.ascontiguousarray`), twice', 2, median_us(lambda: np.ascontiguousarray(Gv))),
        ('`np.ones` + `np.empty` (u, v)', 1, median_us(lambda: (np.ones((B, 1, N), np.float32), np.empty((B, 1, K), np.float32)))),
        ('`np.matmul` u G -> (B, 1, K)', ITERS, median_us(lambda: np.matmul(u, Gv, out=v))),
        ('`np.matmul` v Gt -> (B, 1, N)', ITERS, median_us(lambda: np.matmul(v, Gt, out=np.empty((B, 1, N), np.float32)))),
        ('`np.divide` scalar / v (B, 1, K)', ITERS, median_us(lambda: np.divide(1 / K, v, out=v))),
        ('`np.divide` scalar / u (B, 1, N)', ITERS, median_us(lambda: np.divide(1 / N, u, out=u))),
        ('final scalings `Gt *= u`, `Gt *= v`', 1, median_us(lambda: (np.multiply(scratch, u, out=scratch), np.multiply(scratch, v.reshape(B, K, 1), out=scratch)))),
    ]


def torch_path_profile(P: torch.Tensor, LT: torch.Tensor, calls: int = 200) -> list[tuple[str, float, float]]:
    "(aten op, calls per call of `_sinkhorn_torch`, self CPU µs per call of `_sinkhorn_torch`) from torch.profiler."
    for _ in range(20): _sinkhorn_torch(P, LT, EPS, ITERS, 1 / N)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(calls): _sinkhorn_torch(P, LT, EPS, ITERS, 1 / N)
    rows = [(e.key, e.count / calls, e.self_cpu_time_total / calls) for e in prof.key_averages()]
    return sorted(rows, key=lambda r: -r[2])


def pot_calls(a, b, M) -> dict[str, float]:
    "Calls per `ot.sinkhorn` call of POT's backend operations (cProfile), to show what its time is made of."
    import cProfile
    import pstats
    import ot
    calls = 200
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls): ot.sinkhorn(a, b, M, EPS, numItermax=ITERS, stopThr=0.0)
    prof.disable()
    out = {}
    for (file, _, name), (_, ncalls, *_) in pstats.Stats(prof).stats.items():
        if file.endswith('ot/backend.py') and name[0] not in '<_': out[name] = out.get(name, 0) + ncalls / calls
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def size_table() -> list[tuple[int, int, int, float, float]]:
    "(B, N, K, numpy path µs, torch path µs) at sizes around NUMPY_MAX_SCORES, one thread, K=10 (both paths take products)."
    out = []
    for b, n, k in [(2, 256, 10), (8, 256, 10), (2, 1024, 10), (8, 1024, 10), (16, 1024, 10), (8, 4096, 10), (32, 2048, 10)]:
        P = torch.rand(b, n, k, generator=torch.Generator().manual_seed(0)) * 2 - 1
        LT, reps = log_temporal_prior(n, k), max(20, int(1e6 / (b * n * k)))
        out.append((b, n, k, min(median_us(lambda: _sinkhorn_numpy(P, LT, EPS, ITERS, 1 / n), reps) for _ in range(3)),
                    min(median_us(lambda: _sinkhorn_torch(P, LT, EPS, ITERS, 1 / n), reps) for _ in range(3))))
    return out


def main():
    import ot
    warnings.filterwarnings('ignore', message='Sinkhorn did not converge')
    torch.set_num_threads(1)
    load_start = os.getloadavg()
    P = torch.rand(B, N, K, generator=torch.Generator().manual_seed(0)) * 2 - 1     # cosine scores in [-1, 1], float32
    T, LT = temporal_prior(N, K), log_temporal_prior(N, K)                          # LT: what fit_tot passes
    a, b = np.full(N, 1 / N), np.full(K, 1 / K)
    T64 = temporal_prior(N, K, dtype=torch.float64)
    costs = np.stack([-(P[i].double() + EPS * T64.log()).numpy() for i in range(B)])  # the same M for every POT call

    pot = np.stack([ot.sinkhorn(a, b, M, EPS, numItermax=ITERS, stopThr=0.0) for M in costs])
    pot_log = np.stack([ot.sinkhorn(a, b, M, EPS, method='sinkhorn_log', numItermax=ITERS, stopThr=0.0) for M in costs])
    L64 = log_temporal_prior(N, K, dtype=torch.float64)
    diffs = {
        'ours, float32 (numpy path, as in training)': np.abs(sinkhorn_plan(P, EPS, ITERS, log_prior=LT).double().numpy() - pot).max(),
        'ours, float64, numpy path': np.abs(_sinkhorn_numpy(P.double(), L64, EPS, ITERS, 1 / N).numpy() - pot).max(),
        'ours, float64, torch path (GPU and large batches)': np.abs(_sinkhorn_torch(P.double(), L64, EPS, ITERS, 1 / N).numpy() - pot).max(),
        "POT's `sinkhorn_log` (float64)": np.abs(pot_log - pot).max(),
    }

    contestants = {
        'ours: `sinkhorn_plan(P, log_prior=log_temporal_prior(N, K))` (as `fit_tot`)': lambda: sinkhorn_plan(P, EPS, ITERS, log_prior=LT),
        'ours: `sinkhorn_plan(P, prior=T)` (takes log T every call)': lambda: sinkhorn_plan(P, EPS, ITERS, prior=T),
        "ours: the torch path alone (`_sinkhorn_torch`, what GPUs run)": lambda: _sinkhorn_torch(P, LT, EPS, ITERS, 1 / N),
        'POT `ot.sinkhorn` per video (float64)': lambda: [ot.sinkhorn(a, b, M, EPS, numItermax=ITERS, stopThr=0.0) for M in costs],
        "POT `ot.sinkhorn(method='sinkhorn_log')` per video": lambda: [ot.sinkhorn(a, b, M, EPS, method='sinkhorn_log', numItermax=ITERS, stopThr=0.0) for M in costs],
        'POT `ot.solve_batch(method="sinkhorn")` on the batch (rows first: another plan)': lambda: ot.solve_batch(costs, reg=EPS, max_iter=ITERS, tol=0, method='sinkhorn', grad='detach'),
    }
    pot_call = contestants.pop('POT `ot.sinkhorn` per video (float64)')
    timing = {k: paired(f, pot_call, ROUNDS) for k, f in contestants.items()}      # name -> (median of it, median of POT)
    alone = {k: median_us(f) for k, f in [*contestants.items(), ('POT `ot.sinkhorn` per video (float64)', pot_call)]}
    ours_key = next(iter(contestants))
    ratio, ratio_alone = timing[ours_key][1] / timing[ours_key][0], alone['POT `ot.sinkhorn` per video (float64)'] / alone[ours_key]
    ops = numpy_op_costs(P, LT)
    torch_ops = torch_path_profile(P, LT)
    sizes = size_table()
    pot_ops = pot_calls(a, b, costs[0])
    whole_alone = median_us(lambda: sinkhorn_plan(P, EPS, ITERS, log_prior=LT))
    load_end = os.getloadavg()

    mem = []
    for n in (50, 500):
        out = subprocess.run([sys.executable, __file__, '--memory', str(n)], capture_output=True, text=True, check=True)
        mem.append(json.loads(out.stdout.strip().splitlines()[-1]))

    ops_total = sum(c * us for _, c, us in ops)
    lines = [
        '# TOT: batched Sinkhorn against POT, and fit_tot memory',
        '',
        f'`OMP_NUM_THREADS=1 python benchmarks/tot_sinkhorn_bench.py` on {time.strftime("%Y-%m-%d %H:%M")}: torch {torch.__version__}, '
        f'POT {ot.__version__}, numpy {np.__version__}, Python {platform.python_version()}, {platform.processor() or platform.machine()}, '
        f'CPU, `torch.set_num_threads(1)`, OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS", "unset")}.',
        '',
        f'**Load:** a machine of {os.cpu_count()} cores shared with other agents; load average (1, 5, 15 min) '
        f'{"/".join(f"{x:.2f}" for x in load_start)} at the start, {"/".join(f"{x:.2f}" for x in load_end)} at the end. '
        'Absolute times move with the load: compare the ratios, each measured in one stretch of time.',
        '',
        f'## Sinkhorn: N={N} frames, K={K} clusters, batch {B}, eps={EPS}, {ITERS} iterations, with the temporal prior',
        '',
        f'The same cost matrices: M = -(P + eps log T) for `ot.sinkhorn(a, b, M, reg=eps, numItermax={ITERS}, stopThr=0)`, once',
        f'per video (its API takes one problem), against one call on the ({B}, {N}, {K}) float32 batch (as in training).',
        f'*Paired*: each contestant and POT `ot.sinkhorn` called alternately, {ROUNDS} times each, medians (each call finds',
        'the caches as the other left them, as in a training step). *Alone*: the median of 2000 back-to-back calls (warm).',
        '',
        '| contestant | paired: median per batch of 2 | POT in the same pairing | POT / this | alone (warm) | POT alone / this alone |',
        '|---|---|---|---|---|---|',
        *[f'| {k} | {m * 1e6:.1f} µs | {mp * 1e6:.1f} µs | **{mp / m:.2f}x** | {alone[k]:.1f} µs | {alone["POT `ot.sinkhorn` per video (float64)"] / alone[k]:.2f}x |'
          for k, (m, mp) in timing.items()],
        f'| POT `ot.sinkhorn` per video (float64) | | | | {alone["POT `ot.sinkhorn` per video (float64)"]:.1f} µs | 1.00x |',
        '',
        f'**Speed-up over POT `ot.sinkhorn`: {ratio:.1f}x paired, {ratio_alone:.1f}x alone** (target: >= 5x). Before this change',
        '(torch operations only, log T every call, a range check with `.item()`): 169 µs against 210 µs, 1.2x paired (this',
        'file, 2026-12-01, under load).',
        '',
        'Max abs difference of the plans from POT `ot.sinkhorn` (target < 1e-5; plan entries average '
        f'1/(NK) = {1 / (N * K):.1e}):',
        '',
        '| plan | max abs difference |',
        '|---|---|',
        *[f'| {k} | {v:.2e} |' for k, v in diffs.items()],
        '',
        '## Where the time goes',
        '',
        f'At this size the arithmetic is ~{B * N * K * (2 * ITERS + 4) / 1e3:.0f}k floating-point operations; the time is the',
        'fixed cost of each array operation. The numpy path (CPU float32/float64 batches of up to '
        f'{NUMPY_MAX_SCORES} scores) runs these, each timed alone on the same shapes (warm):',
        '',
        '| operation | calls | µs each | µs per `sinkhorn_plan` |',
        '|---|---|---|---|',
        *[f'| {name} | {c} | {us:.2f} | {c * us:.1f} |' for name, c, us in ops],
        f'| **sum** | {sum(c for _, c, _ in ops)} | | **{ops_total:.1f}** |',
        '',
        f'The whole call alone, warm: {whole_alone:.1f} µs; paired with POT {timing[ours_key][0] * 1e6:.1f} µs (caches as POT left',
        f'them). 5x would need {timing[ours_key][1] * 1e6 / 5:.0f} µs paired, {alone["POT `ot.sinkhorn` per video (float64)"] / 5:.0f} µs alone, '
        f'while the array operations alone (the table less its first row) take {ops_total - ops[0][2]:.0f} µs warm.',
        'Some 20 operations of 0.3-3 µs each are the floor of',
        'this approach: an iteration is two matrix-vector products and two divisions that cannot be fused without a compiled',
        'kernel, and torch operations cost more per call than numpy ones on arrays this small. The torch path, per call, from',
        '`torch.profiler` (self CPU time, which leaves out the Python between the operations):',
        '',
        '| aten op | calls | self CPU µs |',
        '|---|---|---|',
        *[f'| `{k}` | {c:g} | {us:.1f} |' for k, c, us in torch_ops if us >= 0.05],
        f'| **sum** | {sum(c for _, c, _ in torch_ops):g} | **{sum(us for *_, us in torch_ops):.1f}** |',
        '',
        f'POT pays the same kind of fixed costs, per video since `ot.sinkhorn` takes one problem per call: its backend',
        'operations per call (cProfile): ' + ', '.join(f'`{k}` {v:g}' for k, v in pot_ops.items()) + ' (the `any` are its',
        'NaN/inf/zero checks, five per iteration; the einsum and norm its convergence check at iteration 0).',
        '',
        '**Which path where.** The numpy path against the torch path at other sizes (K=10, where both take matrix products;',
        'one thread, minimum over 3 medians):',
        '',
        '| B | N | K | scores | numpy path | torch path | torch / numpy |',
        '|---|---|---|---|---|---|---|',
        *[f'| {b} | {n} | {k} | {b * n * k} | {x:.0f} µs | {y:.0f} µs | {y / x:.2f} |' for b, n, k, x, y in sizes],
        '',
        f'`NUMPY_MAX_SCORES` = {NUMPY_MAX_SCORES} keeps the numpy path to sizes well inside the range where it wins on one thread;',
        "above it the torch path also gets torch's intra-op threads. The numpy path detects over- and underflow exactly",
        "(`np.errstate`), so it also serves kernels whose range the torch path's conservative check would send to the log domain.",
        '',
        '**GPU:** untested (no GPU on this machine). CUDA tensors take the torch path (device-agnostic code; one host',
        'synchronisation per call, for the range check).',
        '',
        '## fit_tot online: peak memory against the number of videos',
        '',
        'One pass (videos/2 steps of 2 videos), K=5, small synthetic videos (60-100 frames of 32 features) made on demand by',
        'a sequence object, each size in a fresh process; peak RSS (`ru_maxrss`) includes the Python and torch runtime.',
        '',
        '| videos | steps | seconds | RSS before fit (MiB) | peak RSS (MiB) |',
        '|---|---|---|---|---|',
        *[f"| {m['videos']} | {m['steps']} | {m['seconds']:.1f} | {m['rss_before_fit_mib']:.1f} | {m['peak_rss_mib']:.1f} |" for m in mem],
        '',
        f"Peak RSS grows by {mem[1]['peak_rss_mib'] - mem[0]['peak_rss_mib']:+.1f} MiB from 50 to 500 videos.",
        '',
    ]
    text = '\n'.join(lines)
    (HERE / 'results').mkdir(exist_ok=True)
    atomic_write(HERE / 'results' / 'tot.md', text)
    print(text)


if __name__ == '__main__':
    if len(sys.argv) == 3 and sys.argv[1] == '--memory': print(json.dumps(memory_child(int(sys.argv[2]))))
    else: main()
