"""Pretrained weights without network: a local cache is read without touching the network (torch hub's checkpoints
folder, the Hugging Face cache), and where nothing is cached and the weights' host does not answer a short probe
the run stops at once in one line, no download tried. No test here leaves the machine: sockets refuse, and the
probe is conftest's (every host unreachable) except where its own logic is tested on a mocked socket."""
import socket
import threading

import pytest
import torch

import architectures
from architectures import timm_backbone, weights
from plumbing.errors import UserError
from runs import one_line_error, run_main

PROBE = weights.unreachable  # the real probe, before conftest's no_weights_host replaces it in each test
VIT = 'vit_tiny_patch16_224'


def refuse(what):
    def refused(*args, **kwargs):
        raise AssertionError(f'{what} called')
    return refused


@pytest.fixture
def no_network(monkeypatch):
    """Any connection or name lookup fails the test."""
    for name in ('create_connection', 'getaddrinfo'):
        monkeypatch.setattr(socket, name, refuse(f'socket.{name}'))
    monkeypatch.setattr(socket.socket, 'connect', refuse('socket.connect'))


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Empty torch hub and Hugging Face caches: {'torch': its checkpoints folder, 'hf': the hub cache}."""
    from huggingface_hub import constants

    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path / 'hf'))
    return {'torch': tmp_path / 'torch' / 'hub' / 'checkpoints', 'hf': tmp_path / 'hf'}


@pytest.fixture
def no_download(monkeypatch):
    """Any download of weights fails the test (torch hub's, timm's loader, the Hugging Face hub's)."""
    import timm.models._builder
    import timm.models._hub

    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', refuse('torch.hub.load_state_dict_from_url'))
    monkeypatch.setattr(timm.models._builder, 'load_pretrained', refuse('timm load_pretrained'))
    monkeypatch.setattr(timm.models._hub, 'hf_hub_download', refuse('hf_hub_download'))


def test_the_probe_says_why_a_host_cannot_be_reached(monkeypatch):
    calls = []

    def refused(address, timeout=None):
        calls.append((address, timeout))
        raise OSError(-2, 'Name or service not known')
    monkeypatch.setattr(socket, 'create_connection', refused)
    why = PROBE('https://huggingface.co/timm', timeout=2)
    assert why == 'huggingface.co cannot be reached: Name or service not known'
    assert calls == [(('huggingface.co', 443), 2)]

    class Connection:
        def __init__(self, address, timeout=None):
            calls.append(address)

        def close(self):
            calls.append('closed')
    monkeypatch.setattr(socket, 'create_connection', Connection)
    calls.clear()
    monkeypatch.setenv('https_proxy', 'http://proxy.cluster:3128')
    monkeypatch.setenv('no_proxy', 'mirror.cluster')
    assert PROBE('https://download.pytorch.org/models/resnet50.pth') == '', 'reachable: nothing to say'
    assert PROBE('https://mirror.cluster/resnet50.pth') == ''
    assert calls == [('proxy.cluster', 3128), 'closed', ('mirror.cluster', 443), 'closed'], 'the proxy is probed'


def test_the_probe_gives_up_on_a_host_that_never_answers(monkeypatch):
    released = threading.Event()

    class Late:
        def __init__(self, address, timeout=None):
            released.wait(30)

        def close(self):
            pass
    monkeypatch.setattr(socket, 'create_connection', Late)
    try:
        assert PROBE('http://data.lip6.fr/x.pth', timeout=0.2) == 'data.lip6.fr gives no answer within 0.2 s'
    finally:
        released.set()


@pytest.mark.parametrize('arch', ['resnet18', 'bninception'])
def test_imagenet_weights_offline_fail_at_once_in_one_line(arch, empty_caches, no_download, no_network):
    with pytest.raises(UserError) as error:
        architectures.build(arch, 8, pretrained=True)
    message = str(error.value)
    assert 'not in the cache, and ' in message and 'cannot be reached: no network in the tests' in message
    assert '--pretrained_path' in message and '--not_pretrained' in message and '\n' not in message


def test_cached_imagenet_weights_load_without_the_network(empty_caches, monkeypatch, no_network):
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cached = empty_caches['torch'] / url.rsplit('/', 1)[-1]
    assert weights.torch_hub_file(url) == str(cached)
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)
    monkeypatch.setattr(weights, 'unreachable', refuse('the probe'))
    model = architectures.build('resnet18', 8, pretrained=True)
    assert torch.equal(model.model.conv1.weight, reference.conv1.weight)


