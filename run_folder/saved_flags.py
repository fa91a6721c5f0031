"""The flags of a saved run: completed with the flags it predates, and those that decide how it embeds an image."""

# What runs saved before a flag existed did; a flag missing here takes today's default.
BEFORE_FLAG_EXISTED = {'data_sampler': 'class_distinct', 'full_decode': True, 'pil_resampling': True}

EVALUATION_SETTINGS = ('arch', 'embed_dim', 'image_size', 'augmentation', 'full_decode', 'pil_resampling')
"""What a checkpoint's embedding of an image needs: its network and its evaluation pipeline. Taken from our
checkpoints' config unless given, so a checkpoint embeds as its run evaluated."""
PIPELINE_SETTINGS = EVALUATION_SETTINGS[2:]
"""The evaluation pipeline alone: what the images look like when they reach the network."""
SETTING_TYPES = {'embed_dim': int, 'image_size': int, 'full_decode': bool, 'pil_resampling': bool}


def with_missing_flags(config, defaults):
    """A run's flags (`config`) completed with the flags it predates: what runs did before the flag existed, else
    the flag's value in `defaults`."""
    return {**{name: BEFORE_FLAG_EXISTED.get(name, value) for name, value in defaults.items()}, **config}


def config_of(checkpoint):
    """The config dict a checkpoint of ours carries; None for the authors' net.pth files (and anything else)."""
    config = checkpoint.get('config') if isinstance(checkpoint, dict) else None
    return config if isinstance(config, dict) else None


def evaluation_settings(config, given, defaults):
    """({setting: value} of EVALUATION_SETTINGS, {setting: value} restored from `config`): `given` (the flags set
    on the command line) over the checkpoint's `config` (completed with the flags it predates) over `defaults`.
    Without a config (the authors' files) nothing is restored."""
    restored = {}
    if config is not None:
        config = with_missing_flags(config, defaults)
        restored = {name: config[name] for name in EVALUATION_SETTINGS if name not in given and name in config}
    settings = {}
    for name in EVALUATION_SETTINGS:
        value = given[name] if name in given else restored[name] if name in restored else defaults[name]
        settings[name] = SETTING_TYPES.get(name, str)(value)
    return settings, restored
