"""One training epoch: student forward, teacher forward when the distillation term is on, loss, step; and the
loader of its batches."""
import copy
import logging
import re
import time
from dataclasses import dataclass, asdict

import torch
from tqdm import tqdm

from datasets.transforms import normalisation_of, to_network_input
from plumbing import distributed
from plumbing.errors import UserError
from plumbing.stop_signals import ignore_stop_signals

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0
"""How often, at most, the host reads the device's loss tallies while the device checks every step itself."""


def training_loader(dataset, batch_sampler, workers, device):
    """The loader of the training batches that `batch_sampler` draws; its `workers` processes are started once and
    kept from epoch to epoch (persistent_workers), unlike the evaluation loaders' (evaluation.evaluator)."""
    # A private generator keeps the global torch RNG untouched by loader iteration (bit-exact resume).
    return torch.utils.data.DataLoader(dataset, batch_sampler=batch_sampler, num_workers=workers,
                                       pin_memory=device.type == 'cuda', persistent_workers=workers > 0,
                                       worker_init_fn=ignore_stop_signals, generator=torch.Generator())


NO_DETERMINISTIC_KERNEL = re.compile(r'(\S+) does not have a deterministic implementation')
"""torch's RuntimeError for an op that torch.use_deterministic_algorithms(True) refuses, and the op it names."""


def check_deterministic_backward(model, device, image_size, amp=False, channels_last=False):
    """With deterministic algorithms on (--deterministic), one forward and backward pass of a copy of `model` on 2
    random images as training runs them, so that an op without a deterministic kernel (on CUDA torch raises at its
    first backward pass, e.g. adaptive_max_pool2d's) stops the run before it starts, in one line naming the op.
    `model`, its BatchNorm statistics, its gradients and every random generator are left as they were."""
    if not torch.are_deterministic_algorithms_enabled():
        return
    probe = copy.deepcopy(model).train()
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == 'cuda' else []
    try:
        with torch.random.fork_rng(devices=cuda):
            images = torch.randn(2, 3, image_size, image_size, device=device)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                embeddings = probe(images)
            embeddings.float().sum().backward()
    except RuntimeError as error:
        found = NO_DETERMINISTIC_KERNEL.search(str(error))
        if not found:
            raise
        arch = getattr(model, 'arch', type(model).__name__)
        raise UserError(f'--deterministic cannot train --arch {arch} on {device.type}: torch has no deterministic '
                        f'implementation of {found.group(1)}, one of its backward ops (torch.use_deterministic_'
                        f'algorithms raises there); drop --deterministic, or choose another --arch') from None
    finally:
        del probe


class NonFiniteLoss(Exception):
    def __init__(self, epoch, step):
        super().__init__(f'the loss or the embeddings became non-finite in epoch {epoch}, step {step}')
        self.epoch, self.step = epoch, step


@dataclass
class EpochProgress:
    """What an epoch has done so far; saved in a mid-epoch checkpoint so an interrupted epoch can go on."""
    step: int = 0
    loss_sum: float = 0.0
    loss_rank_sum: float = 0.0
    loss_kd_sum: float = 0.0
    trained_steps: int = 0
    skipped_nonfinite: int = 0
    train_time_s: float = 0.0

    def averages(self):
        n = max(self.trained_steps, 1)
        return {'loss': self.loss_sum / n, 'loss_rank': self.loss_rank_sum / n, 'loss_kd': self.loss_kd_sum / n,
                'skipped_nonfinite': self.skipped_nonfinite, 'train_time_s': self.train_time_s}

    def state_dict(self):
        return asdict(self)


def train_one_epoch(model, teacher, criterion, optimizer, loader, device, epoch, progress, stop, skip_nonfinite,
                    amp=False, channels_last=False, clip_grad=None):
    """Train on the loader's batches from progress.step on; stops early when any process received a stop signal.

    amp: the networks run in bfloat16 autocast; the criterion computes in float32 whatever it is given.
    channels_last: the input batches are laid out channels-last (faster convolutions under amp on GPUs).
    clip_grad: the norm the network's gradients are clipped to before each step (None: no clipping).
    Under torchrun `model` is the DDP-wrapped student and the loss sees the batch gathered from every rank.
    A step whose loss or embeddings are not finite never updates the weights: it stops the epoch with
    NonFiniteLoss, or, with `skip_nonfinite`, is skipped and counted; with clip_grad, so is a step whose gradient
    norm is not finite. With a fused Adam (or AdamW) the check runs on the
    device and the host reads the losses at most every FLUSH_INTERVAL_S seconds; otherwise it reads them every step.
    """
    model.train()
    with_teacher = criterion.needs_teacher(epoch)
    on_device = skips_on_device(optimizer)
    tally = DeviceTally(progress, device)
    normalisation = normalisation_of(model)
    started = time.perf_counter()
    batches = tqdm(loader, desc=f'epoch {epoch}', initial=progress.step, total=progress.step + len(loader),
                   leave=False, disable=None if distributed.is_main() else True)  # under torchrun rank 0 only
    try:
        for labels, images, _ in batches:
            images = to_network_input(images, device, channels_last, *normalisation)
            labels = labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                # The teacher first: its activations are freed before the student's, kept for backward, take memory
                # (on a CPU the other order makes the step about 15 % slower).
                teacher_embeddings = teacher_forward(teacher, images) if with_teacher else None
                embeddings = model(images)
            embeddings, labels, teacher_embeddings = distributed.gather_batch(embeddings, labels, teacher_embeddings)
            loss = criterion(embeddings, labels, teacher_batch=teacher_embeddings, epoch=epoch)
            # Every rank computes this from the same gathered batch, so all ranks take the same decision.
            nonfinite = step_is_nonfinite(loss, embeddings)
            optimizer.zero_grad(set_to_none=True)
            if on_device:
                loss.backward()
                distributed.average_gradients(criterion)
                nonfinite = clip_gradients(model, clip_grad, nonfinite)
                masked_step(optimizer, nonfinite if skip_nonfinite else tally.halt_on(nonfinite))
            elif not nonfinite.item():
                loss.backward()
                distributed.average_gradients(criterion)
                nonfinite = clip_gradients(model, clip_grad, nonfinite)
                if not nonfinite.item():
                    optimizer.step()
            tally.add(progress.step, loss, criterion.terms, nonfinite)
            progress.step += 1
            stopping = stop.agree()
            if not on_device or stopping or tally.due():
                report(tally.flush(progress), batches, epoch, skip_nonfinite)
            if stopping:
                break
        report(tally.flush(progress), batches, epoch, skip_nonfinite)
    finally:
        progress.train_time_s += time.perf_counter() - started
    return progress


