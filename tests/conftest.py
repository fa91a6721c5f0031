"""Shared fixtures: tiny image folders in the layouts of CUB200, CARS196 and Stanford Online Products, a
pickle that runs code when loaded, and no network for pretrained weights.

Each `make_*` fixture is a factory: every call writes a fresh dataset folder named after the
dataset (`.../cub200`, `.../cars196`, `.../online_products`) in its own temporary parent and
returns its path. Images are small and cycle through the modes of IMAGE_MODES (RGB and
grayscale JPEGs, a CMYK JPEG, palette and RGBA PNGs) so that loaders meet every kind.
`corrupt=N` adds N files that are not images and `truncated=N` adds N JPEGs cut after their
header, all to the first class (named `zz_corrupt_K.jpg` / `zz_truncated_K.jpg`, so they sort last).
"""
import os

import numpy as np
import pytest
from PIL import Image

if os.environ.get('PYTEST_XDIST_WORKER'):
    # pytest-xdist runs one worker per core (pytest.ini's -n auto): each with one OpenMP thread (and its subprocesses
    # too), or the workers' thread pools oversubscribe the cores and slow each other many times over.
    os.environ['OMP_NUM_THREADS'] = '1'
    os.environ['TORCHINDUCTOR_COMPILE_THREADS'] = '1'  # torch.compile's C++ builds in the worker, no pool of its own


