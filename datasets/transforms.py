"""Image pipelines for training and evaluation, by augmentation name, and the network-input conversion.

A pipeline turns an image file into a uint8 tensor (3 x S x S) in the data-loading workers; the
conversion to float and the normalisation (the network's mean and std: ImageNet's for the ResNets) happen on the
device, in `to_network_input`.
The random parameters are torchvision's (RandomResizedCrop.get_params, RandomHorizontalFlip, ...),
drawn from the torch RNG in the same order as a torchvision Compose would draw them. The crop is
resized on the uint8 tensor by torch's antialiased bilinear kernel (within one grey level of
Pillow's, about twice as fast), or by Pillow itself with `pil_resampling`.
"""
import functools

import torch
from PIL import Image

from plumbing.errors import UserError
from plumbing.lazy import lazy_module

# Importing torchvision imports torchvision.ops and torch._dynamo (about a second): done once a pipeline is built.
transforms = lazy_module('torchvision.transforms')
F = lazy_module('torchvision.transforms.functional')
F2 = lazy_module('torchvision.transforms.v2.functional')

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUGMENTATIONS = ('base', 'adv', 'big', 'red')
DRAFT_SCALES = (8, 4, 2)
"""JPEG DCT downscaling factors Pillow's `Image.draft` can decode at."""
SAME_PIXELS_ON_TENSORS = ('RandomHorizontalFlip', 'CenterCrop', 'RandomCrop')
"""The torchvision transforms that give a uint8 tensor exactly the pixels they give a PIL image. ColorJitter and
RandomGrayscale round differently on tensors and amplify a one-level resampling difference, so `adv` keeps
Pillow throughout."""


def resize_size(image_size):
    """The shorter side images are resized to before cropping: 256 for 224 crops."""
    return round(image_size * 256 / 224)


def draft_scale(box, output_size):
    """The largest JPEG downscaling factor (8, 4, 2, else 1) that keeps `box` (x0, y0, x1, y1) at least
    `output_size` (w, h) in both directions, so the reduced decode still has every pixel the output needs."""
    room = min((box[2] - box[0]) / output_size[0], (box[3] - box[1]) / output_size[1])
    return next((scale for scale in DRAFT_SCALES if room >= scale), 1)


class RandomResizedCropBox:
    """The box of torchvision's RandomResizedCrop(size) (scale 0.08-1, ratio 3/4-4/3), and its output size."""

    def __init__(self, size):
        self.size = size

    def __call__(self, image):
        top, left, height, width = transforms.RandomResizedCrop.get_params(image, (0.08, 1.0), (3 / 4, 4 / 3))
        return (left, top, left + width, top + height), (self.size, self.size)


class ResizeBox:
    """The whole image and the output size of torchvision's Resize(size): shorter side to `size`."""

    def __init__(self, size):
        self.size = size

    def __call__(self, image):
        width, height = image.size
        if width <= height:
            output = (self.size, int(self.size * height / width))
        else:
            output = (int(self.size * width / height), self.size)
        return (0, 0, width, height), output