def teacher_forward(teacher, images):
    """The teacher's embeddings: constants for the loss, so no autograd bookkeeping at all."""
    with torch.inference_mode():
        return teacher(images)


def step_is_nonfinite(loss, embeddings):
    """A 0-d bool tensor on the loss's device: whether this step must not update the weights.

    The embeddings count too: the ranking losses mask pairs whose similarity is nan, so a diverged network
    can still give a finite loss.
    """
    return ~(torch.isfinite(loss) & torch.isfinite(embeddings).all())


def clip_gradients(model, max_norm, nonfinite):
    """With `max_norm`, clip the network's gradient norm to it and return `nonfinite` or-ed with whether that norm
    was not finite (clipping would scale such gradients to zeros or nans: a step that must not count as finite);
    without, return `nonfinite` and leave the gradients alone."""
    if max_norm is None:
        return nonfinite
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    return nonfinite | ~torch.isfinite(norm)


def skips_on_device(optimizer):
    """Whether `optimizer` can skip a step on a device-side flag: torch's fused Adam and AdamW take one as
    `found_inf` (as GradScaler uses it) and then leave weights, moments and step counts untouched."""
    return (isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW))
            and all(group.get('fused') for group in optimizer.param_groups))


def masked_step(optimizer, skip):
    """optimizer.step(), a no-op where the 0-d device tensor `skip` is true, without waiting for it."""
    optimizer.found_inf = skip.float()
    try:
        optimizer.step()
    finally:
        optimizer.found_inf = None


def report(flushed, batches, epoch, skip_nonfinite):
    """Raise NonFiniteLoss for a non-finite step, or log the skipped ones; show the last loss."""
    nonfinite_steps, last_loss = flushed
    if nonfinite_steps and not skip_nonfinite:
        raise NonFiniteLoss(epoch, nonfinite_steps[0])
    for step in nonfinite_steps:
        logger.warning('skipped a non-finite loss in epoch %d, step %d', epoch, step)
    if last_loss is not None:
        batches.set_postfix(loss=f'{last_loss:.4f}')


class DeviceTally:
    """The epoch's loss sums and step counts, kept on the device and copied into an EpochProgress on flush.

    The sums start from the progress's and add the same float64 values in the same order as a host-side
    tally would, so averages (and resumed runs) are the same. A step with a non-finite loss adds nothing
    to the sums and counts as skipped.
    """

    def __init__(self, progress, device):
        self.sums = torch.tensor([progress.loss_sum, progress.loss_rank_sum, progress.loss_kd_sum],
                                 dtype=torch.float64, device=device)
        self.counts = torch.tensor([progress.trained_steps, progress.skipped_nonfinite], dtype=torch.float64,
                                   device=device)
        self.halted = torch.zeros((), dtype=torch.bool, device=device)
        self.pending = []
        self.flushed_at = time.perf_counter()

    def halt_on(self, nonfinite):
        """True from the first non-finite step on: no later step updates the weights before the host stops."""
        self.halted = self.halted | nonfinite
        return self.halted

    def add(self, step, loss, terms, nonfinite):
        parts = (loss, terms.get('loss_rank', loss), terms.get('loss_kd', torch.zeros_like(loss)))
        values = torch.stack([part.detach().double() for part in parts])
        self.sums += torch.where(nonfinite, 0.0, values)
        self.counts += torch.stack([~nonfinite, nonfinite]).double()
        self.pending.append((step, nonfinite, loss.detach()))

    def due(self):
        return time.perf_counter() - self.flushed_at >= FLUSH_INTERVAL_S

    def flush(self, progress):
        """Copy sums and counts into `progress` (one device-to-host copy); (non-finite steps, last loss)."""
        self.flushed_at = time.perf_counter()
        if not self.pending:
            return [], None
        flags = torch.stack([nonfinite for _, nonfinite, _ in self.pending]).double()
        last_loss = self.pending[-1][2].double().view(1)
        values = torch.cat([self.sums, self.counts, flags, last_loss]).tolist()
        progress.loss_sum, progress.loss_rank_sum, progress.loss_kd_sum = values[:3]
        progress.trained_steps, progress.skipped_nonfinite = int(values[3]), int(values[4])
        nonfinite_steps = [step for (step, _, _), flag in zip(self.pending, values[5:-1]) if flag]
        self.pending = []
        return nonfinite_steps, values[-1]
