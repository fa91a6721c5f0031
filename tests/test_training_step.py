"""The training step: non-finite losses never update the weights (host- and device-side checks alike),
the device-side loss tally, and the teacher's forward pass under inference mode."""
import argparse

import pytest
import torch
from torch import nn

import criteria
import parameters
from criteria.base import Criterion
from datasets.transforms import to_network_input
from engine import training
from engine.optimization import build_optimizer
from engine.teacher import make_teacher
from engine.training import EpochProgress, NonFiniteLoss, skips_on_device, teacher_forward, train_one_epoch
from plumbing.runtime import deterministic_algorithms

EPOCH = 1  # the distillation term is on, so the teacher runs


class NeverStop:
    requested = None

    def agree(self):
        return False


def obd_sd_criterion():
    opt = parameters_namespace(loss='multisimilarity_obd_sd', PSD=True, OBDP=True)
    return criteria.select(opt.loss, opt)


def parameters_namespace(**overrides):
    opt = parameters.parse_args(['--dataset', 'digits', '--n_epochs', '4', '--kd_lambda', '10'])
    return argparse.Namespace(**{**vars(opt), **overrides})


class PoisonedLoss(Criterion):
    """The OBD-SD loss, made non-finite at the given calls (0-based)."""

    def __init__(self, poisoned_calls):
        super().__init__()
        self.base = obd_sd_criterion()
        self.poisoned_calls = set(poisoned_calls)
        self.calls = 0

    def needs_teacher(self, epoch):
        return self.base.needs_teacher(epoch)

    def forward(self, batch, labels, teacher_batch=None, epoch=0):
        loss = self.base(batch, labels, teacher_batch=teacher_batch, epoch=epoch)
        self.terms = self.base.terms
        self.calls += 1
        return loss * float('nan') if self.calls - 1 in self.poisoned_calls else loss


def tiny_network():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 8))


def batches(count):
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(4).repeat_interleave(2)
    return [(labels, torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8, generator=generator), torch.arange(8))
            for _ in range(count)]


def train(loader, criterion, fused, skip_nonfinite, optim='adam', clip_grad=None, poisoned_gradients=()):
    """(network after one epoch, its progress or the NonFiniteLoss raised); the gradients of the steps in
    `poisoned_gradients` (0-based) are made infinite."""
    model = tiny_network()
    teacher = make_teacher(model)
    with torch.no_grad():
        for parameter in teacher.parameters():  # a teacher that differs from the student
            parameter.mul_(0.9)
    if poisoned_gradients:
        steps = iter(range(len(loader)))
        model[0].weight.register_hook(lambda grad: grad * float('inf') if next(steps) in poisoned_gradients else grad)
    optimizer = build_optimizer(model, criterion, optim=optim, lr=0.01, fc_lr=-1, decay=1e-3, fused=fused)
    assert skips_on_device(optimizer) is fused
    try:
        outcome = train_one_epoch(model, teacher, criterion, optimizer, loader, torch.device('cpu'), EPOCH,
                                  EpochProgress(), NeverStop(), skip_nonfinite, clip_grad=clip_grad)
    except NonFiniteLoss as error:
        outcome = error
    return model, outcome


def assert_same_weights(first, second):
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.fixture(autouse=True)
def rare_flushes(monkeypatch):
    """The device-side check is read by the host only at the end of the epoch."""
    monkeypatch.setattr(training, 'FLUSH_INTERVAL_S', 1e9)


@pytest.mark.parametrize('fused', [True, False])
def test_nonfinite_loss_stops_the_epoch_and_no_later_step_updates(fused):
    model, error = train(batches(6), PoisonedLoss({2}), fused, skip_nonfinite=False)
    assert isinstance(error, NonFiniteLoss) and (error.epoch, error.step) == (EPOCH, 2)
    assert str(error) == 'the loss or the embeddings became non-finite in epoch 1, step 2'
    reference, progress = train(batches(6)[:2], PoisonedLoss(set()), fused, skip_nonfinite=False)
    assert progress.trained_steps == 2
    assert_same_weights(model, reference)


@pytest.mark.parametrize('fused', [True, False])
def test_skipped_nonfinite_steps_are_counted_and_change_nothing(fused, caplog):
    model, progress = train(batches(6), PoisonedLoss({1, 4}), fused, skip_nonfinite=True)
    assert (progress.step, progress.trained_steps, progress.skipped_nonfinite) == (6, 4, 2)
    kept = [batch for step, batch in enumerate(batches(6)) if step not in (1, 4)]
    reference, reference_progress = train(kept, PoisonedLoss(set()), fused, skip_nonfinite=True)
    assert_same_weights(model, reference)
    assert progress.averages() | {'train_time_s': 0, 'skipped_nonfinite': 0} == \
        reference_progress.averages() | {'train_time_s': 0, 'skipped_nonfinite': 0}
    skipped = [record.getMessage() for record in caplog.records if 'skipped' in record.getMessage()]
    assert skipped == ['skipped a non-finite loss in epoch 1, step 1', 'skipped a non-finite loss in epoch 1, step 4']


