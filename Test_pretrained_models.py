"""Evaluate saved checkpoints: the authors' released net.pth files (as their README's commands) or any of ours.

    python Test_pretrained_models.py --dataset cub200 --source $datapath/cub200 \
        --arch resnet50_normalize_frozen_double --embed_dim 128 --PSD --OBDP
    python Test_pretrained_models.py --dataset cub200 --source $datapath/cub200 --checkpoint run/best_nmi.pth \
        --plots pictures/      # + a retrieval grid and a t-SNE map of the test embeddings per checkpoint
    python Test_pretrained_models.py --dataset inshop --source $datapath/inshop --checkpoint run/best_e_recall@1.pth \
        --save_embeddings inshop.npz   # query_* and gallery_* features, labels, paths
"""
import logging
import os
import sys

import numpy as np

import architectures
import datasets
import evaluation
import parameters
from evaluation.evaluator import Evaluator
from plumbing.errors import UserError, exit_code
from plumbing.files import atomic_write_json
from plumbing.runtime import select_device
from reporting.figures import save_test_retrieval_grid, tsne_map
from reporting.logs import setup_logging
from run_folder.checkpoint import load_checkpoint_into, read_checkpoint
from run_folder.embeddings_file import write_embeddings
from run_folder.saved_flags import EVALUATION_SETTINGS, PIPELINE_SETTINGS, config_of, evaluation_settings

logger = logging.getLogger('Test_pretrained_models')
AUTHORS_MODELS = 'https://www.dropbox.com/sh/zjnzv5v5m68v6e8/AABP3TFV6YnaKGC3azFCTmSWa?dl=0'


def build_parser():
    parser = parameters.build_parser(prog='Test_pretrained_models.py')
    group = parser.add_argument_group('checkpoints to evaluate')
    group.add_argument('--checkpoint', default=None, type=os.path.expanduser,
                       help='Evaluate this one checkpoint (ours or the authors\').')
    group.add_argument('--checkpoint_root', default='Training_Results', type=os.path.expanduser,
                       help='Where the authors\' Recall/ and NMI/ folders were unpacked.')
    group.add_argument('--out', default=None, type=os.path.expanduser, help='Also write the results to this JSON file.')
    group.add_argument('--plots', default=None, metavar='DIR', type=os.path.expanduser,
                       help='Write <kind>_retrieval.png and <kind>_tsne.png of the test embeddings into DIR.')
    group.add_argument('--save_embeddings', default=None, metavar='FILE.npz', type=os.path.expanduser,
                       help='Write the evaluated embeddings, labels and image paths (test_*, or query_* and '
                            'gallery_*) to FILE.npz; the authors\' two models go to FILE_Recall.npz and FILE_NMI.npz.')
    return parser


def released_checkpoints(root, dataset, psd, obdp, embed_dim):
    """{'Recall': path, 'NMI': path} of the authors' models for a setting, as their Test_pretrained_models.py."""
    if not psd:
        raise UserError('the authors released PSD and OBD-SD models: pass --PSD (and --OBDP), '
                        'or evaluate one file with --checkpoint FILE')
    setting = f'OBDSD_d{128 if embed_dim == 128 else 512}' if obdp else 'PSD'
    return {kind: os.path.join(root, kind, setting, dataset, 'net.pth') for kind in ('Recall', 'NMI')}


def checked_paths(paths):
    for path in paths.values():
        if not os.path.isfile(path):
            raise UserError(f'no checkpoint at {path}; download the authors\' models from {AUTHORS_MODELS} and '
                            f'unpack their Recall/ and NMI/ folders into --checkpoint_root, or pass --checkpoint FILE')
    return paths


def checkpoint_setup(path, opt, explicit):
    """(network, evaluation options, the {flag: value} restored from the checkpoint's config) of a checkpoint: its
    run's EVALUATION_SETTINGS unless given on the command line; the authors' files, without a config, restore
    nothing."""
    checkpoint = read_checkpoint(path)
    given = {name: getattr(opt, name) for name in EVALUATION_SETTINGS if name in explicit}
    _, restored = evaluation_settings(config_of(checkpoint), given, vars(opt))
    options = parameters.with_values(opt, **restored)
    model = architectures.build(options.arch, options.embed_dim, pretrained=False, image_size=options.image_size)
    load_checkpoint_into(model, checkpoint, path)
    return model, options, restored


