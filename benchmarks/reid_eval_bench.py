"""How fast `vssl_nb.reid.cmc_map` scores a MARS-sized evaluation: 2,000 query tracklets against 10,000 gallery tracklets
with 512-d features (the target: under 10 s on a CPU); writes results/reid.md.

The features are made to look like a trained model's: each identity (636 test identities, as in MARS, plus distractors
pid 0 and junk pid -1 in the gallery) has a random centre, a tracklet is its centre plus noise, cameras 1-6. Every
configuration (metric, chunk of queries) is timed `REPEATS` times in one process and the median kept; the distances alone
(the same chunks, no ranking) are timed too, to show where the time goes. Correctness at this size: the first 25 queries
against the whole gallery with the loop reference `cmc_map_loop` on the same distance matrix.

    OMP_NUM_THREADS=1 python benchmarks/reid_eval_bench.py              # about a minute; --threads N to let torch use N
"""
import argparse
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vssl_nb.core import atomic_write
from vssl_nb.reid import _distances, _pair, _rank_order, cmc_map, cmc_map_from_distances, cmc_map_loop, distance_matrix

HERE = Path(__file__).resolve().parent
Q, G, D, IDS, REPEATS = 2000, 10000, 512, 636, 3


def make_features(seed: int = 0):
    "Queries and gallery: identity centres plus noise (noise chosen so that rank-1 lands mid-range), MARS-like pids and cameras."
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(IDS + 1, D)).astype(np.float32)
    qp = rng.integers(1, IDS + 1, Q)
    gp = np.concatenate([rng.integers(1, IDS + 1, G - 600), np.zeros(400, np.int64), -np.ones(200, np.int64)])
    qc, gc = rng.integers(1, 7, Q), rng.integers(1, 7, G)
    noise = 2.2
    qf = centres[qp] + noise * rng.normal(size=(Q, D)).astype(np.float32)
    gf = centres[np.maximum(gp, 0)] + noise * rng.normal(size=(G, D)).astype(np.float32)
    gf[gp <= 0] = noise * rng.normal(size=(int((gp <= 0).sum()), D))          # distractors and junk: no identity
    return torch.from_numpy(qf), torch.from_numpy(qp), torch.from_numpy(qc), torch.from_numpy(gf), torch.from_numpy(gp), torch.from_numpy(gc)


def timed(f, repeats: int = REPEATS) -> tuple[float, object]:
    "Median seconds of `repeats` calls of f (after one warm-up call) and the last result."
    out = f()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter(); out = f(); ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def distances_only(qf, gf, metric: str, chunk: int, sort: bool = False) -> None:
    "The distance matrices of `cmc_map`'s chunks (and, with `sort`, their rows' rank order), nothing else."
    q, g = _pair(qf, gf, metric)
    for s in range(0, len(q), chunk):
        d = _distances(q[s:s + chunk], g, metric)
        if sort: _rank_order(d)


def cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'): return line.split(':', 1)[1].strip()
    except OSError: pass
    return platform.processor() or 'unknown'


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--threads', type=int, default=1, help='torch threads (default 1)')
    ap.add_argument('--out', default=str(HERE / 'results' / 'reid.md'))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    qf, qp, qc, gf, gp, gc = make_features()
    rows = []
    for metric in ('euclidean', 'cosine'):
        for chunk in (64, 256, 1024):
            t, r = timed(lambda: cmc_map(qf, qp, qc, gf, gp, gc, metric=metric, chunk=chunk))
            td, _ = timed(lambda: distances_only(qf, gf, metric, chunk))
            ts, _ = timed(lambda: distances_only(qf, gf, metric, chunk, sort=True))
            rows.append(dict(metric=metric, chunk=chunk, seconds=t, distances=td, sort=max(ts - td, 0.0), rank1=r['rank1'], rank5=r['rank5'], rank10=r['rank10'],
                             rank20=r['rank20'], mAP=r['mAP'], queries=r['queries'], without=r['queries_without_match']))
            print(f"{metric:9s} chunk {chunk:5d}: {t:6.2f} s (distances {td:5.2f} s, sort {max(ts - td, 0):5.2f} s)  rank-1 {r['rank1']:.3f}  mAP {r['mAP']:.3f}", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # correctness at this size: the loop reference on the first 25 queries, the same distance matrix
    n = 25
    Dm = distance_matrix(qf[:n], gf)
    t_loop, ref = timed(lambda: cmc_map_loop(Dm, qp[:n], qc[:n], gp, gc), repeats=1)
    fast = cmc_map_from_distances(Dm, qp[:n], qc[:n], gp, gc, per_query=True)
    same_ranks = bool(np.array_equal(fast['per_query']['first_match'], ref['per_query']['first_match']))
    max_ap_diff = float(np.abs(fast['per_query']['ap'] - ref['per_query']['ap']).max())
    whole = cmc_map(qf[:n], qp[:n], qc[:n], gf, gp, gc, per_query=True)
    same_whole = bool(np.array_equal(whole['per_query']['first_match'], ref['per_query']['first_match']))
    if not (same_ranks and same_whole and max_ap_diff < 1e-9):
        print(f"MISMATCH: ranks {same_ranks}/{same_whole}, AP difference {max_ap_diff}", file=sys.stderr)
        return 1
    load_after = os.getloadavg()
    best = min(r['seconds'] for r in rows if r['metric'] == 'euclidean')
    md = [
        '# Re-ID evaluation: CMC and mAP at MARS size',
        '',
        f"`benchmarks/reid_eval_bench.py` ({time.strftime('%Y-%m-%d')}): `vssl_nb.reid.cmc_map` scoring **{Q:,} queries × {G:,} gallery "
        f"tracklets, {D}-d features** — the size the issue asks to score in under 10 s. Features: {IDS} identity centres plus noise "
        f"(400 distractors pid 0 and 200 junk pid −1 in the gallery, cameras 1–6); median of {REPEATS} runs after a warm-up, "
        f"torch {torch.__version__} with {args.threads} thread(s), on {cpu_model()} ({os.cpu_count()} cores). "
        f"**The machine was shared**: other processes (a long benchmark study) ran on the same 2 cores (1-minute load average "
        f"{load_before[0]:.1f} at the start, {load_after[0]:.1f} at the end), so an idle core may be faster.",
        '',
        '| metric | queries per chunk | seconds (total) | of which distances | of which sorting | rank-1 | rank-5 | rank-10 | rank-20 | mAP | queries scored |',
        '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
        *[f"| {r['metric']} | {r['chunk']} | {r['seconds']:.2f} | {r['distances']:.2f} | {r['sort']:.2f} | {r['rank1']:.3f} | {r['rank5']:.3f} | {r['rank10']:.3f} | "
          f"{r['rank20']:.3f} | {r['mAP']:.3f} | {r['queries']} (+{r['without']} without a match) |" for r in rows],
        '',
        f"Best Euclidean time: **{best:.2f} s** (target: < 10 s). Peak resident memory of the whole benchmark process: {peak:.0f} MiB "
        f"(the features are {(Q + G) * D * 4 / 2**20:.0f} MiB; a chunk of c queries holds a few c × {G:,} arrays: its distances, "
        f"the sort keys and their sorted copy, the order, the sorted identities and cameras, masks and the cumulative count — "
        f"about 55 bytes per element, {256 * G * 55 / 2**20:.0f} MiB at c = 256, {1024 * G * 55 / 2**20:.0f} MiB at c = 1024).",
        '',
        'Where the time goes: the distance matrix (one matrix product per chunk), the sort of each query\'s gallery row '
        '(float32 distances sorted as unique 64-bit keys — order-preserving bits of the distance, then the gallery index — by '
        'numpy\'s SIMD sort: ties go to the lower index by construction, 2-3x faster than a stable float sort), and the rest: '
        'gathers of the sorted identities and cameras, masks (same identity, same camera, junk), one cumulative count (each '
        'item\'s rank without the excluded ones) and sums over the true matches only. Chunks of 1,024 queries were slower than chunks of 256 here.',
        '',
        f"Correctness at this size: the loop reference (`cmc_map_loop`, a Python sort of (distance, index) pairs per query) on the "
        f"first {n} queries against the whole gallery ({t_loop:.1f} s for those {n}): identical first-match ranks "
        f"({'yes' if same_ranks else 'NO'}; from the features: {'yes' if same_whole else 'NO'}), AP within {max_ap_diff:.1e}. "
        'Exact agreement on small cases with many ties is tested in `tests/test_reid.py` and `nbs/08f_reid.ipynb`.',
        '',
        '    OMP_NUM_THREADS=1 python benchmarks/reid_eval_bench.py',
        '',
    ]
    atomic_write(args.out, '\n'.join(md))
    print(f"wrote {args.out}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
