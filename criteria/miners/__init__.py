"""Batch miners: which tuples of a batch a tuple-based loss sees; `build(name, opt, ...)` makes one.

Each miner is one module in this package, listed in MODULES, that describes itself:
- NAME: the --batch_mining value;
- OPTIONS: {keyword: opt attribute} of the flags its constructor takes;
- LOSS_OPTIONS (optional): keywords its constructor takes from the loss's own settings where the loss has them
  (e.g. semihard's margin);
- add_flags(group) (optional): its flags, with the authors' names and defaults;
- MINER: the class, a criteria.miners.base.Miner, constructed with those keywords and `seed`.

A triplet miner returns (anchors, positives, negatives), three index tensors of equal length. The npair miner returns
(anchors, positives, negatives) with negatives an anchors x batch boolean mask, the lifted miner (anchors,
positives, negatives) with both sets such masks.
"""
from criteria.miners import (distance, intra_random, lifted, npair, random, random_distance, rho_distance, semihard,
                             softhard)

MODULES = {module.NAME: module for module in (random, semihard, softhard, distance, rho_distance, random_distance,
                                              intra_random, npair, lifted)}
DEFAULT = 'distance'
"""The authors' default --batch_mining."""
TRIPLET_MINERS = ('random', 'semihard', 'softhard', 'distance', 'rho_distance', 'random_distance', 'intra_random')
"""The miners that give triplets: those the authors' triplet-based losses (triplet, margin, contrastive, snr,
quadruplet) can use; npair and lifted give sets, which those losses misread or crash on."""
LEFT_OUT = {'parametric': 'the authors\' parametric miner is not available here: it crashes in their code (it reads '
                          'flags their parser does not define)'}


def add_flags(group):
    """--batch_mining and every miner's own flags."""
    group.add_argument('--batch_mining', default=None, metavar='MINER',
                       help=f'Batch miner of the tuple-based losses: one of {", ".join(MODULES)} (default: '
                            f'{DEFAULT}, or the loss\'s own where it takes no other: lifted, npair); losses '
                            f'without a miner ignore it.')
    for module in MODULES.values():
        if hasattr(module, 'add_flags'):
            module.add_flags(group)


def build(name, opt, seed, loss_options):
    """The miner `name` with its flags from `opt`, the loss's settings it needs from `loss_options` and `seed`."""
    module = MODULES[name]
    options = {keyword: getattr(opt, dest) for keyword, dest in module.OPTIONS.items()}
    options.update({keyword: loss_options[keyword] for keyword in getattr(module, 'LOSS_OPTIONS', ())
                    if keyword in loss_options})
    return module.MINER(**options, seed=seed)
