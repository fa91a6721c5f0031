"""The embedding network: a backbone's pooled features, then a linear head `last_linear`."""
import torch.nn as nn
import torch.nn.functional as F

from datasets.transforms import IMAGENET_MEAN, IMAGENET_STD


class EmbeddingNet(nn.Module):
    """Backbone features -> global pooling -> `model.last_linear` -> optional L2 normalisation.

    Subclasses hold the backbone as `self.model` (so state-dict keys read `model.conv1.weight`, as in the
    authors' released checkpoints) and implement `feature_map(x)`, or `pooled_features(x)` where the backbone pools.
    frozen_bn: every BatchNorm stays in eval mode (running statistics never updated), also after `train()`;
      their affine weights still learn, as in the original code.
    double_pool: global average pooling plus global max pooling, summed.
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
        pooled = F.adaptive_avg_pool2d(features, 1)
        if self.double_pool:
            pooled = pooled + F.adaptive_max_pool2d(features, 1)
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
