"""Checkpoints: ours (state dict + plain config) and the authors' released net.pth files.

Everything is read with torch.load(weights_only=True): a checkpoint that carries pickled code is refused,
and its code never runs.
"""
import os
import pickle
import re
import sys
import zipfile

import torch

from plumbing.errors import UserError
from plumbing.files import atomic_torch_save

FORMAT = 'obd_sd-checkpoint-1'
PLAIN_TYPES = (str, int, float, bool, type(None))
CHECKPOINT_STARTS = (b'PK\x03\x04', b'\x80')  # torch.save's zip archive; its legacy pickle


def plain_config(opt):
    """The flags of a run as a plain dict (no objects, nothing secret) for checkpoints and summaries."""
    def plain(value):
        if isinstance(value, PLAIN_TYPES):
            return value
        if isinstance(value, (list, tuple)) and all(isinstance(v, PLAIN_TYPES) for v in value):
            return list(value)
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        return str(value)
    return {key: plain(value) for key, value in sorted(vars(opt).items()) if 'key' not in key.lower()}


def save_checkpoint(path, model, config, epoch, metrics, training_state=None):
    """Write a checkpoint atomically: weights, plain config, epoch, metrics (+ what resuming needs)."""
    checkpoint = {'format': FORMAT, 'state_dict': model.state_dict(), 'config': config,
                  'epoch': epoch, 'metrics': metrics}
    if training_state is not None:
        checkpoint['training_state'] = training_state
    atomic_torch_save(checkpoint, path)


def read_checkpoint(path):
    """torch.load(weights_only=True) with one-line errors for missing, damaged, foreign and code-carrying files."""
    try:
        with open(path, 'rb') as stream:
            head = stream.read(4)
    except FileNotFoundError:
        raise UserError(f'no checkpoint at {path}; check the path') from None
    except IsADirectoryError:
        raise UserError(f'{path} is a folder, not a checkpoint file') from None
    except OSError as error:
        raise UserError(f'cannot read {path} ({error.strerror})') from None
    if not head.startswith(CHECKPOINT_STARTS):
        what = 'an empty file' if not head else 'neither a zip archive nor a pickle'
        raise UserError(f'{path} is not a PyTorch checkpoint ({what}); pass a .pth file written by torch.save')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as error:
        code = re.search(r'unsupported\s+(?:global|class)\W*(?:GLOBAL\s+)?([\w.]*)', str(error), re.IGNORECASE)
        if code and not breaks_off(code.group(1)):
            named = f' ({code.group(1)})' if code.group(1) else ''
            raise UserError(f'{path} carries pickled Python objects{named} whose loading could run code, so it is '
                            f'refused; re-save it as a plain state dict') from None
        raise UserError(damage_of(path, head, error, ends_early=bool(code))) from None
    except Exception as error:
        raise UserError(damage_of(path, head, error)) from None


def breaks_off(name):
    """Whether the global `name` ('module.attribute') that a pickle asks for was cut off mid-way, as in a legacy
    checkpoint cut short: the attribute is empty, or its module is loaded here and has no such attribute. (Nothing
    is imported: the file is untrusted.)"""
    module, _, attribute = name.rpartition('.')
    return not attribute or (module in sys.modules and not hasattr(sys.modules[module], attribute))


def damage_of(path, head, error, ends_early=False):
    """The one-line error of a checkpoint torch cannot read: cut short (its end is missing: an interrupted save,
    copy or download), or damaged otherwise. `ends_early`: the pickle broke off in a name."""
    size = os.path.getsize(path)
    cut_short = f'{path} is cut short ({size:,} bytes, its end is missing): a save, copy or download of it was ' \
                f'interrupted; copy it again, or use another checkpoint'
    if head.startswith(b'PK'):
        try:
            with zipfile.ZipFile(path) as archive:
                broken = archive.testzip()
        except zipfile.BadZipFile:  # no end-of-archive record: the archive stops before its end
            return cut_short
        except (OSError, EOFError, RuntimeError):
            broken = None
        if broken is not None:
            return f'{path} is damaged: its part {broken} fails its checksum; copy it again, or use another checkpoint'
    elif ends_early or isinstance(error, EOFError) or re.search(r'EOF|unpack requires|truncated', str(error)):
        return cut_short
    return f'{path} is damaged ({torch_reason(error)}); copy it again, or use another checkpoint'


def torch_reason(error):
    """The first sentence of torch's message, without its long notice about weights_only."""
    text = str(error).strip()
    if not text or text.startswith('Weights only load failed'):
        return f'{type(error).__name__}, the file cannot be unpickled'
    return re.split(r'(?<=\.)\s', text.splitlines()[0])[0][:160].rstrip('.')


def weights_of(checkpoint, path):
    """The model state dict inside ours, a {'state_dict': ...} wrapper, or the authors' plain net.pth."""
    if not isinstance(checkpoint, dict):
        raise UserError(f'{path} holds a {type(checkpoint).__name__}, not a state dict')
    state = checkpoint.get('state_dict', checkpoint)
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f'{path} holds no model weights (no tensors in its state dict)')
    state = {k.removeprefix('module.'): v for k, v in state.items()}
    # The authors' Network also registered model.layer1..4 as `layer_blocks`: the same tensors a second time.
    return {k: v for k, v in state.items() if not k.startswith('layer_blocks.')}


def load_weights(model, path):
    """Load our checkpoint or the authors' net.pth into `model` strictly; returns the checkpoint's metadata."""
    return load_checkpoint_into(model, read_checkpoint(path), path)


def load_checkpoint_into(model, checkpoint, path):
    """load_weights for a checkpoint already read from `path`."""
    state = weights_of(checkpoint, path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    arch = getattr(model, 'arch', type(model).__name__)
    if not set(state) & set(expected):
        named = ', '.join(sorted(state)[:3]) + (', ...' if len(state) > 3 else '')
        raise UserError(f'{path} holds {len(state)} tensors ({named}) and none of the {len(expected)} weights of an '
                        f'--arch {arch} network: it is not a checkpoint of an embedding network; pass one that main.py '
                        f'wrote (best_e_recall@1.pth, last.pth) or the authors\' net.pth, with the --arch it was '
                        f'trained with')
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise UserError(f'{path} was made for another architecture than --arch {arch} '
                        f'({len(missing)} weights missing, {len(unexpected)} unexpected, e.g. {example}); '
                        f'pass the --arch it was trained with')
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            if key.endswith('last_linear.weight'):
                raise UserError(f'{path} was made for --embed_dim {tensor.shape[0]}, not {expected[key].shape[0]}; '
                                f'pass --embed_dim {tensor.shape[0]}')
            raise UserError(f'{path} does not fit --arch {arch}: {key} has shape {tuple(tensor.shape)}, '
                            f'expected {tuple(expected[key].shape)}')
    model.load_state_dict(state, strict=True)
    return {k: v for k, v in checkpoint.items() if k != 'state_dict'} if 'format' in checkpoint else {}
