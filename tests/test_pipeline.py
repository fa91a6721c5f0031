"""The uint8 image pipeline against the float torchvision pipeline it replaced, on photo-like JPEGs.

Reference: load the RGB image, torch.manual_seed(seed), then the torchvision Compose of the augmentation
(as the authors' code builds it) with ToTensor + Normalize. Ours: an ImageDataset item with the same seed,
then to_network_input. Same random parameters, so with Pillow resampling and without JPEG draft decoding
the two agree to float rounding; with torch's resampling within one grey level; with draft decoding
within resampling error.
"""
import math

import numpy as np
import pytest
import torch
from torchvision import transforms as T

from benchmarks.photos import write_photos
from datasets.image_dataset import ImageDataset, load_rgb
from datasets.transforms import IMAGENET_MEAN, IMAGENET_STD, draft_scale, make_transform, to_network_input

SIZE = 32  # output size; photos of 480 x 360 then often give crops of twice that or more
SEEDS = range(6)


def reference_transform(train, augmentation, size):
    """The torchvision Compose of the authors' code for an augmentation, at `size` (256/224 resizing rule)."""
    resized = round(size * 256 / 224)
    crop = resized if augmentation == 'big' else size
    if not train:
        steps = [T.Resize(resized), T.CenterCrop(crop)]
    elif augmentation == 'red':
        steps = [T.Resize(resized), T.RandomCrop(crop), T.RandomHorizontalFlip(0.5)]
    elif augmentation == 'adv':
        steps = [T.RandomResizedCrop(crop), T.RandomGrayscale(0.2), T.ColorJitter(0.2, 0.2, 0.2, 0.2),
                 T.RandomHorizontalFlip(0.5)]
    else:
        steps = [T.RandomResizedCrop(crop), T.RandomHorizontalFlip(0.5)]
    return T.Compose(steps + [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp('photos')
    return [str(path) for path in write_photos(folder / 'large', 3, size=(480, 360), seed=3)]


@pytest.fixture(scope='module')
def small_photos(tmp_path_factory):
    """Photos near the output size: crops are enlarged along one side or both."""
    folder = tmp_path_factory.mktemp('photos')
    return [str(path) for path in write_photos(folder / 'small', 3, size=(48, 36), seed=4)]


def pixel_errors(photos, train, augmentation, draft, pil_resampling=False):
    """(mean absolute difference, PSNR, largest absolute difference) per item, in 0-255 units, and the decode
    scales ours used."""
    pipeline = make_transform(train, augmentation, SIZE, draft=draft, pil_resampling=pil_resampling)
    scales, plan = [], pipeline.plan

    def recording_plan(image):
        planned = plan(image)
        scales.append(planned[2])
        return planned

    pipeline.plan = recording_plan
    dataset = ImageDataset([(path, 0) for path in photos], pipeline, 'photos')
    reference = reference_transform(train, augmentation, SIZE)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    errors = []
    for index in range(len(photos)):
        for seed in (SEEDS if train else [None]):
            ours = to_network_input(dataset[(index, seed) if train else index][1][None], 'cpu')[0]
            image = load_rgb(photos[index])
            if seed is not None:
                torch.manual_seed(seed)
            difference = (ours - reference(image)) * std * 255
            mse = difference.pow(2).mean().item()
            errors.append((difference.abs().mean().item(), 10 * math.log10(255 ** 2 / mse) if mse else math.inf,
                           difference.abs().max().item()))
    return np.array(errors), scales


@pytest.mark.parametrize('train, augmentation', [(True, 'base'), (True, 'adv'), (True, 'big'), (True, 'red'),
                                                 (False, 'base'), (False, 'big')])
def test_with_pil_resampling_the_pipeline_gives_the_reference_images(photos, train, augmentation):
    errors, scales = pixel_errors(photos, train, augmentation, draft=False, pil_resampling=True)
    assert set(scales) == {1}
    assert errors[:, 0].max() < 1e-3  # float rounding only: the same crops, flips and colour changes


@pytest.mark.parametrize('train, augmentation', [(True, 'base'), (True, 'big'), (True, 'red'),
                                                 (False, 'base'), (False, 'big')])
def test_torch_resampling_stays_within_one_grey_level(photos, small_photos, train, augmentation):
    errors, scales = pixel_errors(photos, train, augmentation, draft=False)
    assert set(scales) == {1}
    assert errors[:, 2].max() < 1.01 and errors[:, 0].mean() < 0.1
    assert errors[:, 2].max() > 0.99, 'the test must exercise torch\'s resampling, not Pillow\'s'
    enlarged, _ = pixel_errors(small_photos, train, augmentation, draft=False)
    assert enlarged[:, 2].max() < 1.01 and enlarged[:, 0].mean() < 0.5


def test_adv_keeps_pillow_resampling_for_its_colour_steps(photos):
    errors, _ = pixel_errors(photos, True, 'adv', draft=False)
    assert errors[:, 0].max() < 1e-3


@pytest.mark.parametrize('train, augmentation', [(True, 'base'), (True, 'adv'), (True, 'big'), (True, 'red'),
                                                 (False, 'base'), (False, 'big')])
def test_draft_decoding_stays_within_resampling_error(photos, train, augmentation):
    errors, scales = pixel_errors(photos, train, augmentation, draft=True)
    assert max(scales) >= 2, 'the test must exercise the reduced JPEG decode'
    assert errors[:, 0].max() < 3.0 and errors[:, 0].mean() < 2.0
    assert errors[:, 1].min() > 28.0


def test_draft_scale_keeps_the_box_at_least_the_output_size():
    assert draft_scale((0, 0, 447, 1000), (224, 224)) == 1
    assert draft_scale((10, 20, 458, 468), (224, 224)) == 2
    assert draft_scale((0, 0, 1000, 900), (224, 224)) == 4
    assert draft_scale((0, 0, 4000, 3000), (224, 224)) == 8
    assert draft_scale((0, 0, 1000, 300), (256, 128)) == 2


def test_same_seed_gives_the_same_crop_with_draft_decoding(photos):
    dataset = ImageDataset([(path, 0) for path in photos], make_transform(True, 'base', SIZE), 'photos')
    first = dataset[(1, 77)][1]
    assert torch.equal(first, dataset[(1, 77)][1])
    assert first.dtype == torch.uint8 and first.shape == (3, SIZE, SIZE)


def test_network_input_rejects_float_batches():
    with pytest.raises(TypeError, match='uint8'):
        to_network_input(torch.zeros(1, 3, 4, 4), 'cpu')
