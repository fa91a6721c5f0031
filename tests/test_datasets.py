"""Tests of datasets/: layouts and splits, --source forms, validation splits, image loading, digits."""
import argparse
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as tv_transforms

import datasets
from benchmarks.photos import write_cub200_folder
from datasets import digits
from datasets.image_dataset import ImageDataset
from datasets.image_folder import Split
from datasets.transforms import IMAGENET_MEAN, IMAGENET_STD, make_transform, to_network_input
from datasets.validation_split import split_by_classes, split_by_samples
from plumbing.errors import UserError

from conftest import BIRD_NAMES, CAR_NAMES


def make_opt(**overrides):
    """The flags datasets.select reads, with small defaults."""
    values = dict(dataset='cub200', source_path=None, use_tv_split=False, tv_split_perc=0.8,
                  tv_split_by_samples=False, cv_folds=None, cv_fold=None, no_test_metrics=False, augmentation='base',
                  image_size=16, seed=0, full_decode=False, pil_resampling=False)
    values.update(overrides)
    return argparse.Namespace(**values)


def expected_samples(root, folder_names):
    """(path, label) of every file in `root/images/<folder>` (sorted), labelled in the given folder order."""
    samples = []
    for label, folder in enumerate(folder_names):
        directory = os.path.join(root, 'images', folder)
        samples += [(os.path.join(directory, name), label) for name in sorted(os.listdir(directory))]
    return samples


def samples_of(dataset):
    return list(zip(dataset.paths, dataset.labels.tolist()))


# ---------------------------------------------------------------- layouts and splits

def test_cub200_first_half_of_classes_trains_and_the_rest_tests(make_cub200):
    root = make_cub200(n_classes=6, per_class=4)
    splits = datasets.select(make_opt(dataset='cub200', source_path=str(root)))

    folders = [f'{k + 1:03d}.{name}' for k, name in enumerate(BIRD_NAMES[:6])]
    assert samples_of(splits['training']) == expected_samples(str(root), folders[:3])
    assert samples_of(splits['testing']) == expected_samples(str(root), folders[3:])
    assert splits['training'].class_names == list(BIRD_NAMES[:3])
    assert splits['testing'].class_names == list(BIRD_NAMES[3:6])
    assert splits['training'].n_classes == splits['testing'].n_classes == 3
    assert splits['validation'] is None


def test_cub200_classes_are_ordered_by_their_number_not_their_name(make_cub200):
    root = make_cub200(n_classes=4, per_class=1)
    os.rename(root / 'images' / '001.Black_footed_Albatross', root / 'images' / '1.Black_footed_Albatross')
    os.rename(root / 'images' / '004.Groove_billed_Ani', root / 'images' / '0004.Groove_billed_Ani')

    splits = datasets.select(make_opt(dataset='cub200', source_path=str(root)))

    assert splits['training'].class_names == ['Black_footed_Albatross', 'Laysan_Albatross']
    assert splits['testing'].class_names == ['Sooty_Albatross', 'Groove_billed_Ani']


def test_cars196_sorted_folders_first_half_trains(make_cars196):
    root = make_cars196(n_classes=6, per_class=3)
    splits = datasets.select(make_opt(dataset='cars196', source_path=str(root)))

    folders = sorted(CAR_NAMES[:6])
    assert folders[0] == 'AM General Hummer SUV 2000'
    assert samples_of(splits['training']) == expected_samples(str(root), folders[:3])
    assert samples_of(splits['testing']) == expected_samples(str(root), folders[3:])
    assert splits['training'].class_names == folders[:3]


def read_listed(root, split):
    """[(absolute path, class id)] read straight from Info_Files/Ebay_<split>.txt."""
    lines = (root / 'Info_Files' / f'Ebay_{split}.txt').read_text().splitlines()[1:]
    return [(str(root / 'images' / line.split()[3]), int(line.split()[1])) for line in lines]


def test_online_products_split_comes_from_the_info_files(make_online_products):
    root = make_online_products(n_train_classes=3, n_test_classes=4, per_class=3)
    splits = datasets.select(make_opt(dataset='online_products', source_path=str(root)))

    for split, first_class_id, name in (('train', 1, 'training'), ('test', 4, 'testing')):
        listed = read_listed(root, split)
        assert samples_of(splits[name]) == [(path, class_id - first_class_id) for path, class_id in listed]
    assert splits['training'].class_names == ['1', '2', '3']
    assert splits['testing'].class_names == ['4', '5', '6', '7']
    every_path = splits['training'].paths + splits['testing'].paths
    assert len(every_path) == 21
    assert not any(path.endswith('unlisted.JPG') for path in every_path)


