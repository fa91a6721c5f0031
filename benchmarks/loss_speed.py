"""Time forward + backward of every loss against the per-tuple loop of the authors' file and pytorch-metric-learning.

One batch as the authors' class_random sampler draws it (bs 112, 2 samples per draw of 100 training classes,
128-D L2-normalised float32 embeddings); each loss with its default flags and miner. Ours and the loop reference (the
tests' AUTHORS_LOOPS: tests/criteria_references.py and tests/proxy_references.py) get the same mined
tuples, so both do the same work; "ours + mining" adds the miner's draw. pytorch-metric-learning's loss of the same
name runs on the same batch where it has one (with the same triplets where it takes them).

    OMP_NUM_THREADS=1 python benchmarks/loss_speed.py [--bs 112 --dim 128] [--losses margin npair ...] [--json FILE]

Each timing is the median over interleaved rounds (ours, ours + mining, the loop, the library in turn), so that a
load that comes and goes on a shared machine weighs on all of them alike.
"""
import argparse
import importlib
import json
import math
import statistics
import pathlib
import sys
import time
import warnings

import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'tests'))
import criteria  # noqa: E402  (needs the repository root on the path)
import parameters  # noqa: E402

REFERENCE_MODULES = ('criteria_references', 'proxy_references')
"""The test modules whose AUTHORS_LOOPS name the per-tuple loop of each loss."""


def authors_loops():
    """{loss: loop reference} from every reference module."""
    loops = {}
    for name in REFERENCE_MODULES:
        loops.update(importlib.import_module(name).AUTHORS_LOOPS)
    return loops


