"""A checkpoint's embedding of any images: its network and its own evaluation pipeline, batched, streamed.

The settings that decide an embedding (run_folder.saved_flags.EVALUATION_SETTINGS: arch, embed_dim, image_size,
augmentation, full_decode, pil_resampling) come from the checkpoint's config (our checkpoints carry one) unless
the caller gives them, else from the defaults (the authors' net.pth files). Images are decoded and cropped by
datasets.transforms.make_transform's evaluation pipeline in DataLoader workers, normalised by the network's mean
and std on the device, and embedded batch by batch; the L2-normalised embeddings come out one batch at a time, so
nothing but a batch is in memory. An image that cannot be read or decoded is named in a warning and left out, as
in training.
"""
import hashlib
import logging

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

import architectures
from datasets.image_dataset import UNREADABLE_IMAGE_ERRORS, decoded_rgb
from datasets.transforms import make_transform, normalisation_of, to_network_input
from evaluation.embeddings import embedding_autocast
from plumbing.errors import UserError
from plumbing.stop_signals import ignore_stop_signals
from run_folder.checkpoint import load_checkpoint_into, read_checkpoint
from run_folder.saved_flags import config_of, evaluation_settings

logger = logging.getLogger(__name__)


def sha256_of(path):
    """The sha256 of the file at `path` (hex), read a megabyte at a time."""
    digest = hashlib.sha256()
    try:
        with open(path, 'rb') as stream:
            for block in iter(lambda: stream.read(1 << 20), b''):
                digest.update(block)
    except OSError as error:
        raise UserError(f'cannot read {path} ({error.strerror})') from None
    return digest.hexdigest()


class Embedder:
    """The network of the checkpoint at `path` with the evaluation pipeline of `settings` (EVALUATION_SETTINGS), on
    `device`. `checkpoint` {'path', 'sha256', 'config'} says which file it is."""

    def __init__(self, path, settings, device, checkpoint=None):
        self.settings = dict(settings)
        self.device = torch.device(device)
        checkpoint = read_checkpoint(path) if checkpoint is None else checkpoint
        self.checkpoint = {'path': path, 'sha256': sha256_of(path), 'config': config_of(checkpoint)}
        model = architectures.build(settings['arch'], settings['embed_dim'], pretrained=False,
                                    image_size=settings['image_size'])
        load_checkpoint_into(model, checkpoint, path)
        self.model = model.to(self.device).eval()
        self.transform = make_transform(False, settings['augmentation'], settings['image_size'],
                                        draft=not settings['full_decode'], pil_resampling=settings['pil_resampling'])

    @classmethod
    def from_checkpoint(cls, path, given, defaults, device):
        """The Embedder of a checkpoint: its config's settings (completed with the flags its run predates), `given`
        ones over them, `defaults` where neither says (logged)."""
        checkpoint = read_checkpoint(path)
        settings, restored = evaluation_settings(config_of(checkpoint), given, defaults)
        defaulted = [name for name in settings if name not in given and name not in restored]
        if defaulted:
            logger.info('%s records no %s: using %s', path, ', '.join(defaulted),
                        ', '.join(f'--{name} {settings[name]}' for name in defaulted))
        return cls(path, settings, device, checkpoint)

    @property
    def embed_dim(self):
        return self.settings['embed_dim']

    def loader(self, paths, batch_size, workers):
        dataset = ImageFiles(paths, self.transform)
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                           collate_fn=collate_readable, pin_memory=self.device.type == 'cuda',
                                           worker_init_fn=ignore_stop_signals)

    def embed_batches(self, paths, *, batch_size=64, workers=0, left_out=None, description='Embedding'):
        """Yield (positions, embeddings) batch by batch: the positions in `paths` of the images that could be read
        (int64) and their L2-normalised embeddings (float32, len(positions) x embed_dim). The paths of the others
        are named in a warning and appended to `left_out` as (path, reason)."""
        left_out = [] if left_out is None else left_out
        normalisation = normalisation_of(self.model)
        with tqdm(total=len(paths), desc=description, unit='img', leave=False, disable=None) as bar:
            for positions, images, failed in self.loader(paths, batch_size, workers):
                for position, reason in failed:
                    logger.warning('cannot read image %s (%s); leaving it out', paths[position], reason)
                    left_out.append((paths[position], reason))
                if len(positions):
                    yield positions, self.embed_images(images, normalisation)
                bar.update(len(positions) + len(failed))

    def embed_images(self, images, normalisation=None):
        """The L2-normalised embeddings (numpy float32) of a uint8 batch (B x 3 x S x S)."""
        normalisation = normalisation_of(self.model) if normalisation is None else normalisation
        with torch.inference_mode(), embedding_autocast(self.device.type, False):
            output = self.model(to_network_input(images, self.device, False, *normalisation))
            output = output[0] if isinstance(output, (tuple, list)) else output
            output = torch.nn.functional.normalize(output.float(), dim=-1)
        embeddings = output.cpu().numpy()
        if not np.isfinite(embeddings).all():
            raise UserError('the network gives nan or inf embeddings: the checkpoint\'s weights are damaged or its '
                            'training diverged')
        return embeddings


class ImageFiles(torch.utils.data.Dataset):
    """(position, uint8 image tensor, None), or (position, None, reason) for a file that cannot be read."""

    def __init__(self, paths, transform):
        self.paths = paths
        self.transform = transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, position):
        try:
            with Image.open(self.paths[position]) as image:
                plan = self.transform.plan(image)  # before decoding: it may ask for a reduced decode
                return position, self.transform.apply(decoded_rgb(image), plan), None
        except UNREADABLE_IMAGE_ERRORS as error:
            return position, None, f'{type(error).__name__}: {" ".join(str(error).split())[:120]}'


def collate_readable(items):
    """(positions int64, uint8 batch of the readable images, [(position, reason)] of the others)."""
    readable = [(position, image) for position, image, reason in items if reason is None]
    failed = [(position, reason) for position, _, reason in items if reason is not None]
    positions = np.array([position for position, _ in readable], dtype=np.int64)
    images = torch.stack([image for _, image in readable]) if readable else None
    return positions, images, failed
