"""Time evaluation.compute_metrics against pytorch-metric-learning's AccuracyCalculator.

Synthetic Stanford-Online-Products-sized embeddings (60,502 samples, 11,316 classes, 128-D):
class centres on the unit sphere, samples = centre + Gaussian noise, L2-normalised.

    python benchmarks/eval_speed.py [--n 60502 --classes 11316 --dim 128] [--quick] [--evaluate_on_gpu] [--json FILE]
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

    def run_ours(features, labels):
        return evaluation.compute_metrics(features, labels, OUR_METRICS, use_gpu=args.evaluate_on_gpu)

    def run_pml(features, labels):
        return calculator.get_accuracy(features, labels, features, labels, ref_includes_query=True)

    warm_up = slice(0, 2 * args.classes // 10)  # thread pools and first-call costs, untimed
    run_ours(features[warm_up], labels[warm_up] // 10)
    run_pml(features[warm_up], labels[warm_up] // 10)
    ours, our_seconds = timed(run_ours, features, labels)
    theirs, pml_seconds = timed(run_pml, features, labels)

    print(f'evaluation.compute_metrics: {our_seconds:8.1f} s')
    print(f'pml AccuracyCalculator:     {pml_seconds:8.1f} s   (pml / ours = '
          f'{pml_seconds / our_seconds:.2f})')
    print(f'{"metric":<15}{"ours":>10}{"pml":>10}')
    for name in OUR_METRICS:
        pml_value = f'{theirs[PML_NAME_OF[name]]:10.4f}' if name in PML_NAME_OF else f'{"-":>10}'
        print(f'{name:<15}{ours[name]:10.4f}{pml_value}')
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {'arguments': vars(args), 'ours_s': our_seconds, 'pml_s': pml_seconds, 'ours': ours,
             'pml': {name: float(value) for name, value in theirs.items()}}, indent=2))


if __name__ == '__main__':
    main()
