"""OBD-SD (DESIGN.md §4): targets, diffusion, distillation and the wrapper against float64 loops."""
import pytest
import torch

import criteria
import parameters
from criteria.margin import MarginLoss
from criteria.multisimilarity import MultiSimilarityLoss
from criteria.obd_sd import ObdSdLoss, diffuse, distillation_loss, similarity_targets
from criteria_references import (AUTHORS_LOOPS, diffused_targets_reference, distillation_reference, given_tuples,
                                 gradient, multisimilarity_reference, random_batch, teacher_targets_reference)


def student_and_teacher(n_classes=4, per_class=4, seed=0):
    """A random student batch and a teacher batch near it (as after one more epoch of training)."""
    student, labels = random_batch(n_classes, per_class, seed=seed)
    noise, _ = random_batch(n_classes, per_class, seed=seed + 100)
    teacher = student.detach() + 0.5 * noise.detach()
    return student, teacher / teacher.norm(dim=1, keepdim=True), labels


def obd_sd(psd=True, obdp=True, kd_lambda=2.0, kd_tau=0.5, diffusion_w=0.3, diffusion_tau=0.1, n_epochs=10):
    return ObdSdLoss(MultiSimilarityLoss(), psd=psd, obdp=obdp, kd_lambda=kd_lambda, kd_tau=kd_tau,
                     diffusion_w=diffusion_w, diffusion_tau=diffusion_tau, n_epochs=n_epochs)


@pytest.mark.parametrize('tau', [1.0, 0.5])
def test_similarity_targets_match_loop(tau):
    _, teacher, _ = student_and_teacher()
    expected, _ = teacher_targets_reference(teacher, tau)
    torch.testing.assert_close(similarity_targets(teacher, tau), torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-9, atol=0)


@pytest.mark.parametrize('w, tau_d', [(0.3, 1.0), (0.5, 0.005), (0.3, 0.1)])
def test_diffuse_matches_power_series(w, tau_d):
    _, teacher, _ = student_and_teacher(seed=1)
    targets = similarity_targets(teacher, 1.0)
    expected = diffused_targets_reference(teacher, 1.0, w, tau_d)
    torch.testing.assert_close(diffuse(targets, teacher, w, tau_d), torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize('w, tau_d', [(0.3, 1.0), (0.99, 1.0), (0.5, 0.005), (0.99, 0.005)])
def test_diffused_rows_are_distributions_and_solve_the_fixed_point(w, tau_d):
    _, teacher, _ = student_and_teacher(8, 2, seed=2)
    targets = similarity_targets(teacher.float(), 1.0)
    diffused = diffuse(targets, teacher.float(), w, tau_d)
    assert torch.all(diffused >= 0)
    torch.testing.assert_close(diffused.sum(dim=1), torch.ones(16), rtol=0, atol=1e-5)
    teacher = teacher.double()
    walk_logits = (teacher @ teacher.T).fill_diagonal_(float('-inf')) / tau_d
    walk = torch.softmax(walk_logits, dim=1)
    fixed_point = (1 - w) * targets.double() + w * walk @ diffused.double()
    torch.testing.assert_close(diffused.double(), fixed_point, rtol=0, atol=1e-5)


def test_zero_diffusion_weight_gives_targets_back_exactly():
    _, teacher, _ = student_and_teacher(seed=3)
    targets = similarity_targets(teacher, 1.0)
    assert torch.equal(diffuse(targets, teacher, 0.0, 0.1), targets)


@pytest.mark.parametrize('tau', [1.0, 0.5])
def test_distillation_loss_matches_loop(tau):
    student, teacher, _ = student_and_teacher(seed=4)
    targets, _ = teacher_targets_reference(teacher, tau)
    loss, grad = gradient(lambda x: distillation_loss(x, torch.tensor(targets, dtype=torch.float64), tau), student)
    expected, expected_grad = gradient(lambda x: distillation_reference(x, targets, tau), student)
    assert loss.item() > 0
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-12)


def total_reference(student, labels, teacher, psd, obdp, epoch, kd_lambda=2.0, kd_tau=0.5, w=0.3, tau_d=0.1,
                    n_epochs=10):
    """L_rank + (e/E) * lambda * tau^2 * L_kd, with every piece from the loop references."""
    loss = multisimilarity_reference(student, labels)
    if psd:
        if obdp:
            targets = diffused_targets_reference(teacher, kd_tau, w, tau_d)
        else:
            targets, _ = teacher_targets_reference(teacher, kd_tau)
        loss = loss + epoch / n_epochs * kd_lambda * kd_tau ** 2 * distillation_reference(student, targets, kd_tau)
    return loss


