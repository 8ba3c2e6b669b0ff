"""Experiments on real data: offline data sets, models, TOML configs, the training loop
and the runner (needs torch: ``pip install 'lossrate[experiments]'``).

    from lossrate.experiments import load_config, run_experiment
    traj = run_experiment(load_config("mnist_mlp_sgd").override({"train.steps": 200}), "runs/demo")

The MiniLM text encoder (transformers) is imported only by configs that use it.
"""

from .config import ExperimentConfig as ExperimentConfig
from .config import load_config as load_config
from .config import shipped_configs as shipped_configs
from .datasets import Dataset as Dataset
from .datasets import DatasetInfo as DatasetInfo
from .exact import ExactCheck as ExactCheck
from .exact import certify as certify
from .runner import build_model as build_model
from .runner import load_data as load_data
from .runner import run_experiment as run_experiment
from .sweep import Sweep as Sweep
from .sweep import SweepConfig as SweepConfig
from .sweep import load_sweep as load_sweep
