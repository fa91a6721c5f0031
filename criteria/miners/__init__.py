"""Batch miners: which tuples of a batch a tuple-based loss sees; `build(name, opt, ...)` makes one.

Each miner is one module in this package, listed in MODULES, that describes itself:
- NAME: the --batch_mining value;
- OPTIONS: {keyword: opt attribute} of the flags its constructor takes;
- LOSS_OPTIONS (optional): keywords its constructor takes from the loss's own settings (e.g. semihard's margin);
- add_flags(group) (optional): its flags, with the authors' names and defaults;
- MINER: the class, a criteria.miners.base.Miner, constructed with those keywords and `seed`.
"""
from criteria.miners import distance, semihard

MODULES = {module.NAME: module for module in (distance, semihard)}


def add_flags(group):
    """Every miner's own flags."""
    for module in MODULES.values():
        if hasattr(module, 'add_flags'):
            module.add_flags(group)


def build(name, opt, seed, loss_options):
    """The miner `name` with its flags from `opt`, the loss's settings it needs from `loss_options` and `seed`."""
    module = MODULES[name]
    options = {keyword: getattr(opt, dest) for keyword, dest in module.OPTIONS.items()}
    options.update({keyword: loss_options[keyword] for keyword in getattr(module, 'LOSS_OPTIONS', ())})
    return module.MINER(**options, seed=seed)
