"""timm backbones: names and flags, weights through timm's loader (--pretrained_path), the embedding, normalisation,
and a ViT training the digits demo. Tiny models at 32 px (a 2 x 2 grid of 16-pixel patches), nothing downloaded."""
import pytest
import timm
import torch
import torch.nn.functional as F

import architectures
from datasets.transforms import IMAGENET_MEAN, IMAGENET_STD, normalisation_of, to_network_input
from runs import read_summary, run_main, tiny_run_flags
from plumbing.errors import UserError

VIT = 'vit_tiny_patch16_224'


@pytest.fixture(scope='module')
def timm_weights(tmp_path_factory):
    """A randomly initialised timm ViT-Tiny at 32 px (with its 1000-class head), saved by timm as .pth and
    .safetensors, and without its head in DINO's layout (dino_deitsmall16_pretrain.pth has timm's key names and no
    head), wrapped as a training checkpoint: {'state': its state dict, 'pth' / 'safetensors' / 'dino_layout': path}."""
    import safetensors.torch

    torch.manual_seed(3)
    state = timm.create_model(VIT, img_size=32).state_dict()
    folder = tmp_path_factory.mktemp('timm_weights')
    torch.save(state, folder / 'W.pth')
    safetensors.torch.save_file(state, str(folder / 'W.safetensors'))
    torch.save({'model': backbone_tensors(state), 'epoch': 100}, folder / 'dino_layout.pth')
    return {'state': state, 'pth': str(folder / 'W.pth'), 'safetensors': str(folder / 'W.safetensors'),
            'dino_layout': str(folder / 'dino_layout.pth')}


def backbone_tensors(state):
    return {name: tensor for name, tensor in state.items() if not name.startswith('head.')}


@pytest.mark.parametrize('kind', ['pth', 'safetensors', 'dino_layout'])
def test_a_timm_state_dict_loads_with_every_backbone_tensor_unchanged(timm_weights, kind):
    network = architectures.build(f'{VIT}_normalize', 8, pretrained=True, pretrained_path=timm_weights[kind],
                                  image_size=32)
    loaded = network.state_dict()
    expected = backbone_tensors(timm_weights['state'])
    assert {f'model.{name}' for name in expected} | {'model.last_linear.weight', 'model.last_linear.bias'} == \
        set(loaded)  # the 1000-class head is dropped, as timm drops a classifier
    for name, tensor in expected.items():
        assert torch.equal(loaded[f'model.{name}'], tensor), name


def test_another_image_size_gets_the_position_embeddings_resampled_by_timm(timm_weights):
    from timm.layers import resample_abs_pos_embed

    network = architectures.build(VIT, 8, pretrained=True, pretrained_path=timm_weights['pth'], image_size=64)
    saved = timm_weights['state']['pos_embed']
    assert saved.shape == (1, 1 + 2 * 2, 192) and network.model.pos_embed.shape == (1, 1 + 4 * 4, 192)
    torch.testing.assert_close(network.model.pos_embed.data,
                               resample_abs_pos_embed(saved, new_size=(4, 4), old_size=(2, 2), num_prefix_tokens=1))
    assert torch.equal(network.model.blocks[0].attn.qkv.weight, timm_weights['state']['blocks.0.attn.qkv.weight'])
    assert network(torch.randn(2, 3, 64, 64)).shape == (2, 8)


@pytest.mark.parametrize('name', [VIT, 'deit_tiny_distilled_patch16_224'])
def test_embeddings_are_timms_pre_logits_features_through_the_head(name):
    torch.manual_seed(0)
    network = architectures.build(f'{name}_normalize', 8, pretrained=False, image_size=32).eval()
    reference = timm.create_model(name, img_size=32, num_classes=0).eval()
    reference.load_state_dict({key.removeprefix('model.'): value for key, value in network.state_dict().items()
                               if not key.startswith('model.last_linear.')})
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        tokens = reference.forward_features(x)
        features = reference.forward_head(tokens, pre_logits=True)
        expected = F.normalize(network.model.last_linear(features), dim=-1)
        torch.testing.assert_close(network(x), expected)
    if 'distilled' in name:  # timm averages the class and the distillation token
        torch.testing.assert_close(features, (tokens[:, 0] + tokens[:, 1]) / 2)
    else:
        torch.testing.assert_close(features, tokens[:, 0])


