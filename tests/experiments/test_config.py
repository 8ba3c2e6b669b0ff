"""Experiment configs: every shipped TOML loads and round-trips; bad input names the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from lossrate import DataError, InvalidArgumentError
from lossrate.experiments.config import (
    ExperimentConfig,
    load_config,
    load_sweep,
    shipped_configs,
)

SHIPPED = [
    "mnist_mlp_sgd",
    "mnist_mlp_demo",
    "mnist_deep_mlp",
    "fashion_cnn_adam_cosine",
    "fashion_deep_cnn",
    "wordnet_minilm_frozen",
    "wordnet_minilm_finetune",
    "cifar10_cnn",
    "agnews_minilm",
    "linreg_mnist_gd",
    "logreg_mnist_binary_gd",
    "logreg_mnist_10_gd",
    "teacher_student_gd",
]


def test_every_experiment_of_the_brief_is_shipped() -> None:
    assert sorted(shipped_configs()) == sorted(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_loads_round_trips_and_builds_its_schedule(
    name: str, tmp_path: Path
) -> None:
    cfg = load_config(name)
    assert cfg.name == name and cfg.description
    path = tmp_path / f"{name}.toml"
    path.write_text(cfg.to_toml())
    assert load_config(path) == cfg
    sched = cfg.schedule_for_run()
    assert sched.n_steps == cfg.train.steps and sched.lr.max() == pytest.approx(cfg.optim.lr)


def test_unknown_key_names_the_key_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text('name = "x"\n[train]\nstepz = 3\n')
    with pytest.raises(InvalidArgumentError, match=r"x\.toml.*train\.stepz.*steps"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('name = "x"\n[train]\nsteps = 1.5\n', r"train\.steps = 1\.5: must be a whole number"),
        ('name = "x"\n[train]\nsteps = 0\n', r"train\.steps = 0: must be >= 1"),
        (
            'name = "x"\n[optim]\nname = "lbfgs"\n',
            r"optim\.name = 'lbfgs': not known; choose one of sgd",
        ),
        ('name = "x"\n[optim]\nlr = "fast"\n', r"optim\.lr = 'fast': must be a finite number"),
        ('name = "x"\n[optim]\nbetas = [0.9]\n', r"optim\.betas.*list of 2 values"),
        ('name = "x"\n[optim]\nnesterov = true\n', r"optim\.nesterov.*momentum > 0"),
        ('name = "x"\n[data]\nname = "cifar10"\n', r"data\.root.*needs the folder"),
        ('name = "x"\n[data]\nname = "wordnet"\n', r"model\.kind.*minilm"),
        ('name = "x"\n[loss]\nname = "bce"\nlabel_smoothing = 0.1\n', r"only the 'ce' loss"),
        ('name = "x"\n[schedule]\nwarmup = 5\n[train]\nsteps = 5\n', r"schedule\.warmup.*shorter"),
        ('name = "x"\n[schedule]\nmilestones = [1.5]\n', r"schedule\.milestones.*fractions"),
        ('name = "x"\ntrain = 3\n', r"train must be a table"),
        ('description = "no name"\n', r"\['name'\] are required"),
        ('name = "two words"\n', r"without spaces"),
    ],
)
def test_bad_values_are_clear_errors(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InvalidArgumentError, match=match):
        load_config(path)


def test_invalid_toml_is_a_data_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("name = \n")
    with pytest.raises(DataError, match=r"broken\.toml is not valid TOML"):
        load_config(path)
    with pytest.raises(InvalidArgumentError, match="neither a file nor a shipped config"):
        load_config("no_such_experiment")


def test_override_replaces_dotted_keys_and_validates() -> None:
    cfg = load_config("mnist_mlp_sgd")
    small = cfg.override({"train.steps": 40, "data.n_train": 500, "optim.betas": (0.8, 0.9)})
    assert small.train.steps == 40 and small.data.n_train == 500 and small.optim.betas == (0.8, 0.9)
    assert small.model == cfg.model
    with pytest.raises(InvalidArgumentError, match=r"train\.stepz.*no such key"):
        cfg.override({"train.stepz": 1})
    with pytest.raises(InvalidArgumentError, match=r"must be >= 1"):
        cfg.override({"train.steps": 0})


def test_wsd_decays_over_the_last_fraction() -> None:
    cfg = load_config("fashion_deep_cnn").override({"train.steps": 1000, "schedule.warmup": 0})
    lr = cfg.schedule_for_run().lr
    assert np.all(lr[:800] == cfg.optim.lr) and lr[801] < cfg.optim.lr and lr[-1] < lr[900]


def test_sweep_expands_to_every_combination() -> None:
    sweep = load_sweep("sweep_schedules")
    runs = sweep.expand()
    assert len(runs) == 2 * 3 * 3 * 2
    assert len({r.name for r in runs}) == len(runs)
    fashion = [r for r in runs if r.data.name == "fashion_mnist"]
    base = load_config("fashion_cnn_adam_cosine")
    assert sorted({r.optim.lr for r in fashion}) == pytest.approx(
        [base.optim.lr * f for f in (0.3, 1, 3)]
    )
    assert {r.schedule.shape for r in fashion} == {"constant", "cosine", "wsd"}
    assert {r.train.seed for r in runs} == {0, 1}
    assert all(r.schedule.decay_fraction == 0.2 for r in runs)
    wsd = next(r for r in fashion if r.schedule.shape == "wsd")
    assert (
        dataclasses.replace(
            wsd, name=base.name, optim=base.optim, schedule=base.schedule, train=base.train
        )
        == base
    )


def test_config_is_frozen() -> None:
    cfg = ExperimentConfig(name="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "y"  # type: ignore[misc]
