"""Embedding networks; `select(arch, opt)` builds one from an arch string such as resnet50_frozen_normalize.

An arch string is a backbone followed by flags: `_frozen`, `_normalize`, `_double`, stripped from the right, in any
order. The backbone is one of BACKBONES (the paper's networks) or any timm model, named as timm names it, pretrained
tag included (vit_small_patch16_224.dino_normalize): see architectures/timm_backbone.py.
"""
import logging

from plumbing.errors import UserError

logger = logging.getLogger(__name__)

BACKBONES = ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'bninception')
ARCH_FLAGS = ('frozen', 'normalize', 'double')


def parse_arch(arch):
    """'resnet50_normalize_frozen' -> ('resnet50', {'normalize', 'frozen'}); 'vit_small_patch16_224.dino_normalize'
    -> ('vit_small_patch16_224.dino', {'normalize'})."""
    from architectures import timm_backbone

    pieces = arch.split('_')
    flags = set()
    while len(pieces) > 1 and pieces[-1] in ARCH_FLAGS:
        flags.add(pieces.pop())
    backbone = '_'.join(pieces)
    if backbone not in BACKBONES and not timm_backbone.is_timm_model(backbone):
        raise UserError(f'unknown --arch {arch!r}: use one of {", ".join(BACKBONES)} or any timm.list_models() name '
                        f'(with its pretrained tag, e.g. vit_small_patch16_224.dino), followed by any of _frozen '
                        f'_normalize _double (e.g. resnet50_frozen_normalize){timm_backbone.close_matches(backbone)}')
    return backbone, flags


def check(arch, image_size):
    """Raise UserError (one line) where `arch` is unknown or its flags or `image_size` do not fit its backbone."""
    from architectures import timm_backbone

    backbone, flags = parse_arch(arch)
    if backbone not in BACKBONES:
        timm_backbone.check(backbone, flags, image_size)


def build(arch, embed_dim, pretrained=True, pretrained_path=None, image_size=224):
    """The network for an arch string, with plain arguments; `image_size` matters for patch models only."""
    from architectures import timm_backbone
    from architectures.bninception import BNInceptionEmbedding
    from architectures.resnet import ResNetEmbedding

    backbone, flags = parse_arch(arch)
    options = dict(embed_dim=embed_dim, pretrained=pretrained, pretrained_path=pretrained_path,
                   normalize='normalize' in flags, frozen_bn='frozen' in flags, arch=arch, image_size=image_size)
    if backbone == 'bninception':
        return BNInceptionEmbedding(**options, double_pool='double' in flags)
    if backbone in BACKBONES:
        return ResNetEmbedding(backbone, **options, double_pool='double' in flags)
    timm_backbone.check(backbone, flags, image_size)
    return timm_backbone.TimmEmbedding(backbone, **options)


def select(arch, opt, load_pretrained=True):
    """Build `arch` for training with opt.embed_dim, opt.image_size, opt.not_pretrained and opt.pretrained_path.

    load_pretrained=False builds it without fetching its pretrained weights: for a resumed run, whose checkpoint
    holds every weight (so neither the network nor the --pretrained_path file it started from is needed again).
    """
    if 'frozen' in parse_arch(arch)[1] and opt.not_pretrained:
        logger.warning('%s without pretrained weights: its frozen BatchNorm statistics are those of a random '
                       'initialisation and mean nothing; drop _frozen or use pretrained weights', arch)
    return build(arch, embed_dim=opt.embed_dim, pretrained=load_pretrained and not opt.not_pretrained,
                 pretrained_path=opt.pretrained_path, image_size=opt.image_size)
