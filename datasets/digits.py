"""The built-in demo: scikit-learn's handwritten digits, exported once as a CUB-layout image folder."""
import logging
import os
import shutil
import tempfile

import numpy as np
from PIL import Image

from datasets import cub200
from plumbing.errors import UserError
from plumbing.lazy import lazy_module

sklearn_datasets = lazy_module('sklearn.datasets')  # for the first export of the images alone

logger = logging.getLogger(__name__)

NAME = 'digits'
DOWNLOAD_PAGE = None  # built in
DEFAULT_METRICS = cub200.DEFAULT_METRICS
PUBLISHED_SIZES = None
WRITES_DATA = True  # load_splits exports the images on first use

N_DIGITS = 10
N_IMAGES = 1797  # the size of sklearn.datasets.load_digits()
EXPORT_SIZE = 32  # the 8x8 images are enlarged (nearest neighbour) so they can be looked at


def default_root():
    """`$XDG_CACHE_HOME/obd_sd/digits` (`~/.cache/obd_sd/digits` without XDG_CACHE_HOME)."""
    cache = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(cache, 'obd_sd', 'digits')


def resolve_root(source_path):
    """The digits folder: the default cache without --source, else --source itself when it holds
    the export or is named 'digits', else `<source>/digits` (exported there on first use)."""
    if source_path is None:
        return default_root()
    source_path = os.path.expanduser(source_path)
    named_digits = os.path.basename(os.path.normpath(source_path)) == 'digits'
    if named_digits or os.path.isdir(os.path.join(source_path, 'images')):
        return source_path
    return os.path.join(source_path, 'digits')


def class_folder_name(digit):
    """The CUB-layout folder of `digit`: '001.digit_0' ... '010.digit_9'."""
    return f'{digit + 1:03d}.digit_{digit}'


def count_exported(images_dir):
    """Number of image files per digit folder in `images_dir` (missing folders count 0)."""
    counts = []
    for digit in range(N_DIGITS):
        folder = os.path.join(images_dir, class_folder_name(digit))
        counts.append(len(os.listdir(folder)) if os.path.isdir(folder) else 0)
    return counts


def write_images(images_dir):
    """Write every digit as an 8-bit grayscale PNG into `images_dir/NNN.digit_D/`."""
    digits = sklearn_datasets.load_digits()
    pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)
    for digit in range(N_DIGITS):
        os.makedirs(os.path.join(images_dir, class_folder_name(digit)))
    for image_id, (image, digit) in enumerate(zip(pixels, digits.target)):
        path = os.path.join(images_dir, class_folder_name(int(digit)), f'{image_id:04d}.png')
        Image.fromarray(image).resize((EXPORT_SIZE, EXPORT_SIZE), Image.Resampling.NEAREST).save(path)


def ensure_exported(root):
    """Export the digits into `root/images` unless a complete export is already there.

    The images are written into a temporary folder next to it and renamed into place, so an
    interrupted export never leaves a half-written `images` folder behind.
    """
    images_dir = os.path.join(root, 'images')
    if os.path.isdir(images_dir):
        if sum(count_exported(images_dir)) != N_IMAGES:
            raise UserError(f'{images_dir} is not a complete digits export ({N_IMAGES} images in '
                            f'{N_DIGITS} folders); delete it to export again')
        return
    try:
        os.makedirs(root, exist_ok=True)
        staging = tempfile.mkdtemp(prefix='.images-', dir=root)
    except OSError as error:
        raise UserError(f'cannot write the digits images to {root} ({error.strerror}); pass a writable folder as '
                        f'--source, or set XDG_CACHE_HOME to one') from None
    try:
        logger.info('exporting the scikit-learn digits to %s', images_dir)
        write_images(os.path.join(staging, 'images'))
        os.rename(os.path.join(staging, 'images'), images_dir)
    except OSError as error:
        if not os.path.isdir(images_dir):
            raise UserError(f'cannot write the digits images to {root} ({error.strerror}); free space there, or '
                            f'pass another folder as --source') from None
        # Another process finished the same export first: use theirs.
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_splits(root):
    """{'training': digits 0-4, 'testing': digits 5-9}, exporting the images first if needed."""
    ensure_exported(root)
    return cub200.load_splits(root, dataset_name='digits')
