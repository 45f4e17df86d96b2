import torch
import torch.nn as nn


class Model(nn.Module):
    """Computes the cumulative sum (inclusive prefix sum) along one dimension."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(x, dim=self.dim)


batch_size = 128
input_shape = (8000,)
dim = 1


def get_inputs():
    x = torch.randn(batch_size, *input_shape)
    return [x]


def get_init_inputs():
    return [dim]
