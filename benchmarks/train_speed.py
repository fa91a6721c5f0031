"""Training speed: the input pipeline per worker, training steps, and an epoch through the real DataLoader.

Three parts (--parts), each timed in interleaved rounds so that a machine's changing load hits every
candidate alike; the ratios printed are measured within one run.
- pipeline: images/s in one process (decode + augment + collate) on generated photo-like JPEGs, for
  PIL decoding alone (the floor of any CPU pipeline), the authors' pipeline (PIL, RandomResizedCrop,
  flip, ToTensor, Normalize in float32) and ours (uint8 out; also without JPEG draft decoding, and with
  Pillow's resampling instead of torch's), at CUB's typical size and at larger sizes (--photo_sizes).
- steps: training steps of MS, MS + PSD and MS + PSD + OBDP (epoch 1, so the teacher runs) through
  engine.training.train_one_epoch on a batch already decoded, next to the same network's bare
  forward + backward on a batch already on the device (the ceiling).
- epoch: MS training epochs through the real DataLoader with --workers workers at --epoch_image_size,
  against the same steps on decoded batches and the ceiling at that size.

    python benchmarks/train_speed.py --seconds 60 --bs 32 --json train_speed.json
    python benchmarks/train_speed.py --device cuda --amp --workers 16 --bs 112
"""
import argparse
import itertools
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import default_collate
from torchvision import transforms

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import architectures  # noqa: E402  (needs the repository root on the path)
import criteria  # noqa: E402
import datasampler  # noqa: E402
import datasets  # noqa: E402
import parameters  # noqa: E402
from benchmarks.photos import CUB_LIKE, write_cub200_folder, write_photos  # noqa: E402
from datasets.image_dataset import ImageDataset, decoded_rgb  # noqa: E402
from datasets.transforms import (IMAGENET_MEAN, IMAGENET_STD, make_transform, normalisation_of,  # noqa: E402
                                 to_network_input)
from engine.optimization import build_optimizer  # noqa: E402
from engine.teacher import make_teacher  # noqa: E402
from engine.training import EpochProgress, train_one_epoch, training_loader  # noqa: E402
from plumbing.stop_signals import StopSignals  # noqa: E402

STEP_SETTINGS = {
    'MS': ['--loss', 'multisimilarity'],
    'MS+PSD': ['--loss', 'multisimilarity_obd_sd', '--PSD'],
    'MS+PSD+OBDP': ['--loss', 'multisimilarity_obd_sd', '--PSD', '--OBDP'],
}


def interleaved_rates(candidates, seconds, synchronize=lambda: None):
    """images/s of each candidate (name -> function doing one unit of work, returning its image count).

    One untimed warm-up unit each, then rounds of one unit per candidate until every candidate had
    `seconds` of timed work, at least two rounds.
    """
    for run in candidates.values():
        run()
    synchronize()
    images = dict.fromkeys(candidates, 0)
    spent = dict.fromkeys(candidates, 0.0)
    rounds = 0
    while rounds < 2 or min(spent.values()) < seconds:
        for name, run in candidates.items():
            started = time.perf_counter()
            images[name] += run()
            synchronize()
            spent[name] += time.perf_counter() - started
        rounds += 1
    return {name: images[name] / spent[name] for name in candidates}


def parse_size(text):
    width, height = (int(v) for v in text.lower().split('x'))
    return width, height


# ---------------------------------------------------------------- pipeline