def test_online_products_class_ids_are_renumbered_in_increasing_order(make_online_products):
    root = make_online_products(n_train_classes=3, n_test_classes=3, per_class=2)
    listing = root / 'Info_Files' / 'Ebay_test.txt'
    header, *rows = listing.read_text().splitlines()
    new_id = {'4': '900', '5': '17', '6': '250'}
    rows = [' '.join([f[0], new_id[f[1]], f[2], f[3]]) for f in (row.split() for row in rows)]
    listing.write_text('\n'.join([header] + rows) + '\n')

    testing = datasets.select(make_opt(dataset='online_products', source_path=str(root)))['testing']

    assert testing.class_names == ['17', '250', '900']
    assert testing.labels.tolist() == [2, 2, 0, 0, 1, 1]


@pytest.mark.parametrize('dataset', ['cub200', 'cars196', 'online_products'])
def test_source_may_be_the_dataset_folder_or_its_parent(dataset, request):
    root = request.getfixturevalue(f'make_{dataset}')()
    assert datasets.resolve_root(dataset, str(root)) == str(root)
    assert datasets.resolve_root(dataset, str(root.parent)) == os.path.join(str(root.parent), dataset)
    from_parent = datasets.select(make_opt(dataset=dataset, source_path=str(root.parent)))
    from_folder = datasets.select(make_opt(dataset=dataset, source_path=str(root)))
    assert [os.path.realpath(p) for p in from_parent['training'].paths] == \
           [os.path.realpath(p) for p in from_folder['training'].paths]


def test_missing_dataset_names_the_paths_tried_and_the_download_page(tmp_path):
    with pytest.raises(UserError) as error:
        datasets.resolve_root('cars196', str(tmp_path))
    message = str(error.value)
    assert str(tmp_path) in message and os.path.join(str(tmp_path), 'cars196') in message
    assert 'https://ai.stanford.edu/~jkrause/cars/car_dataset.html' in message
    with pytest.raises(UserError, match='--source is required'):
        datasets.resolve_root('cub200', None)
    with pytest.raises(UserError, match='unknown --dataset'):
        datasets.resolve_root('imagenet', str(tmp_path))


def test_empty_class_folder_is_named(make_cub200):
    root = make_cub200(n_classes=4, per_class=2)
    (root / 'images' / '005.Empty_Bird').mkdir()
    with pytest.raises(UserError, match='005.Empty_Bird'):
        datasets.select(make_opt(dataset='cub200', source_path=str(root)))


@pytest.mark.parametrize('n_classes, message', [(0, 'no class folders'), (1, 'only one class'),
                                                (3, 'cub200: the training split has 1 class')])
def test_too_few_classes_is_a_user_error(make_cub200, n_classes, message):
    root = make_cub200(n_classes=n_classes, per_class=1)
    (root / 'images').mkdir(parents=True, exist_ok=True)
    with pytest.raises(UserError, match=message):
        datasets.select(make_opt(dataset='cub200', source_path=str(root)))


def test_online_products_without_info_files_is_a_user_error(make_online_products):
    root = make_online_products()
    os.remove(root / 'Info_Files' / 'Ebay_test.txt')
    with pytest.raises(UserError, match='Ebay_test.txt is missing'):
        datasets.select(make_opt(dataset='online_products', source_path=str(root)))


# ---------------------------------------------------------------- train / validation splits

def fake_split(images_per_class):
    samples = [(f'c{label}/{i}.jpg', label) for label, n in enumerate(images_per_class) for i in range(n)]
    return Split(samples, [f'class_{label}' for label in range(len(images_per_class))])


def test_split_by_classes_keeps_the_authors_first_classes():
    split = fake_split([3] * 10)
    train, validation = split_by_classes(split, 0.75)

    # The authors keep train[:int(len(train) * perc)]: int(7.5) = 7 classes, in their order.
    assert train.class_names == [f'class_{label}' for label in range(7)]
    assert validation.class_names == ['class_7', 'class_8', 'class_9']
    for part in (train, validation):
        for path, label in part.samples:
            assert path.startswith(part.class_names[label].replace('class_', 'c') + '/')
        assert sorted({label for _, label in part.samples}) == list(range(len(part.class_names)))
    assert sorted(p for p, _ in train.samples + validation.samples) == sorted(p for p, _ in split.samples)


