"""Embedding networks; `select(arch, opt)` builds one from an arch string such as resnet50_frozen_normalize."""
import logging

from utilities.errors import UserError

logger = logging.getLogger(__name__)

BACKBONES = ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'bninception')
ARCH_FLAGS = ('frozen', 'normalize', 'double')


def parse_arch(arch):
    """'resnet50_normalize_frozen' -> ('resnet50', {'normalize', 'frozen'}); flags in any order."""
    backbone, *flags = arch.split('_')
    unknown = [f for f in flags if f not in ARCH_FLAGS]
    if backbone not in BACKBONES or unknown:
        raise UserError(f'unknown --arch {arch!r}: use one of {", ".join(BACKBONES)} '
                        f'followed by any of _frozen _normalize _double (e.g. resnet50_frozen_normalize)')
    return backbone, set(flags)


def build(arch, embed_dim, pretrained=True, pretrained_path=None):
    """The network for an arch string, with plain arguments."""
    from architectures.bninception import BNInceptionEmbedding
    from architectures.resnet import ResNetEmbedding

    backbone, flags = parse_arch(arch)
    options = dict(embed_dim=embed_dim, pretrained=pretrained, pretrained_path=pretrained_path,
                   normalize='normalize' in flags, frozen_bn='frozen' in flags, double_pool='double' in flags)
    if backbone == 'bninception':
        network = BNInceptionEmbedding(**options)
    else:
        network = ResNetEmbedding(backbone, **options)
    network.arch = arch
    return network


def select(arch, opt):
    """Build `arch` for training with opt.embed_dim, opt.not_pretrained and opt.pretrained_path."""
    if 'frozen' in parse_arch(arch)[1] and opt.not_pretrained:
        logger.warning('%s without pretrained weights: its frozen BatchNorm statistics are those of a random '
                       'initialisation and mean nothing; drop _frozen or use pretrained weights', arch)
    return build(arch, embed_dim=opt.embed_dim, pretrained=not opt.not_pretrained,
                 pretrained_path=opt.pretrained_path)
