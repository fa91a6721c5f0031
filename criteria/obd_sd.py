"""OBD-SD: progressive self-distillation (PSD) with online batch diffusion (OBDP), as README's "The method in one
paragraph" writes it."""
import torch
import torch.nn.functional as F

from criteria.base import Criterion, loss_dtype

# Removes self-loops from the random walk: their softmax weight underflows to 0.
_SELF_LOOP_PENALTY = 1e9


def similarity_targets(teacher, tau):
    """P = softmax(T Tᵀ / tau), row-wise: each sample's distribution over the batch."""
    return torch.softmax(teacher @ teacher.T / tau, dim=1)


def diffuse(targets, teacher, w, tau_d):
    """P_d = (1 - w) (I - w W)⁻¹ P with W = softmax((T Tᵀ - 1e9 I) / tau_d), via a linear solve."""
    eye = torch.eye(len(teacher), dtype=teacher.dtype, device=teacher.device)
    walk = torch.softmax((teacher @ teacher.T - _SELF_LOOP_PENALTY * eye) / tau_d, dim=1)
    return (1.0 - w) * torch.linalg.solve(eye - w * walk, targets)


def distillation_loss(student, targets, tau):
    """KL(P ‖ softmax(S Sᵀ / tau)), batchmean: (1/B) Σ_ij P_ij (log P_ij - log softmax(S Sᵀ/tau)_ij)."""
    log_student = torch.log_softmax(student @ student.T / tau, dim=1)
    return F.kl_div(log_student, targets, reduction='batchmean')


def distillation_weight(epoch, n_epochs, kd_lambda, kd_tau):
    """The weight of the distillation term at `epoch`: (epoch / n_epochs) * kd_lambda * kd_tau²."""
    return epoch / n_epochs * kd_lambda * kd_tau ** 2


class ObdSdLoss(Criterion):
    """L = L_rank + (epoch / n_epochs) * kd_lambda * kd_tau² * L_kd around any ranking loss.

    L_kd distils the teacher's batch similarity distribution (diffused when `obdp`) into the
    student's; it is computed only when `psd` is set and its weight is positive, and then
    `teacher_batch` must be given. After each call, `terms` holds the detached 'loss_rank' and
    'loss_kd' for logging.
    """

    def __init__(self, base_loss, psd, obdp, kd_lambda, kd_tau, diffusion_w, diffusion_tau, n_epochs):
        super().__init__()
        if not 0.0 <= diffusion_w < 1.0:
            raise ValueError(f'diffusion_w must be in [0, 1), got {diffusion_w}')
        if n_epochs < 1:
            raise ValueError(f'n_epochs must be at least 1, got {n_epochs}')
        self.base_loss = base_loss
        self.psd = psd
        self.obdp = obdp
        self.kd_lambda = kd_lambda
        self.kd_tau = kd_tau
        self.diffusion_w = diffusion_w
        self.diffusion_tau = diffusion_tau
        self.n_epochs = n_epochs

    def param_groups(self, lr=None):
        """The base loss's parameter groups (the distillation term has no parameters)."""
        return self.base_loss.param_groups(lr)

    def kd_weight(self, epoch):
        """(epoch / n_epochs) * kd_lambda * kd_tau², or 0 without PSD."""
        return distillation_weight(epoch, self.n_epochs, self.kd_lambda, self.kd_tau) if self.psd else 0.0

    def needs_teacher(self, epoch):
        """Whether forward at this epoch uses teacher embeddings (not in epoch 0)."""
        return self.kd_weight(epoch) > 0

    def forward(self, batch, labels, teacher_batch=None, epoch=0, indices_tuple=None):
        loss_rank = self.base_loss(batch, labels, indices_tuple=indices_tuple)
        weight = self.kd_weight(epoch)
        if weight > 0:
            if teacher_batch is None:
                raise ValueError(f'teacher_batch is required: the distillation weight at epoch {epoch} is {weight}')
            loss_kd = self._distillation(batch, teacher_batch)
            loss = loss_rank + weight * loss_kd
        else:
            loss_kd = torch.zeros((), dtype=loss_rank.dtype, device=loss_rank.device)
            loss = loss_rank
        self.terms = {'loss_rank': loss_rank.detach(), 'loss_kd': loss_kd.detach()}
        return loss

    def _distillation(self, batch, teacher_batch):
        dtype = loss_dtype(batch, teacher_batch)
        with torch.no_grad():
            teacher = teacher_batch.detach().to(dtype)
            targets = similarity_targets(teacher, self.kd_tau)
            if self.obdp:
                targets = diffuse(targets, teacher, self.diffusion_w, self.diffusion_tau)
        return distillation_loss(batch.to(dtype), targets, self.kd_tau)
