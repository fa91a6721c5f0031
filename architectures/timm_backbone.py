"""Any timm model as the backbone, named as timm names it (pretrained tag included), with timm's own weight loading.

The embedding is timm's pooled pre-logits features (`forward_features`, then `forward_head(pre_logits=True)`: the
class token of a ViT, the class and distillation tokens averaged for a distilled DeiT, the pooled map of a CNN), then
`model.last_linear` to embed_dim. Patch models are built at --image_size (`img_size`), so their position embeddings
fit it; timm resamples pretrained position embeddings of another size as it loads them.
Weights: timm's download (Hugging Face Hub or the model's URL; read offline where a local cache holds them, and not
tried where their host does not answer a few seconds' probe), or --pretrained_path: a state dict read here without
unpickling code, handed to timm's loader so that the model's key filter, classifier removal and position-embedding
resampling apply and every other tensor must fit (strict); a JAX .npz goes to the model's own .npz loader.
Input mean and std are the pretrained config's (ImageNet's for DINO, 0.5 for augreg ViTs).
"""
import contextlib
import difflib
import functools
import os

import torch
import torch.nn as nn

from architectures import weights
from architectures.embedding_net import EmbeddingNet
from architectures.weights import read_weights_file
from plumbing.errors import UserError
from plumbing.lazy import lazy_module

# timm (and the Hugging Face Hub client it loads weights with): imported where a timm model is named or built.
timm = lazy_module('timm')
timm_builder = lazy_module('timm.models._builder')
timm_hub = lazy_module('timm.models._hub')
huggingface_hub = lazy_module('huggingface_hub')
hub_constants = lazy_module('huggingface_hub.constants')

STATE_DICT_KEYS = ('state_dict_ema', 'model_ema', 'state_dict', 'model')
"""Where training checkpoints keep their weights, in the order timm's own load_state_dict looks."""


@functools.lru_cache(maxsize=1)
def _pretrained_names():
    return frozenset(timm.list_pretrained())


def is_timm_model(name):
    """Whether timm can build `name`: a timm.list_models() name, with a pretrained tag that timm has if one is given."""
    architecture, tag = timm.models.split_model_name_tag(name)
    return timm.is_model(architecture) and (not tag or name in _pretrained_names())


def close_matches(name):
    """'; close matches: a, b' for the timm and built-in names nearest `name`, or ''."""
    from architectures import BACKBONES

    candidates = list(dict.fromkeys([*BACKBONES, *timm.list_models(), *sorted(_pretrained_names())]))
    matches = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
    return f'; close matches: {", ".join(matches)}' if matches else ''


def takes_image_size(name):
    """Whether the model is built for one input size (`img_size`, as timm passes it for fixed_input_size models)."""
    config = timm.models.get_pretrained_cfg(name)
    return bool(config and config.fixed_input_size)


def create(name, image_size, **options):
    """timm.create_model without a classifier (num_classes=0), at `image_size` where the model takes one."""
    if takes_image_size(name):
        options['img_size'] = image_size
    return timm.create_model(name, num_classes=0, **options)


@functools.lru_cache(maxsize=8)
def skeleton(name, image_size):
    """The model without weights (on the meta device where it can be built there): what the checks look at."""
    try:
        with torch.device('meta'):
            return create(name, image_size)
    except Exception:
        pass
    try:
        return create(name, image_size)
    except Exception as error:
        raise UserError(f'timm cannot build {name} at --image_size {image_size} ({reason(error)}); '
                        f'choose another --image_size') from None


def patch_size(model):
    """The (height, width) of a patch model's patches, else None."""
    size = getattr(getattr(model, 'patch_embed', None), 'patch_size', None)
    return (size, size) if isinstance(size, int) else size


def has_batchnorm(model):
    return any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules())


def check(name, flags, image_size):
    """Raise UserError (one line) where a flag means nothing for timm's `name`, or `image_size` does not fit it."""
    if 'double' in flags:
        raise UserError(f'--arch {name}_double: _double sums average and max pooling of a ResNet feature map, and a '
                        f'timm backbone gives timm\'s own pooled features; drop _double')
    model = skeleton(name, image_size)
    patch = patch_size(model)
    if patch and (image_size % patch[0] or image_size % patch[1]):
        step = max(patch)
        lower, upper = image_size // step * step, (image_size // step + 1) * step
        raise UserError(f'--image_size {image_size} is not a multiple of the patch size {step} of {name}; use e.g. '
                        f'--image_size {upper if lower < 16 else lower}')
    if 'frozen' in flags and not has_batchnorm(model):
        raise UserError(f'--arch {name}_frozen: _frozen keeps BatchNorm statistics fixed, and {name} has no '
                        f'BatchNorm; drop _frozen')


def reason(error):
    """An exception as a short phrase for a one-line message."""
    text = ' '.join(str(error).split())
    return f'{type(error).__name__}: {text[:200]}' if text else type(error).__name__


def weights_unavailable(name, why):
    """The one-line error for pretrained weights of `name` that cannot be had (`why`: a short phrase)."""
    return UserError(
        f'cannot get the pretrained weights of {name} ({why}); timm downloads them from the Hugging Face Hub '
        f'(cache {hub_constants.HF_HUB_CACHE}, set by HF_HOME) or from their URL (cache '
        f'{torch.hub.get_dir()}/checkpoints, set by TORCH_HOME): put them there, or pass --pretrained_path FILE (.pth, '
        f'.bin, .safetensors or .npz, e.g. DINO\'s dino_deitsmall16_pretrain.pth), or train from scratch with '
        f'--not_pretrained')


