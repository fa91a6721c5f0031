"""Every command-line flag of main.py, grouped; dataset-specific defaults; validation of values.

Flag names and defaults follow the original OBD-SD code so that its command lines run unchanged
(`--source` is accepted as the prefix of `--source_path`).
"""
import argparse
import math
import os
import sys

from datasampler.class_balanced import DRAWS
from plumbing.errors import UserError

DIGITS_DEFAULTS = {
    'arch': 'resnet18_normalize',
    'not_pretrained': True,
    'image_size': 32,
    'bs': 32,
    'samples_per_class': 8,
    'n_epochs': 6,
    'lr': 1e-3,
    'kernels': 0,
    'embed_dim': 64,
    'tv_split_perc': 0.6,
}
"""Where the user set nothing, `--dataset digits` uses these: a CPU-sized run without ImageNet weights (unless
--pretrained_path gives some); with --use_tv_split, 3 of its 5 training classes train and 2 validate (0.8 would
leave one)."""
ONLY_WITH = {'kd_lambda': ('PSD',), 'kd_tau': ('PSD',), 'diffusion_w': ('OBDP',), 'diffusion_tau': ('OBDP',)}
"""Flags that change nothing unless these flags are on (the distillation and diffusion settings)."""
DIGITS_TIMM_LR = 1e-4
"""The digits --lr for a timm backbone: at the ResNet18's 1e-3 a ViT-Tiny loses Recall@1 epoch after epoch there
(0.73 -> 0.64 in 6 epochs; 0.89 -> 0.92 at 1e-4)."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr, without the usage block."""

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message} (see --help)\n')


def float_list(text):
    return [float(v) for v in text.split(',')] if isinstance(text, str) else text


def build_parser(prog=None):
    """All flags of main.py (Test_pretrained_models.py adds its own on top)."""
    parser = OneLineArgumentParser(prog=prog, description='Train a deep metric learning model with OBD-SD.')
    add_data_flags(parser.add_argument_group('data'))
    add_network_flags(parser.add_argument_group('network'))
    add_loss_flags(parser.add_argument_group('loss'))
    add_distillation_flags(parser.add_argument_group('self-distillation (PSD) and online batch diffusion (OBDP)'))
    add_optimisation_flags(parser.add_argument_group('optimisation'))
    add_evaluation_flags(parser.add_argument_group('evaluation'))
    add_run_flags(parser.add_argument_group('run, logging and checkpoints'))
    return parser


def add_data_flags(group):
    from datasets import DATASETS

    group.add_argument('--dataset', default='cub200', help=f'One of {", ".join(DATASETS)} (digits is built in).')
    group.add_argument('--source_path', default=None, type=os.path.expanduser,
                       help='Dataset folder, or its parent (e.g. --source $datapath/cub200). Digits: a cache folder. '
                            'folder: the folder of your images.')
    group.add_argument('--split_file', default=None, type=os.path.expanduser,
                       help='--dataset folder: a CSV with the columns path,label,split (default: <source>/split.csv '
                            'where it exists, else the class folders train/ test/ or train/ query/ gallery/).')
    group.add_argument('--kernels', type=int, default=6, help='Data-loading worker processes.')
    group.add_argument('--bs', type=int, default=112, help='Batch size (bs / samples_per_class classes per batch).')
    group.add_argument('--samples_per_class', type=int, default=2, help='Images of each class in a batch.')
    group.add_argument('--data_sampler', default='class_random', choices=DRAWS,
                       help='How a batch draws its classes and images: class_random (the authors\' default: '
                            'both with replacement) or class_distinct (distinct classes and images).')
    group.add_argument('--augmentation', default='base', choices=['base', 'adv', 'big', 'red'])
    group.add_argument('--image_size', type=int, default=224, help='Training and evaluation crop size.')
    group.add_argument('--full_decode', action='store_true',
                       help='Decode every JPEG at full size (as the authors) instead of at 1/2-1/8 size where the '
                            'crop is at least twice the output.')
    group.add_argument('--pil_resampling', action='store_true',
                       help='Resize crops with Pillow, giving exactly the pixels of the authors\' torchvision '
                            'transforms, instead of with torch\'s 2x faster uint8 kernel (within one grey level).')
    group.add_argument('--use_tv_split', action='store_true', help='Hold out part of the training data for validation.')
    group.add_argument('--tv_split_perc', type=float, default=0.8,
                       help='Fraction of training classes kept for training.')
    group.add_argument('--tv_split_by_samples', action='store_true',
                       help='Split within each class by samples instead of by classes.')
    group.add_argument('--cv_folds', type=int, default=None, metavar='K',
                       help='Class-disjoint K-fold cross-validation ("A Metric Learning Reality Check"): the training '
                            'classes are dealt into K folds (seeded by --seed) and fold --cv_fold is the validation '
                            'split; the test split stays as it is.')
    group.add_argument('--cv_fold', type=int, default=None, metavar='I',
                       help='With --cv_folds K: the fold (0 .. K-1) held out for validation.')


