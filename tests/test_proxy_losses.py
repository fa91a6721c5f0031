"""The proxy and classification losses (proxynca, softmax, arcface, softtriplet, proxyanchor): loss and gradients
against loop references of the authors' math, the numbers the reference files computed, degenerate batches, precision,
OBD-SD on each, seeded starts and the optimiser groups their parameters train in."""
import json
import math
import os

import pytest
import torch

import criteria
import parameters
from criteria.obd_sd import diffuse, distillation_loss, distillation_weight, similarity_targets
from engine.optimization import build_optimizer, build_scheduler
from plumbing.errors import UserError
from proxy_references import AUTHORS_LOOPS
from test_optimization import TinyEmbedder

NAMES = tuple(AUTHORS_LOOPS)
FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'authors_proxy_losses.json')
PARAMETER_OF_FIXTURE = {'proxynca': 'proxies', 'softmax': 'class_map', 'arcface': 'class_map',
                        'softtriplet': 'centroids', 'proxyanchor': 'proxies'}


def settings(name, seed):
    """Constructor settings of loss `name`, the defaults for seed 0 and others for the rest."""
    pick = seed % 3
    return {
        'proxynca': {},
        'softmax': {'temperature': (0.05, 0.1, 0.5)[pick]},
        'arcface': {'angular_margin': (0.5, 0.3, 0.2)[pick], 'feature_scale': (16.0, 30.0, 8.0)[pick]},
        'softtriplet': {'n_centroids': (2, 3, 1)[pick], 'gamma': (0.1, 0.2, 0.05)[pick], 'lam': (8.0, 20.0, 5.0)[pick],
                        'margin_delta': (0.01, 0.1, 0.2)[pick], 'reg_weight': (0.2, 0.5, 0.2)[pick]},
        'proxyanchor': {'alpha': (32.0, 16.0, 8.0)[pick], 'delta': (0.1, 0.2, 0.0)[pick]},
    }[name]


def make_loss(name, n_classes, embed_dim, seed=0, **overrides):
    """Loss `name` in float64."""
    module = criteria.MODULES[name]
    options = {**settings(name, seed), **overrides}
    return module.LOSS(n_classes=n_classes, embed_dim=embed_dim, seed=seed, **options).double()


def only_parameter(criterion):
    (parameter,) = criterion.parameters()
    return parameter


def random_case(seed):
    """(embeddings, labels, n_classes): 3-7 classes, some absent from the batch, 2-4 samples of each present one;
    the embeddings L2-normalised (even seeds) or of lengths 0.5-2 (odd seeds: the losses that take the embedding as
    given must not normalise it)."""
    generator = torch.Generator().manual_seed(seed)
    n_classes = 3 + seed % 5
    present = torch.randperm(n_classes, generator=generator)[:max(1, n_classes - 1 - seed % 2)]
    labels = present.repeat_interleave(2 + seed % 3)
    labels = labels[torch.randperm(len(labels), generator=generator)]
    dim = 8 + 4 * (seed % 3)
    embeddings = torch.nn.functional.normalize(torch.randn(len(labels), dim, generator=generator,
                                                           dtype=torch.float64), dim=1)
    if seed % 2:
        embeddings = embeddings * (0.5 + 1.5 * torch.rand(len(labels), 1, generator=generator, dtype=torch.float64))
    return embeddings, labels, n_classes


def randomise_parameters(criterion, seed):
    """Parameters away from their start (classes far from and near the samples), from `seed`."""
    generator = torch.Generator().manual_seed(1000 + seed)
    parameter = only_parameter(criterion)
    with torch.no_grad():
        parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64))


def loss_and_gradients(loss_fn, embeddings, parameter):
    leaf = embeddings.detach().clone().requires_grad_()
    loss = loss_fn(leaf)
    grad_embeddings, grad_parameter = torch.autograd.grad(loss, [leaf, parameter])
    return loss.detach(), grad_embeddings, grad_parameter


