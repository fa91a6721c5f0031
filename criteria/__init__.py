"""Losses, the OBD-SD distillation wrapper and batch miners; `select(loss, opt, n_classes)` builds one.

Each loss is one module in this package, listed in MODULES, that describes itself:
- NAME: the --loss value; `<NAME>_obd_sd` is the same loss with the OBD-SD term (criteria.obd_sd);
- KIND: 'pair' (tuples of the batch), 'proxy' (learned class proxies) or 'classification' (a learned class map);
- MINERS: the batch miners (criteria.miners) it accepts; empty where it mines its own pairs or needs none;
- OPTIONS: {keyword: opt attribute} of the flags its constructor takes;
- USES_CLASSES (optional, default False): whether its constructor takes `n_classes`, the training classes' count;
- add_flags(group): its flags, with the authors' names and defaults;
- LOSS: the class, a criteria.base.Criterion, constructed with those keywords (and `miner` where MINERS).
"""
from criteria import (arcface, contrastive, margin, miners, multisimilarity, proxyanchor, proxynca, softmax,
                      softtriplet, triplet)
from criteria.obd_sd import ObdSdLoss
from plumbing.errors import UserError

MODULES = {module.NAME: module for module in (multisimilarity, margin, triplet, contrastive, proxynca, softmax, arcface,
                                              softtriplet, proxyanchor)}
OBD_SD_SUFFIX = '_obd_sd'
LOSSES = tuple(MODULES) + tuple(name + OBD_SD_SUFFIX for name in MODULES)


def add_flags(group):
    """Every loss's and miner's own flags."""
    for module in MODULES.values():
        module.add_flags(group)
    miners.add_flags(group)


def check(loss, opt):
    """Raise UserError (one line, what to do) where `loss` is unknown or the distillation flags do not fit it."""
    if loss not in LOSSES:
        raise UserError(f'unknown --loss {loss!r}; choose one of {", ".join(LOSSES)}')
    if opt.OBDP and not opt.PSD:
        raise UserError('--OBDP diffuses the distillation target of --PSD: add --PSD')
    if opt.PSD and not loss.endswith(OBD_SD_SUFFIX):
        raise UserError(f'--PSD needs an OBD-SD loss: use --loss {loss}{OBD_SD_SUFFIX}')


def kind(loss):
    """The KIND of `loss`, one of LOSSES ('pair', 'proxy' or 'classification')."""
    return MODULES[loss.removesuffix(OBD_SD_SUFFIX)].KIND


def build_loss(name, opt, n_classes=None):
    """The loss `name` (a MODULES key, no suffix) with its flags from `opt` and, where it mines, its miner."""
    module = MODULES[name]
    options = {keyword: getattr(opt, dest) for keyword, dest in module.OPTIONS.items()}
    if getattr(module, 'USES_CLASSES', False):
        if n_classes is None:
            raise ValueError(f'the {name} loss has parameters per class: pass n_classes')
        options['n_classes'] = n_classes
    if module.MINERS:
        options['miner'] = miners.build(module.MINERS[0], opt, seed=getattr(opt, 'seed', 0), loss_options=options)
    return module.LOSS(**options)


def select(loss, opt, n_classes=None):
    """The criterion named `loss` (one of LOSSES), configured from the flags in `opt`; `n_classes`, the number of
    training classes, is needed by the losses with parameters per class."""
    check(loss, opt)
    if not loss.endswith(OBD_SD_SUFFIX):
        return build_loss(loss, opt, n_classes)
    return ObdSdLoss(build_loss(loss.removesuffix(OBD_SD_SUFFIX), opt, n_classes), psd=opt.PSD, obdp=opt.OBDP,
                     kd_lambda=opt.kd_lambda, kd_tau=opt.kd_tau, diffusion_w=opt.diffusion_w,
                     diffusion_tau=opt.diffusion_tau, n_epochs=opt.n_epochs)