def add_network_flags(group):
    group.add_argument('--arch', default='resnet50_frozen_normalize',
                       help='Backbone (resnet18/34/50/101, bninception, or any timm model with its pretrained tag, '
                            'e.g. vit_small_patch16_224.dino) with flags _frozen, _normalize, _double, e.g. '
                            'resnet50_frozen_normalize_double.')
    group.add_argument('--embed_dim', type=int, default=128, help='Embedding dimension.')
    group.add_argument('--not_pretrained', action='store_true', help='Start from random weights instead of ImageNet.')
    group.add_argument('--pretrained_path', default=None, type=os.path.expanduser,
                       help='Offline weights file for the backbone (timm models: .pth, .bin, .safetensors or .npz).')


def add_loss_flags(group):
    import criteria

    group.add_argument('--loss', default='multisimilarity_obd_sd',
                       help=f'One of {", ".join(criteria.MODULES)}; <name>_obd_sd adds OBD-SD (--PSD, --OBDP).')
    criteria.add_flags(group)


def add_distillation_flags(group):
    group.add_argument('--PSD', action='store_true', help='Progressive self-distillation from last epoch\'s weights.')
    group.add_argument('--OBDP', action='store_true',
                       help='Diffuse the distillation target over the batch (needs --PSD).')
    group.add_argument('--kd_lambda', type=float, default=75.0, help='Weight of the distillation term.')
    group.add_argument('--kd_tau', type=float, default=1.0, help='Softmax temperature of the distillation term.')
    group.add_argument('--diffusion_w', type=float, default=0.99, help='Diffusion weight w, 0 <= w < 1.')
    group.add_argument('--diffusion_tau', type=float, default=1.0, help='Temperature of the random-walk matrix.')


def add_optimisation_flags(group):
    group.add_argument('--n_epochs', type=int, default=150)
    group.add_argument('--optim', default='adam', choices=['adam', 'adamw', 'sgd'],
                       help='adam (L2 weight decay, as the authors), adamw (decoupled weight decay) or sgd.')
    group.add_argument('--lr', type=float, default=1e-5)
    group.add_argument('--fc_lr', type=float, default=-1, help='Learning rate of last_linear when >= 0.')
    group.add_argument('--decay', type=float, default=4e-4, help='Weight decay.')
    group.add_argument('--clip_grad', type=float, default=None, metavar='NORM',
                       help='Clip the network\'s gradient norm to NORM before each step (default: no clipping).')
    group.add_argument('--scheduler', default='step', choices=['step'], help='MultiStepLR on --tau milestones.')
    group.add_argument('--tau', type=int, nargs='+', default=[1000],
                       help='Epochs at which the lr is multiplied by gamma.')
    group.add_argument('--gamma', type=float, default=0.3)
    group.add_argument('--seed', type=int, default=1)
    group.add_argument('--deterministic', action='store_true',
                       help='Deterministic algorithms (bit-exact resume on the CPU; slower).')
    group.add_argument('--amp', action='store_true',
                       help='Run the networks in bfloat16 autocast, training and test embedding alike (the losses '
                            'stay float32; without it, evaluation embeds in float32 as the authors).')
    group.add_argument('--compile', action='store_true',
                       help='torch.compile the network being trained (slow first steps, faster later ones).')
    group.add_argument('--skip_nonfinite', action='store_true',
                       help='Skip batches whose loss is not finite instead of stopping the run.')


