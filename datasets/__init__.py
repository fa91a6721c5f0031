"""Datasets registry: the built-in datasets and `select(opt)`, which builds the splits of one.

Each dataset is one module in this package, listed in MODULES, that describes itself:
- NAME: the --dataset value; DOWNLOAD_PAGE: where to get it (None when built in);
- DEFAULT_METRICS: the metrics reported where --evaluation_metrics is not given;
- PUBLISHED_SIZES: {split: (images, classes)} of the published archive, checked at every run (None: unchecked);
- ROOT_MARKER: a path inside the dataset folder that identifies it in --source (the folder or its parent),
  or a function `resolve_root(source_path)` that finds the folder itself;
- OPTIONS (optional): names of `opt` attributes that `load_splits` takes as keyword arguments;
- WRITES_DATA (optional, default False): whether load_splits may write the images first (digits' export);
- load_splits(root, **options): {'training': Split, 'testing': Split} for leave-one-out evaluation, or
  {'training': Split, 'query': Split, 'gallery': Split} for query/gallery retrieval, where query and gallery
  share one labelling.
"""
import os

from datasets import cars196, cub200, digits, folder, inshop, online_products
from datasets.split_checks import describe_sizes, split_sizes, split_warnings
from datasets.validation_split import split_by_classes, split_by_fold, split_by_samples
from plumbing.errors import UserError
from plumbing.lazy import lazy_module

# torch and torchvision: imported by `select`, which reads images; listing the splits needs neither.
image_dataset = lazy_module('datasets.image_dataset')
transforms = lazy_module('datasets.transforms')

MODULES = {module.NAME: module for module in (cub200, cars196, online_products, digits, inshop, folder)}
DATASETS = tuple(MODULES)
TEST_PARTS = ('testing', 'query', 'gallery')


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


def load_splits(opt, write=True):
    """The dataset folder of `opt.dataset`, the Splits its files list (no image is opened) and the warnings
    about them (sizes other than the published archive's, test classes seen in training). Without `write`, a
    dataset that would first write its images (digits) gives None and no warnings instead of Splits."""
    module = module_of(opt.dataset)
    root = resolve_root(opt.dataset, opt.source_path)
    if not write and getattr(module, 'WRITES_DATA', False):
        return root, None, []
    options = {name: getattr(opt, name) for name in getattr(module, 'OPTIONS', ())}
    splits = module.load_splits(root, **options)
    return root, splits, split_warnings(module, root, splits, MODULES)


def describe_splits(splits):
    """'training 24 images of 3 classes, testing ...' of Splits or ImageDatasets."""
    return describe_sizes(split_sizes(splits))


def test_parts(data):
    """The evaluated ImageDatasets of `select`'s data: {'testing': ...} or {'query': ..., 'gallery': ...}."""
    return {part: data[part] for part in TEST_PARTS if data.get(part) is not None}


def split_validation(opt, training):
    """(training, validation or None, notes) of the training Split `training`: the validation split that
    `opt.cv_folds` / `opt.use_tv_split` carve out of it (see select), and what it is."""
    if opt.cv_folds is not None:
        train_split, validation_split = split_by_fold(training, opt.cv_folds, opt.cv_fold, opt.seed)
        return train_split, validation_split, [
            f'cross-validation: fold {opt.cv_fold} of {opt.cv_folds} (seed {opt.seed}) holds out '
            f'{len(validation_split.class_names)} of the {len(training.class_names)} training classes '
            f'({len(validation_split.samples)} images) for validation; {len(train_split.class_names)} classes '
            f'({len(train_split.samples)} images) train']
    if not opt.use_tv_split:
        return training, None, []
    if opt.tv_split_by_samples:
        return (*split_by_samples(training, opt.tv_split_perc, opt.seed), [])
    return (*split_by_classes(training, opt.tv_split_perc), [])


def select(opt):
    """{'training', 'testing', 'query', 'gallery', 'validation', 'warnings', 'notes'} of `opt.dataset`.

    A leave-one-out dataset has an ImageDataset 'testing' and None for 'query' and 'gallery'; a query/gallery
    dataset the reverse (query and gallery share one labelling). 'validation' is None unless `opt.use_tv_split`
    carves it out of the training split (by classes as the authors, or by samples with `opt.tv_split_by_samples`),
    keeping the fraction `opt.tv_split_perc` for training, or `opt.cv_folds` holds out fold `opt.cv_fold` of the
    training classes. With `opt.no_test_metrics` the test parts are None: no test image is opened. 'warnings' are
    load_splits' warnings, 'notes' what the validation split is, for the caller to log.
    """
    _, splits, warnings = load_splits(opt)
    train_split, validation_split, notes = split_validation(opt, splits['training'])

    pipeline = dict(draft=not opt.full_decode, pil_resampling=opt.pil_resampling)
    train_transform = transforms.make_transform(True, opt.augmentation, opt.image_size, **pipeline)
    eval_transform = transforms.make_transform(False, opt.augmentation, opt.image_size, **pipeline)

    def dataset_of(split, transform, split_name):
        if split is None:
            return None
        return image_dataset.ImageDataset(split.samples, transform, f'{opt.dataset} {split_name}', split.class_names,
                                          origins=split.origins, every_class=split_name not in ('query', 'gallery'))

    return {
        'training': dataset_of(train_split, train_transform, 'training'),
        **{part: dataset_of(None if opt.no_test_metrics else splits.get(part), eval_transform, part)
           for part in TEST_PARTS},
        'validation': dataset_of(validation_split, eval_transform, 'validation'),
        'warnings': warnings,
        'notes': notes,
    }
