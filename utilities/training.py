"""One training epoch: student forward, teacher forward when the distillation term is on, loss, step."""
import logging
import math
import time
from dataclasses import dataclass, asdict

import torch
from tqdm import tqdm

from utilities import distributed

logger = logging.getLogger(__name__)


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

    def record(self, loss, terms):
        self.trained_steps += 1
        self.loss_sum += loss
        self.loss_rank_sum += float(terms.get('loss_rank', loss))
        self.loss_kd_sum += float(terms.get('loss_kd', 0.0))

    def averages(self):
        n = max(self.trained_steps, 1)
        return {'loss': self.loss_sum / n, 'loss_rank': self.loss_rank_sum / n, 'loss_kd': self.loss_kd_sum / n,
                'skipped_nonfinite': self.skipped_nonfinite, 'train_time_s': self.train_time_s}

    def state_dict(self):
        return asdict(self)


def train_one_epoch(model, teacher, criterion, optimizer, loader, device, epoch, progress, stop, skip_nonfinite,
                    amp=False):
    """Train on the loader's batches from progress.step on; stops early when any process received a stop signal.

    amp: the networks run in bfloat16 autocast; the criterion computes in float32 whatever it is given.
    Under torchrun `model` is the DDP-wrapped student and the loss sees the batch gathered from every rank.
    """
    model.train()
    with_teacher = criterion.needs_teacher(epoch)
    started = time.perf_counter()
    batches = tqdm(loader, desc=f'epoch {epoch}', initial=progress.step, total=progress.step + len(loader),
                   leave=False, disable=None)
    for labels, images, _ in batches:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            embeddings = model(images)
            teacher_embeddings = None
            if with_teacher:
                with torch.no_grad():
                    teacher_embeddings = teacher(images)
        embeddings, labels, teacher_embeddings = distributed.gather_batch(embeddings, labels, teacher_embeddings)
        loss = criterion(embeddings, labels, teacher_batch=teacher_embeddings, epoch=epoch)
        loss_value = loss.item()
        optimizer.zero_grad(set_to_none=True)
        # The ranking losses mask pairs whose similarity is nan, so a diverged network can still give a finite loss.
        if not distributed.all_ranks(math.isfinite(loss_value) and bool(torch.isfinite(embeddings).all())):
            if not skip_nonfinite:
                raise NonFiniteLoss(epoch, progress.step)
            progress.skipped_nonfinite += 1
            logger.warning('skipped a non-finite loss in epoch %d, step %d', epoch, progress.step)
        else:
            loss.backward()
            distributed.average_gradients(criterion)
            optimizer.step()
            progress.record(loss_value, criterion.terms)
        progress.step += 1
        batches.set_postfix(loss=f'{loss_value:.4f}')
        if stop.agree():
            break
    progress.train_time_s += time.perf_counter() - started
    return progress