def add_evaluation_flags(group):
    group.add_argument('--evaluation_metrics', nargs='+', default=None,
                       help='e.g. e_recall@1 e_recall@2 nmi f1 mAP@R mAP@1000 (default: by dataset).')
    group.add_argument('--storage_metrics', nargs='+', default=['e_recall@1', 'nmi'],
                       help='A best-model checkpoint is kept for each of these (default: those of e_recall@1 and nmi '
                            'that are evaluated, chosen on the test classes as the authors). With a validation split '
                            '(--use_tv_split or --cv_folds), val_<metric> chooses the epoch on validation data, and '
                            'the run reports the test metrics of that epoch.')
    group.add_argument('--evaluate_on_gpu', action='store_true', help='faiss k-means and search on the GPU.')
    group.add_argument('--no_test_metrics', action='store_true',
                       help='Evaluate the validation split alone (--use_tv_split or --cv_folds): no test image is read '
                            'or scored, as in a hyper-parameter search; the best epochs are chosen on validation.')
    group.add_argument('--evaluate_every', type=int, default=1,
                       help='Evaluate every N-th epoch (and always the last), e.g. for large test sets.')


def add_run_flags(group):
    group.add_argument('--gpu', type=int, nargs='+', default=[0],
                       help='CUDA device index (the first is used); under torchrun each process takes GPU LOCAL_RANK.')
    group.add_argument('--dist_backend', default='auto', choices=['auto', 'nccl', 'gloo'],
                       help='torchrun runs: NCCL (GPUs) or gloo (CPUs); auto picks NCCL where there are GPUs.')
    group.add_argument('--dist_timeout', type=float, default=30,
                       help='torchrun runs: minutes a process waits for the others before giving up.')
    group.add_argument('--save_path', default='Training_Results', type=os.path.expanduser,
                       help='Runs go to save_path/<dataset>/<group>.')
    group.add_argument('--savename', default='', help='Run folder name (default: the group name).')
    group.add_argument('--group', default='', help='Experiment group (W&B group and run folder name).')
    group.add_argument('--project', default='OBD_SD', help='W&B project.')
    group.add_argument('--log_online', action='store_true', help='Log to Weights & Biases (key: WANDB_API_KEY).')
    group.add_argument('--wandb_key', default=None,
                       help='Old scripts\' W&B key: used by this process only, never stored (prefer WANDB_API_KEY).')
    group.add_argument('--resume', default=None, type=os.path.expanduser,
                       help='RUN_FOLDER, CHECKPOINT or auto (newest run of this group).')
    group.add_argument('--dry_run', action='store_true', help='Check flags and data, print the configuration, exit.')


def add_main_flags(parser):
    """Flags of main.py alone, on top of build_parser's (Test_pretrained_models.py has a --save_embeddings FILE)."""
    parser.add_argument_group('embeddings of the best epochs').add_argument(
        '--save_embeddings', action='store_true',
        help='With each best checkpoint, write its epoch\'s test embeddings (best_<metric>_embeddings.npz, as '
             'Test_pretrained_models.py --save_embeddings) and their singular-value spectrum '
             '(best_<metric>_spectrum.png).')


def explicit_flags(parser, argv):
    """The dests the user set on the command line (so dataset defaults never override them)."""
    saved = {action.dest: action.default for action in parser._actions}
    try:
        for action in parser._actions:
            action.default = argparse.SUPPRESS
        return set(vars(parser.parse_args(argv)))
    finally:
        for action in parser._actions:
            action.default = saved[action.dest]