def assert_matches_reference(name, criterion, embeddings, labels):
    parameter = only_parameter(criterion)
    ours = loss_and_gradients(lambda x: criterion(x, labels), embeddings, parameter)
    expected = loss_and_gradients(lambda x: AUTHORS_LOOPS[name](x, labels, None, criterion), embeddings, parameter)
    torch.testing.assert_close(ours[0], expected[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours[1], expected[1], rtol=1e-8, atol=1e-11)
    torch.testing.assert_close(ours[2], expected[2], rtol=1e-8, atol=1e-11)
    return ours


@pytest.mark.parametrize('seed', range(10))
@pytest.mark.parametrize('name', NAMES)
def test_loss_and_gradients_match_the_loop_reference(name, seed):
    embeddings, labels, n_classes = random_case(seed)
    criterion = make_loss(name, n_classes, embeddings.shape[1], seed=seed)
    randomise_parameters(criterion, seed)
    loss, grad_embeddings, grad_parameter = assert_matches_reference(name, criterion, embeddings, labels)
    assert loss.item() > 0 and grad_embeddings.abs().sum() > 0 and grad_parameter.abs().sum() > 0


@pytest.mark.parametrize('name', NAMES)
def test_the_values_the_reference_files_computed(name):
    """On one batch, what the authors' file (softtriplet: the paper's code; proxyanchor: Kim et al.'s) computed when
    run, at the authors' default flags (tests/fixtures/authors_proxy_losses.json says how)."""
    with open(FIXTURE) as stream:
        fixture = json.load(stream)
    embeddings = torch.tensor(fixture['embeddings'], dtype=torch.float64)
    labels = torch.tensor(fixture['labels'])
    criterion = make_loss(name, fixture['n_classes'], embeddings.shape[1])
    with torch.no_grad():
        getattr(criterion, PARAMETER_OF_FIXTURE[name]).copy_(torch.tensor(fixture[PARAMETER_OF_FIXTURE[name]],
                                                                          dtype=torch.float64))
    computed = fixture['computed'][name]
    loss, grad_embeddings, grad_parameter = loss_and_gradients(lambda x: criterion(x, labels), embeddings,
                                                               only_parameter(criterion))
    if name == 'softmax':  # its parameter is held transposed (pytorch-metric-learning's W)
        grad_parameter = grad_parameter.T
    assert loss.item() == pytest.approx(computed['loss'], rel=1e-11)
    torch.testing.assert_close(grad_embeddings, torch.tensor(computed['grad_embeddings'], dtype=torch.float64),
                               rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grad_parameter, torch.tensor(computed['grad_parameter'], dtype=torch.float64),
                               rtol=1e-9, atol=1e-12)
    if name == 'softtriplet':  # the authors' file, made to run past its crash, computes something else
        assert abs(loss.item() - fixture['computed']['softtriplet_authors_file_past_its_crash']['loss']) > 1


@pytest.mark.parametrize('name', NAMES)
def test_a_batch_of_one_class(name):
    embeddings, _, _ = random_case(1)
    labels = torch.full((len(embeddings),), 2)
    criterion = make_loss(name, 4, embeddings.shape[1])
    randomise_parameters(criterion, 1)
    loss, _, _ = assert_matches_reference(name, criterion, embeddings, labels)
    assert torch.isfinite(loss)


@pytest.mark.parametrize('name', NAMES)
def test_duplicated_samples(name):
    """The same embedding (and label) repeated: each copy counts as a sample, as in the loops."""
    embeddings, labels, n_classes = random_case(4)
    embeddings = torch.cat([embeddings, embeddings[:3], embeddings[:1]])
    labels = torch.cat([labels, labels[:3], labels[:1]])
    criterion = make_loss(name, n_classes, embeddings.shape[1])
    randomise_parameters(criterion, 4)
    assert_matches_reference(name, criterion, embeddings, labels)


@pytest.mark.parametrize('name', NAMES)
def test_zero_embeddings(name):
    """A collapsed network: finite loss and gradients, as the loops give (normalising a zero vector keeps it 0)."""
    labels = torch.tensor([0, 0, 1, 1, 3])
    embeddings = torch.zeros(len(labels), 8, dtype=torch.float64)
    criterion = make_loss(name, 5, 8)
    randomise_parameters(criterion, 5)
    loss, grad_embeddings, grad_parameter = assert_matches_reference(name, criterion, embeddings, labels)
    assert torch.isfinite(loss) and torch.isfinite(grad_embeddings).all() and torch.isfinite(grad_parameter).all()


@pytest.mark.parametrize('name', NAMES)
def test_a_class_absent_from_the_batch_still_learns_as_a_negative(name):
    """Class 4 has no sample: its parameters get the gradient of being another class's negative (arcface: unless
    every cosine to it is clamped, which these embeddings, close to its row, avoid)."""
    generator = torch.Generator().manual_seed(6)
    criterion = make_loss(name, 5, 8)
    randomise_parameters(criterion, 6)
    labels = torch.tensor([0, 0, 1, 2, 2, 3])
    rows = criterion.centroids.T[8:10] if name == 'softtriplet' else getattr(criterion, PARAMETER_OF_FIXTURE[name])[4:5]
    near = torch.nn.functional.normalize(rows.detach().mean(0), dim=0)
    embeddings = torch.nn.functional.normalize(
        near + 0.3 * torch.randn(len(labels), 8, generator=generator, dtype=torch.float64), dim=1)
    _, _, grad_parameter = assert_matches_reference(name, criterion, embeddings, labels)
    absent = grad_parameter[:, 8:10] if name == 'softtriplet' else (
        grad_parameter.T if name == 'softmax' else grad_parameter)[4]
    assert absent.abs().sum() > 0


@pytest.mark.parametrize('name', NAMES)
def test_a_label_beyond_the_classes_is_an_error(name):
    criterion = make_loss(name, 3, 8)
    with pytest.raises((IndexError, RuntimeError)):
        criterion(torch.randn(4, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 3]))