def test_split_by_classes_with_super_classes_keeps_the_first_of_each():
    # SOP: the authors split every super-class's sorted classes, int(n * perc) of each for training.
    samples = [(f'c{label}/0.jpg', label) for label in range(9)]
    split = Split(samples, [f'class_{label}' for label in range(9)], class_groups=[2, 1, 2, 1, 2, 1, 2, 2, 1])
    train, validation = split_by_classes(split, 0.6)

    # super-class 1: classes 1 3 5 8 -> int(2.4) = 2 kept; super-class 2: 0 2 4 6 7 -> int(3.0) = 3 kept
    assert sorted(train.class_names) == sorted(['class_1', 'class_3', 'class_0', 'class_2', 'class_4'])
    assert sorted(validation.class_names) == sorted(['class_5', 'class_8', 'class_6', 'class_7'])


def test_online_products_split_carries_super_classes(make_online_products):
    root = make_online_products()
    training = datasets.MODULES['online_products'].load_splits(str(root))['training']
    rows = [line.split() for line in (root / 'Info_Files' / 'Ebay_train.txt').read_text().splitlines()[1:]]
    super_class_of = {int(class_id): int(super_class) for _, class_id, super_class, _ in rows}
    assert training.class_groups == [super_class_of[int(name)] for name in training.class_names]


def test_split_by_samples_keeps_a_fraction_of_every_class():
    split = fake_split([4, 4, 4, 2, 1])
    train, validation = split_by_samples(split, 0.75, seed=0)

    train_counts = np.bincount([label for _, label in train.samples]).tolist()
    assert train.class_names == split.class_names
    assert train_counts == [3, 3, 3, 1, 1]
    assert validation.class_names == split.class_names[:4]
    assert np.bincount([label for _, label in validation.samples]).tolist() == [1, 1, 1, 1]
    train_paths = {p for p, _ in train.samples}
    assert train_paths.isdisjoint(p for p, _ in validation.samples)
    assert train_paths | {p for p, _ in validation.samples} == {p for p, _ in split.samples}
    assert split_by_samples(split, 0.75, seed=0) == (train, validation)


@pytest.mark.parametrize('fraction', [0.0, 1.0, 1.5])
def test_split_fraction_outside_zero_one_is_a_user_error(fraction):
    with pytest.raises(UserError, match='tv_split_perc'):
        split_by_classes(fake_split([2] * 4), fraction)


def test_split_leaving_one_class_is_a_user_error():
    with pytest.raises(UserError, match='validation split would have 1 class'):
        split_by_classes(fake_split([2] * 4), 0.8)


def test_select_with_tv_split_builds_disjoint_training_and_validation(make_cub200):
    root = make_cub200(n_classes=8, per_class=2)
    splits = datasets.select(make_opt(source_path=str(root), use_tv_split=True, tv_split_perc=0.5))

    training, validation = splits['training'], splits['validation']
    assert training.n_classes == validation.n_classes == 2
    assert set(training.class_names).isdisjoint(validation.class_names)
    assert set(training.class_names) | set(validation.class_names) == set(BIRD_NAMES[:4])
    assert set(splits['testing'].class_names) == set(BIRD_NAMES[4:8])


# ---------------------------------------------------------------- image loading

def solid(mode, size, colour):
    return Image.new(mode, size, colour)


def test_every_image_mode_becomes_rgb(tmp_path):
    palette = solid('P', (5, 4), 1)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    files = {
        'gray.png': (solid('L', (5, 4), 100), (100, 100, 100)),
        'palette.png': (palette, (10, 20, 30)),
        'rgba.png': (solid('RGBA', (5, 4), (200, 100, 50, 128)), (200, 100, 50)),
        'cmyk.tif': (solid('CMYK', (5, 4), (0, 255, 0, 0)), (255, 0, 255)),
        'gray_alpha.png': (solid('LA', (5, 4), (70, 9)), (70, 70, 70)),
    }
    samples = []
    for label, (name, (image, _)) in enumerate(files.items()):
        image.save(tmp_path / name)
        samples.append((str(tmp_path / name), label))
    dataset = ImageDataset(samples, tv_transforms.PILToTensor(), 'modes')

    for index, (_, expected) in enumerate(files.values()):
        label, tensor, returned_index = dataset[index]
        assert (label, returned_index) == (index, index)
        assert tensor.shape == (3, 4, 5)
        assert tensor[:, 0, 0].tolist() == list(expected)


