"""Datasets registry: the built-in datasets and `select(opt)`, which builds the splits of one.

Each dataset is one module in this package, listed in MODULES, that describes itself:
- NAME: the --dataset value; DOWNLOAD_PAGE: where to get it (None when built in);
- DEFAULT_METRICS: the metrics reported where --evaluation_metrics is not given;
- PUBLISHED_SIZES: {split: (images, classes)} of the published archive, checked at every run (None: unchecked);
- ROOT_MARKER: a path inside the dataset folder that identifies it in --source (the folder or its parent),
  or a function `resolve_root(source_path)` that finds the folder itself;
- OPTIONS (optional): names of `opt` attributes that `load_splits` takes as keyword arguments;
- load_splits(root, **options): {'training': Split, 'testing': Split} for leave-one-out evaluation, or
  {'training': Split, 'query': Split, 'gallery': Split} for query/gallery retrieval, where query and gallery
  share one labelling.
"""
import os

from datasets import cars196, cub200, digits, online_products
from datasets.image_dataset import ImageDataset
from datasets.transforms import make_transform
from datasets.validation_split import split_by_classes, split_by_samples
from utilities.errors import UserError

MODULES = {module.NAME: module for module in (cub200, cars196, online_products, digits)}
DATASETS = tuple(MODULES)


def module_of(dataset):
    """The module of `dataset`, or a UserError listing the known ones."""
    if dataset not in MODULES:
        raise UserError(f'unknown --dataset {dataset!r}; choose one of {", ".join(DATASETS)}')
    return MODULES[dataset]


def check_dataset_name(dataset):
    module_of(dataset)


def default_metrics(dataset):
    """The metrics reported for `dataset` where --evaluation_metrics is not given."""
    return list(module_of(dataset).DEFAULT_METRICS)


def resolve_root(dataset, source_path):
    """The folder of `dataset`: `source_path` itself or `source_path/<dataset>`, whichever holds the dataset's
    ROOT_MARKER; a UserError naming the paths tried and the download page otherwise."""
    module = module_of(dataset)
    if hasattr(module, 'resolve_root'):
        return module.resolve_root(source_path)
    if source_path is None:
        raise UserError(f'--source is required for --dataset {dataset}: the folder of the dataset '
                        f'(download it from {module.DOWNLOAD_PAGE})')
    source_path = os.path.expanduser(source_path)
    candidates = [source_path, os.path.join(source_path, dataset)]
    for candidate in candidates:
        if os.path.exists(os.path.join(candidate, module.ROOT_MARKER)):
            return candidate
    raise UserError(f'cannot find the {dataset} dataset: neither {" nor ".join(candidates)} holds '
                    f'"{module.ROOT_MARKER}"; download it from {module.DOWNLOAD_PAGE} and pass its folder as --source')


def load_splits(opt):
    """The dataset folder of `opt.dataset` and the Splits its files list (no image is opened)."""
    module = module_of(opt.dataset)
    root = resolve_root(opt.dataset, opt.source_path)
    options = {name: getattr(opt, name) for name in getattr(module, 'OPTIONS', ())}
    return root, module.load_splits(root, **options)


def select(opt):
    """{'training', 'testing', 'evaluation', 'validation'} ImageDatasets of `opt.dataset`.

    'evaluation' holds the training images under the evaluation transform; 'validation' is None
    unless `opt.use_tv_split` carves it out of the training split (by classes as the authors, or by
    samples with `opt.tv_split_by_samples`), keeping the fraction `opt.tv_split_perc` for training.
    """
    _, splits = load_splits(opt)
    train_split, validation_split = splits['training'], None
    if opt.use_tv_split:
        if opt.tv_split_by_samples:
            train_split, validation_split = split_by_samples(train_split, opt.tv_split_perc, opt.seed)
        else:
            train_split, validation_split = split_by_classes(train_split, opt.tv_split_perc)

    pipeline = dict(draft=not opt.full_decode, pil_resampling=opt.pil_resampling)
    train_transform = make_transform(True, opt.augmentation, opt.image_size, **pipeline)
    eval_transform = make_transform(False, opt.augmentation, opt.image_size, **pipeline)

    def image_dataset(split, transform, split_name):
        return ImageDataset(split.samples, transform, f'{opt.dataset} {split_name}', split.class_names)

    training = image_dataset(train_split, train_transform, 'training')
    return {
        'training': training,
        'testing': image_dataset(splits['testing'], eval_transform, 'testing'),
        'evaluation': training.with_transform(eval_transform, f'{opt.dataset} training (evaluation)'),
        'validation': (image_dataset(validation_split, eval_transform, 'validation')
                       if validation_split is not None else None),
    }
