"""Ranking losses, the OBD-SD distillation wrapper and batch miners; select(loss, opt) builds one."""
from criteria.contrastive import ContrastiveLoss
from criteria.margin import MarginLoss
from criteria.multisimilarity import MultiSimilarityLoss
from criteria.obd_sd import ObdSdLoss
from criteria.triplet import TripletLoss
from plumbing.errors import UserError

_OBD_SD_SUFFIX = '_obd_sd'
_RANKING_LOSSES = ('multisimilarity', 'margin', 'triplet', 'contrastive')
LOSSES = _RANKING_LOSSES + tuple(name + _OBD_SD_SUFFIX for name in _RANKING_LOSSES)


def _ranking_loss(name, opt, n_classes):
    if name == 'multisimilarity':
        return MultiSimilarityLoss(pos_weight=opt.loss_multisimilarity_pos_weight,
                                   neg_weight=opt.loss_multisimilarity_neg_weight,
                                   margin=opt.loss_multisimilarity_margin,
                                   threshold=opt.loss_multisimilarity_thresh)
    if name == 'margin':
        if n_classes is None:
            raise ValueError('the margin loss learns a beta per class: pass n_classes')
        return MarginLoss(n_classes=n_classes, margin=opt.loss_margin_margin, beta=opt.loss_margin_beta,
                          beta_constant=opt.loss_margin_beta_constant, nu=opt.loss_margin_nu,
                          beta_lr=opt.loss_margin_beta_lr,
                          lower_cutoff=opt.miner_distance_lower_cutoff,
                          upper_cutoff=opt.miner_distance_upper_cutoff)
    if name == 'triplet':
        return TripletLoss(margin=opt.loss_triplet_margin)
    return ContrastiveLoss(pos_margin=opt.loss_contrastive_pos_margin,
                           neg_margin=opt.loss_contrastive_neg_margin)


def select(loss, opt, n_classes=None):
    """The criterion named `loss` (one of LOSSES), configured from the flags in `opt`; `n_classes`, the number of
    training classes, is needed by the losses with a parameter per class (margin's beta)."""
    if loss not in LOSSES:
        raise UserError(f'unknown loss {loss!r}: choose one of {", ".join(LOSSES)}')
    if opt.OBDP and not opt.PSD:
        raise UserError('--OBDP diffuses the distillation target of --PSD: add --PSD')
    if not loss.endswith(_OBD_SD_SUFFIX):
        if opt.PSD:
            raise UserError(f'--PSD needs a *{_OBD_SD_SUFFIX} loss, e.g. {loss}{_OBD_SD_SUFFIX}')
        return _ranking_loss(loss, opt, n_classes)
    return ObdSdLoss(_ranking_loss(loss[:-len(_OBD_SD_SUFFIX)], opt, n_classes), psd=opt.PSD, obdp=opt.OBDP,
                     kd_lambda=opt.kd_lambda, kd_tau=opt.kd_tau, diffusion_w=opt.diffusion_w,
                     diffusion_tau=opt.diffusion_tau, n_epochs=opt.n_epochs)