def test_timm_weights_offline_fail_in_one_line_before_anything_is_built(make_cub200, tmp_path, empty_caches,
                                                                         no_download, no_network, capsys):
    """What took 53 s and 22 lines of the hub's retries on a node without network: one line, exit 2."""
    data = make_cub200(n_classes=4, per_class=4)
    code = run_main('--dataset', 'cub200', '--source', data, '--arch', f'{VIT}_normalize', '--n_epochs', 1,
                    '--kernels', 0, '--bs', 8, '--samples_per_class', 2, '--image_size', 32,
                    '--save_path', tmp_path / 'runs')
    message = one_line_error(capsys, code)
    assert (f'cannot get the pretrained weights of {VIT} (not in the Hugging Face cache, and huggingface.co cannot '
            f'be reached: no network in the tests)') in message
    assert '--pretrained_path' in message and '--not_pretrained' in message
    assert not (tmp_path / 'runs').exists(), 'no run folder for a run that cannot start'


def write_hub_cache(cache, repo, filename, state):
    """A Hugging Face cache entry as the hub leaves it: refs/main naming a snapshot that holds `filename`."""
    import safetensors.torch

    commit = '0123456789abcdef0123456789abcdef01234567'
    folder = cache / f'models--{repo.replace("/", "--")}'
    (folder / 'refs').mkdir(parents=True)
    (folder / 'refs' / 'main').write_text(commit)
    (folder / 'snapshots' / commit).mkdir(parents=True)
    path = folder / 'snapshots' / commit / filename
    if filename.endswith('.safetensors'):
        safetensors.torch.save_file(state, str(path))
    else:
        torch.save(state, path)


@pytest.mark.parametrize('filename', ['model.safetensors', 'pytorch_model.bin'])
def test_cached_timm_weights_load_offline_without_the_network(filename, empty_caches, monkeypatch, no_network):
    import timm
    from huggingface_hub import constants

    from timm.models import get_pretrained_cfg

    repo = get_pretrained_cfg(VIT).hf_hub_id  # timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k
    torch.manual_seed(4)
    state = timm.create_model(VIT, img_size=32).state_dict()
    write_hub_cache(empty_caches['hf'], repo, filename, state)
    monkeypatch.setattr(weights, 'unreachable', refuse('the probe'))
    offline_before = constants.HF_HUB_OFFLINE
    network = architectures.build(VIT, 8, pretrained=True, image_size=32)
    for name in ('blocks.0.attn.qkv.weight', 'pos_embed', 'cls_token'):
        assert torch.equal(network.model.state_dict()[name], state[name]), name
    assert constants.HF_HUB_OFFLINE == offline_before, 'offline mode for that call only'


def test_timm_weights_sources_as_timm_resolves_them():
    kind, (repo, revision, names) = timm_backbone.pretrained_source(VIT)
    assert (kind, repo, revision) == ('hf-hub', 'timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k', None)
    assert names == ['model.safetensors', 'pytorch_model.bin'], 'the safetensors first, as timm tries them'


def test_timm_weights_from_a_url_offline_fail_at_once(empty_caches, no_download, no_network):
    name = 'legacy_seresnet18.in1k'
    kind, url = timm_backbone.pretrained_source(name)
    assert kind == 'url' and url.startswith('https://github.com/')
    with pytest.raises(UserError, match=r'not in the torch hub cache, and github.com cannot be reached') as error:
        architectures.build(name, 8, pretrained=True)
    assert '\n' not in str(error.value)