@pytest.mark.parametrize('fused', [True, False])
@pytest.mark.parametrize('optim', ['adam', 'adamw'])
def test_with_clip_grad_a_step_of_nonfinite_gradients_is_skipped_not_clipped(fused, optim):
    """A finite loss whose gradients are infinite: clipping would scale them to zeros and nans, so the step is
    skipped (and counted) like a non-finite loss; the other steps are clipped."""
    model, progress = train(batches(5), PoisonedLoss(set()), fused, skip_nonfinite=True, optim=optim, clip_grad=0.5,
                            poisoned_gradients={2})
    assert (progress.trained_steps, progress.skipped_nonfinite) == (4, 1)
    kept = [batch for step, batch in enumerate(batches(5)) if step != 2]
    reference, _ = train(kept, PoisonedLoss(set()), fused, skip_nonfinite=True, optim=optim, clip_grad=0.5)
    assert_same_weights(model, reference)
    unclipped, _ = train(kept, PoisonedLoss(set()), fused, skip_nonfinite=True, optim=optim)
    assert not torch.equal(unclipped[0].weight, reference[0].weight)


def test_clip_gradients_scales_the_norm_and_flags_a_nonfinite_one():
    model = nn.Linear(2, 1, bias=False)
    model.weight.grad = torch.tensor([[3.0, 4.0]])
    finite = torch.tensor(False)
    assert training.clip_gradients(model, None, finite) is finite and model.weight.grad.norm() == 5
    assert not training.clip_gradients(model, 1.0, finite)
    torch.testing.assert_close(model.weight.grad.norm(), torch.tensor(1.0))
    model.weight.grad = torch.tensor([[float('inf'), 1.0]])
    assert training.clip_gradients(model, 1.0, finite)


def test_device_tally_averages_are_the_host_sums_of_the_step_losses():
    criterion = PoisonedLoss(set())
    seen = []
    forward = criterion.forward

    def recording_forward(*arguments, **keywords):
        loss = forward(*arguments, **keywords)
        seen.append((loss.item(), criterion.terms['loss_rank'].item(), criterion.terms['loss_kd'].item()))
        return loss

    criterion.forward = recording_forward
    _, progress = train(batches(5), criterion, fused=True, skip_nonfinite=False)
    expected = [0.0, 0.0, 0.0]
    for values in seen:
        expected = [total + value for total, value in zip(expected, values)]
    assert [progress.loss_sum, progress.loss_rank_sum, progress.loss_kd_sum] == expected
    assert progress.loss_kd_sum > 0


def test_teacher_under_inference_mode_gives_the_gradients_of_a_no_grad_teacher():
    student, criterion = tiny_network(), obd_sd_criterion()
    teacher = make_teacher(student)
    labels, images, _ = batches(1)[0]
    images = to_network_input(images, 'cpu')
    gradients = []
    for teacher_embeddings in (teacher_forward(teacher, images), torch.no_grad()(teacher)(images)):
        student.zero_grad()
        criterion(student(images), labels, teacher_batch=teacher_embeddings, epoch=EPOCH).backward()
        gradients.append([parameter.grad.clone() for parameter in student.parameters()])
    assert teacher_forward(teacher, images).is_inference()
    for first, second in zip(*gradients):
        assert torch.equal(first, second)


class PutInBackward(torch.autograd.Function):
    """Identity whose backward calls Tensor.put_, which torch refuses under deterministic algorithms on any device:
    the real RuntimeError that torch raises on CUDA for adaptive_max_pool2d's backward and the like."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad.clone().put_(torch.tensor([0]), torch.tensor([0.0]))


class Probed(nn.Module):
    def __init__(self, backward_error=None):
        super().__init__()
        self.linear = nn.Linear(3, 4)
        self.arch = 'probed_double'
        self.backward_error = backward_error

    def forward(self, images):
        pooled = images.mean(dim=(2, 3))
        if self.backward_error:
            raise RuntimeError(self.backward_error)
        return PutInBackward.apply(self.linear(pooled))


@pytest.fixture
def deterministic():
    with deterministic_algorithms():
        yield


def test_deterministic_probe_turns_torchs_error_into_one_line_naming_the_op(deterministic):
    from plumbing.errors import UserError

    with pytest.raises(UserError) as error:
        training.check_deterministic_backward(Probed(), torch.device('cpu'), 8)
    message = str(error.value)
    assert '\n' not in message and 'no deterministic implementation of put_' in message
    assert '--arch probed_double' in message and 'drop --deterministic' in message
    other = 'mat1 and mat2 shapes cannot be multiplied'
    with pytest.raises(RuntimeError, match=other):  # any other error is not the user's: it stays as it is
        training.check_deterministic_backward(Probed(other), torch.device('cpu'), 8)


def test_deterministic_probe_leaves_the_network_and_the_random_state_as_they_were(deterministic):
    import architectures

    network = architectures.build('resnet18_double_normalize', 8, pretrained=False)  # BatchNorm that trains
    network.eval()
    before = {name: tensor.clone() for name, tensor in network.state_dict().items()}
    rng = torch.get_rng_state()
    training.check_deterministic_backward(network, torch.device('cpu'), 32, amp=True, channels_last=True)
    assert all(torch.equal(tensor, before[name]) for name, tensor in network.state_dict().items())
    assert all(parameter.grad is None for parameter in network.parameters()) and not network.training
    assert torch.equal(torch.get_rng_state(), rng)


def test_deterministic_probe_runs_only_under_deterministic_algorithms():
    assert not torch.are_deterministic_algorithms_enabled()
    training.check_deterministic_backward(Probed('never run'), torch.device('cpu'), 8)