@pytest.mark.parametrize('name', NAMES)
def test_low_precision_embeddings_give_float32_loss_and_parameters(name):
    """As under --amp: bfloat16 embeddings, float32 loss arithmetic; the parameters stay float32."""
    embeddings, labels, n_classes = random_case(2)
    criterion = criteria.MODULES[name].LOSS(n_classes=n_classes, embed_dim=embeddings.shape[1])
    half = embeddings.to(torch.bfloat16).requires_grad_()
    loss = criterion(half, labels)
    loss.backward()
    parameter = only_parameter(criterion)
    assert loss.dtype == torch.float32 and parameter.dtype == torch.float32 and parameter.grad.dtype == torch.float32
    expected = criterion(half.detach().float(), labels)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)


def loss_opt(**overrides):
    """main.py's flags at their defaults, with `overrides`."""
    opt = parameters.build_parser().parse_args([])
    vars(opt).update(overrides)
    return opt


@pytest.mark.parametrize('name', NAMES)
def test_obd_sd_variant_adds_the_distillation_term(name):
    opt = loss_opt(PSD=True, OBDP=True, diffusion_w=0.3, kd_lambda=5.0, n_epochs=4, embed_dim=8)
    wrapped = criteria.select(f'{name}_obd_sd', opt, n_classes=5)
    base = criteria.select(name, loss_opt(embed_dim=8), n_classes=5)
    assert torch.equal(only_parameter(wrapped), only_parameter(base))  # the same seeded start
    generator = torch.Generator().manual_seed(8)
    embeddings = torch.nn.functional.normalize(torch.randn(10, 8, generator=generator), dim=1).requires_grad_()
    teacher = torch.nn.functional.normalize(embeddings.detach() + 0.1 * torch.randn(10, 8, generator=generator), dim=1)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 0, 1])
    loss = wrapped(embeddings, labels, teacher_batch=teacher, epoch=2)
    targets = diffuse(similarity_targets(teacher, opt.kd_tau), teacher, opt.diffusion_w, opt.diffusion_tau)
    expected = base(embeddings, labels) + distillation_weight(2, 4, 5.0, opt.kd_tau) * distillation_loss(
        embeddings, targets, opt.kd_tau)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert only_parameter(wrapped).grad.abs().sum() > 0 and torch.isfinite(embeddings.grad).all()
    assert wrapped.param_groups(1e-4)[0]['params'] == [only_parameter(wrapped)]