def test_fixture_images_of_every_mode_load_as_three_channels(make_cub200):
    dataset = datasets.select(make_opt(source_path=str(make_cub200(n_classes=4, per_class=5))))['training']
    modes = set()
    for path in dataset.paths:
        with Image.open(path) as image:
            modes.add(image.mode)
    assert modes == {'RGB', 'L', 'P', 'RGBA', 'CMYK'}
    for index in range(len(dataset)):
        assert dataset[index][1].shape == (3, 16, 16)


def test_unreadable_images_are_left_out_with_a_warning(make_cub200, caplog):
    root = make_cub200(n_classes=4, per_class=3, corrupt=2)
    with caplog.at_level(logging.WARNING, logger='datasets.image_dataset'):
        training = datasets.select(make_opt(source_path=str(root)))['training']

    corrupt = [str(root / 'images' / '001.Black_footed_Albatross' / f'zz_corrupt_{k}.jpg') for k in range(2)]
    assert training.left_out == corrupt
    assert len(training) == 6 and not set(corrupt) & set(training.paths)
    messages = [record.getMessage() for record in caplog.records]
    assert sum(corrupt[0] in message for message in messages) == 1
    assert sum(corrupt[1] in message for message in messages) == 1
    assert 'left out 2 unreadable images of cub200 training' in messages


def test_truncated_image_is_replaced_by_another_of_its_class(make_cub200, caplog):
    root = make_cub200(n_classes=4, per_class=3, truncated=1)
    opt = make_opt(source_path=str(root), augmentation='base')
    training = datasets.select(opt)['training'].with_transform(make_transform(False, 'base', opt.image_size))
    truncated_index = training.paths.index(
        str(root / 'images' / '001.Black_footed_Albatross' / 'zz_truncated_0.jpg'))
    assert training.left_out == []

    with caplog.at_level(logging.WARNING, logger='datasets.image_dataset'):
        first = training[truncated_index]
        second = training[truncated_index]

    label, tensor, index = first
    assert label == 0 and index == 0  # the class's next image, wrapping round to its first
    assert torch.equal(tensor, training[0][1])
    assert torch.equal(second[1], tensor) and second[2] == index
    assert sum('zz_truncated_0.jpg' in record.getMessage() for record in caplog.records) == 1


def test_class_without_a_decodable_image_is_a_user_error(make_cub200):
    root = make_cub200(n_classes=4, per_class=1, truncated=1)
    truncated = str(root / 'images' / '001.Black_footed_Albatross' / 'zz_truncated_0.jpg')
    good = str(next((root / 'images' / '002.Laysan_Albatross').iterdir()))
    dataset = ImageDataset([(truncated, 0), (good, 1)], tv_transforms.PILToTensor(), 'broken')
    with pytest.raises(UserError, match='no image of class 0'):
        dataset[0]


def test_class_with_only_unreadable_files_is_a_user_error(make_cub200):
    root = make_cub200(n_classes=4, per_class=1, corrupt=1)
    corrupt = str(root / 'images' / '001.Black_footed_Albatross' / 'zz_corrupt_0.jpg')
    good = str(next((root / 'images' / '002.Laysan_Albatross').iterdir()))
    with pytest.raises(UserError, match='class Crow of tiny has no readable images'):
        ImageDataset([(good, 0), (corrupt, 1)], tv_transforms.PILToTensor(), 'tiny', ['Sparrow', 'Crow'])


def test_augmentation_seed_fixes_the_random_transform(make_cub200):
    dataset = datasets.select(make_opt(source_path=str(make_cub200(n_classes=4, per_class=2)),
                                       augmentation='adv'))['training']
    torch.manual_seed(1)
    first = dataset[(2, 12345)]
    state = torch.random.get_rng_state()
    torch.rand(7)
    second = dataset[(2, 12345)]

    assert torch.equal(first[1], second[1]) and first[0] == second[0] and first[2] == second[2] == 2
    assert not torch.equal(first[1], dataset[(2, 54321)][1])
    torch.random.set_rng_state(state)
    expected_next = torch.rand(3)
    torch.random.set_rng_state(state)
    dataset[(2, 999)]
    assert torch.equal(torch.rand(3), expected_next), 'the global torch RNG must not be consumed'


@pytest.mark.parametrize('pil_resampling', [False, True])
def test_pil_resampling_flag_reaches_training_and_evaluation(tmp_path, pil_resampling):
    root = str(write_cub200_folder(tmp_path / 'cub200', n_classes=4, per_class=2, size=(96, 72)))
    selected = datasets.select(make_opt(source_path=root, image_size=32, full_decode=True,
                                        pil_resampling=pil_resampling))
    for name, train in (('training', True), ('testing', False)):
        dataset = selected[name]
        same = dataset.with_transform(make_transform(train, 'base', 32, draft=False, pil_resampling=pil_resampling))
        other = dataset.with_transform(make_transform(train, 'base', 32, draft=False,
                                                      pil_resampling=not pil_resampling))
        item = (0, 7) if train else 0
        assert torch.equal(dataset[item][1], same[item][1])
        assert not torch.equal(dataset[item][1], other[item][1])


