"""The GL / BL / DM-Count network written independently in plain torch.nn (test reference).

Written from the official model files (GL models/vgg.py, BL models/vgg.py, DM-Count models.py):
``features`` = VGG19 "E" as nn.Sequential (Conv2d 3×3 pad 1, ReLU, MaxPool2d 2), ×2
``F.interpolate``, ``reg_layer`` = Conv 3×3 → ReLU → Conv 3×3 → ReLU → Conv 1×1 (GL / BL) or
``reg_layer`` without the last conv plus ``density_layer`` = Conv 1×1 → ReLU (DM-Count).
"""

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CFG_E", "TorchVGGDensity", "randomize_", "torchvision_state_dict"]

CFG_E = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]


class TorchVGGDensity(nn.Module):
    """Input [B, 3, H, W] (H, W multiples of 16) → density [B, H/8, W/8]."""

    def __init__(self, width=1.0, upsample="nearest", output="abs", density_layer=False):
        super().__init__()
        layers, cin = [], 3
        for v in CFG_E:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(cin, int(v * width), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                cin = int(v * width)
        self.features = nn.Sequential(*layers)
        c1, c2 = int(256 * width), int(128 * width)
        body = [nn.Conv2d(cin, c1, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(inplace=True)]
        self.use_density_layer = density_layer
        if density_layer:
            self.reg_layer = nn.Sequential(*body)
            self.density_layer = nn.Sequential(nn.Conv2d(c2, 1, 1), nn.ReLU())
        else:
            self.reg_layer = nn.Sequential(*body, nn.Conv2d(c2, 1, 1))
        self.upsample = upsample
        self.output = output

    def forward(self, x):
        x = self.features(x)
        if self.upsample == "nearest":
            x = F.interpolate(x, scale_factor=2)
        else:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        x = self.reg_layer(x)
        if self.use_density_layer:
            x = self.density_layer(x)
        elif self.output == "abs":
            x = torch.abs(x)
        else:
            x = torch.relu(x)
        return x[:, 0]


def randomize_(model, seed=0):
    """Kaiming-normal weights and small random biases, so activations stay O(1) through 19 layers."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
    return model


def torchvision_state_dict(model, seed=0):
    """torchvision vgg19 layout: the features plus a (small, random) classifier.{0,3,6}."""
    gen = torch.Generator().manual_seed(seed)
    state = {k: v for k, v in model.state_dict().items() if k.startswith("features.")}
    for i, (out, inp) in zip((0, 3, 6), ((16, 32), (16, 16), (10, 16))):
        state[f"classifier.{i}.weight"] = torch.randn(out, inp, generator=gen)
        state[f"classifier.{i}.bias"] = torch.randn(out, generator=gen)
    return state
