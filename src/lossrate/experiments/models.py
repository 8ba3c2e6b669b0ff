"""Models of the shipped experiments, in plain torch (no torchvision).

Every model maps a batch of inputs of shape (B, *input_shape) to (B, n_out) outputs
(logits for "ce"/"bce", predictions for "mse"). Image models take ``in_channels`` and
``image_size`` so one class serves MNIST (1x28x28) and CIFAR-10 (3x32x32).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .._errors import InvalidArgumentError

__all__ = ["CNN", "MLP", "DeepCNN", "Linear", "count_parameters"]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _features(input_shape: Sequence[int]) -> int:
    n = math.prod(int(s) for s in input_shape)
    if not input_shape or n <= 0:
        raise InvalidArgumentError(
            f"input_shape={tuple(input_shape)} has no features; a model needs numeric inputs "
            "(text must be embedded or tokenised first)."
        )
    return n


class Linear(nn.Module):
    """z = W vec(x) + b: the exact case of the theory (its NTK is the Gram matrix of [x, 1])."""

    def __init__(self, input_shape: Sequence[int], n_out: int) -> None:
        super().__init__()
        self.fc = nn.Linear(_features(input_shape), n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class MLP(nn.Module):
    """Fully connected ReLU network with ``depth`` hidden layers of ``width`` units.

    ``depth=1`` with a large width is the wide one-hidden-layer MLP; larger depths give
    the deep MLP.
    """

    def __init__(
        self, input_shape: Sequence[int], n_out: int, *, width: int = 1024, depth: int = 1
    ) -> None:
        super().__init__()
        if width < 1 or depth < 1:
            raise InvalidArgumentError(
                f"MLP needs width >= 1 and depth >= 1, got width={width}, depth={depth}."
            )
        layers: list[nn.Module] = []
        fan_in = _features(input_shape)
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), nn.ReLU()]
            fan_in = width
        layers.append(nn.Linear(fan_in, n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


def _conv_block(c_in: int, c_out: int, convs: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1), nn.ReLU()]
    return [*layers, nn.MaxPool2d(2)]


class CNN(nn.Module):
    """Simple CNN: two conv(3x3)-ReLU-maxpool blocks (``channels``, 2x``channels``), then a
    hidden layer of ``hidden`` units and the output layer."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        n_out: int,
        *,
        channels: int = 32,
        hidden: int = 128,
    ) -> None:
        super().__init__()
        if image_size < 4:
            raise InvalidArgumentError(
                f"CNN needs image_size >= 4 (two 2x2 poolings), got {image_size}."
            )
        self.features = nn.Sequential(
            *_conv_block(in_channels, channels, 1), *_conv_block(channels, 2 * channels, 1)
        )
        side = image_size // 4
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * channels * side * side, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class DeepCNN(nn.Module):
    """VGG-style CNN: ``blocks`` blocks of two conv(3x3)-ReLU layers and a 2x2 max-pool,
    channels doubling per block from ``channels``; global average pooling, linear output."""

    def __init__(
        self, in_channels: int, image_size: int, n_out: int, *, channels: int = 32, blocks: int = 3
    ) -> None:
        super().__init__()
        if blocks < 1 or image_size < 2**blocks:
            raise InvalidArgumentError(
                f"DeepCNN with blocks={blocks} needs image_size >= {2**blocks}, got {image_size}."
            )
        layers: list[nn.Module] = []
        c_in = in_channels
        for b in range(blocks):
            layers += _conv_block(c_in, channels * 2**b, 2)
            c_in = channels * 2**b
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