def test_flag_defaults_are_the_authors():
    opt = loss_opt()
    assert (opt.loss_proxynca_lrmulti, opt.loss_softmax_lr, opt.loss_softmax_temperature) == (50, 1e-5, 0.05)
    assert (opt.loss_arcface_lr, opt.loss_arcface_angular_margin, opt.loss_arcface_feature_scale) == (5e-4, 0.5, 16)
    assert (opt.loss_softtriplet_n_centroids, opt.loss_softtriplet_margin_delta, opt.loss_softtriplet_gamma,
            opt.loss_softtriplet_lambda, opt.loss_softtriplet_reg_weight, opt.loss_softtriplet_lrmulti) == (
        2, 0.01, 0.1, 8, 0.2, 1)
    assert (opt.loss_proxyanchor_alpha, opt.loss_proxyanchor_delta, opt.loss_proxyanchor_lrmulti) == (32, 0.1, 100)


@pytest.mark.parametrize('flag, value', [('--loss_softmax_temperature', '0'), ('--loss_arcface_feature_scale', '-1'),
                                         ('--loss_softtriplet_n_centroids', '0'), ('--loss_softtriplet_gamma', '0'),
                                         ('--loss_proxynca_lrmulti', '-2'), ('--loss_proxyanchor_alpha', '0')])
def test_impossible_values_are_one_line_errors(flag, value, capsys):
    with pytest.raises(SystemExit) as stop:
        parameters.build_parser(prog='main.py').parse_args([flag, value])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and flag in err and value in err


@pytest.mark.parametrize('name', NAMES)
def test_parameters_start_from_the_run_seed_and_leave_the_global_generator_alone(name):
    state = torch.random.get_rng_state()
    first, again = (criteria.select(name, loss_opt(seed=3), n_classes=100) for _ in range(2))
    other = criteria.select(name, loss_opt(seed=4), n_classes=100)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(only_parameter(first), only_parameter(again))
    assert not torch.equal(only_parameter(first), only_parameter(other))


def test_the_starts_are_the_authors_distributions():
    """proxynca N(0, 1/8²); class maps U(±1/√d); softtriplet U(±1/√(C·K)); proxyanchor kaiming normal, fan_out."""
    opt = loss_opt(embed_dim=128)
    start = {name: only_parameter(criteria.select(name, opt, n_classes=100)).detach() for name in NAMES}
    assert start['proxynca'].shape == (100, 128) and start['proxynca'].std().item() == pytest.approx(1 / 8, rel=0.03)
    for name, shape, bound in (('softmax', (128, 100), 1 / math.sqrt(128)), ('arcface', (100, 128), 1 / math.sqrt(128)),
                               ('softtriplet', (128, 200), 1 / math.sqrt(200))):
        assert start[name].shape == shape and start[name].abs().max().item() <= bound, name
        assert start[name].std().item() == pytest.approx(bound / math.sqrt(3), rel=0.03), name
    assert start['proxyanchor'].shape == (100, 128)
    assert start['proxyanchor'].std().item() == pytest.approx(math.sqrt(2 / 100), rel=0.03)


RATES = {'proxynca': (0.001 * 50, 0.0), 'softmax': (1e-5, 0.0), 'arcface': (5e-4, 0.0),
         'softtriplet': (0.001 * 1, 0.0), 'proxyanchor': (0.001 * 100, 0.1)}
"""{loss: (learning rate, weight decay) of its parameters} at --lr 0.001 --decay 0.1 and the loss flags' defaults."""


@pytest.mark.parametrize('optim', ['adam', 'adamw', 'sgd'])
@pytest.mark.parametrize('name', NAMES)
def test_optimiser_trains_the_parameters_at_the_authors_rates(name, optim):
    model = TinyEmbedder()
    criterion = criteria.select(name, loss_opt(embed_dim=8, lr=0.001), n_classes=5)
    optimizer = build_optimizer(model, criterion, optim=optim, lr=0.001, fc_lr=-1, decay=0.1)
    scheduler = build_scheduler(optimizer, milestones=[1], gamma=0.3)
    group = optimizer.param_groups[-1]
    parameter = only_parameter(criterion)
    assert group['params'] == [parameter] and all(parameter is not p for p in model.parameters())
    assert (group['lr'], group['weight_decay']) == pytest.approx(RATES[name])
    assert optimizer.param_groups[0]['weight_decay'] == 0.1

    embeddings = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    criterion(embeddings, torch.tensor([0, 0, 1, 1, 2, 2])).backward()
    before, gradient = parameter.detach().clone(), parameter.grad.clone()
    optimizer.step()
    lr, decay = RATES[name]
    if optim == 'adam':  # the first step of Adam: lr · g / (|g| + eps), decay added to g (L2)
        gradient = gradient + decay * before
        expected = before - lr * gradient / (gradient.abs() + 1e-8)
    elif optim == 'adamw':  # decay apart from the adaptive step
        expected = before * (1 - lr * decay) - lr * gradient / (gradient.abs() + 1e-8)
    else:  # SGD's first step (momentum has nothing to carry yet)
        expected = before - lr * (gradient + decay * before)
    torch.testing.assert_close(parameter.detach(), expected, rtol=0, atol=1e-6)
    assert not torch.equal(parameter.detach(), before)
    scheduler.step()
    assert group['lr'] == pytest.approx(RATES[name][0] * 0.3)  # the schedule decays the loss's rate too