def authors_pipeline(image_size):
    """The authors' training transform (base): float32, normalised in the worker."""
    return transforms.Compose([transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip(0.5),
                               transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def pipeline_candidates(paths, image_size, bs):
    """name -> one batch of `bs` images through that pipeline, collated as the DataLoader collates."""
    authors = authors_pipeline(image_size)
    samples = [(str(path), 0) for path in paths]
    ours = ImageDataset(samples, make_transform(True, 'base', image_size), 'photos')
    ours_without_draft = ours.with_transform(make_transform(True, 'base', image_size, draft=False))
    ours_pil_resampling = ours.with_transform(make_transform(True, 'base', image_size, pil_resampling=True))
    cursor = {'next': 0}

    def batch_indices():
        start = cursor['next']
        cursor['next'] = (start + bs) % len(paths)
        return [(start + k) % len(paths) for k in range(bs)]

    def decode_only():
        for index in batch_indices():
            with Image.open(samples[index][0]) as image:
                decoded_rgb(image)
        return bs

    def authors_batch():
        default_collate([(0, authors(Image.open(samples[index][0]).convert('RGB')), index)
                         for index in batch_indices()])
        return bs

    def ours_batch(dataset):
        def run():
            default_collate([dataset[(index, 1000 + index)] for index in batch_indices()])
            return bs
        return run

    return {'decode only': decode_only, 'authors': authors_batch, 'ours': ours_batch(ours),
            'ours without draft': ours_batch(ours_without_draft),
            'ours with Pillow resampling': ours_batch(ours_pil_resampling)}


def measure_pipeline(args, folder):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    try:
        return pipeline_rates(args, folder)
    finally:
        torch.set_num_threads(threads)


def pipeline_rates(args, folder):
    results = {}
    for size_text in args.photo_sizes:
        size = parse_size(size_text)
        paths = write_photos(folder / size_text, args.photos, size=size, seed=1)
        rates = interleaved_rates(pipeline_candidates(paths, args.image_size, args.bs), args.seconds)
        results[size_text] = {'images_per_s': rates,
                              'ours_over_authors': rates['ours'] / rates['authors'],
                              'ours_over_decode_only': rates['ours'] / rates['decode only'],
                              'draft_gain': rates['ours'] / rates['ours without draft'],
                              'torch_resampling_gain': rates['ours'] / rates['ours with Pillow resampling']}
        print(f'pipeline, one process, {size[0]}x{size[1]} JPEGs (quality 90) -> {args.image_size} px, '
              f'images/s: ' + ', '.join(f'{name} {rate:.0f}' for name, rate in rates.items()))
        print(f'  ours / authors = {results[size_text]["ours_over_authors"]:.2f}   '
              f'ours / decode only = {results[size_text]["ours_over_decode_only"]:.2f}   '
              f'draft gain (ours / ours without draft) = {results[size_text]["draft_gain"]:.2f}   '
              f'torch resampling gain (ours / ours with Pillow resampling) = '
              f'{results[size_text]["torch_resampling_gain"]:.2f}')
    return results


# ---------------------------------------------------------------- steps


def options(args, setting_flags, image_size):
    argv = ['--dataset', 'cub200', '--arch', args.arch, '--not_pretrained', '--bs', str(args.bs),
            '--image_size', str(image_size), '--n_epochs', '150', *setting_flags]
    return parameters.parse_args(argv)


class Trainer:
    """A network, its teacher, a criterion and an optimizer, as main.py builds them."""

    def __init__(self, args, setting_flags, image_size, device):
        self.opt = options(args, setting_flags, image_size)
        self.device, self.args = device, args
        self.model = architectures.select(args.arch, self.opt).to(device)
        self.teacher = make_teacher(self.model)
        if args.compile:
            self.model.compile()
        self.criterion = criteria.select(self.opt.loss, self.opt).to(device)
        self.optimizer = build_optimizer(self.model, self.criterion, optim='adam', lr=1e-5, fc_lr=-1, decay=4e-4,
                                         fused=device.type == 'cuda')

    def epoch(self, loader, epoch=1):
        """One pass over `loader` with train_one_epoch; returns the number of images."""
        progress = train_one_epoch(self.model, self.teacher, self.criterion, self.optimizer, loader, self.device,
                                   epoch, EpochProgress(), StopSignals(), skip_nonfinite=True, amp=self.args.amp,
                                   channels_last=self.args.channels_last)
        return progress.step * self.args.bs


def uint8_batch(bs, image_size, samples_per_class=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (bs, 3, image_size, image_size), dtype=torch.uint8, generator=generator)
    labels = torch.arange(bs // samples_per_class).repeat_interleave(samples_per_class)
    return labels, images, torch.arange(bs)


def bare_forward_backward(model, images, amp, device):
    """One forward + backward of `model` on `images` (already on the device, normalised): the ceiling."""
    def run():
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            embeddings = model(images)
        embeddings.float().square().sum().backward()
        return len(images)
    return run


def synchronizer(device):
    return (lambda: torch.cuda.synchronize(device)) if device.type == 'cuda' else (lambda: None)


def measure_steps(args, device):
    batch = uint8_batch(args.bs, args.image_size)
    trainers = {name: Trainer(args, flags, args.image_size, device) for name, flags in STEP_SETTINGS.items()}
    ceiling_model = trainers['MS'].model
    ceiling_input = to_network_input(batch[1], device, args.channels_last, *normalisation_of(ceiling_model))
    candidates = {name: (lambda trainer=trainer: trainer.epoch([batch] * args.steps_per_unit))
                  for name, trainer in trainers.items()}
    candidates['bare fwd+bwd'] = lambda: sum(bare_forward_backward(ceiling_model, ceiling_input, args.amp, device)()
                                             for _ in range(args.steps_per_unit))
    rates = interleaved_rates(candidates, args.seconds, synchronizer(device))
    results = {'images_per_s': rates,
               'psd_obdp_step_over_ms_step': rates['MS'] / rates['MS+PSD+OBDP'],
               'psd_step_over_ms_step': rates['MS'] / rates['MS+PSD'],
               'ms_over_ceiling': rates['MS'] / rates['bare fwd+bwd'],
               'psd_obdp_over_ceiling': rates['MS+PSD+OBDP'] / rates['bare fwd+bwd']}
    print(f'training steps, {args.arch} at {args.image_size} px, batch {args.bs}, images/s: '
          + ', '.join(f'{name} {rate:.1f}' for name, rate in rates.items()))
    print(f'  step time MS+PSD / MS = {results["psd_step_over_ms_step"]:.2f}   '
          f'MS+PSD+OBDP / MS = {results["psd_obdp_step_over_ms_step"]:.2f}   '
          f'MS step rate / bare fwd+bwd = {results["ms_over_ceiling"]:.2f}')
    return results


# ---------------------------------------------------------------- epoch


def measure_epoch(args, device, folder):
    """MS epochs through the DataLoader against the same steps on decoded batches and the bare fwd+bwd ceiling."""
    size = args.epoch_image_size
    n_classes = max(args.epoch_classes, args.bs // 2)  # a batch holds bs / 2 classes
    root = write_cub200_folder(folder / 'cub200', n_classes=2 * n_classes, per_class=args.epoch_per_class,
                               size=parse_size(args.photo_sizes[0]))
    trainer = Trainer(args, STEP_SETTINGS['MS'] + ['--source', str(root), '--kernels', str(args.workers)],
                      size, device)
    training = datasets.select(trainer.opt)['training']
    repeated = ImageDataset([(path, label) for _ in range(args.epoch_repeat)
                             for path, label in zip(training.paths, training.labels.tolist())],
                            training.transform, 'repeated training images')
    sampler = datasampler.select(trainer.opt, repeated.labels)
    loader = training_loader(repeated, sampler, args.workers, device)
    ceiling_input = to_network_input(uint8_batch(args.bs, size)[1], device, args.channels_last,
                                     *normalisation_of(trainer.model))
    ceiling = bare_forward_backward(trainer.model, ceiling_input, args.amp, device)
    on_device = [uint8_batch(args.bs, size)] * len(loader)

    epochs = itertools.count()

    def epoch_through_loader():
        sampler.set_epoch(next(epochs))
        return trainer.epoch(loader)

    candidates = {'epoch through DataLoader': epoch_through_loader,
                  'same steps on decoded batches': lambda: trainer.epoch(on_device),
                  'bare fwd+bwd': lambda: sum(ceiling() for _ in range(len(loader)))}
    rates = interleaved_rates(candidates, args.seconds, synchronizer(device))
    results = {'images_per_s': rates, 'steps_per_epoch': len(loader),
               'epoch_over_ceiling': rates['epoch through DataLoader'] / rates['bare fwd+bwd'],
               'epoch_over_device_steps': rates['epoch through DataLoader'] / rates['same steps on decoded batches']}
    print(f'epochs, MS, {args.arch} at {size} px, batch {args.bs}, {args.workers} workers, '
          f'{len(loader)} steps per epoch, images/s: ' + ', '.join(f'{n} {r:.1f}' for n, r in rates.items()))
    print(f'  epoch / bare fwd+bwd ceiling = {results["epoch_over_ceiling"]:.2f}   '
          f'epoch / same steps on decoded batches = {results["epoch_over_device_steps"]:.2f}')
    return results


# ---------------------------------------------------------------- main


def machine(device):
    description = {'platform': platform.platform(), 'cpu_cores': os.cpu_count(),
                   'torch_threads': torch.get_num_threads(), 'torch': torch.__version__, 'device': str(device),
                   'load_average': os.getloadavg()}
    if device.type == 'cuda':
        description['gpu'] = torch.cuda.get_device_name(device)
    return description


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--arch', default='resnet50_frozen_normalize')
    parser.add_argument('--image_size', type=int, default=224, help='Crop size of the pipeline and step parts.')
    parser.add_argument('--bs', type=int, default=32, help='Batch size (2 samples per class).')
    parser.add_argument('--workers', type=int, default=os.cpu_count(), help='DataLoader workers (epoch part).')
    parser.add_argument('--amp', action='store_true', help='bfloat16 autocast, channels-last inputs.')
    parser.add_argument('--channels_last', action='store_true', help='Channels-last inputs (implied by --amp).')
    parser.add_argument('--compile', action='store_true', help='torch.compile the trained network.')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch threads of the main process (default: torch\'s); on a shared machine 1 '
                             'avoids threads waiting for each other')
    parser.add_argument('--seconds', type=float, default=20.0, help='Timed work per candidate, at least.')
    parser.add_argument('--parts', nargs='+', default=['pipeline', 'steps', 'epoch'],
                        choices=['pipeline', 'steps', 'epoch'])
    parser.add_argument('--photo_sizes', nargs='+', default=['500x375', '800x600', '1200x900'],
                        help='JPEG sizes of the pipeline part; the first is also the epoch part\'s (CUB: 500x375).')
    parser.add_argument('--photos', type=int, default=48, help='Generated JPEGs per size.')
    parser.add_argument('--steps_per_unit', type=int, default=1, help='Training steps per timed unit (steps part).')
    parser.add_argument('--epoch_image_size', type=int, default=64, help='Crop size of the epoch part.')
    parser.add_argument('--epoch_classes', type=int, default=8,
                        help='Training classes of the epoch part (at least bs / 2).')
    parser.add_argument('--epoch_per_class', type=int, default=4, help='Generated JPEGs per class (epoch part).')
    parser.add_argument('--epoch_repeat', type=int, default=4,
                        help='Each JPEG is listed this often, to make epochs longer without more files.')
    parser.add_argument('--json', default=None, help='Also write the rates and ratios to this file.')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    if args.photo_sizes[0] != f'{CUB_LIKE[0]}x{CUB_LIKE[1]}':
        print(f'note: the first --photo_sizes is {args.photo_sizes[0]}, not CUB\'s typical {CUB_LIKE[0]}x{CUB_LIKE[1]}')
    args.channels_last = args.channels_last or args.amp
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True
    np.random.seed(0)
    torch.manual_seed(0)
    report = {'machine': machine(device), 'arguments': vars(args)}
    print(json.dumps(report['machine']))
    with tempfile.TemporaryDirectory(prefix='train_speed_') as folder:
        folder = pathlib.Path(folder)
        if 'pipeline' in args.parts:
            report['pipeline'] = measure_pipeline(args, folder)
        if 'steps' in args.parts:
            report['steps'] = measure_steps(args, device)
        if 'epoch' in args.parts:
            report['epoch'] = measure_epoch(args, device, folder)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