def pretrained_source(name):
    """Where timm takes the pretrained weights of `name` from, as timm resolves it: ('hf-hub', (repo id, revision,
    the file names it tries in turn)), ('url', url), or another kind of timm's with its location."""
    kind, location = timm_builder._resolve_pretrained_source(timm.models.get_pretrained_cfg(name).to_dict())
    if kind == 'hf-hub':
        model_id, filename = location if isinstance(location, (list, tuple)) else (location, timm_hub.HF_WEIGHTS_NAME)
        repo, revision = timm_hub.hf_split(model_id)
        names = [filename] if filename.endswith('.safetensors') else [*timm_hub._get_safe_alternatives(filename),
                                                                       filename]
        return kind, (repo, revision, names)
    return kind, location


def hub_cached(repo, revision, names):
    """Whether the Hugging Face cache holds one of the files `names` of `repo` at `revision` (nothing is fetched)."""
    return any(isinstance(huggingface_hub.try_to_load_from_cache(repo, filename, revision=revision), str)
               for filename in names)


@contextlib.contextmanager
def hub_offline():
    """Hugging Face Hub offline mode (HF_HUB_OFFLINE) inside: hf_hub_download returns cached files, asking nothing."""
    before = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = before


@contextlib.contextmanager
def weights_access(name):
    """Around timm's loading of the pretrained weights of `name`: offline where a local cache holds them (the
    network is never touched), as timm does where their host answers the probe, else a UserError at once (instead
    of the hub's minute of retries)."""
    try:
        kind, location = pretrained_source(name)
    except Exception:  # a timm that resolves its sources otherwise: its own loading decides
        kind, location = None, None
    why = where = ''
    if kind == 'hf-hub':
        if hub_cached(*location):
            with hub_offline():
                yield
            return
        if not hub_constants.HF_HUB_OFFLINE:  # in offline mode the hub itself fails at once
            why, where = weights.unreachable(hub_constants.ENDPOINT), 'the Hugging Face cache'
    elif kind == 'url' and not os.path.isfile(weights.torch_hub_file(location)):
        why, where = weights.unreachable(location), 'the torch hub cache'
    if why:
        raise weights_unavailable(name, f'not in {where}, and {why}')
    yield


def file_overlay(name, path):
    """The pretrained_cfg_overlay that makes timm load --pretrained_path `path` into `name` (strictly)."""
    if not os.path.isfile(path):
        raise UserError(f'--pretrained_path {path} does not exist; give the path of a weights file of {name}')
    if path.endswith('.npz'):
        return {'file': path, 'custom_load': True}  # the model's own JAX/Flax loader (np.load without pickles)
    state = read_weights_file(path)
    if isinstance(state, dict):
        state = next((state[key] for key in STATE_DICT_KEYS if isinstance(state.get(key), dict)), state)
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f'--pretrained_path {path} holds no state dict of tensors; give a weights file of {name}')
    state = timm.models.clean_state_dict(state)
    classifiers = timm.models.get_pretrained_cfg(name).classifier or ()
    for classifier in (classifiers,) if isinstance(classifiers, str) else classifiers:
        state.pop(f'{classifier}.weight', None)
        state.pop(f'{classifier}.bias', None)
    # num_classes 0 as our model's: timm then drops nothing more and loads strictly.
    return {'state_dict': state, 'num_classes': 0}


def create_backbone(name, image_size, pretrained, pretrained_path=None):
    """The timm model with its weights: none, timm's download, or --pretrained_path through timm's loader."""
    if not pretrained:
        return create(name, image_size)
    if pretrained_path is None:
        try:
            with weights_access(name):
                return create(name, image_size, pretrained=True)
        except UserError:
            raise
        except Exception as error:
            raise weights_unavailable(name, reason(error)) from None
    overlay = file_overlay(name, pretrained_path)
    try:
        backbone = create(name, image_size, pretrained=True, pretrained_cfg_overlay=overlay)
    except Exception as error:
        raise UserError(f'--pretrained_path {pretrained_path} does not fit --arch {name} ({reason(error)}); give a '
                        f'weights file of {name}') from None
    if backbone.pretrained_cfg.get('state_dict') is not None:
        backbone.pretrained_cfg['state_dict'] = None  # loaded: neither the config nor the teacher's copy keeps the file
    return backbone


class TimmEmbedding(EmbeddingNet):
    """A timm model's pooled pre-logits features -> `model.last_linear` -> optional L2 normalisation.

    frozen_bn: as for the ResNets, for timm models with BatchNorm. input_mean / input_std: the pretrained config's.
    """

    def __init__(self, name, embed_dim, pretrained, pretrained_path=None, normalize=False, frozen_bn=False,
                 image_size=224, arch=None):
        backbone = create_backbone(name, image_size, pretrained, pretrained_path)
        feature_dim = getattr(backbone, 'head_hidden_size', None) or backbone.num_features
        super().__init__(feature_dim, embed_dim, normalize, frozen_bn, False, arch or name, image_size)
        backbone.last_linear = nn.Linear(feature_dim, embed_dim)
        self.model = backbone
        data_config = timm.data.resolve_model_data_config(backbone)
        self.input_mean = tuple(data_config['mean'])
        self.input_std = tuple(data_config['std'])

    def pooled_features(self, x):
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)
