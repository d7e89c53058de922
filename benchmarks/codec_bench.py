"""Speed and determinism of vssl_nb.codec / `vssl extract` against motion-vector-extractor, side by side in one run.

Run by hand:  python benchmarks/codec_bench.py [--videos DIR] [--repeats 5] [--out benchmarks/results/codec.md]

(a) keyframes + all motion vectors, one process: ours `CompressedVideo.extract(pixels='keyframes')` (motion field
    included) vs mvextractor reading every frame with decode_frames=True;
(b) motion vectors only: ours `raw_motion_vectors()` (and `extract(pixels='none')`, the pooled field) vs mvextractor
    with set_decode_frames(False);
(c) the folder of clips: `vssl extract --workers 2` (fresh cache) vs a loop over mvextractor (decode_frames=True);
(d) determinism: how many frames' vectors differ between two runs, ours and mvextractor's;
(e) memory: how far a fresh process's peak RSS grows while reading the longest clip, against what it returns.
Timings are interleaved (A B A B ...) and the best of `repeats` is kept for each, so a busy shared machine hurts
both sides alike; CPU seconds (process time, all threads) are reported next to wall seconds.
"""
import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vssl_nb.codec import CompressedVideo, sample_videos_dir
from vssl_nb.core import package_versions
from vssl_nb.extract import extract

try:
    from mvextractor.videocap import VideoCap
except ImportError:  # pragma: no cover
    sys.exit('motion-vector-extractor is not installed (pip install motion-vector-extractor; it is in the dev extra)')


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF); c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def timed(fn):
    w0, c0 = time.perf_counter(), cpu_seconds()
    out = fn()
    return out, time.perf_counter() - w0, cpu_seconds() - c0


def mvx_read(path, decode_frames=True, keep_mvs=False):
    cap = VideoCap()
    if not cap.open(str(path)): raise RuntimeError(f'mvextractor cannot open {path}')
    cap.set_decode_frames(decode_frames)
    n, mvs = 0, []
    while True:
        ret, frame, mv, ftype = cap.read()
        if not ret: break
        n += 1
        if keep_mvs: mvs.append(mv.copy())
    cap.release()
    return mvs if keep_mvs else n


def ours_vectors(path):
    return CompressedVideo(path).raw_motion_vectors()


def in_fork(fn):
    "Run `fn` in a fork of this process and wait: every run starts from the same parent state, and none changes it."
    pid = os.fork()
    if pid == 0:
        code = 1
        try: fn(); code = 0
        finally: os._exit(code)
    _, status = os.waitpid(pid, 0)
    if status != 0: raise RuntimeError(f'benchmark run failed in its forked process (status {status})')


