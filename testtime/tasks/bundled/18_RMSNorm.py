import torch
import torch.nn as nn


class Model(nn.Module):
    """Applies RMS Normalization over the feature dimension (dim 1): x / sqrt(mean(x^2) + eps)."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms = torch.sqrt(torch.mean(x ** 2, dim=1, keepdim=True) + self.eps)
        return x / rms


batch_size = 32
features = 64
dim1 = 32
dim2 = 32


def get_inputs():
    x = torch.randn(batch_size, features, dim1, dim2)
    return [x]


def get_init_inputs():
    return [features]
