"""The embedding network: a backbone's pooled features, then a linear head `last_linear`."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from datasets.transforms import IMAGENET_MEAN, IMAGENET_STD


def global_max_pool(features):
    """B x C x H x W -> B x C x 1 x 1 maxima: the authors' F.adaptive_max_pool2d(features, 1), except while
    deterministic algorithms are on (--deterministic): its CUDA backward has no deterministic kernel, so
    torch.use_deterministic_algorithms raises at the first backward pass, and `amax` over H and W stands in. The values
    are the same; so is the gradient wherever the maximum is unique (amax splits it among tied maxima, which in a
    ResNet's or BN-Inception's map are the zeros of a ReLU, whose gradient the ReLU drops either way)."""
    if torch.are_deterministic_algorithms_enabled():
        return features.amax(dim=(2, 3), keepdim=True)
    return F.adaptive_max_pool2d(features, 1)


class EmbeddingNet(nn.Module):
    """Backbone features -> global pooling -> `model.last_linear` -> optional L2 normalisation.

    Subclasses hold the backbone as `self.model` (so state-dict keys read `model.conv1.weight`, as in the
    authors' released checkpoints) and implement `feature_map(x)`, or `pooled_features(x)` where the backbone pools.
    frozen_bn: every BatchNorm stays in eval mode (running statistics never updated), also after `train()`;
      their affine weights still learn, as in the original code.
    double_pool: global average pooling plus global max pooling (`global_max_pool`), summed.
    arch: the arch string it was built from (e.g. resnet50_frozen_normalize); image_size: the input size it was
      built for (it matters for patch models only).
    input_mean, input_std: the per-channel statistics the input is normalised with (datasets.transforms
      .to_network_input), those the backbone's pretrained weights expect: ImageNet's unless a subclass says otherwise.
    """
    input_mean = IMAGENET_MEAN
    input_std = IMAGENET_STD

    def __init__(self, feature_dim, embed_dim, normalize, frozen_bn, double_pool, arch, image_size):
        super().__init__()
        self.arch = arch
        self.image_size = image_size
        self.feature_dim = feature_dim
        self.embed_dim = embed_dim
        self.normalize = normalize
        self.frozen_bn = frozen_bn
        self.double_pool = double_pool

    def feature_map(self, x):
        raise NotImplementedError

    def pooled_features(self, x):
        """B x feature_dim: the feature map average-pooled (plus max-pooled with double_pool)."""
        features = self.feature_map(x)
        pooled = F.adaptive_avg_pool2d(features, 1)  # to size 1 torch takes a mean: deterministic on CUDA too
        if self.double_pool:
            pooled = pooled + global_max_pool(features)
        return pooled.flatten(1)

    def forward(self, x):
        embeddings = self.model.last_linear(self.pooled_features(x))
        return F.normalize(embeddings, dim=-1) if self.normalize else embeddings

    def train(self, mode=True):
        super().train(mode)
        if self.frozen_bn:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self