@pytest.mark.parametrize('arch, mean, std', [
    (VIT, (0.5,) * 3, (0.5,) * 3),  # timm's default tag: augreg
    ('vit_small_patch16_224.dino', IMAGENET_MEAN, IMAGENET_STD),
    ('deit_tiny_patch16_224.fb_in1k', IMAGENET_MEAN, IMAGENET_STD),
    ('resnet18', IMAGENET_MEAN, IMAGENET_STD),
])
def test_input_normalisation_comes_from_the_backbones_pretrained_config(arch, mean, std):
    network = architectures.build(arch, 8, pretrained=False, image_size=32)
    assert normalisation_of(network) == (mean, std)
    if arch != 'resnet18':
        assert (mean, std) == tuple(tuple(timm.models.get_pretrained_cfg(arch).to_dict()[k]) for k in ('mean', 'std'))
    images = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 3, 2, 2)
    expected = (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(to_network_input(images, 'cpu', False, *normalisation_of(network)), expected)


def test_evaluation_normalises_with_the_networks_constants():
    import evaluation

    class Recorder(torch.nn.Module):
        input_mean, input_std = (0.5,) * 3, (0.5,) * 3

        def forward(self, x):
            self.seen = x
            return x.flatten(1)

    recorder = Recorder()
    batch = (torch.zeros(1), torch.full((1, 3, 2, 2), 255, dtype=torch.uint8), torch.arange(1))
    evaluation.extract_embeddings(recorder, [batch], 'cpu')
    torch.testing.assert_close(recorder.seen, torch.ones(1, 3, 2, 2))


def test_frozen_on_a_timm_cnn_keeps_its_batchnorm_in_eval_mode():
    network = architectures.build('resnet18.a1_in1k_frozen_normalize', 8, pretrained=False, image_size=32).train()
    batchnorms = [m for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert batchnorms and not any(bn.training for bn in batchnorms)
    assert network(torch.randn(2, 3, 32, 32)).shape == (2, 8)


def test_timm_names_keep_underscores_and_tags_and_the_builtin_names_win():
    assert architectures.parse_arch('vit_small_patch16_224.dino_normalize') == ('vit_small_patch16_224.dino',
                                                                                {'normalize'})
    assert architectures.parse_arch('deit_small_distilled_patch16_224_frozen_normalize')[0] == \
        'deit_small_distilled_patch16_224'
    assert architectures.parse_arch('resnet50_frozen_normalize_double') == ('resnet50', {'frozen', 'normalize',
                                                                                         'double'})
    assert type(architectures.build('resnet18', 8, pretrained=False)).__name__ == 'ResNetEmbedding'


def one_line_error(capsys, code):
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1 and error.startswith('error: '), error
    return error


@pytest.mark.parametrize('overrides, messages', [
    ({'--arch': f'{VIT}_double'}, ['_double sums average and max pooling']),
    ({'--arch': f'{VIT}_frozen_normalize'}, ['has no BatchNorm; drop _frozen']),
    ({'--arch': VIT, '--image_size': 40}, ['--image_size 40 is not a multiple of the patch size 16', '32']),
    ({'--arch': 'vit_tiny_patch16_22_normalize'}, ['unknown --arch', 'timm.list_models()', 'resnet50',
                                                   'close matches: vit_tiny_patch16_224']),
    ({'--arch': 'vit_small_patch16_224.dinno'}, ['unknown --arch', 'close matches: vit_small_patch16_224.dino']),
])
def test_flags_that_do_not_fit_a_timm_backbone_are_one_line_errors(overrides, messages, make_cub200, tmp_path,
                                                                    capsys):
    error = one_line_error(capsys, run_main(*tiny_run_flags(make_cub200(), tmp_path, **overrides)))
    for message in messages:
        assert message in error
    assert not (tmp_path / 'cub200').exists()


def test_damaged_foreign_and_code_carrying_weight_files_are_one_line_errors(tmp_path):
    import torchvision

    damaged, foreign, code = tmp_path / 'damaged.pth', tmp_path / 'resnet.pth', tmp_path / 'code.pth'
    damaged.write_bytes(b'not a weights file' * 10)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), foreign)
    torch.save({'pos_embed': torch.zeros(1), 'hook': torch.nn.Identity()}, code)
    for path, message in [(damaged, 'is not a loadable weights file'), (foreign, 'does not fit --arch'),
                          (code, 'is not a loadable weights file'), (tmp_path / 'missing.pth', 'does not exist')]:
        with pytest.raises(UserError, match=message) as error:
            architectures.build(VIT, 8, pretrained=True, pretrained_path=str(path), image_size=32)
        assert '\n' not in str(error.value)


