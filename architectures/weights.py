"""ImageNet weights for the backbones: torchvision's cache/download, or an offline file (--pretrained_path)."""
import torch

from plumbing.errors import UserError

BNINCEPTION_URL = 'http://data.lip6.fr/cadene/pretrainedmodels/bn_inception-52deb4733.pth'


def unavailable(what, reason):
    return UserError(
        f'cannot get ImageNet weights for {what} ({reason}); either put the file in the torch hub cache '
        f'({torch.hub.get_dir()}/checkpoints), or pass --pretrained_path FILE, or train from scratch with '
        f'--not_pretrained')


def read_weights_file(path):
    """What a weights file holds (a .safetensors file, else torch.save's formats), loaded without unpickling code."""
    try:
        if str(path).endswith('.safetensors'):
            import safetensors.torch
            return safetensors.torch.load_file(path, device='cpu')
        return torch.load(path, map_location='cpu', weights_only=True)
    except FileNotFoundError:
        raise UserError(f'--pretrained_path {path} does not exist; give the path of an ImageNet weights file') from None
    except Exception as error:
        raise UserError(f'--pretrained_path {path} is not a loadable weights file ({type(error).__name__}); '
                        f'give a plain state-dict file') from None


def load_weights_file(path):
    """A state dict from a weights file, loaded without unpickling code."""
    state = read_weights_file(path)
    if not isinstance(state, dict):
        raise UserError(f'--pretrained_path {path} holds no state dict; give a plain state-dict file')
    return state.get('state_dict', state)


def download_state_dict(url):
    """torch hub's cached download; offline, a UserError naming the ways out."""
    try:
        return torch.hub.load_state_dict_from_url(url, map_location='cpu', weights_only=True)
    except Exception as error:
        raise unavailable(url.rsplit('/', 1)[-1], type(error).__name__) from None


def imagenet_state_dict(weights, pretrained_path=None, rename=None):
    """torchvision weights enum -> state dict, from --pretrained_path when given (keys renamed by prefix)."""
    if pretrained_path is None:
        return download_state_dict(weights.url)
    state = load_weights_file(pretrained_path)
    for old, new in (rename or {}).items():
        state = {(new + k[len(old):] if k.startswith(old) else k): v for k, v in state.items()}
    return state