class ImagePipeline:
    """Resize a box of the image (`geometry`), then the torchvision transforms `rest`, then a uint8 tensor.

    Call `plan(image)` on the opened image before its pixels are decoded: it draws the box from the
    torch RNG and, with `draft`, asks a JPEG decoder for a DCT-downscaled decode when the box is at
    least twice the output size; then `apply(decoded_rgb_image, plan)`. Without a draft the box is
    resized as torchvision's resized_crop / resize do, on the uint8 tensor, or with Pillow when
    `pil_resampling` or when `rest` has a step outside SAME_PIXELS_ON_TENSORS; with a draft, Pillow resizes
    the box mapped onto the smaller decode (its resize takes fractional boxes). Calling the pipeline on a
    decoded PIL image does both steps (no draft then).
    """

    def __init__(self, geometry, rest, draft=True, pil_resampling=False):
        self.geometry = geometry
        self.rest = transforms.Compose(rest)
        self.draft = draft
        same_pixels = tuple(getattr(transforms, name) for name in SAME_PIXELS_ON_TENSORS)
        self.pil_resampling = pil_resampling or not all(isinstance(step, same_pixels) for step in rest)

    def plan(self, image):
        """(box, output size, decode scale) for `image`, whose pixels may not be decoded yet."""
        box, output_size = self.geometry(image)
        scale = draft_scale(box, output_size) if self.draft else 1
        if scale > 1:
            # Pillow picks the largest factor <= min(width // w, height // h): exactly `scale` for this request.
            width = image.width
            drafted = image.draft(None, (width // scale, image.height // scale))
            scale = 1 if drafted is None else round(width / drafted[1][2])
        return box, output_size, scale

    def apply(self, image, plan):
        box, output_size, scale = plan
        if scale > 1:
            image = image.resize(output_size, Image.BILINEAR, box=tuple(c / scale for c in box))
        elif self.pil_resampling:
            left, top, right, bottom = box
            image = F.resized_crop(image, top, left, bottom - top, right - left, [output_size[1], output_size[0]])
        else:
            # Only the box's pixels leave Pillow. pil_to_tensor gives a 3 x H x W view of H x W x 3 pixels, the
            # layout torch's fast uint8 kernel takes.
            image = F2.resize(F.pil_to_tensor(image.crop(box)), [output_size[1], output_size[0]], antialias=True)
        image = self.rest(image)
        # Tensors here may be views of H x W x 3 pixels: the DataLoader's collate makes the one contiguous copy.
        return image if isinstance(image, torch.Tensor) else F.pil_to_tensor(image)

    def __call__(self, image):
        return self.apply(image, (*self.geometry(image), 1))


def make_transform(train, augmentation, image_size, draft=True, pil_resampling=False):
    """The ImagePipeline of an augmentation, as in the Revisiting-DML framework (output uint8, not normalised).

    With s = `image_size` and r = round(s * 256 / 224) (256 for s = 224):
    - 'base': train RandomResizedCrop(s) + HorizontalFlip; eval Resize(r) + CenterCrop(s).
    - 'adv':  'base' plus RandomGrayscale(0.2) and ColorJitter(0.2, 0.2, 0.2, 0.2).
    - 'big':  like 'base' with crops of r instead of s (eval Resize(r) + CenterCrop(r)).
    - 'red':  reduced: train Resize(r) + RandomCrop(s) + HorizontalFlip; eval as 'base'.
    The mean/std normalisation follows on the device (`to_network_input`). `draft` and
    `pil_resampling`: see ImagePipeline.
    """
    if augmentation not in AUGMENTATIONS:
        raise UserError(f'unknown --augmentation {augmentation!r}; choose one of {", ".join(AUGMENTATIONS)}')
    resized = resize_size(image_size)
    crop = resized if augmentation == 'big' else image_size
    flip = transforms.RandomHorizontalFlip(0.5)
    if not train:
        return ImagePipeline(ResizeBox(resized), [transforms.CenterCrop(crop)], draft, pil_resampling)
    if augmentation == 'red':
        return ImagePipeline(ResizeBox(resized), [transforms.RandomCrop(crop), flip], draft, pil_resampling)
    if augmentation == 'adv':
        colour = [transforms.RandomGrayscale(0.2), transforms.ColorJitter(0.2, 0.2, 0.2, 0.2)]
        return ImagePipeline(RandomResizedCropBox(crop), colour + [flip], draft, pil_resampling)
    return ImagePipeline(RandomResizedCropBox(crop), [flip], draft, pil_resampling)


@functools.lru_cache(maxsize=None)
def _normalisation(device, mean, std):
    """(255 * mean, 1 / (255 * std)) as 1 x 3 x 1 x 1 float32 tensors on `device`, made once per device and pair."""
    mean = torch.tensor(mean).view(1, 3, 1, 1)
    std = torch.tensor(std).view(1, 3, 1, 1)
    return (mean * 255).to(device), (1 / (std * 255)).to(device)


def normalisation_of(network):
    """(mean, std) that `network` wants its input normalised with: its `input_mean` and `input_std` (looked up
    through a DistributedDataParallel wrapper), ImageNet's for a network without them."""
    if isinstance(network, torch.nn.parallel.DistributedDataParallel):
        network = network.module
    return tuple(getattr(network, 'input_mean', IMAGENET_MEAN)), tuple(getattr(network, 'input_std', IMAGENET_STD))


def to_network_input(images, device, channels_last=False, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """A loader's uint8 batch (B x 3 x S x S) as the networks' input: float32 on `device`, normalised per channel
    (ImageNet's mean and std unless given; a network's own: `normalisation_of(network)`).

    The same numbers as torchvision's ToTensor + Normalize(mean, std) up to float rounding.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f'to_network_input expects the uint8 batches of datasets.transforms, got {images.dtype}')
    device = torch.device(device)
    images = images.to(device, non_blocking=True)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    shift, scale = _normalisation(device, tuple(mean), tuple(std))
    return images.to(torch.float32, memory_format=memory_format).sub_(shift).mul_(scale)