def test_weights_unavailable_offline_name_the_ways_out(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError('no network')

    monkeypatch.setattr(timm.models._builder, 'load_pretrained', offline)
    with pytest.raises(UserError) as error:
        architectures.build('vit_small_patch16_224.dino', 8, pretrained=True, image_size=32)
    message = str(error.value)
    for way_out in ('Hugging Face', 'HF_HOME', 'TORCH_HOME', '--pretrained_path', 'dino_deitsmall16_pretrain.pth',
                    '--not_pretrained'):
        assert way_out in message
    assert '\n' not in message


def test_digits_defaults_for_a_timm_backbone():
    import parameters

    vit = parameters.parse_args(['--dataset', 'digits', '--arch', VIT, '--pretrained_path', 'W.pth'])
    assert (vit.lr, vit.not_pretrained, vit.image_size) == (parameters.DIGITS_TIMM_LR, False, 32)
    assert vit.applied_defaults['lr'] == parameters.DIGITS_TIMM_LR and 'not_pretrained' not in vit.applied_defaults
    assert parameters.parse_args(['--dataset', 'digits', '--arch', VIT, '--lr', '0.003']).lr == 0.003
    assert parameters.parse_args(['--dataset', 'digits']).lr == 1e-3
    assert parameters.parse_args(['--dataset', 'cub200', '--arch', VIT]).lr == 1e-5


@pytest.mark.slow
def test_a_vit_trains_the_digits_demo_with_obd_sd_and_evaluates_from_its_checkpoint(timm_weights, tmp_path, capsys):
    """The issue's command (`--dataset digits --arch vit_tiny_patch16_224_normalize --pretrained_path W.pth --PSD
    --OBDP`), 2 epochs: the distillation term is on in epoch 1. Test_pretrained_models.py rebuilds the network from
    the checkpoint's config (arch, embed_dim, image size) and gets the run's metrics."""
    import json

    import Test_pretrained_models

    assert run_main('--dataset', 'digits', '--arch', f'{VIT}_normalize', '--pretrained_path', timm_weights['pth'],
                    '--PSD', '--OBDP', '--n_epochs', 2, '--source', tmp_path / 'data', '--save_path', tmp_path) == 0
    summary = read_summary(tmp_path / 'digits' / 'run')
    assert summary['config']['image_size'] == 32 and summary['config']['not_pretrained'] is False
    first, second = summary['history']
    assert first['loss_kd'] == 0 and second['loss_kd'] > 0 and second['kd_weight'] > 0
    assert all(0 < entry['e_recall@1'] <= 1 for entry in summary['history'])

    out = tmp_path / 'evaluated.json'
    assert Test_pretrained_models.main(['--dataset', 'digits', '--source', str(tmp_path / 'data'), '--checkpoint',
                                        str(tmp_path / 'digits' / 'run' / 'best_e_recall@1.pth'), '--out',
                                        str(out)]) == 0
    result = json.loads(out.read_text())['results']['checkpoint']
    assert (result['arch'], result['embed_dim']) == (f'{VIT}_normalize', 64)
    best = max(summary['history'], key=lambda entry: entry['e_recall@1'])
    assert result['metrics']['e_recall@1'] == pytest.approx(best['e_recall@1'], abs=1e-6)
