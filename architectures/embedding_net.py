"""The embedding network: a backbone's feature map, pooled, then a linear head `last_linear`."""
import torch.nn as nn
import torch.nn.functional as F


class EmbeddingNet(nn.Module):
    """Backbone features -> global pooling -> `model.last_linear` -> optional L2 normalisation.

    Subclasses hold the backbone as `self.model` (so state-dict keys read `model.conv1.weight`, as in the
    authors' released checkpoints) and implement `feature_map(x)`.
    frozen_bn: every BatchNorm stays in eval mode (running statistics never updated), also after `train()`;
      their affine weights still learn, as in the original code.
    double_pool: global average pooling plus global max pooling, summed.
    """

    def __init__(self, feature_dim, embed_dim, normalize, frozen_bn, double_pool):
        super().__init__()
        self.feature_dim = feature_dim
        self.embed_dim = embed_dim
        self.normalize = normalize
        self.frozen_bn = frozen_bn
        self.double_pool = double_pool

    def feature_map(self, x):
        raise NotImplementedError

    def forward(self, x):
        features = self.feature_map(x)
        pooled = F.adaptive_avg_pool2d(features, 1)
        if self.double_pool:
            pooled = pooled + F.adaptive_max_pool2d(features, 1)
        embeddings = self.model.last_linear(pooled.flatten(1))
        return F.normalize(embeddings, dim=-1) if self.normalize else embeddings

    def train(self, mode=True):
        super().train(mode)
        if self.frozen_bn:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self
