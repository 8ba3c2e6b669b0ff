"""Models: forward shapes on MNIST- and CIFAR-shaped inputs, and the config factory."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from lossrate import InvalidArgumentError  # noqa: E402
from lossrate.experiments.config import load_config  # noqa: E402
from lossrate.experiments.datasets import DatasetInfo  # noqa: E402
from lossrate.experiments.models import CNN, MLP, DeepCNN, Linear, count_parameters  # noqa: E402
from lossrate.experiments.runner import build_model  # noqa: E402

MNIST = DatasetInfo("mnist", 10, (1, 28, 28), 100, 10, "x")
CIFAR = DatasetInfo("cifar10", 10, (3, 32, 32), 100, 10, "x")


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize(
    "make",
    [
        lambda s, n: Linear(s, n),
        lambda s, n: MLP(s, n, width=64, depth=1),
        lambda s, n: MLP(s, n, width=32, depth=4),
        lambda s, n: CNN(s[0], s[1], n, channels=4, hidden=16),
        lambda s, n: DeepCNN(s[0], s[1], n, channels=4, blocks=3),
    ],
    ids=["linear", "wide_mlp", "deep_mlp", "cnn", "deep_cnn"],
)
def test_forward_shapes(make: object, shape: tuple[int, int, int]) -> None:
    model = make(shape, 7)  # type: ignore[operator]
    out = model(torch.rand(5, *shape))
    assert out.shape == (5, 7) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_mlp_depth_and_width_count_parameters() -> None:
    wide = MLP((1, 28, 28), 10, width=1024, depth=1)
    assert count_parameters(wide) == 784 * 1024 + 1024 + 1024 * 10 + 10
    deep = MLP((1, 28, 28), 10, width=256, depth=4)
    assert count_parameters(deep) == 784 * 256 + 256 + 3 * (256 * 256 + 256) + 256 * 10 + 10


def test_model_errors() -> None:
    with pytest.raises(InvalidArgumentError, match="width >= 1"):
        MLP((4,), 2, width=0)
    with pytest.raises(InvalidArgumentError, match="image_size >= 8"):
        DeepCNN(1, 4, 2, blocks=3)
    with pytest.raises(InvalidArgumentError, match="no features"):
        Linear((), 2)


@pytest.mark.parametrize(
    ("name", "info", "kind"),
    [
        ("mnist_mlp_sgd", MNIST, MLP),
        ("mnist_deep_mlp", MNIST, MLP),
        ("fashion_cnn_adam_cosine", MNIST, CNN),
        ("fashion_deep_cnn", MNIST, DeepCNN),
        ("cifar10_cnn", CIFAR, CNN),
        ("linreg_mnist_gd", MNIST, Linear),
    ],
)
def test_build_model_from_shipped_configs(name: str, info: DatasetInfo, kind: type) -> None:
    model = build_model(load_config(name), info, 10)
    assert isinstance(model, kind)
    assert model(torch.rand(2, *info.input_shape)).shape == (2, 10)


def test_cnn_on_flat_inputs_is_an_error() -> None:
    flat = DatasetInfo("t", 1, (20,), 10, 10, "x", "regression")
    with pytest.raises(InvalidArgumentError, match="square images"):
        build_model(load_config("fashion_cnn_adam_cosine"), flat, 1)