# ---------------------------------------------------------------- transforms

@pytest.mark.parametrize('augmentation, train_size, eval_size', [
    ('base', 16, 16), ('adv', 16, 16), ('red', 16, 16), ('big', 18, 18)])
def test_transform_output_sizes(augmentation, train_size, eval_size):
    image = solid('RGB', (40, 30), (1, 2, 3))
    assert make_transform(True, augmentation, 16)(image).shape == (3, train_size, train_size)
    assert make_transform(False, augmentation, 16)(image).shape == (3, eval_size, eval_size)


def test_pipeline_gives_uint8_that_the_device_normalises_with_imagenet_statistics():
    tensor = make_transform(False, 'base', 224)(solid('RGB', (300, 260), (255, 0, 51)))
    assert tensor.dtype == torch.uint8 and tensor.shape == (3, 224, 224)
    assert tensor[:, 100, 100].tolist() == [255, 0, 51]
    network_input = to_network_input(tensor[None], 'cpu', channels_last=True)
    expected = [(1.0 - 0.485) / 0.229, (0.0 - 0.456) / 0.224, (0.2 - 0.406) / 0.225]
    assert network_input.dtype == torch.float32 and network_input.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(network_input[0, :, 100, 100], torch.tensor(expected), atol=1e-5)
    assert (IMAGENET_MEAN, IMAGENET_STD) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_unknown_augmentation_is_a_user_error():
    with pytest.raises(UserError, match="unknown --augmentation 'fancy'"):
        make_transform(True, 'fancy', 16)


# ---------------------------------------------------------------- digits

@pytest.fixture(scope='module')
def digits_cache(tmp_path_factory):
    """The default digits cache, exported once for the tests of this module."""
    cache = tmp_path_factory.mktemp('xdg_cache')
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv('XDG_CACHE_HOME', str(cache))
        splits = datasets.select(make_opt(dataset='digits', source_path=None))
    return cache, splits


def test_digits_are_exported_to_the_cache_in_the_cub_layout(digits_cache):
    from sklearn.datasets import load_digits

    cache, splits = digits_cache
    reference = load_digits()
    images_dir = cache / 'obd_sd' / 'digits' / 'images'
    folders = sorted(os.listdir(images_dir))
    assert folders == [f'{d + 1:03d}.digit_{d}' for d in range(10)]
    assert sum(len(os.listdir(images_dir / folder)) for folder in folders) == 1797

    counts = np.bincount(reference.target)
    assert splits['training'].class_names == [f'digit_{d}' for d in range(5)]
    assert splits['testing'].class_names == [f'digit_{d}' for d in range(5, 10)]
    assert np.bincount(splits['training'].labels).tolist() == counts[:5].tolist()
    assert np.bincount(splits['testing'].labels).tolist() == counts[5:].tolist()

    with Image.open(images_dir / '001.digit_0' / '0000.png') as image:
        first = np.asarray(image)
    assert reference.target[0] == 0
    assert np.array_equal(first[::4, ::4], np.round(reference.images[0] * 255 / 16).astype(np.uint8))


def test_digits_export_is_reused(digits_cache, monkeypatch):
    cache, splits = digits_cache
    monkeypatch.setenv('XDG_CACHE_HOME', str(cache))
    monkeypatch.setattr(digits, 'write_images', lambda images_dir: pytest.fail('exported again'))
    again = datasets.select(make_opt(dataset='digits', source_path=None))
    assert again['testing'].paths == splits['testing'].paths


def test_digits_source_forms_and_incomplete_export(digits_cache, tmp_path):
    cache, _ = digits_cache
    root = cache / 'obd_sd' / 'digits'
    assert datasets.resolve_root('digits', str(root)) == str(root)
    assert datasets.resolve_root('digits', str(root.parent)) == str(root)
    assert datasets.resolve_root('digits', str(tmp_path)) == str(tmp_path / 'digits')

    (tmp_path / 'digits' / 'images' / '001.digit_0').mkdir(parents=True)
    with pytest.raises(UserError, match='not a complete digits export'):
        datasets.select(make_opt(dataset='digits', source_path=str(tmp_path)))