def apply_dataset_defaults(opt, explicit):
    """Fill dataset-specific defaults the user did not set; return {flag: value} of those applied."""
    from datasets import default_metrics

    applied = {}
    if opt.dataset == 'digits':
        for dest, value in DIGITS_DEFAULTS.items():
            if dest in explicit or (dest == 'not_pretrained' and 'pretrained_path' in explicit) or (
                    dest == 'tv_split_perc' and not opt.use_tv_split):
                continue
            setattr(opt, dest, value)
            applied[dest] = value
        if 'lr' in applied and uses_timm_backbone(opt.arch):
            opt.lr = applied['lr'] = DIGITS_TIMM_LR
    if opt.evaluation_metrics is None:
        opt.evaluation_metrics = default_metrics(opt.dataset)
    if 'storage_metrics' not in explicit:  # e.g. In-Shop reports no NMI: keep best-model checkpoints of the rest
        opt.storage_metrics = [('val_' if opt.no_test_metrics else '') + name for name in opt.storage_metrics
                               if name in opt.evaluation_metrics]
    return applied


def uses_timm_backbone(arch):
    import architectures

    return architectures.parse_arch(arch)[0] not in architectures.BACKBONES


def validate(opt):
    """Raise UserError (one line, what to do) for any impossible value or combination."""
    import architectures
    import criteria
    import datasets
    from evaluation import is_score, validate_metric_names
    from run_folder.folder import check_run_name

    datasets.check_dataset_name(opt.dataset)
    criteria.check(opt.loss, opt)
    architectures.check(opt.arch, opt.image_size)
    for name, value in vars(opt).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f'--{name} must be a finite number, got {value}')
    check_run_name(opt.savename or opt.group, '--savename' if opt.savename else '--group')
    pairs = criteria.kind(opt.loss) == 'pair'  # proxy and classification losses need no positive or negative pair
    checks = [
        (opt.n_epochs >= 1, f'--n_epochs must be at least 1, got {opt.n_epochs}'),
        (opt.embed_dim > 0, f'--embed_dim must be positive, got {opt.embed_dim}'),
        (opt.bs > 0, f'--bs must be positive, got {opt.bs}'),
        (opt.samples_per_class >= (2 if pairs else 1),
         f'--samples_per_class must be at least 2 for the pair-based loss {opt.loss}, got {opt.samples_per_class}'
         if pairs else f'--samples_per_class must be at least 1, got {opt.samples_per_class}'),
        (opt.bs % max(opt.samples_per_class, 1) == 0,
         f'--bs {opt.bs} is not divisible by --samples_per_class {opt.samples_per_class}; '
         f'use e.g. --bs {max(opt.samples_per_class, opt.bs - opt.bs % max(opt.samples_per_class, 1))}'),
        (not pairs or opt.bs // max(opt.samples_per_class, 1) >= 2,
         f'--bs {opt.bs} / --samples_per_class {opt.samples_per_class} gives one class per batch; the ranking loss '
         f'needs at least 2 classes (negatives): use --bs {2 * opt.samples_per_class} or more'),
        (0 <= opt.seed < 2 ** 32, f'--seed must be in 0 .. {2 ** 32 - 1}, got {opt.seed}'),
        (0 <= opt.diffusion_w < 1, f'--diffusion_w must be in [0, 1), got {opt.diffusion_w}'),
        (opt.kd_tau > 0, f'--kd_tau must be positive, got {opt.kd_tau}'),
        (opt.diffusion_tau > 0, f'--diffusion_tau must be positive, got {opt.diffusion_tau}'),
        (opt.kd_lambda >= 0, f'--kd_lambda must be non-negative, got {opt.kd_lambda}'),
        (opt.lr > 0, f'--lr must be positive, got {opt.lr}'),
        (opt.decay >= 0, f'--decay must be non-negative, got {opt.decay}'),
        (opt.clip_grad is None or opt.clip_grad > 0, f'--clip_grad must be positive, got {opt.clip_grad}'),
        (opt.gamma > 0, f'--gamma must be positive, got {opt.gamma}'),
        (opt.kernels >= 0, f'--kernels must be 0 or more, got {opt.kernels}'),
        (opt.dist_timeout > 0, f'--dist_timeout must be positive, got {opt.dist_timeout}'),
        (opt.evaluate_every >= 1, f'--evaluate_every must be at least 1, got {opt.evaluate_every}'),
        (opt.image_size >= 16, f'--image_size must be at least 16, got {opt.image_size}'),
        (0 < opt.tv_split_perc < 1, f'--tv_split_perc must be in (0, 1), got {opt.tv_split_perc}'),
        (not (opt.pretrained_path and opt.not_pretrained), '--pretrained_path and --not_pretrained exclude each other'),
        (opt.split_file is None or opt.dataset == 'folder',
         f'--split_file is for --dataset folder; --dataset {opt.dataset} has its own split'),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    validate_metric_names(opt.evaluation_metrics)
    check_cross_validation(opt)
    has_validation = opt.use_tv_split or opt.cv_folds is not None
    for name in opt.storage_metrics:
        if name.removeprefix('val_') not in opt.evaluation_metrics:
            raise UserError(f'--storage_metrics {name} is not among --evaluation_metrics '
                            f'{" ".join(opt.evaluation_metrics)}; add {name.removeprefix("val_")} there')
        if not is_score(name):
            raise UserError(f'--storage_metrics {name} measures the embedding space and has no best value: keep '
                            f'checkpoints by a score such as e_recall@1, nmi or mAP@R')
        if name.startswith('val_') and not has_validation:
            raise UserError(f'--storage_metrics {name} chooses the best epoch on validation data: add --use_tv_split '
                            f'or --cv_folds K --cv_fold I')
        if opt.no_test_metrics and not name.startswith('val_'):
            raise UserError(f'--storage_metrics {name} is a test metric, which --no_test_metrics does not compute; '
                            f'use val_{name}')
    # main.py's flag (Test_pretrained_models.py's --save_embeddings is a file name)
    if getattr(opt, 'save_embeddings', False) is True and opt.no_test_metrics:
        raise UserError('--save_embeddings writes the test embeddings of the best epochs, which --no_test_metrics does '
                        'not compute: drop one of them')
    if opt.no_test_metrics and not has_validation:
        raise UserError('--no_test_metrics evaluates the validation split alone: add --use_tv_split or --cv_folds K '
                        '--cv_fold I')


def check_cross_validation(opt):
    """UserError for an impossible --cv_folds / --cv_fold combination."""
    if opt.cv_folds is None:
        if opt.cv_fold is not None:
            raise UserError('--cv_fold picks one of the --cv_folds folds: add --cv_folds K')
        return
    if opt.cv_folds < 2:
        raise UserError(f'--cv_folds must be at least 2, got {opt.cv_folds}')
    if opt.cv_fold is None or not 0 <= opt.cv_fold < opt.cv_folds:
        raise UserError(f'--cv_folds {opt.cv_folds} needs --cv_fold I with I in 0 .. {opt.cv_folds - 1}'
                        + (f', got {opt.cv_fold}' if opt.cv_fold is not None else ''))
    if opt.use_tv_split:
        raise UserError('--cv_folds holds out one fold of the training classes as validation: drop --use_tv_split')


def add_setting_overrides(group, names):
    """`--name` for each of main.py's flags `names`, with its type, choices and help but no default: for a tool
    that takes a setting from a checkpoint unless the flag is given."""
    actions = {action.dest: action for action in build_parser()._actions}
    for name in names:
        option = actions[name]
        if isinstance(option.default, bool):
            group.add_argument(f'--{name}', action='store_true', default=None, help=option.help)
        else:
            group.add_argument(f'--{name}', type=option.type, choices=option.choices, default=None,
                               help=f'{option.help or ""} (default: the checkpoint\'s, else {option.default})'.strip())


def setting_overrides(opt, names):
    """({name: value} of the flags of add_setting_overrides given on the command line, {name: main.py's
    default})."""
    parser = build_parser()
    given = {name: getattr(opt, name) for name in names if getattr(opt, name) is not None}
    return given, {name: parser.get_default(name) for name in names}


def with_values(opt, **values):
    """A copy of the options `opt` with `values` in place of theirs (the options themselves stay as parsed)."""
    return argparse.Namespace(**{**vars(opt), **values})


def parse_args(argv=None, parser=None):
    """Parse, apply dataset defaults and validate: the opt that main.py and the registries read."""
    parser = parser or build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    opt = parser.parse_args(argv)
    opt.applied_defaults = apply_dataset_defaults(opt, explicit_flags(parser, argv))
    validate(opt)
    return opt
