"""MarginLoss against a float64 loop of the authors' margin.py, on given triplets and through its miner."""
import pytest
import torch

from criteria.margin import MarginLoss
from criteria.miners.distance import DistanceMiner, distance_weighted_triplets
from criteria_references import gradient, margin_reference, random_batch, triplet_list


def random_betas(n_classes, seed):
    generator = torch.Generator().manual_seed(seed)
    return 1.0 + 0.4 * torch.rand(n_classes, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize('n_classes, per_class, seed, nu', [(8, 2, 0, 0.0), (4, 4, 1, 0.0), (4, 4, 2, 0.1)])
def test_matches_loop_reference_on_mined_triplets(n_classes, per_class, seed, nu):
    embeddings, labels = random_batch(n_classes, per_class, seed=seed)
    triplets = distance_weighted_triplets(embeddings, labels, generator=torch.Generator().manual_seed(seed))
    criterion = MarginLoss(n_classes, margin=0.2, nu=nu).double()
    criterion.beta.data = random_betas(n_classes, seed)
    loss, grad = gradient(lambda x: criterion(x, labels, indices_tuple=triplets), embeddings)
    beta_grad = torch.autograd.grad(criterion(embeddings, labels, indices_tuple=triplets), criterion.beta)[0]

    beta = criterion.beta.detach().clone().requires_grad_()
    as_list = triplet_list(triplets)
    expected, expected_grad = gradient(lambda x: margin_reference(x, labels, as_list, beta, 0.2, nu), embeddings)
    expected_beta_grad = torch.autograd.grad(margin_reference(embeddings, labels, as_list, beta, 0.2, nu), beta)[0]

    assert loss.item() > 0
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(beta_grad, expected_beta_grad, rtol=1e-6, atol=1e-12)


def test_divisor_counts_triplets_with_any_active_hinge_and_nu_is_added_after_it():
    """The authors' `(pos > 0) + (neg > 0)` on bool tensors is an OR: a triplet with two active hinges counts once,
    and nu * sum(beta) comes after the division. Two triplets, beta 1.2, margin 0.2: the first has both hinges
    active, the second only its positive one (2 triplets with an active hinge; 3 active hinges)."""
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.0, -1.0], [-1.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2])
    triplets = [torch.tensor([0, 3]), torch.tensor([1, 2]), torch.tensor([2, 4])]

    def distance(i, j):
        return (((embeddings[i] - embeddings[j]) ** 2).sum().item() + 1e-8) ** 0.5

    hinges = [distance(0, 1) - 1.0, 1.4 - distance(0, 2), distance(3, 2) - 1.0, 1.4 - distance(3, 4)]
    assert [h > 0 for h in hinges] == [True, True, True, False]
    total = sum(max(h, 0) for h in hinges)
    loss = MarginLoss(3)(embeddings, labels, indices_tuple=triplets)
    assert loss.item() == pytest.approx(total / 2, rel=1e-6)
    assert loss.item() != pytest.approx(total / 3, rel=1e-3)  # the count of active hinges
    with_nu = MarginLoss(3, nu=0.1)(embeddings, labels, indices_tuple=triplets)
    assert with_nu.item() == pytest.approx(total / 2 + 0.1 * (1.2 + 1.2), rel=1e-6)
    assert with_nu.item() != pytest.approx((total + 0.1 * 2.4) / 2, rel=1e-3)  # nu inside the division


def test_forward_mines_with_the_miners_seeded_generator():
    embeddings, labels = random_batch(4, 4, seed=3)
    criterion = MarginLoss(4, miner=DistanceMiner(seed=11))
    torch.manual_seed(0)
    loss = criterion(embeddings, labels)
    triplets = distance_weighted_triplets(embeddings, labels, generator=torch.Generator().manual_seed(11))
    torch.testing.assert_close(loss, criterion(embeddings, labels, indices_tuple=triplets))


def test_no_triplets_gives_zero_with_gradient():
    embeddings, labels = random_batch(4, 4, seed=3)
    no_triplets = [torch.tensor([], dtype=torch.long)] * 3
    loss = MarginLoss(4, nu=0.1)(embeddings, labels, indices_tuple=no_triplets)
    loss.backward()
    assert loss.item() == 0 and torch.equal(embeddings.grad, torch.zeros_like(embeddings))


def test_a_batch_of_one_class_gives_zero():
    embeddings, _ = random_batch(1, 6, seed=3)
    loss = MarginLoss(4, miner=DistanceMiner())(embeddings, torch.zeros(6, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0 and torch.equal(embeddings.grad, torch.zeros_like(embeddings))


def test_beta_is_learnable_at_its_own_learning_rate():
    criterion = MarginLoss(5, beta=1.2, beta_lr=0.0005)
    (group,) = criterion.param_groups(1e-5)
    assert group['lr'] == 0.0005 and group['params'][0] is criterion.beta
    assert torch.equal(criterion.beta.detach(), torch.full((5,), 1.2))


def test_constant_beta_is_not_optimised():
    criterion = MarginLoss(5, beta=1.1, beta_constant=True)
    assert criterion.param_groups(1e-5) == [] and list(criterion.parameters()) == []
    embeddings, labels = random_batch(5, 2, seed=4)
    triplets = distance_weighted_triplets(embeddings, labels, generator=torch.Generator().manual_seed(0))
    as_list = triplet_list(triplets)
    expected = margin_reference(embeddings, labels, as_list, torch.full((5,), 1.1, dtype=torch.float64), 0.2, 0.0)
    torch.testing.assert_close(criterion(embeddings, labels, indices_tuple=triplets), expected, rtol=1e-6, atol=0)


def test_half_precision_input_gives_float32_loss():
    embeddings, labels = random_batch(4, 4, seed=5)
    half = embeddings.detach().to(torch.bfloat16)
    loss = MarginLoss(4, miner=DistanceMiner(seed=12))(half, labels)
    assert loss.dtype == torch.float32
    generator = torch.Generator().manual_seed(12)
    triplets = triplet_list(distance_weighted_triplets(half, labels, generator=generator))
    expected = margin_reference(half.double(), labels, triplets, torch.full((4,), 1.2, dtype=torch.float64), 0.2, 0.0)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=0)
