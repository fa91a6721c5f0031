"""Time evaluation.compute_metrics against pytorch-metric-learning's AccuracyCalculator, and the metric lists
against each other, all in one process (the ratios are what counts on a shared machine).

Synthetic Stanford-Online-Products-sized embeddings (60,502 samples, 11,316 classes, 128-D):
class centres on the unit sphere, samples = centre + Gaussian noise, L2-normalised.

Timed, in this order: our SOP default metrics, pytorch-metric-learning's precision_at_1 + MAP@R + NMI, the authors'
default metric list (their parameters.py), and the other new metrics by the product they read (retrieval to every
sample, the cosine clustering, the embedding space). Printed: each time, the ratios
'ours / pml (default metrics)' and 'authors' defaults / our defaults', and every value.

    python benchmarks/eval_speed.py [--n 60502 --classes 11316 --dim 128] [--quick] [--rounds 2] [--evaluate_on_gpu]
                                    [--json FILE]
"""
import argparse
import json
import pathlib
import sys
import time

import numpy as np
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import evaluation  # noqa: E402  (needs the repository root on the path)

OUR_METRICS = ['e_recall@1', 'e_recall@10', 'e_recall@100', 'e_recall@1000', 'nmi', 'mAP@R']
"""online_products' default metrics (datasets/online_products.py)."""
AUTHORS_DEFAULTS = ['e_recall@1', 'e_recall@2', 'e_recall@10', 'nmi', 'f1', 'mAP_1000', 'mAP_lim', 'mAP_c',
                    'dists@intra', 'dists@inter', 'dists@intra_over_inter', 'rho_spectrum@0', 'rho_spectrum@-1',
                    'rho_spectrum@1', 'rho_spectrum@2', 'rho_spectrum@10']
"""The authors' default --evaluation_metrics (their parameters.py), for every dataset."""
OTHER_NEW_METRICS = {'retrieval to every sample': ['mAP', 'c_mAP', 'r_precision', 'mrr', 'precision@10', 'c_recall@1'],
                     'cosine clustering': ['c_nmi', 'c_f1', 'ami']}
"""The new metrics the authors' defaults leave out, by the product they read (the embedding-space measures are all
in the authors' defaults)."""
PML_NAME_OF = {'e_recall@1': 'precision_at_1', 'mAP@R': 'mean_average_precision_at_r',
               'nmi': 'NMI'}


def synthetic_embeddings(n, n_classes, dim, noise, seed=0):
    """Normalised features (n x dim float32) and labels; every class has at least two samples."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.concatenate([np.arange(n_classes).repeat(2),
                                             rng.integers(0, n_classes, n - 2 * n_classes)]))
    centres = rng.standard_normal((n_classes, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    features = centres[labels] + noise / np.sqrt(dim) * rng.standard_normal((n, dim))
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    return features.astype(np.float32), labels


def timed(function, *arguments):
    """function(*arguments) and the seconds it took."""
    start = time.perf_counter()
    result = function(*arguments)
    return result, time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n', type=int, default=60502, help='number of samples')
    parser.add_argument('--classes', type=int, default=11316, help='number of classes')
    parser.add_argument('--dim', type=int, default=128, help='embedding dimension')
    parser.add_argument('--noise', type=float, default=1.45,
                        help='noise norm relative to the unit class centres')
    parser.add_argument('--quick', action='store_true',
                        help='a small problem (6,000 samples, 1,100 classes): a smoke run, '
                             'too short for the timings to mean much')
    parser.add_argument('--evaluate_on_gpu', action='store_true',
                        help='faiss k-means and search on the GPU for ours (as main.py --evaluate_on_gpu)')
    parser.add_argument('--rounds', type=int, default=1,
                        help='time every list this many times, in turns, and keep the fastest of each (on a shared '
                             'machine the minimum is the least disturbed)')
    parser.add_argument('--json', default=None, help='also write the timings and metrics to this file')
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.classes = 6000, 1100
    if args.n < 2 * args.classes:
        parser.error('--n must be at least twice --classes')

    features, labels = synthetic_embeddings(args.n, args.classes, args.dim, args.noise)
    print(f'{args.n} samples, {args.classes} classes, {args.dim}-D, '
          f'{torch.get_num_threads()} CPU threads')

    calculator = AccuracyCalculator(include=tuple(PML_NAME_OF.values()), k='max_bin_count',
                                    device=torch.device('cpu'))

    def ours_with(names):
        return lambda features, labels: evaluation.compute_metrics(features, labels, names,
                                                                   use_gpu=args.evaluate_on_gpu)

    def run_pml(features, labels):
        return calculator.get_accuracy(features, labels, features, labels, ref_includes_query=True)

    lists = {'our defaults': OUR_METRICS, "authors' defaults": AUTHORS_DEFAULTS, **OTHER_NEW_METRICS}
    warm_up = slice(0, 2 * args.classes // 10)  # thread pools and first-call costs, untimed
    ours_with(sorted({name for names in lists.values() for name in names}))(features[warm_up], labels[warm_up] // 10)
    run_pml(features[warm_up], labels[warm_up] // 10)
    values, seconds = {}, {}
    for _ in range(args.rounds):
        for title, run in [('our defaults', ours_with(OUR_METRICS)), ('pml', run_pml),
                           *[(title, ours_with(names)) for title, names in list(lists.items())[1:]]]:
            result, taken = timed(run, features, labels)
            values[title], seconds[title] = result, min(taken, seconds.get(title, taken))
    theirs = values.pop('pml')

    ratios = {'ours_over_pml': seconds['our defaults'] / seconds['pml'],
              'authors_defaults_over_ours': seconds["authors' defaults"] / seconds['our defaults']}
    print(f'{"our defaults (" + " ".join(OUR_METRICS) + ")":<72}{seconds["our defaults"]:8.1f} s')
    print(f'{"pml AccuracyCalculator (precision_at_1 MAP@R NMI)":<72}{seconds["pml"]:8.1f} s')
    for title in list(lists)[1:]:
        print(f'{title + " (" + str(len(lists[title])) + " metrics)":<72}{seconds[title]:8.1f} s')
    print(f'ours / pml (default metrics) = {ratios["ours_over_pml"]:.2f}')
    print(f"authors' defaults / our defaults = {ratios['authors_defaults_over_ours']:.2f}")
    print(f'{"metric":<25}{"ours":>10}{"pml":>10}')
    for title, names in lists.items():
        for name in names:
            value = values[title][name]
            shown = f'[{len(value)} values]' if isinstance(value, list) else f'{value:10.4f}'
            pml_value = f'{theirs[PML_NAME_OF[name]]:10.4f}' if title == 'our defaults' and name in PML_NAME_OF else ''
            print(f'{name:<25}{shown:>10}{pml_value:>10}')
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {'arguments': vars(args), 'seconds': seconds, 'ratios': ratios, 'ours_s': seconds['our defaults'],
             'pml_s': seconds['pml'], 'ours': values['our defaults'], 'values': values,
             'pml': {name: float(value) for name, value in theirs.items()}}, indent=2))


if __name__ == '__main__':
    main()