def class_random_batch(bs, samples_per_class, n_classes, dim, device, seed=0):
    """Normalised embeddings (leaf) and labels: bs / samples_per_class class draws with replacement."""
    generator = torch.Generator().manual_seed(seed)
    classes = torch.randint(0, n_classes, (bs // samples_per_class,), generator=generator)
    labels = classes.repeat_interleave(samples_per_class)
    embeddings = F.normalize(torch.randn(bs, dim, generator=generator), dim=1)
    return embeddings.to(device).requires_grad_(), labels.to(device)


def seconds_per_call(steps, device, rounds, round_seconds):
    """{name: median seconds of one call of steps[name]} (a forward + backward each), the steps interleaved: each
    round times every step in turn, as many calls as fill `round_seconds` (at least one), so a load that comes and
    goes slows them all alike; one untimed call each first."""
    def synchronise():
        if device.type == 'cuda':
            torch.cuda.synchronize()

    calls = {}
    for name, step in steps.items():
        started = time.perf_counter()
        step()
        synchronise()
        calls[name] = max(1, int(round_seconds / max(time.perf_counter() - started, 1e-6)))
    samples = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            started = time.perf_counter()
            for _ in range(calls[name]):
                step()
            synchronise()
            samples[name].append((time.perf_counter() - started) / calls[name])
    return {name: statistics.median(values) for name, values in samples.items()}


def backward_of(loss_fn, embeddings):
    """A step: loss_fn(embeddings) and its gradient into the embeddings."""
    def step():
        embeddings.grad = None
        loss_fn(embeddings).backward()
    return step


def library_loss(name, criterion, labels, tuples, device):
    """pytorch-metric-learning's loss of the same name as fn(embeddings), with our flags' values and the same
    triplets where it takes them; None where it has none. Its Smooth-AP needs classes of one size in contiguous
    order: it gets the batch's labels sorted into 56 classes of 2 (same size and work, another grouping)."""
    from pytorch_metric_learning import losses, miners

    triplets = tuple(tuples[:3]) if tuples is not None and len(tuples) >= 3 and tuples[2].dim() == 1 else None
    if name == 'multisimilarity':
        loss = losses.MultiSimilarityLoss(alpha=criterion.pos_weight, beta=criterion.neg_weight,
                                          base=criterion.threshold)
        miner = miners.MultiSimilarityMiner(epsilon=criterion.margin)
        return lambda x: loss(x, labels, miner(x, labels))
    made = {
        'margin': lambda: losses.MarginLoss(margin=criterion.margin, nu=criterion.nu, beta=1.2, learn_beta=True,
                                            num_classes=len(criterion.beta)).to(device),
        'triplet': lambda: losses.TripletMarginLoss(margin=criterion.margin),
        'contrastive': lambda: losses.ContrastiveLoss(pos_margin=criterion.pos_margin,
                                                      neg_margin=criterion.neg_margin),
        'lifted': lambda: losses.GeneralizedLiftedStructureLoss(neg_margin=criterion.margin),
        'npair': lambda: losses.NPairsLoss(),
        'angular': lambda: losses.AngularLoss(),
        'histogram': lambda: losses.HistogramLoss(n_bins=criterion.nbins - 1),
        'proxynca': lambda: losses.ProxyNCALoss(len(criterion.proxies), criterion.proxies.shape[1]).to(device),
        'softmax': lambda: losses.NormalizedSoftmaxLoss(criterion.class_map.shape[0], criterion.class_map.shape[1],
                                                        temperature=criterion.temperature).to(device),
        'arcface': lambda: losses.ArcFaceLoss(criterion.class_map.shape[0], criterion.class_map.shape[1],
                                              margin=math.degrees(criterion.angular_margin),
                                              scale=criterion.feature_scale).to(device),
        'softtriplet': lambda: losses.SoftTripleLoss(criterion.n_classes, criterion.centroids.shape[0],
                                                     centers_per_class=criterion.n_centroids).to(device),
        'proxyanchor': lambda: losses.ProxyAnchorLoss(len(criterion.proxies), criterion.proxies.shape[1],
                                                      margin=criterion.delta, alpha=criterion.alpha).to(device),
    }
    if name == 'ap_loss':
        loss = losses.SmoothAPLoss(temperature=criterion.anneal)
        grouped = torch.arange(len(labels), device=labels.device) // 2
        return lambda x: loss(x, grouped)
    if name not in made:
        return None
    loss = made[name]()
    if name in ('margin', 'triplet', 'contrastive') and triplets is not None:
        return lambda x: loss(x, labels, triplets)
    return lambda x: loss(x, labels)


def measure(name, loop, args, device):
    """{'ours', 'ours_with_mining', 'loop', 'library'}: seconds per forward + backward (None: no such loss)."""
    opt = parameters.build_parser().parse_args(['--loss', name, '--seed', '0'])
    criterion = criteria.select(name, opt, n_classes=args.classes).to(device)
    embeddings, labels = class_random_batch(args.bs, args.samples_per_class, args.classes, args.dim, device)
    tuples = importlib.import_module('criteria_references').given_tuples(criterion, embeddings, labels)
    steps = {'ours': backward_of(lambda x: criterion(x, labels, indices_tuple=tuples), embeddings),
             'ours_with_mining': backward_of(lambda x: criterion(x, labels), embeddings),
             'loop': backward_of(lambda x: loop(x, labels, tuples, criterion), embeddings)}
    library = library_loss(name, criterion, labels, tuples, device)
    if library is not None:
        steps['library'] = backward_of(library, embeddings)
    return {'library': None, **seconds_per_call(steps, device, args.rounds, args.round_seconds)}


def miner_of(name):
    """The loss's default miner ('' where it has none)."""
    module = criteria.MODULES[name]
    return criteria.miner_name(module, None) if module.MINERS else ''


def ratio(numerator, denominator):
    return None if numerator is None else numerator / denominator


def table(results):
    """The printed table: milliseconds and how many times slower the others are than ours."""
    lines = [f'{"loss":16s} {"kind (miner)":22s} {"ours ms":>9s} {"+ mining":>9s} {"loop ms":>9s} {"loop/ours":>10s} '
             f'{"pml ms":>9s} {"pml/ours":>9s}']
    for name, row in results.items():
        library = '-' if row['library'] is None else f'{1000 * row["library"]:9.2f}'
        library_ratio = '-' if row['library_over_ours'] is None else f'{row["library_over_ours"]:9.2f}'
        kind = f'{row["kind"]} ({row["miner"]})' if row['miner'] else row['kind']
        lines.append(f'{name:16s} {kind:22s} {1000 * row["ours"]:9.2f} {1000 * row["ours_with_mining"]:9.2f} '
                     f'{1000 * row["loop"]:9.1f} {row["loop_over_ours"]:10.1f} {library:>9s} {library_ratio:>9s}')
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--bs', type=int, default=112)
    parser.add_argument('--samples_per_class', type=int, default=2)
    parser.add_argument('--classes', type=int, default=100, help='training classes the batch draws from')
    parser.add_argument('--dim', type=int, default=128)
    parser.add_argument('--losses', nargs='+', default=None, help='default: every loss with a loop reference')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--rounds', type=int, default=7, help='interleaved rounds; the median round counts')
    parser.add_argument('--round_seconds', type=float, default=0.1, help='time each step this long a round')
    parser.add_argument('--json', default=None, help='also write the timings and ratios to this file')
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    warnings.filterwarnings('ignore', 'Using a non-tuple sequence')  # pytorch-metric-learning's HistogramLoss
    loops = authors_loops()
    names = args.losses or [name for name in criteria.MODULES if name in loops]
    unknown = [name for name in names if name not in loops]
    if unknown:
        parser.error(f'no loop reference for {", ".join(unknown)}; choose among {", ".join(loops)}')
    print(f'bs {args.bs}, {args.samples_per_class} samples per class draw, {args.dim}-D, {device}, '
          f'{torch.get_num_threads()} CPU threads')
    results = {}
    for name in names:
        timings = measure(name, loops[name], args, device)
        results[name] = {'kind': criteria.MODULES[name].KIND, 'miner': miner_of(name), **timings,
                         'loop_over_ours': timings['loop'] / timings['ours'],
                         'library_over_ours': ratio(timings['library'], timings['ours'])}
    print(table(results))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == '__main__':
    main()
