"""TOT's batched log-domain Sinkhorn against POT's `ot.sinkhorn`, and the memory of `fit_tot` online; writes results/tot.md.

Same cost matrices (M = -(P + eps log T), reg = eps, 3 iterations, uniform marginals) at N=256 frames, K=10, batch 2,
CPU, one thread. Both sides are timed in the same run, interleaved, and the medians compared.
Memory: `fit_tot` for one pass over 50 and over 500 small synthetic videos, each in a fresh process (peak RSS), the
videos made on demand by a sequence object, so the number of videos is the only thing that changes.

    python benchmarks/tot_sinkhorn_bench.py            # about a minute
"""
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vssl_nb.methods.tot import sinkhorn_plan, temporal_prior

HERE = Path(__file__).resolve().parent
N, K, B, EPS, ITERS, REPEATS = 256, 10, 2, 0.08, 3, 200


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


def main():
    import ot
    torch.set_num_threads(1)
    torch.manual_seed(0)
    P = torch.rand(B, N, K, dtype=torch.float32) * 2 - 1          # cosine scores in [-1, 1]
    T = temporal_prior(N, K)
    a, b = np.full(N, 1 / N), np.full(K, 1 / K)
    costs = [-(P[i].double() + EPS * T.double().log()).numpy() for i in range(B)]

    def ours(): return sinkhorn_plan(P, EPS, ITERS, prior=T)
    def theirs(): return [ot.sinkhorn(a, b, M, EPS, numItermax=ITERS, stopThr=0.0) for M in costs]
    import warnings; warnings.filterwarnings('ignore', message='Sinkhorn did not converge')
    q_ours, q_pot = ours().double().numpy(), np.stack(theirs())
    diff = float(np.abs(q_ours - q_pot).max())
    q64 = sinkhorn_plan(P.double(), EPS, ITERS, prior=T.double()).numpy()
    diff64 = float(np.abs(q64 - q_pot).max())
    for _ in range(20): ours(); theirs()                            # warm-up
    t_ours, t_pot = [], []
    for _ in range(REPEATS):                                        # interleaved, so both see the same load
        t = time.perf_counter(); ours(); t_ours.append(time.perf_counter() - t)
        t = time.perf_counter(); theirs(); t_pot.append(time.perf_counter() - t)
    m_ours, m_pot = statistics.median(t_ours), statistics.median(t_pot)

    mem = []
    for n in (50, 500):
        out = subprocess.run([sys.executable, __file__, '--memory', str(n)], capture_output=True, text=True, check=True)
        mem.append(json.loads(out.stdout.strip().splitlines()[-1]))

    lines = [
        '# TOT: batched Sinkhorn against POT, and fit_tot memory',
        '',
        f'`python benchmarks/tot_sinkhorn_bench.py` on {time.strftime("%Y-%m-%d")}: torch {torch.__version__}, POT {ot.__version__}, '
        f'numpy {np.__version__}, Python {platform.python_version()}, CPU, `torch.set_num_threads(1)`.',
        '',
        '**Load:** another long job (a sweep of two training processes) was using both CPU cores while this was measured, so',
        'the absolute times are inflated; both sides were timed in the same run, interleaved call by call, and the ratio is',
        'what counts.',
        '',
        f'## Sinkhorn: N={N} frames, K={K} clusters, batch {B}, eps={EPS}, {ITERS} iterations, with the temporal prior',
        '',
        'Same cost matrices: M = -(P + eps log T), `ot.sinkhorn(a, b, M, reg=eps, numItermax=3, stopThr=0)` once per video',
        '(POT has no batch), against one `sinkhorn_plan` call on the (2, 256, 10) batch (float32, as in training).',
        '',
        '| | ours (`vssl_nb.methods.tot.sinkhorn_plan`) | POT `ot.sinkhorn` (float64) |',
        '|---|---|---|',
        f'| median time per batch of 2 ({REPEATS} repeats) | {m_ours * 1e6:.0f} µs | {m_pot * 1e6:.0f} µs |',
        f'| speed-up (POT / ours) | **{m_pot / m_ours:.1f}x** | |',
        '',
        f'Max abs difference of the plans: **{diff:.2e}** (ours in float32), {diff64:.2e} (ours in float64); '
        f'plan entries average 1/(NK) = {1 / (N * K):.1e}. Target: < 1e-5 and >= 5x.',
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
    (HERE / 'results').mkdir(exist_ok=True)
    (HERE / 'results' / 'tot.md').write_text('\n'.join(lines), encoding='utf-8')
    print('\n'.join(lines))


if __name__ == '__main__':
    if len(sys.argv) == 3 and sys.argv[1] == '--memory': print(json.dumps(memory_child(int(sys.argv[2]))))
    else: main()
