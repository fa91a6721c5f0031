"""ResNet embedding networks from torchvision (resnet18/34/50/101)."""
import torch.nn as nn
import torchvision

from architectures.embedding_net import EmbeddingNet
from architectures.weights import imagenet_state_dict

RESNETS = {
    'resnet18': (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1),
    'resnet34': (torchvision.models.resnet34, torchvision.models.ResNet34_Weights.IMAGENET1K_V1),
    'resnet50': (torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V1),
    'resnet101': (torchvision.models.resnet101, torchvision.models.ResNet101_Weights.IMAGENET1K_V1),
}


class ResNetEmbedding(EmbeddingNet):
    """torchvision ResNet whose `fc` is replaced by `last_linear` = Linear(feature_dim, embed_dim)."""

    def __init__(self, depth_name, embed_dim, pretrained, pretrained_path=None,
                 normalize=False, frozen_bn=False, double_pool=False, arch=None, image_size=224):
        build, weights = RESNETS[depth_name]
        backbone = build(weights=None)
        if pretrained:
            backbone.load_state_dict(imagenet_state_dict(weights, pretrained_path, rename={'last_linear.': 'fc.'}))
        feature_dim = backbone.fc.in_features
        super().__init__(feature_dim, embed_dim, normalize, frozen_bn, double_pool, arch or depth_name, image_size)
        del backbone.fc
        backbone.last_linear = nn.Linear(feature_dim, embed_dim)
        self.model = backbone

    def feature_map(self, x):
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        return m.layer4(m.layer3(m.layer2(m.layer1(x))))
