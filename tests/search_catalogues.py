"""Catalogues, checkpoints and Search_Index.py calls for the search tests: untrained networks, images of a few
colours in class folders, and the commands as a user runs them (in this process)."""
import csv
import json

import numpy as np
import torch
from PIL import Image

import architectures
from run_folder.checkpoint import save_checkpoint
from runs import TINY_ARCH, run_entry_point

ARCH, DIM, SIZE = TINY_ARCH, 16, 32
COLOURS = {'apple': (200, 30, 30), 'grass': (40, 180, 50), 'sky': (40, 80, 220), 'sun': (230, 210, 40)}


def write_checkpoint(path, seed=0, embed_dim=DIM):
    torch.manual_seed(seed)
    model = architectures.build(ARCH, embed_dim, pretrained=False, image_size=SIZE)
    save_checkpoint(str(path), model, {'arch': ARCH, 'embed_dim': embed_dim, 'image_size': SIZE}, 0, {})
    return path


def write_checkpoints(folder):
    """{'main', 'other' (same arch, other weights), 'narrow' (8-d)} checkpoint paths of untrained networks."""
    return {'main': write_checkpoint(folder / 'main.pth'), 'other': write_checkpoint(folder / 'other.pth', seed=1),
            'narrow': write_checkpoint(folder / 'narrow.pth', embed_dim=8)}


def write_images(folder, count, colour, seed, start=0):
    """`count` images of one colour with noise (JPEG and PNG) in `folder`; returns their paths."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        pixels = np.clip(np.array(colour) + rng.integers(-60, 61, size=(40, 48, 3)), 0, 255).astype(np.uint8)
        paths.append(folder / f'image_{i:02d}.{"png" if i % 3 == 2 else "jpg"}')
        Image.fromarray(pixels).save(paths[-1])
    return paths


def write_catalogue(root, per_class=4, classes=('apple', 'grass', 'sky'), seed=0):
    """Class folders root/<class>/image_KK.jpg|png; returns root."""
    for k, name in enumerate(classes):
        write_images(root / name, per_class, COLOURS[name], seed + k)
    return root


def search(*args):
    return run_entry_point('Search_Index', *args, '--workers', 0)


def build(checkpoint, images, index, *more):
    assert search('build', '--checkpoint', checkpoint, '--images', images, '--index', index, *more) == 0
    return index


def query(index, queries, out, *more):
    assert search('query', '--index', index, '--queries', queries, '--out', out, *more) == 0
    return json.loads(out.read_text()) if str(out).endswith('.json') else list(csv.DictReader(open(out)))
