import torch
import torch.nn as nn


class Model(nn.Module):
    """Multiplies a diagonal matrix, given by its diagonal A, with a matrix B: C = diag(A) @ B."""

    def __init__(self):
        super().__init__()

    def forward(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return torch.diag(A) @ B


N = 512
M = 512


def get_inputs():
    A = torch.randn(N)
    B = torch.randn(N, M)
    return [A, B]


def get_init_inputs():
    return []