def test_select_passes_every_flag_to_the_constructors():
    opt = loss_opt(embed_dim=12, lr=0.002, loss_proxynca_lrmulti=10.0, loss_softmax_lr=0.003,
                   loss_softmax_temperature=0.2, loss_arcface_lr=0.004, loss_arcface_angular_margin=0.3,
                   loss_arcface_feature_scale=30.0, loss_softtriplet_n_centroids=3, loss_softtriplet_margin_delta=0.05,
                   loss_softtriplet_gamma=0.2, loss_softtriplet_lambda=20.0, loss_softtriplet_reg_weight=0.4,
                   loss_softtriplet_lrmulti=5.0, loss_proxyanchor_alpha=16.0, loss_proxyanchor_delta=0.2,
                   loss_proxyanchor_lrmulti=50.0)
    built = {name: criteria.select(name, opt, n_classes=7) for name in NAMES}
    assert built['proxynca'].proxies.shape == (7, 12)
    assert built['softmax'].temperature == 0.2 and built['softmax'].normalized_softmax.temperature == 0.2
    arcface = built['arcface']
    assert (arcface.angular_margin, arcface.feature_scale, arcface.class_map.shape) == (0.3, 30.0, (7, 12))
    softtriplet = built['softtriplet']
    assert (softtriplet.n_centroids, softtriplet.margin_delta, softtriplet.gamma, softtriplet.lam,
            softtriplet.reg_weight, softtriplet.centroids.shape) == (3, 0.05, 0.2, 20.0, 0.4, (12, 21))
    proxyanchor = built['proxyanchor']
    assert (proxyanchor.alpha, proxyanchor.delta) == (16.0, 0.2)
    assert (proxyanchor.proxy_anchor.alpha, proxyanchor.proxy_anchor.margin) == (16.0, 0.2)
    rates = {name: criterion.param_groups(opt.lr)[0]['lr'] for name, criterion in built.items()}
    assert rates == pytest.approx({'proxynca': 0.02, 'softmax': 0.003, 'arcface': 0.004, 'softtriplet': 0.01,
                                   'proxyanchor': 0.1})


@pytest.mark.parametrize('loss', ['proxyanchor', 'softmax_obd_sd'])
def test_proxy_and_classification_losses_take_one_sample_per_class(loss):
    """They need no positive pair (nor a negative in the batch): --samples_per_class 1, even one class a batch."""
    parameters.parse_args(['--loss', loss, '--samples_per_class', '1', '--bs', '8'])
    parameters.parse_args(['--loss', loss, '--samples_per_class', '4', '--bs', '4'])


@pytest.mark.parametrize('args, message', [
    (['--loss', 'proxynca', '--samples_per_class', '0'], '--samples_per_class must be at least 1, got 0'),
    (['--loss', 'margin', '--samples_per_class', '0'], 'at least 2 for the pair-based loss margin, got 0'),
    (['--loss', 'margin', '--samples_per_class', '1', '--bs', '8'], 'at least 2 for the pair-based loss margin'),
    (['--loss', 'margin', '--samples_per_class', '4', '--bs', '4'], 'gives one class per batch')])
def test_samples_per_class_limits(args, message):
    with pytest.raises(UserError, match=message):
        parameters.parse_args(args)