def best_interleaved(fns: dict, repeats: int, settle=None):
    "Run each fn in turn `repeats` times (after `settle()`, untimed, if given); best (min wall) (wall, cpu) per name."
    best = {k: (np.inf, np.inf) for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            if settle is not None: settle()
            _, w, c = timed(fn)
            if w < best[k][0]: best[k] = (w, c)
    return best


def differing_frames(a: list, b: list, ours: bool) -> int:
    if len(a) != len(b): return max(len(a), len(b))
    if ours: return sum(not np.array_equal(x, y) for x, y in zip(a, b))
    return sum(x.shape != y.shape or not np.array_equal(x, y) for x, y in zip(a, b))


MEMORY_PROBE = """
import sys
from vssl_nb.codec import CompressedVideo
def status():  # kB; ru_maxrss would carry the parent's peak over fork + exec
    return {k: int(v.split()[0]) for k, v in (l.split(':', 1) for l in open('/proc/self/status')) if k in ('VmHWM', 'VmRSS')}
v = CompressedVideo(sys.argv[1])
open('/proc/self/clear_refs', 'w').write('5')  # reset the peak (VmHWM) to the current RSS
before = status()['VmRSS']
if sys.argv[2] == 'raw': out = sum(a.nbytes for a in v.raw_motion_vectors())
else:
    ex = v.extract(pixels=sys.argv[2])
    out = sum(a.nbytes for a in (ex.flow, ex.valid, ex.accumulated, ex.keyframes) if a is not None)
print((status()['VmHWM'] - before) * 1024, out)
"""


def peak_memory(path, what):
    "(peak RSS growth, bytes returned) of one read of `path` in a fresh process."
    r = subprocess.run([sys.executable, '-c', MEMORY_PROBE, str(path), what], capture_output=True, text=True, check=True)
    grown, out = map(int, r.stdout.split())
    return grown, out


def machine() -> str:
    cpu = 'unknown CPU'
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'): cpu = line.split(':', 1)[1].strip(); break
    except OSError: pass
    mem = ''
    try: mem = f", {int(open('/proc/meminfo').readline().split()[1]) / 2**20:.1f} GiB RAM"
    except (OSError, ValueError, IndexError): pass
    v = package_versions(('av', 'numpy', 'motion-vector-extractor', 'vssl-nb'))
    return (f"{platform.platform()}, {cpu}, {os.cpu_count()} logical cores{mem}; Python {platform.python_version()}; "
            f"PyAV {v['av']}, numpy {v['numpy']}, motion-vector-extractor {v['motion-vector-extractor']}, vssl-nb {v['vssl-nb']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--videos', type=Path, default=sample_videos_dir())
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--out', type=Path, default=Path(__file__).parent / 'results' / 'codec.md')
    args = ap.parse_args()
    if args.videos is None: sys.exit('no sample videos found; pass --videos DIR')
    clips = sorted(p for p in args.videos.iterdir() if p.suffix in ('.mp4', '.avi'))
    load0 = os.getloadavg()
    for p in clips: mvx_read(p, True); CompressedVideo(p).extract()  # warm-up: file cache, imports, allocator

    # (c) first: the folder, `vssl extract --workers 2` (fresh cache each time) vs a loop over mvextractor. Measured while
    # this process has only imported the libraries and read each clip once, the state `vssl extract` forks its workers
    # from (a parent that has decoded a lot since makes fork's copy-on-write cost the workers more).
    def ours_folder(**kw):
        with tempfile.TemporaryDirectory() as d:
            # raw vectors, as mvextractor returns them (`vssl extract` stores per-frame motion by default, +2-4%)
            assert extract(str(args.videos), out=d, workers=2, quiet=True, raw_motion=True, **kw) == 0
    def mvx_loop(): [mvx_read(p, True) for p in clips]
    def mvx_loop_novid(): [mvx_read(p, False) for p in clips]
    # each run is a fork of this process (a run that decodes in-process would otherwise leave a bigger heap behind
    # for the next run's workers to fork from), and starts after an untimed `sync`, so that none pays for writing
    # back an earlier run's files
    folder = best_interleaved({k: (lambda fn=fn: in_fork(fn)) for k, fn in {
        'ours --workers 2': ours_folder,
        'ours --workers 2 --no-compress': lambda: ours_folder(no_compress=True),
        'ours --workers 2 --keyframe-size 128': lambda: ours_folder(keyframe_size=128),
        'mvextractor loop, decode_frames=True': mvx_loop,
        'mvextractor loop, decode_frames=False': mvx_loop_novid}.items()}, args.repeats, settle=os.sync)
    print('(c)', {k: round(w, 3) for k, (w, c) in folder.items()}, flush=True)

    rows, tot = [], {k: [0, 0.0, 0.0] for k in ('ours_a', 'mvx_a', 'ours_b', 'ours_b_field', 'mvx_b')}
    det = []
    facts = {}  # clip -> (info, B-frames)
    for p in clips:
        v = CompressedVideo(p)
        facts[p] = (v.info, v.frame_types.count('B'))
        n = v.info.n_frames
        best = best_interleaved({
            'ours_a': lambda: CompressedVideo(p).extract(pixels='keyframes'),
            'mvx_a': lambda: mvx_read(p, True),
            'ours_b': lambda: ours_vectors(p),
            'ours_b_field': lambda: CompressedVideo(p).extract(pixels='none'),
            'mvx_b': lambda: mvx_read(p, False),
        }, args.repeats)
        for k, (w, c) in best.items(): tot[k][0] += n; tot[k][1] += w; tot[k][2] += c
        ours_d = differing_frames(ours_vectors(p), ours_vectors(p), True)
        mvx_d = differing_frames(mvx_read(p, False, True), mvx_read(p, False, True), False)
        det.append((p.name, n, ours_d, mvx_d))
        fps = {k: n / w for k, (w, c) in best.items()}
        rows.append((p.name, n, fps, best))
        print(f"{p.name}: (a) ours {fps['ours_a']:.0f} vs mvx {fps['mvx_a']:.0f} fps = {fps['ours_a'] / fps['mvx_a']:.2f}x; "
              f"(b) ours {fps['ours_b']:.0f} vs mvx {fps['mvx_b']:.0f} = {fps['ours_b'] / fps['mvx_b']:.2f}x; "
              f"differing frames ours {ours_d}, mvx {mvx_d}", flush=True)

    n_all = sum(r[1] for r in rows)
    longest = max(clips, key=lambda p: facts[p][0].n_frames * facts[p][0].width * facts[p][0].height)
    memory = {what: peak_memory(longest, what) for what in ('raw', 'none', 'keyframes')}
    load1 = os.getloadavg()

    def ratio(k1, k2): return (tot[k1][1] and (tot[k2][1] / tot[k1][1]))
    L = ['# Codec benchmark: vssl_nb.codec vs motion-vector-extractor', '',
         f"Run {time.strftime('%Y-%m-%d %H:%M')} with `python benchmarks/codec_bench.py --repeats {args.repeats}` on the real clips "
         f"of `{args.videos}` ({len(clips)} clips, {n_all} frames).", '',
         f"**Machine**: {machine()}. Load average {load0[0]:.2f} at the start and {load1[0]:.2f} at the end (the run itself "
         "keeps up to two cores busy). This VM is shared, so absolute numbers are "
         "noisy; each pair was measured interleaved in this one run (best of the repeats), and the ratios are what to read.", '',
         'Ours decodes single-threaded (deterministic vectors); motion-vector-extractor lets FFmpeg pick its threading '
         '(frame threads), so it uses more than one core per process: see its CPU seconds.', '',
         '## (a) keyframes + all motion vectors, one process', '',
         '| clip | frames | ours fps | mvextractor fps (decode_frames=True) | ratio | ours CPU s | mvx CPU s |', '|---|---|---|---|---|---|---|']
    for name, n, fps, best in rows:
        L.append(f"| {name} | {n} | {fps['ours_a']:.0f} | {fps['mvx_a']:.0f} | {fps['ours_a'] / fps['mvx_a']:.2f}x | "
                 f"{best['ours_a'][1]:.3f} | {best['mvx_a'][1]:.3f} |")
    L.append(f"| **all** | {tot['ours_a'][0]} | {tot['ours_a'][0] / tot['ours_a'][1]:.0f} | {tot['mvx_a'][0] / tot['mvx_a'][1]:.0f} | "
             f"**{ratio('ours_a', 'mvx_a'):.2f}x** | {tot['ours_a'][2]:.2f} | {tot['mvx_a'][2]:.2f} |")
    L += ['', 'Ours returns more than it: RGB keyframes, frame types and the pooled motion field + accumulated motion; '
          'mvextractor returns every frame as BGR pixels plus the raw vector list.', '',
          '## (b) motion vectors only, one process', '',
          '| clip | frames | ours raw vectors fps | ours motion field fps | mvextractor fps (decode_frames=False) | ratio (raw) | ratio (field) |',
          '|---|---|---|---|---|---|---|']
    for name, n, fps, best in rows:
        L.append(f"| {name} | {n} | {fps['ours_b']:.0f} | {fps['ours_b_field']:.0f} | {fps['mvx_b']:.0f} | "
                 f"{fps['ours_b'] / fps['mvx_b']:.2f}x | {fps['ours_b_field'] / fps['mvx_b']:.2f}x |")
    L.append(f"| **all** | {tot['ours_b'][0]} | {tot['ours_b'][0] / tot['ours_b'][1]:.0f} | {tot['ours_b_field'][0] / tot['ours_b_field'][1]:.0f} | "
             f"{tot['mvx_b'][0] / tot['mvx_b'][1]:.0f} | **{ratio('ours_b', 'mvx_b'):.2f}x** | **{ratio('ours_b_field', 'mvx_b'):.2f}x** |")
    L += ['', f"CPU seconds over all clips: ours raw {tot['ours_b'][2]:.2f}, ours field {tot['ours_b_field'][2]:.2f}, "
          f"mvextractor {tot['mvx_b'][2]:.2f}.", '',
          '## (c) the folder, 2 cores', '', f'All {len(clips)} clips ({n_all} frames); ours writes a fresh cache each time (hashing, '
          'field, cache file, atomic write); mvextractor only reads. Measured first, before (a), (b) and (d), in a process '
          'that has only imported the libraries and read each clip once, as `vssl extract` is when it starts its workers; '
          'every run, ours and mvextractor\'s alike, is a fork of that process, after an untimed `sync`, so no run pays for '
          'an earlier one (its heap, or writing back its files). Wall and CPU seconds include the fork. Cache entries are '
          'not fsync\'d (a damaged entry is detected and redone), so the kernel writes them to disk after the command returns.', '',
          '| what | wall s | frames/s | CPU s | vs mvextractor loop (decode_frames=True) |', '|---|---|---|---|---|']
    base = folder['mvextractor loop, decode_frames=True'][0]
    for k, (w, c) in folder.items():
        L.append(f"| {k} | {w:.2f} | {n_all / w:.0f} | {c:.2f} | {base / w:.2f}x |")
    L += ['', '## (d) determinism: frames whose vectors differ between two runs', '',
          '| clip | frames | B-frames | ours | mvextractor |', '|---|---|---|---|---|']
    for name, n, ours_d, mvx_d in det:
        L.append(f"| {name} | {n} | {facts[args.videos / name][1]} | {ours_d} | {mvx_d} |")
    L.append(f"| **all** | {n_all} | | **{sum(d[2] for d in det)}** | **{sum(d[3] for d in det)}** |")
    L += ['', f'## (e) memory: one read of {longest.name} in a fresh process', '',
          'Peak resident memory growth while reading, against the bytes of what the call returns '
          '(the process streams the video: decoded frames are freed as it goes).', '',
          '| call | peak RSS growth MB | returned MB |', '|---|---|---|']
    for what, label in (('raw', '`raw_motion_vectors()`'), ('none', "`extract(pixels='none')`"), ('keyframes', "`extract(pixels='keyframes')`")):
        L.append(f"| {label} | {memory[what][0] / 2**20:.0f} | {memory[what][1] / 2**20:.0f} |")
    L += ['', '## Targets', '',
          f"- (a) ≥ 1.2x motion-vector-extractor per process: measured **{ratio('ours_a', 'mvx_a'):.2f}x** (all clips, wall clock).",
          f"- (c) ≥ 2x its loop with `--workers 2`: measured **{base / folder['ours --workers 2'][0]:.2f}x** "
          f"(defaults: keyframes at full size, motion deflated), **{base / folder['ours --workers 2 --no-compress'][0]:.2f}x** "
          f"with `--no-compress`, **{base / folder['ours --workers 2 --keyframe-size 128'][0]:.2f}x** with `--keyframe-size 128`.",
          f"- zero differing frames for us: **{sum(d[2] for d in det)}** (mvextractor: {sum(d[3] for d in det)}).", '']
    L += ['## Notes', '',
          '- (c): ours does more per video than the loop it is compared with: it hashes the file, pools the motion field, and '
          'writes a cache file (keyframes as the decoder\'s 4:2:0 planes) atomically, from worker '
          'processes it starts; the mvextractor loop only reads, using frame threads (more CPU seconds than wall seconds).',
          '- (a), (b): ours decodes single-threaded, so on clips where decoding is nearly all the work (the small H.264 clips '
          'with B-frames) mvextractor\'s frame threads make it faster per process; ours wins where its per-frame work is '
          'cheaper than mvextractor\'s BGR conversion of every frame (the 720p and 1080p clips).',
          '- Determinism: FFmpeg frame threading (mvextractor\'s default) changes H.264 B-frame vectors from run to run; '
          'ours decodes single-threaded and never differs.', '']
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text('\n'.join(L))
    print('\n'.join(L))


if __name__ == '__main__':
    main()
