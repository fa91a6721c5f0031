"""Datasets registry: the built-in datasets and `select(opt)`, which builds the splits of one."""
import os

from datasets import cars196, cub200, digits, online_products
from datasets.image_dataset import ImageDataset
from datasets.transforms import make_transform
from datasets.validation_split import split_by_classes, split_by_samples
from utilities.errors import UserError

DATASETS = ('cub200', 'cars196', 'online_products', 'digits')

SPLIT_LOADERS = {
    'cub200': cub200.load_splits,
    'cars196': cars196.load_splits,
    'online_products': online_products.load_splits,
    'digits': digits.load_splits,
}

DOWNLOAD_PAGES = {
    'cub200': 'https://www.vision.caltech.edu/datasets/cub_200_2011/',
    'cars196': 'https://ai.stanford.edu/~jkrause/cars/car_dataset.html',
    'online_products': 'https://cvgl.stanford.edu/projects/lifted_struct/',
}


def check_dataset_name(dataset):
    if dataset not in DATASETS:
        raise UserError(f'unknown --dataset {dataset!r}; choose one of {", ".join(DATASETS)}')


def resolve_digits_root(source_path):
    """The digits folder: the default cache without --source, else --source itself when it holds
    the export or is named 'digits', else `<source>/digits` (exported there on first use)."""
    if source_path is None:
        return digits.default_root()
    source_path = os.path.expanduser(source_path)
    named_digits = os.path.basename(os.path.normpath(source_path)) == 'digits'
    if os.path.isdir(os.path.join(source_path, 'images')) or named_digits:
        return source_path
    return os.path.join(source_path, 'digits')


def resolve_root(dataset, source_path):
    """The folder of `dataset`: `source_path` itself or `source_path/<dataset>`, whichever holds an
    `images` folder; a UserError naming the paths tried and the download page otherwise."""
    check_dataset_name(dataset)
    if dataset == 'digits':
        return resolve_digits_root(source_path)
    if source_path is None:
        raise UserError(f'--source is required for --dataset {dataset}: the folder of the dataset '
                        f'(download it from {DOWNLOAD_PAGES[dataset]})')
    source_path = os.path.expanduser(source_path)
    candidates = [source_path, os.path.join(source_path, dataset)]
    for candidate in candidates:
        if os.path.isdir(os.path.join(candidate, 'images')):
            return candidate
    raise UserError(f'cannot find the {dataset} dataset: neither {" nor ".join(candidates)} holds an '
                    f'"images" folder; download it from {DOWNLOAD_PAGES[dataset]} and pass its folder as --source')


def select(opt):
    """{'training', 'testing', 'evaluation', 'validation'} ImageDatasets of `opt.dataset`.

    'evaluation' holds the training images under the evaluation transform; 'validation' is None
    unless `opt.use_tv_split` carves it out of the training split (by classes as the authors, or by
    samples with `opt.tv_split_by_samples`), keeping the fraction `opt.tv_split_perc` for training.
    """
    root = resolve_root(opt.dataset, opt.source_path)
    splits = SPLIT_LOADERS[opt.dataset](root)
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
