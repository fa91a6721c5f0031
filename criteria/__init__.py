"""Losses, the OBD-SD distillation wrapper and batch miners; `select(loss, opt, n_classes)` builds one.

Each loss is one module in this package, listed in MODULES, that describes itself:
- NAME: the --loss value; `<NAME>_obd_sd` is the same loss with the OBD-SD term (criteria.obd_sd);
- KIND: 'pair' (tuples of the batch), 'proxy' (learned class proxies) or 'classification' (a learned class map);
- MINERS: the batch miners (criteria.miners) it accepts, as the authors allow them (less those whose tuples it cannot
  use); empty where it mines its own pairs or needs none (it then ignores --batch_mining);
- OPTIONS: {keyword: opt attribute} of the flags its constructor takes;
- USES_CLASSES (optional, default False): whether its constructor takes `n_classes`, the training classes' count;
- add_flags(group): its flags, with the authors' names and defaults;
- LOSS: the class, a criteria.base.Criterion, constructed with those keywords (and `miner` where MINERS).
"""
from criteria import (angular, ap_loss, arcface, contrastive, histogram, lifted, margin, miners, multisimilarity,
                      npair, proxyanchor, proxynca, quadruplet, snr, softmax, softtriplet, triplet)
from criteria.obd_sd import ObdSdLoss
from plumbing.errors import UserError

MODULES = {module.NAME: module for module in (multisimilarity, margin, triplet, contrastive, lifted, npair, angular,
                                              quadruplet, snr, histogram, ap_loss, proxynca, softmax, arcface,
                                              softtriplet, proxyanchor)}
OBD_SD_SUFFIX = '_obd_sd'
LOSSES = tuple(MODULES) + tuple(name + OBD_SD_SUFFIX for name in MODULES)
LEFT_OUT = {'adversarial_separation': 'the authors\' adversarial_separation loss is not available here: it needs the '
                                      'multi-head DiVA network, which their repository does not have either'}


def add_flags(group):
    """Every loss's and miner's own flags."""
    for module in MODULES.values():
        module.add_flags(group)
    miners.add_flags(group)


def miner_name(module, batch_mining):
    """The miner a loss `module` with miners uses for --batch_mining `batch_mining`: that one, or where None the
    authors' default (distance), or the loss's own where it takes no other."""
    if batch_mining is not None:
        return batch_mining
    return miners.DEFAULT if miners.DEFAULT in module.MINERS else module.MINERS[0]


def describe(loss, opt):
    """`loss` with the batch miner it uses, for logs: e.g. 'margin_obd_sd (batch miner distance)'."""
    module = MODULES[loss.removesuffix(OBD_SD_SUFFIX)]
    if not module.MINERS:
        return loss
    return f'{loss} (batch miner {miner_name(module, getattr(opt, "batch_mining", None))})'


def check(loss, opt):
    """Raise UserError (one line, what to do) where `loss` is unknown, or --batch_mining or the distillation flags do
    not fit it."""
    if loss not in LOSSES:
        known = f'choose one of {", ".join(LOSSES)}'
        left_out = LEFT_OUT.get(loss.removesuffix(OBD_SD_SUFFIX))
        raise UserError(f'--loss {loss}: {left_out}; {known}' if left_out else f'unknown --loss {loss!r}; {known}')
    module = MODULES[loss.removesuffix(OBD_SD_SUFFIX)]
    batch_mining = getattr(opt, 'batch_mining', None)
    if batch_mining is not None and batch_mining not in miners.MODULES:
        known = f'choose one of {", ".join(miners.MODULES)}'
        raise UserError(f'--batch_mining {batch_mining}: {miners.LEFT_OUT[batch_mining]}; {known}'
                        if batch_mining in miners.LEFT_OUT else f'unknown --batch_mining {batch_mining!r}; {known}')
    if module.MINERS and miner_name(module, batch_mining) not in module.MINERS:
        raise UserError(f'--loss {module.NAME} does not take --batch_mining {batch_mining}: choose one of '
                        f'{", ".join(module.MINERS)}')
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
        options['miner'] = miners.build(miner_name(module, getattr(opt, 'batch_mining', None)), opt,
                                        seed=getattr(opt, 'seed', 0), loss_options=options)
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
