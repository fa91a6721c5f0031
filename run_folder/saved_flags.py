"""The flags of a saved run: completed with the flags it predates, and those that decide how it embeds an image."""
from plumbing.errors import UserError

# What runs saved before a flag existed did; a flag missing here takes today's default.
BEFORE_FLAG_EXISTED = {'data_sampler': 'class_distinct', 'full_decode': True, 'pil_resampling': True}

EVALUATION_SETTINGS = ('arch', 'embed_dim', 'image_size', 'augmentation', 'full_decode', 'pil_resampling')
"""What a checkpoint's embedding of an image needs: its network and its evaluation pipeline. Taken from our
checkpoints' config unless given, so a checkpoint embeds as its run evaluated."""
PIPELINE_SETTINGS = EVALUATION_SETTINGS[2:]
"""The evaluation pipeline alone: what the images look like when they reach the network."""


def true_or_false(value):
    """A switch's value as a config may hold it: a bool, 0 or 1, or the text true/false (yes/no, 1/0)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in SWITCH_TEXTS:
        return SWITCH_TEXTS[value.strip().lower()]
    raise ValueError(f'{value!r} is not true or false')


SWITCH_TEXTS = {'true': True, 'false': False, 'yes': True, 'no': False, '1': True, '0': False}
SETTING_TYPES = {'embed_dim': int, 'image_size': int, 'full_decode': true_or_false, 'pil_resampling': true_or_false}


def with_missing_flags(config, defaults):
    """A run's flags (`config`) completed with the flags it predates: what runs did before the flag existed, else
    the flag's value in `defaults`."""
    return {**{name: BEFORE_FLAG_EXISTED.get(name, value) for name, value in defaults.items()}, **config}


def config_of(checkpoint):
    """The config dict a checkpoint of ours carries; None for the authors' net.pth files (and anything else)."""
    config = checkpoint.get('config') if isinstance(checkpoint, dict) else None
    return config if isinstance(config, dict) else None


def typed(name, value):
    """`value` of the setting `name` as its flag types it; a UserError for one a config cannot have meant."""
    try:
        return SETTING_TYPES.get(name, str)(value)
    except (TypeError, ValueError):
        raise UserError(f'the checkpoint\'s config gives {name} = {value!r}, which is not a value of --{name}; pass '
                        f'--{name} yourself') from None


def evaluation_settings(config, given, defaults):
    """({setting: value} of EVALUATION_SETTINGS, {setting: value} restored from `config`): `given` (the flags set
    on the command line) over the checkpoint's `config` over `defaults`. Restored are the settings the config holds,
    and those of the flags its run predates (BEFORE_FLAG_EXISTED: what runs did then); a setting the config lacks
    otherwise takes its default and is not restored. Without a config (the authors' files) nothing is restored."""
    restored = {}
    if config is not None:
        completed = {**{name: value for name, value in BEFORE_FLAG_EXISTED.items() if name in EVALUATION_SETTINGS},
                     **config}
        restored = {name: typed(name, completed[name]) for name in EVALUATION_SETTINGS
                    if name not in given and name in completed}
    settings = {name: typed(name, given[name] if name in given else restored[name] if name in restored
                            else defaults[name]) for name in EVALUATION_SETTINGS}
    return settings, restored