@pytest.mark.parametrize('psd, obdp', [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize('n_classes, per_class', [(8, 2), (4, 4)])
def test_total_loss_matches_loop_reference(psd, obdp, n_classes, per_class):
    student, teacher, labels = student_and_teacher(n_classes, per_class, seed=5)
    teacher.requires_grad_()
    criterion = obd_sd(psd=psd, obdp=obdp)
    loss, grad = gradient(lambda x: criterion(x, labels, teacher_batch=teacher, epoch=3), student)
    expected, expected_grad = gradient(
        lambda x: total_reference(x, labels, teacher.detach(), psd, obdp, epoch=3), student)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-12)
    assert teacher.grad is None


def test_kd_weight_is_zero_at_epoch_zero_and_grows_linearly():
    student, teacher, labels = student_and_teacher(seed=6)
    criterion = obd_sd(kd_lambda=3.0, kd_tau=2.0, n_epochs=8)
    loss = criterion(student, labels, epoch=0)
    assert torch.equal(loss, criterion.terms['loss_rank']) and criterion.terms['loss_kd'].item() == 0
    kd_terms = []
    for epoch in (1, 4, 8):
        loss = criterion(student, labels, teacher_batch=teacher, epoch=epoch)
        kd_terms.append(criterion.terms['loss_kd'])
        assert criterion.terms['loss_kd'].item() > 0
        torch.testing.assert_close(loss.detach() - criterion.terms['loss_rank'],
                                   epoch / 8 * 3.0 * 2.0 ** 2 * criterion.terms['loss_kd'], rtol=1e-9, atol=0)
    assert torch.equal(kd_terms[0], kd_terms[1]) and torch.equal(kd_terms[1], kd_terms[2])
    assert not criterion.terms['loss_rank'].requires_grad and not criterion.terms['loss_kd'].requires_grad


def test_needs_teacher():
    assert not obd_sd().needs_teacher(0)
    assert obd_sd().needs_teacher(1)
    assert not obd_sd(psd=False, obdp=False).needs_teacher(5)
    assert not obd_sd(kd_lambda=0.0).needs_teacher(5)


def test_missing_teacher_raises_when_the_kd_weight_is_positive():
    student, _, labels = student_and_teacher(seed=7)
    with pytest.raises(ValueError, match='teacher_batch'):
        obd_sd()(student, labels, epoch=2)
    without_psd = obd_sd(psd=False, obdp=False)
    loss = without_psd(student, labels, epoch=2)  # no teacher needed: the ranking loss alone
    torch.testing.assert_close(loss, multisimilarity_reference(student, labels), rtol=1e-6, atol=0)
    assert without_psd.terms['loss_kd'].item() == 0


@pytest.mark.parametrize('obdp', [False, True])
def test_low_precision_inputs_give_float32_loss(obdp):
    student, teacher, labels = student_and_teacher(seed=8)
    criterion = obd_sd(obdp=obdp)
    loss = criterion(student.detach().bfloat16(), labels, teacher_batch=teacher.bfloat16(), epoch=5)
    assert loss.dtype == criterion.terms['loss_kd'].dtype == torch.float32
    expected = total_reference(student.detach().bfloat16().double(), labels, teacher.bfloat16().double(),
                               True, obdp, epoch=5)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-4, atol=0)


def test_rejects_diffusion_weight_outside_unit_interval():
    with pytest.raises(ValueError, match='diffusion_w'):
        obd_sd(diffusion_w=1.0)


def test_param_groups_come_from_the_base_loss():
    base = MarginLoss(3, beta_lr=0.01)
    criterion = ObdSdLoss(base, psd=True, obdp=False, kd_lambda=1.0, kd_tau=1.0, diffusion_w=0.0,
                          diffusion_tau=1.0, n_epochs=2)
    beta_group = {'params': [base.beta], 'lr': 0.01, 'weight_decay': 0.0}
    assert criterion.param_groups(1e-5) == base.param_groups(1e-5) == [beta_group]
    assert obd_sd().param_groups(1e-5) == []


@pytest.mark.parametrize('loss', sorted(AUTHORS_LOOPS))
def test_every_loss_with_obd_sd_adds_the_same_distillation_term(loss):
    """<loss>_obd_sd = the authors' <loss> (its loop, on the same tuples) + (e/E) * lambda * tau² * L_kd with the
    diffused target, for every loss: the term does not depend on the loss it is added to."""
    student, teacher, labels = student_and_teacher(4, 3, seed=9)
    opt = parameters.build_parser().parse_args(['--loss', f'{loss}_obd_sd', '--PSD', '--OBDP', '--kd_lambda', '2',
                                                '--kd_tau', '0.5', '--diffusion_w', '0.3', '--diffusion_tau', '0.1',
                                                '--n_epochs', '10'])
    criterion = criteria.select(opt.loss, opt, n_classes=4).double()
    tuples = given_tuples(criterion.base_loss, student, labels)
    loss_value, grad = gradient(lambda x: criterion(x, labels, teacher_batch=teacher, epoch=3, indices_tuple=tuples),
                                student)
    targets = diffused_targets_reference(teacher, 0.5, 0.3, 0.1)
    expected, expected_grad = gradient(
        lambda x: (AUTHORS_LOOPS[loss](x, labels, tuples, criterion.base_loss)
                   + 3 / 10 * 2.0 * 0.5 ** 2 * distillation_reference(x, targets, 0.5)), student)
    torch.testing.assert_close(loss_value, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-12)
    assert criterion.terms['loss_kd'].item() > 0
