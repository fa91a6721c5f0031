"""Photo-like JPEGs for benchmarks and tests: smooth colour gradients, shapes, texture and sensor noise.

Flat colours decode and resample unrealistically fast; these images have a photo's mix of smooth
regions, edges and fine detail, so JPEG decoding and resampling cost what they cost on real photos.
"""
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CUB_LIKE = (500, 375)
"""The typical size of a CUB200-2011 image."""


def photo(width, height, rng):
    """A width x height RGB PIL image that compresses and resamples like a photograph."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.empty((height, width, 3), np.float32)
    for channel in range(3):
        fx, fy, phase = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * np.pi)
        pixels[..., channel] = 128 + 90 * np.sin(2 * np.pi * (fx * x / width + fy * y / height) + phase)
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        x1, y1 = x0 + rng.integers(width // 20, width // 3), y0 + rng.integers(height // 20, height // 3)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(1.5))
    texture = rng.normal(0, 10, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image, np.float32) + texture, 0, 255).astype(np.uint8))


def write_photos(folder, count, size=CUB_LIKE, seed=0, quality=90):
    """Write `count` photo-like JPEGs of `size` (width, height) into `folder`; returns their paths."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        paths.append(folder / f'photo_{k:04d}.jpg')
        photo(*size, rng).save(paths[-1], format='JPEG', quality=quality)
    return paths


def write_cub200_folder(root, n_classes, per_class, size=CUB_LIKE, seed=0):
    """A dataset folder in the cub200 layout (root/images/NNN.Class_K/*.jpg) of photo-like JPEGs; returns root."""
    for label in range(n_classes):
        write_photos(root / 'images' / f'{label + 1:03d}.Class_{label}', per_class, size, seed + label)
    return root
