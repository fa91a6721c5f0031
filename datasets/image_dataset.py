"""A dataset of labelled image files: (label, image tensor, index) items, corrupt files handled."""
import copy
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image

from plumbing.errors import UserError

logger = logging.getLogger(__name__)

# What PIL raises for a file that is missing, not an image, or cut short.
UNREADABLE_IMAGE_ERRORS = (OSError, ValueError, SyntaxError)


# Single-channel modes of more than 8 bits: PIL would clip them to 255 when converting to RGB.
WIDE_GRAYSCALE_MODES = ('I', 'I;16', 'I;16B', 'I;16L', 'I;16N')


def load_rgb(path):
    """The image at `path`, decoded, as an RGB PIL image."""
    with Image.open(path) as image:
        rgb = decoded_rgb(image)
        return rgb.copy() if rgb is image else rgb  # closing `image` frees its pixels


def decoded_rgb(image):
    """An opened PIL image decoded as RGB: the image itself when it is RGB already, else an RGB copy."""
    if image.mode == 'RGB':
        image.load()
        return image
    if image.mode == 'P':
        # Palette images may carry transparency; going through RGBA keeps PIL from warning.
        image = image.convert('RGBA')
    if image.mode in WIDE_GRAYSCALE_MODES:
        image = to_8_bit_grayscale(image)
    return image.convert('RGB')


def to_8_bit_grayscale(image):
    """A 16-bit grayscale image (PNG/TIFF; PIL's 'I;16' or 'I') scaled from 0..65535 to an 8-bit 'L' image."""
    pixels = np.asarray(image, dtype=np.float64)
    return Image.fromarray(np.round(np.clip(pixels, 0, 65535) / 257).astype(np.uint8))


def header_is_readable(path):
    """True when PIL recognises `path` as an image from its header (the pixels are not decoded)."""
    try:
        with Image.open(path):
            return True
    except UNREADABLE_IMAGE_ERRORS:
        return False


def find_unreadable(paths, max_workers=8):
    """The paths, among `paths`, whose header PIL cannot read, in their original order."""
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        readable = list(pool.map(header_is_readable, paths))
    return [path for path, ok in zip(paths, readable) if not ok]


class ImageDataset(torch.utils.data.Dataset):
    """Labelled images, returned as `(label, image_tensor, index)`.

    `samples` is a list of `(path, label)` with labels 0..C-1. Files whose header PIL cannot read
    are left out at construction (listed in `left_out`). An item is either an index (evaluation)
    or a tuple `(index, augmentation_seed)` (training): then the random transform is drawn from
    that seed alone, so an augmented batch does not depend on worker processes or on resuming.
    A file that fails to decode later is replaced by another image of the same class.
    `transform` is a datasets.transforms.ImagePipeline (it sees the file before decoding), or any
    callable from an RGB PIL image to a tensor (the image is closed afterwards).
    `origins` ({path: 'FILE, line N'}) names where a list file listed an image that cannot be read.
    `every_class` (default) requires each class 0..C-1 to keep an image; a query or gallery split, which shares
    its labelling with the other, needs only two classes.
    """

    def __init__(self, samples, transform, name, class_names=None, origins=None, every_class=True):
        self.name = name
        self.transform = transform
        self.class_names = list(class_names) if class_names is not None else None
        n_classes = 1 + max((label for _, label in samples), default=-1)

        unreadable = find_unreadable([path for path, _ in samples])
        for path in unreadable:
            listed = f' (listed in {origins[path]})' if origins and path in origins else ''
            logger.warning('cannot read image %s%s; leaving it out', path, listed)
        if unreadable:
            logger.warning('left out %d unreadable images of %s', len(unreadable), name)
        self.left_out = unreadable

        skipped = set(unreadable)
        kept = [(path, label) for path, label in samples if path not in skipped]
        self.paths = [path for path, _ in kept]
        self.labels = np.array([label for _, label in kept], dtype=np.int64)
        self.n_classes = n_classes
        self._check_every_class_has_images(every_class)

        self._indices_of_class = [np.flatnonzero(self.labels == label) for label in range(n_classes)]
        self._undecodable = set()

    def _check_every_class_has_images(self, every_class):
        if self.n_classes == 0 or not len(self.labels):
            raise UserError(f'{self.name} has no readable images; check the dataset folder')
        counts = np.bincount(self.labels, minlength=self.n_classes)
        if not every_class:
            if np.count_nonzero(counts) < 2:
                raise UserError(f'{self.name} has readable images of {np.count_nonzero(counts)} class(es), but at '
                                'least 2 are needed; replace its files or add classes')
            return
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            raise UserError(f'class {self.class_name(empty[0])} of {self.name} has no readable images; '
                            'replace its files or remove the class')

    def class_name(self, label):
        """The name of class `label`, or the label itself when the dataset has no names."""
        return self.class_names[label] if self.class_names is not None else str(label)

    def with_transform(self, transform, name=None):
        """The same images (without scanning them again) under another transform."""
        twin = copy.copy(self)
        twin.transform = transform
        twin.name = name if name is not None else self.name
        twin._undecodable = set()
        return twin

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, item):
        index, augmentation_seed = item if isinstance(item, tuple) else (item, None)
        tensor, index = self._load_decodable(int(index), augmentation_seed)
        return int(self.labels[index]), tensor, index

    def _load_transformed(self, path, augmentation_seed):
        """The transformed image of `path`, its random parameters drawn from `augmentation_seed` when given."""
        with seeded_torch_rng(augmentation_seed), Image.open(path) as image:
            if not hasattr(self.transform, 'plan'):
                return self.transform(decoded_rgb(image))
            plan = self.transform.plan(image)  # before decoding: it may ask for a reduced decode
            return self.transform.apply(decoded_rgb(image), plan)

    def _load_decodable(self, index, augmentation_seed):
        """The transformed image at `index`, or, when it does not decode, the next decodable one of its class."""
        same_class = self._indices_of_class[self.labels[index]]
        start = int(np.searchsorted(same_class, index))
        for offset in range(len(same_class)):
            candidate = int(same_class[(start + offset) % len(same_class)])
            if candidate in self._undecodable:
                continue
            try:
                return self._load_transformed(self.paths[candidate], augmentation_seed), candidate
            except UNREADABLE_IMAGE_ERRORS as error:
                self._undecodable.add(candidate)
                logger.warning('cannot decode image %s (%s); using another image of its class instead',
                               self.paths[candidate], error)
        raise UserError(f'no image of class {self.class_name(self.labels[index])} of {self.name} '
                        'can be decoded; replace its files')


@contextmanager
def seeded_torch_rng(seed):
    """Draws from the torch CPU generator inside come from `seed` (as after torch.manual_seed(seed)); its state
    outside is left as it was. Seeding only the CPU generator is what makes this cheap per image. No-op for None."""
    if seed is None:
        yield
        return
    generator = torch.default_generator
    state = generator.get_state()
    generator.manual_seed(int(seed))
    try:
        yield
    finally:
        generator.set_state(state)