def restored_line(kind, restored):
    """'checkpoint: evaluated as it was trained (from its config): --arch ... --augmentation big ...'."""
    flags = ' '.join(f'--{name}' if value is True else f'--{name} {value}' for name, value in restored.items()
                     if value is not False)
    off = [f'--{name}' for name, value in restored.items() if value is False]
    return (f'{kind}: evaluated as it was trained (from its config): {flags}'
            + (f'; without {" ".join(off)}' if off else ''))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    opt = parameters.parse_args(argv, parser)
    explicit = parameters.explicit_flags(parser, argv)
    setup_logging()
    for flag, path in (('--out', opt.out), ('--save_embeddings', opt.save_embeddings)):
        check_output_folder(flag, path)
    metric_names = list(opt.evaluation_metrics)
    if opt.checkpoint:
        paths = {'checkpoint': opt.checkpoint}
    else:
        paths = checked_paths(released_checkpoints(opt.checkpoint_root, opt.dataset, opt.PSD, opt.OBDP, opt.embed_dim))
        metric_names += [name for name in ('e_recall@1', 'nmi') if name not in metric_names]
    setups = {kind: checkpoint_setup(path, opt, explicit) for kind, path in paths.items()}

    device = select_device(opt.gpu)
    if opt.amp:
        logger.info(evaluation.AMP_NOTE)
    evaluators, results = {}, {}
    for kind, (model, options, restored) in setups.items():
        if restored:
            logger.info(restored_line(kind, restored))
        pipeline = tuple(getattr(options, name) for name in PIPELINE_SETTINGS)
        if pipeline not in evaluators:  # the test images as this checkpoint's run saw them
            evaluators[pipeline] = test_evaluator(options, device)
        evaluator = evaluators[pipeline]
        logger.info('evaluating %s (%s) on %s', kind, paths[kind],
                    ', '.join(f'{len(test_set)} {part} images' for part, test_set in evaluator.parts.items()))
        metrics, embedded, collapse = evaluator.evaluate(model.to(device), metric_names, amp=opt.amp,
                                                         use_gpu=opt.evaluate_on_gpu, seed=opt.seed)
        if collapse:
            logger.warning('%s: %s', kind, collapse)
        results[kind] = {'checkpoint': paths[kind], 'arch': model.arch, 'embed_dim': model.embed_dim,
                         'restored_from_config': restored, 'metrics': metrics, 'collapsed': collapse is not None}
        if opt.plots:
            write_pictures(opt.plots, kind, embedded, evaluator.parts)
        if opt.save_embeddings:
            target = embeddings_file(opt.save_embeddings, kind, len(setups))
            write_embeddings(target, embedded, evaluator.parts)
            logger.info('wrote the %s embeddings of %s to %s', ' and '.join(embedded), kind, target)
    print_results(results, metric_names)
    if opt.out:
        atomic_write_json(opt.out, {'dataset': opt.dataset, 'results': results})
    return 0


def test_evaluator(options, device):
    """The Evaluator of the test splits of `options.dataset` under the evaluation pipeline `options` say."""
    data = datasets.select(options)
    for warning in data['warnings']:
        logger.warning(warning)
    return Evaluator(datasets.test_parts(data), batch_size=options.bs, workers=options.kernels, device=device)


def check_output_folder(flag, path):
    """A UserError, before anything is evaluated, where the folder of an output file does not exist."""
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError(f'{flag} {path}: the folder {folder} does not exist; create it first')


def embeddings_file(path, kind, n_checkpoints):
    """`path` for one checkpoint; `<stem>_<kind>.npz` for each of several (the authors' Recall and NMI models)."""
    if n_checkpoints == 1:
        return path
    stem, extension = os.path.splitext(path)
    return f'{stem}_{kind}{extension or ".npz"}'


def write_pictures(folder, kind, embedded, test_parts):
    """<folder>/<kind>_retrieval.png and <kind>_tsne.png of one checkpoint's test embeddings (the t-SNE map of
    query and gallery together)."""
    features = np.concatenate([features for features, _ in embedded.values()])
    labels = np.concatenate([labels for _, labels in embedded.values()])
    try:
        os.makedirs(folder, exist_ok=True)
        save_test_retrieval_grid(os.path.join(folder, f'{kind}_retrieval.png'), embedded, test_parts)
        tsne_map(features, labels, os.path.join(folder, f'{kind}_tsne.png'), title=f't-SNE of {kind}')
    except OSError as error:
        raise UserError(f'cannot write to --plots {folder} ({error.strerror}); pass a writable folder') from None
    logger.info('wrote %s_retrieval.png and %s_tsne.png to %s', kind, kind, folder)


def print_results(results, metric_names):
    if 'Recall' in results:
        print(f'Recall@1: {results["Recall"]["metrics"]["e_recall@1"]:.4f}')
        print(f'NMI: {results["NMI"]["metrics"]["nmi"]:.4f}')
    width = max(len(name) for name in metric_names) + 2
    print(''.ljust(width) + ''.join(kind.rjust(12) for kind in results))
    for name in metric_names:
        print(name.ljust(width) + ''.join(cell(result['metrics'][name]) for result in results.values()))


def cell(value):
    """A metric as the table shows it: 4 decimals; a list (rho_spectrum@0, the spectrum) by its length (in --out
    whole)."""
    return f'[{len(value)} values]'.rjust(12) if isinstance(value, list) else f'{value:12.4f}'


if __name__ == '__main__':
    sys.exit(exit_code(main))
