"""Verdicts on the papers' claims, computed from the claims runs (`benchmarks/claims.sh`, records under benchmarks/runs/claims).

Each claim compares two arms over their seeds (finished runs only). The verdict is a rule, applied the same way to every row:
  holds         the difference has the claimed sign and Welch's t-test gives p < ALPHA;
  reversed      the opposite sign, p < ALPHA (the measurement contradicts the claim);
  not resolved  the difference is within what the seeds' spread allows (p >= ALPHA);
  pending       fewer than MIN_SEEDS finished seeds in an arm.
With three seeds per arm a t-test only resolves differences that are large next to the spread: "not resolved" is an honest
"these runs cannot tell", not evidence of no effect. Before any claim, the yardstick: the supervised ceiling against the
random-init floor and chance, on the same test videos; if the ceiling does not clear the floor, no verdict is drawn.

The re-ID block has its own yardstick: each trained aggregator against its random initialisation and chance.

  python benchmarks/claims_verdicts.py [--runs benchmarks/runs/claims] [--out benchmarks/results/claims_verdicts.md]
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

from scipy import stats

from vssl_nb.experiments import collect_results

ALPHA, MIN_SEEDS, CHANCE = 0.05, 3, 1 / 12
ROOT = Path(__file__).resolve().parent


def arm_values(rows: list[dict], metric: str, **params) -> list[float]:
    "The finished runs' `metric` among `rows` whose parameters equal `params` (one value per seed)."
    out = []
    for r in rows:
        if r.get('status') != 'ok': continue
        if all(_same(r.get(f'param.{k}'), v) for k, v in params.items()):
            v = r.get(f'metric.{metric}')
            if isinstance(v, (int, float)) and math.isfinite(v): out.append(float(v))
    return out


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)): return math.isclose(a, b)
    return a == b


def summary(v: list[float]) -> str:
    if not v: return 'no runs'
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{statistics.mean(v):.3f} ± {sd:.3f} (n={len(v)})"


def compare(a: list[float], b: list[float]) -> dict:
    "Arm `a` against arm `b`: the difference of means, Welch's p and the verdict for the claim a > b."
    out = dict(a=summary(a), b=summary(b), diff=None, p=None)
    if len(a) < MIN_SEEDS or len(b) < MIN_SEEDS:
        out['verdict'] = 'pending'
        return out
    diff = statistics.mean(a) - statistics.mean(b)
    if statistics.pvariance(a) == 0 and statistics.pvariance(b) == 0: p = 0.0 if diff else 1.0
    else: p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    out.update(diff=diff, p=p, verdict='not resolved' if p >= ALPHA else ('holds' if diff > 0 else 'reversed'))
    return out


VERDICT_HEADER = ["| claim | metric | A | B | A − B | p | verdict |", "|---|---|---|---|---|---|---|"]


def row(claim: str, a_name: str, b_name: str, metric: str, c: dict) -> str:
    diff = '' if c['diff'] is None else f"{c['diff']:+.3f}"
    p = '' if c['p'] is None else f"{c['p']:.3f}"
    return f"| {claim} | {metric} | {a_name}: {c['a']} | {b_name}: {c['b']} | {diff} | {p} | **{c['verdict']}** |"


def segment_arm(rows: list[dict], source: str, method: str, metric: str) -> list[float]:
    "The finished segmentation runs' `metric` for feature `source` (the features parameter's last path part) and `method`."
    picked = [r for r in rows if Path(str(r.get('param.features', ''))).name == source]
    return arm_values(picked, metric, method=method)


SEGMENT_SOURCES = {'truth': "the actor's true motion (oracle)", 'f1.0-mw0.0-s0': 'the supervised backbone of study 1',
                   'cmd_motion_only-s0': 'the CMD motion-only backbone of study 1', 'random': 'a random backbone'}


def segmentation_verdicts(runs: Path) -> list[str]:
    "The segmentation block: per feature source, the features' ceiling against the equal split, then TOT's claims."
    seg = collect_results('segment', runs=runs).rows
    lines = ["", "### Unsupervised activity segmentation: TOT (Kumar et al., CVPR 2022)", "",
             "The paper: joint representation learning and online clustering with a temporal prior in the optimal transport and",
             "a temporal coherence loss segments activities on par with or better than earlier unsupervised methods; both ideas",
             "are ablated. Here, per feature source, first the yardstick: the supervised frame classifier (the features' ceiling)",
             "against the equal split (which knows K and the order: the floor). A claim is judged only on sources whose ceiling",
             "clears the floor.", ""]
    for source, what in SEGMENT_SOURCES.items():
        A = lambda method, metric: segment_arm(seg, source, method, metric)
        if not A('equal_split', 'mof'): continue
        yard = compare(A('supervised', 'mof'), A('equal_split', 'mof'))
        lines += [f"**Features: {what}** (`{source}`).", "", *VERDICT_HEADER,
                  row('the features allow a segmentation (ceiling above floor)', 'supervised', 'equal_split', 'mof', yard)]
        if yard['verdict'] not in ('holds', 'pending'):
            lines += ["", "The ceiling does not clear the floor: these features cannot support a segmentation claim.", ""]
            continue
        for metric in ('mof', 'f1'):
            for other, claim in (('kmeans', 'TOT beats k-means'), ('equal_split', 'TOT beats the equal split'),
                                 ('tot_no_prior', 'the temporal prior helps'), ('tot_no_coherence', 'the coherence loss helps'),
                                 ('ot', 'TOT beats plain OT clustering')):
                if A(other, metric): lines.append(row(claim, 'tot', other, metric, compare(A('tot', metric), A(other, metric))))
        lines.append("")
    return lines


def reid_arm(rows: list[dict], metric: str, trained: bool = True, **params) -> list[float]:
    "The finished re-ID runs' `metric` with `params`, trained (steps > 0) or the random-init reference (steps 0)."
    picked = [r for r in rows if (r.get('param.steps') or 0) > 0] if trained else [r for r in rows if r.get('param.steps') == 0]
    return arm_values(picked, metric, **params)


def reid_verdicts(runs: Path) -> list[str]:
    "The re-ID block: the yardstick (trained against random init and chance), then TRL's and ST²N's claims, then the SSL encoder."
    rows = collect_results('reid', runs=runs).rows
    if not rows: return []
    R = lambda metric, trained=True, **p: reid_arm(rows, metric, trained, **{'encoder': 'resnet2d', 'encoder_init': 'random', **p})
    lines = ["", "### Video person re-identification: TRL and ST²N (Dai et al., IEEE TIP 2019)", "",
             "The paper: temporal residual learning (two BiLSTMs, generic and frame-specific features combined as a residual)",
             "gives better tracklet features than temporal pooling or one LSTM, and ST²N (a spatial transformer whose",
             "parameters come from the frame and the other frames' context) fixes the poor alignment of detected pedestrians.",
             "First the yardstick: each aggregator trained (without ST²N) against the same network at its random initialisation",
             "(steps 0), and both against chance (a random ranking's expected rank-1).", "",
             "| reference | rank-1 | mAP |", "|---|---|---|"]
    for agg in ('mean', 'lstm', 'trl'):
        lines.append(f"| {agg}, trained | {summary(R('rank1', aggregator=agg, st2n=False))} | "
                     f"{summary(R('mAP', aggregator=agg, st2n=False))} |")
        lines.append(f"| {agg}, random init (floor) | {summary(R('rank1', False, aggregator=agg))} | {summary(R('mAP', False, aggregator=agg))} |")
    chance = R('chance_rank1', False) + R('chance_rank1')
    lines += [f"| chance (a random ranking, expected) | {chance[0]:.4f} | ≈ the same |" if chance else "| chance | no runs | |", "", *VERDICT_HEADER]
    yards = []
    for agg in ('mean', 'lstm', 'trl'):
        for metric in ('rank1', 'mAP'):
            c = compare(R(metric, aggregator=agg, st2n=False), R(metric, False, aggregator=agg))
            yards.append(c['verdict'])
            lines.append(row('training beats random init (ceiling above floor)', f'{agg} trained', f'{agg} random', metric, c))
    if 'pending' in yards:
        lines += ["", f"Pending: fewer than {MIN_SEEDS} finished seeds in a reference row; the verdicts below wait for them.", ""]
    elif any(v != 'holds' for v in yards):
        lines += ["", "A trained model does not clear its random initialisation: no claim below can be judged on this world.", ""]
        return lines
    else:
        lines += ["", "Every trained aggregator clears its random initialisation and chance: the benchmark discriminates.", ""]
    lines += [*VERDICT_HEADER]
    for st in (False, True):
        tag = ' (with ST²N)' if st else ''
        for metric in ('rank1', 'mAP'):
            for other, claim in (('mean', 'TRL beats mean pooling'), ('lstm', 'TRL beats one BiLSTM')):
                lines.append(row(claim + tag, 'trl', other, metric,
                                 compare(R(metric, aggregator='trl', st2n=st), R(metric, aggregator=other, st2n=st))))
    for agg in ('mean', 'lstm', 'trl'):
        for metric in ('rank1', 'mAP'):
            lines.append(row('ST²N helps', f'{agg} + ST²N', agg, metric,
                             compare(R(metric, aggregator=agg, st2n=True), R(metric, aggregator=agg, st2n=False))))
    for agg in ('mean', 'lstm', 'trl'):
        lines.append(row('ST²N aligns the crops (its windows fit the true boxes better than the raw crops)', f'{agg} + ST²N: ST²N window',
                         'raw crop', 'IoU with the true box',
                         compare(R('iou_st2n', aggregator=agg, st2n=True), R('iou_raw', aggregator=agg, st2n=True))))
    ssl_rows = [r for r in rows if r.get('param.encoder_init') not in ('random', None) and r.get('param.aggregator') == 'trl'
                and not r.get('param.st2n') and (r.get('param.steps') or 0) > 0]
    encoders = sorted({r.get('param.encoder') for r in ssl_rows})
    for enc in encoders:
        for metric in ('rank1', 'mAP'):
            ssl = arm_values([r for r in ssl_rows if r.get('param.encoder') == enc], metric)
            lines.append(row('a backbone pretrained self-supervised in this workbench beats random init as the frame encoder',
                             f'trl, {enc} from SSL', f'trl, {enc} random', metric,
                             compare(ssl, R(metric, aggregator='trl', st2n=False, encoder=enc))))
    if encoders:
        lines += ["", "SSL init: " + '; '.join(sorted({f"`{r.get('param.encoder')}` from `{Path(str(r.get('param.encoder_init'))).parent.name}/"
                                                     f"{Path(str(r.get('param.encoder_init'))).name}`" for r in ssl_rows})) + "."]
    else:
        lines += ["", "Not run: a frame encoder initialised from a backbone pretrained self-supervised in this workbench (CMD, DSM…). It",
                  "needs a `pretrain` run's weights (set REID_SSL_INIT in claims.sh; study 1 does not keep weights in git)."]
    lines.append("")
    return lines


def verdicts(runs: Path) -> str:
    pre = collect_results('pretrain', runs=runs).rows
    sup = collect_results('supervised', runs=runs).rows
    sb = collect_results('scenebias', runs=runs).rows
    P = lambda method, metric: arm_values(pre, metric, method=method)
    S = lambda frac, mw: arm_values(sup, 'video_acc', label_fraction=frac, motion_weight=mw)
    B = lambda method, metric: arm_values(sb, metric, method=method)

    lines = ["## Verdicts", "",
             "Computed by `benchmarks/claims_verdicts.py` from the runs above: the difference of the seed means (A − B), Welch's",
             f"t-test p, and a rule applied alike to every row: **holds** (claimed sign, p < {ALPHA}), **reversed** (opposite sign,",
             f"p < {ALPHA}), **not resolved** (within the seeds' spread), **pending** (fewer than {MIN_SEEDS} finished seeds).",
             "Three seeds resolve only differences that are large next to their spread.", ""]

    # the yardstick first: can this world tell a trained model from a random one?
    ceiling, floor = S(1.0, 0.0), P('none', 'linear@1.0_video_acc')
    yard = compare(ceiling, floor)
    lines += ["### The yardstick", "",
              "| reference | video accuracy on the test videos |", "|---|---|",
              f"| supervised from scratch, all labels (ceiling) | {summary(ceiling)} |",
              f"| random init, linear probe on all labels (floor) | {summary(floor)} |",
              f"| chance | {CHANCE:.3f} |", ""]
    if yard['verdict'] == 'holds':
        lines += [f"The ceiling clears the floor by {yard['diff']:.3f} (p = {yard['p']:.3g}), and the floor clears chance by "
                  f"{statistics.mean(floor) - CHANCE:+.3f}: the benchmark discriminates, and the claims below are judged on it.", ""]
    elif yard['verdict'] == 'pending':
        lines += [f"Pending: fewer than {MIN_SEEDS} finished seeds in a reference row; the verdicts below wait for them.", ""]
    else:
        lines += [f"The ceiling does not clear the floor ({yard['verdict']}): no claim below can be judged on this world.", ""]

    lines += ["### Context-and-motion decoupling (Huang et al., CVPR 2021)", "",
              "The paper: CMD beats prior self-supervised methods on UCF101/HMDB51 retrieval (+16.0 / +11.1 points of recall),",
              "both of its tasks contribute, and motion prediction as an auxiliary task adds 7.4 to 13.8 points to supervised",
              "action recognition.", ""] + VERDICT_HEADER
    for metric in ('R@1', 'linear@1.0_video_acc'):
        for other in ('simclr', 'moco', 'be', 'dsm'):
            lines.append(row('CMD beats prior self-supervised methods', 'cmd', other, metric, compare(P('cmd', metric), P(other, metric))))
        for ablation in ('cmd_context_only', 'cmd_motion_only'):
            lines.append(row('both tasks contribute (CMD beats each alone)', 'cmd', ablation, metric,
                             compare(P('cmd', metric), P(ablation, metric))))
    for frac in (1.0, 0.1):
        c = compare(S(frac, 1.0), S(frac, 0.0))
        lines.append(row(f'motion prediction helps supervised training ({frac:.0%} of the labels)', 'with motion', 'without',
                         'video_acc', c))
    lines += ["", "Self-supervised pretraining against random init (the premise of every method here):", ""] + VERDICT_HEADER
    for method in ('cmd', 'cmd_context_only', 'cmd_motion_only', 'simclr', 'moco', 'be', 'dsm'):
        for metric in ('R@1', 'linear@0.1_video_acc'):
            lines.append(row('pretraining beats random init', method, 'none', metric, compare(P(method, metric), P('none', metric))))

    lines += ["", "### Scene bias: Background Erasing (Wang et al., CVPR 2021) and DSM (Wang et al., AAAI 2021)", "",
              "The papers: on top of MoCo, BE and DSM make the representation rely less on the scene and more on the motion,",
              "with large gains on UCF101/HMDB51. Here: pretrained on scenes biased to the class (p=0.9), probed on unbiased",
              "test videos (probe_test_acc, higher is better) and on static clips of the biased training videos",
              "(scene_only_acc: answering from the scene, lower is better; the table compares MoCo − method for it).", ""] + VERDICT_HEADER
    for method in ('be', 'dsm'):
        lines.append(row('beats MoCo on unbiased test videos', method, 'moco', 'probe_test_acc',
                         compare(B(method, 'probe_test_acc'), B('moco', 'probe_test_acc'))))
        lines.append(row('relies less on the scene than MoCo', 'moco', method, 'scene_only_acc',
                         compare(B('moco', 'scene_only_acc'), B(method, 'scene_only_acc'))))
        lines.append(row('attends to the moving sprite more than MoCo', method, 'moco', 'mask_share',
                         compare(B(method, 'mask_share'), B('moco', 'mask_share'))))
    lines += segmentation_verdicts(runs)
    lines += reid_verdicts(runs)
    return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--runs', default=str(ROOT / 'runs' / 'claims'))
    ap.add_argument('--out', default=str(ROOT / 'results' / 'claims_verdicts.md'))
    a = ap.parse_args(argv)
    text = verdicts(Path(a.runs))
    Path(a.out).write_text(text, encoding='utf-8')
    print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
