"""ImageNet weights for the backbones: torchvision's cache/download, or an offline file (--pretrained_path).

A download is tried only where the weights are in no local cache and the host that serves them answers a short
connection probe (PROBE_TIMEOUT_S): offline, the run stops in one line within seconds instead of after a minute of
the hub's retries (or a download without timeout that waits for ever).
"""
import os
import socket
import threading
import urllib.parse
import urllib.request

import torch

from plumbing.errors import UserError
from plumbing.lazy import lazy_module

safetensors_torch = lazy_module('safetensors.torch')

PROBE_TIMEOUT_S = 3.0
"""How long the probe waits for a TCP connection to a weights host (name lookup included)."""

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
            return safetensors_torch.load_file(path, device='cpu')
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


def unreachable(url, timeout=PROBE_TIMEOUT_S):
    """'' where a TCP connection to the host of `url` (or to the proxy that the environment names for it) opens
    within `timeout` seconds, name lookup included (nothing is sent); else why not, a phrase for a one-line
    message."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == 'https' else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy = urllib.parse.urlsplit(proxy if '://' in proxy else f'http://{proxy}')
        host, port = proxy.hostname, proxy.port or (443 if proxy.scheme == 'https' else 80)
    failures = []

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except (OSError, ValueError) as error:
            failures.append(getattr(error, 'strerror', None) or str(error) or type(error).__name__)

    probe = threading.Thread(target=connect, daemon=True)  # a name lookup may outlast the socket's timeout
    probe.start()
    probe.join(timeout)
    if probe.is_alive():
        return f'{host} gives no answer within {timeout:g} s'
    return f'{host} cannot be reached: {failures[0]}' if failures else ''


def torch_hub_file(url):
    """Where torch hub's load_state_dict_from_url keeps the download of `url` (its checkpoints folder)."""
    return os.path.join(torch.hub.get_dir(), 'checkpoints', os.path.basename(urllib.parse.urlparse(url).path))


def download_state_dict(url):
    """torch hub's cached download: the cached file without the network; else a download where the host answers
    the probe; else (or where the download fails) a UserError naming the ways out."""
    name = url.rsplit('/', 1)[-1]
    if not os.path.isfile(torch_hub_file(url)):
        why = unreachable(url)
        if why:
            raise unavailable(name, f'not in the cache, and {why}')
    try:
        return torch.hub.load_state_dict_from_url(url, map_location='cpu', weights_only=True)
    except Exception as error:
        raise unavailable(name, type(error).__name__) from None


def imagenet_state_dict(weights, pretrained_path=None, rename=None):
    """torchvision weights enum -> state dict, from --pretrained_path when given (keys renamed by prefix)."""
    if pretrained_path is None:
        return download_state_dict(weights.url)
    state = load_weights_file(pretrained_path)
    for old, new in (rename or {}).items():
        state = {(new + k[len(old):] if k.startswith(old) else k): v for k, v in state.items()}
    return state