def pytest_collection_modifyitems(items):
    """The slow tests first, each group in its own order: the workers start on the long runs and end on the short
    tests, which fill the gaps, instead of one worker finishing a long run alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker('slow') is None)

IMAGE_MODES = ('RGB', 'L', 'P', 'RGBA', 'CMYK')
PNG_MODES = ('P', 'RGBA')

BIRD_NAMES = ('Black_footed_Albatross', 'Laysan_Albatross', 'Sooty_Albatross', 'Groove_billed_Ani',
              'Crested_Auklet', 'Least_Auklet', 'Parakeet_Auklet', 'Rhinoceros_Auklet')
# Deliberately not in sorted order: the loader must sort them.
CAR_NAMES = ('Audi R8 Coupe 2012', 'AM General Hummer SUV 2000', 'Bentley Arnage Sedan 2009',
             'Acura RL Sedan 2012', 'BMW 1 Series Convertible 2012', 'Aston Martin V8 Vantage Convertible 2012',
             'Dodge Caliber Wagon 2012', 'Chevrolet Camaro Convertible 2012')
SOP_CATEGORIES = ('bicycle', 'cabinet', 'chair', 'coffee_maker')


@pytest.fixture(autouse=True)
def no_weights_host(monkeypatch):
    """Every weights host is unreachable, without a probe ever leaving the machine: a test that needs pretrained
    weights gets them from a file or a cache it writes, or the one-line error of a node without network."""
    def unreachable(url, timeout=None):
        from urllib.parse import urlsplit
        return f'{urlsplit(url).hostname} cannot be reached: no network in the tests'
    monkeypatch.setattr('architectures.weights.unreachable', unreachable)


@pytest.fixture(autouse=True)
def torch_algorithm_defaults():
    """An in-process main.py run with --deterministic (in a test or a module's fixture) switches torch's
    process-wide deterministic mode on: after every test torch's defaults are back."""
    import torch
    yield
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = False


def class_names(names, n_classes):
    """The first `n_classes` of `names`, continued with 'Class_K' names when there are too few."""
    return [names[k] if k < len(names) else f'Class_{k}' for k in range(n_classes)]


def write_image(path, mode, size, rng):
    """Write a small image of random colours (a solid colour plus noise) in `mode` to `path`."""
    colour = rng.integers(0, 256, size=3)
    noise = rng.integers(-20, 21, size=(size, size + 4, 3))
    pixels = np.clip(colour + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    if mode == 'P':
        image = image.quantize(colors=16)
    elif mode != 'RGB':
        image = image.convert(mode)
    image.save(path, format='PNG' if mode in PNG_MODES else 'JPEG')


def write_corrupt(path):
    """A file with an image's name that is not an image."""
    path.write_bytes(b'this is not an image\n' * 10)


def write_truncated(path, rng):
    """A JPEG whose header is intact (PIL opens it) but whose pixel data stops early (decoding fails)."""
    pixels = rng.integers(0, 256, size=(64, 64, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(path, format='JPEG')
    data = path.read_bytes()
    path.write_bytes(data[:data.index(b'\xff\xda') + 64])


def fill_class_folder(folder, n_images, image_size, rng, mode_offset, suffix='jpg'):
    """Write `n_images` images into `folder`; returns their file names."""
    folder.mkdir(parents=True)
    names = []
    for i in range(n_images):
        mode = IMAGE_MODES[(mode_offset + i) % len(IMAGE_MODES)]
        name = f'image_{i:02d}.{"png" if mode in PNG_MODES else suffix}'
        write_image(folder / name, mode, image_size, rng)
        names.append(name)
    return names


def add_broken_files(folder, corrupt, truncated, rng):
    """Add the corrupt and truncated files to `folder`; returns their file names."""
    names = []
    for k in range(corrupt):
        names.append(f'zz_corrupt_{k}.jpg')
        write_corrupt(folder / names[-1])
    for k in range(truncated):
        names.append(f'zz_truncated_{k}.jpg')
        write_truncated(folder / names[-1], rng)
    return names


@pytest.fixture
def make_cub200(tmp_path_factory):
    """Factory: `make_cub200(n_classes=6, per_class=4, image_size=16, corrupt=0, truncated=0)` ->
    path of a folder `cub200/images/NNN.Class_Name/*.jpg`."""
    def make(n_classes=6, per_class=4, image_size=16, corrupt=0, truncated=0):
        root = tmp_path_factory.mktemp('data') / 'cub200'
        rng = np.random.default_rng(0)
        for k, name in enumerate(class_names(BIRD_NAMES, n_classes)):
            folder = root / 'images' / f'{k + 1:03d}.{name}'
            fill_class_folder(folder, per_class, image_size, rng, mode_offset=k)
            if k == 0:
                add_broken_files(folder, corrupt, truncated, rng)
        return root
    return make


@pytest.fixture
def make_cars196(tmp_path_factory):
    """Factory: `make_cars196(n_classes=6, per_class=4, image_size=16, corrupt=0, truncated=0)` ->
    path of a folder `cars196/images/<Make Model Type Year>/*.jpg` (folder names with spaces,
    created out of sorted order; the broken files go to the alphabetically first class)."""
    def make(n_classes=6, per_class=4, image_size=16, corrupt=0, truncated=0):
        root = tmp_path_factory.mktemp('data') / 'cars196'
        rng = np.random.default_rng(1)
        names = class_names(CAR_NAMES, n_classes)
        for k, name in enumerate(names):
            folder = root / 'images' / name
            fill_class_folder(folder, per_class, image_size, rng, mode_offset=k)
            if name == min(names):
                add_broken_files(folder, corrupt, truncated, rng)
        return root
    return make


@pytest.fixture
def make_online_products(tmp_path_factory):
    """Factory: `make_online_products(n_train_classes=3, n_test_classes=3, per_class=3, image_size=16,
    corrupt=0, truncated=0)` -> path of a folder `online_products/` with `images/<category>_final/*.JPG`
    and `Info_Files/Ebay_{train,test}.txt`. Class ids run 1..n_train for training and on for testing;
    class K lies in category K % 4. One image on disk, `images/bicycle_final/unlisted.JPG`, is in no
    list; the broken files are listed under the first training class."""
    def make(n_train_classes=3, n_test_classes=3, per_class=3, image_size=16, corrupt=0, truncated=0):
        root = tmp_path_factory.mktemp('data') / 'online_products'
        rng = np.random.default_rng(2)
        for category in SOP_CATEGORIES:
            (root / 'images' / f'{category}_final').mkdir(parents=True)
        write_image(root / 'images' / 'bicycle_final' / 'unlisted.JPG', 'RGB', image_size, rng)
        rows = {'train': [], 'test': []}
        image_id = 1
        for class_id in range(1, n_train_classes + n_test_classes + 1):
            split = 'train' if class_id <= n_train_classes else 'test'
            super_class = class_id % len(SOP_CATEGORIES)
            category_dir = f'{SOP_CATEGORIES[super_class]}_final'
            names = []
            for i in range(per_class):
                mode = IMAGE_MODES[(class_id + i) % len(IMAGE_MODES)]
                names.append(f'{class_id}_{i}.{"png" if mode in PNG_MODES else "JPG"}')
                write_image(root / 'images' / category_dir / names[-1], mode, image_size, rng)
            if class_id == 1:
                names += add_broken_files(root / 'images' / category_dir, corrupt, truncated, rng)
            for name in names:
                rows[split].append(f'{image_id} {class_id} {super_class + 1} {category_dir}/{name}')
                image_id += 1
        (root / 'Info_Files').mkdir()
        for split, lines in rows.items():
            text = '\n'.join(['image_id class_id super_class_id path'] + lines) + '\n'
            (root / 'Info_Files' / f'Ebay_{split}.txt').write_text(text)
        return root
    return make


def write_inshop(root, n_train_items=3, n_eval_items=3, train_per_item=4, query_per_item=2, gallery_per_item=2,
                 image_size=16, seed=3):
    """Write a tiny In-Shop archive at `root`: `Img/img/{MEN,WOMEN}/<Category>/id_XXXXXXXX/*.jpg` and
    `Eval/list_eval_partition.txt` with its count and header lines and whitespace-aligned rows, as published.
    Items 1..n_train_items train; the next n_eval_items have query and gallery images. Returns `root`."""
    rng = np.random.default_rng(seed)
    rows = []
    for item in range(1, n_train_items + n_eval_items + 1):
        folder = f'img/{"MEN" if item % 2 else "WOMEN"}/{("Denim", "Dresses", "Tees_Tanks")[item % 3]}/id_{item:08d}'
        (root / 'Img' / folder).mkdir(parents=True)
        statuses = (['train'] * train_per_item if item <= n_train_items
                    else ['query'] * query_per_item + ['gallery'] * gallery_per_item)
        for k, status in enumerate(statuses):
            name = f'{folder}/{k + 1:02d}_{k % 4 + 1}_{("front", "side", "back", "full")[k % 4]}.jpg'
            write_image(root / 'Img' / name, 'RGB', image_size, rng)
            rows.append((name, f'id_{item:08d}', status))
    width = max(len(name) for name, _, _ in rows) + 4
    lines = [str(len(rows)), 'image_name'.ljust(width) + 'item_id'.ljust(15) + 'evaluation_status']
    lines += [name.ljust(width) + item.ljust(15) + status for name, item, status in rows]
    (root / 'Eval').mkdir(parents=True)
    (root / 'Eval' / 'list_eval_partition.txt').write_text('\n'.join(lines) + '\n')
    return root


@pytest.fixture
def make_inshop(tmp_path_factory):
    """Factory: `make_inshop(**write_inshop's options)` -> path of a fresh folder `inshop/` (see write_inshop)."""
    def make(**options):
        return write_inshop(tmp_path_factory.mktemp('data') / 'inshop', **options)
    return make


@pytest.fixture
def make_image_folder(tmp_path_factory):
    """Factory: `make_image_folder(classes, image_size=16)` -> path of a folder `images/` holding
    `<split>/<class>/image_K.jpg` for every {split: {class name: number of images}} in `classes`."""
    def make(classes, image_size=16):
        root = tmp_path_factory.mktemp('data') / 'images'
        rng = np.random.default_rng(4)
        for split, sizes in classes.items():
            for k, (name, n_images) in enumerate(sizes.items()):
                fill_class_folder(root / split / name, n_images, image_size, rng, mode_offset=k)
        return root
    return make


@pytest.fixture
def cub(make_cub200):
    """A CUB200-layout folder of 6 classes x 4 images."""
    return make_cub200(n_classes=6, per_class=4)


class RunsCode:
    """Unpickling this would create a file: the proof that a checkpoint ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


@pytest.fixture
def code_payload(tmp_path):
    """(payload, marker): an object whose unpickling creates the file `marker`, the proof that a load ran code."""
    marker = tmp_path / 'code_ran'
    return RunsCode(str(marker)), marker
