"""BN-Inception from pretrainedmodels, the backbone of most older DML papers."""
import torch
import torch.nn as nn

from architectures.embedding_net import EmbeddingNet
from architectures.weights import load_weights_file, BNINCEPTION_URL, download_state_dict
from plumbing.lazy import lazy_module

pretrainedmodels = lazy_module('pretrainedmodels')

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BNINCEPTION_MEAN_BGR = (104.0, 117.0, 128.0)


class BNInceptionEmbedding(EmbeddingNet):
    """pretrainedmodels' BNInception; its weights expect BGR images in 0..255 minus a per-channel mean.

    Our data pipeline gives ImageNet-normalised RGB tensors for every network, so the conversion happens here.
    """

    def __init__(self, embed_dim, pretrained, pretrained_path=None,
                 normalize=False, frozen_bn=False, double_pool=False, arch='bninception', image_size=224):
        backbone = pretrainedmodels.bninception(pretrained=None)
        if pretrained:
            state = load_weights_file(pretrained_path) if pretrained_path else download_state_dict(BNINCEPTION_URL)
            backbone.load_state_dict(state)
        feature_dim = backbone.last_linear.in_features
        super().__init__(feature_dim, embed_dim, normalize, frozen_bn, double_pool, arch, image_size)
        backbone.last_linear = nn.Linear(feature_dim, embed_dim)
        self.model = backbone
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
        mean = (torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
                - torch.tensor(BNINCEPTION_MEAN_BGR[::-1]).view(1, 3, 1, 1))
        self.register_buffer('rgb_scale', std, persistent=False)
        self.register_buffer('rgb_shift', mean, persistent=False)

    def feature_map(self, x):
        bgr = (x * self.rgb_scale + self.rgb_shift).flip(1)
        return self.model.features(bgr)
