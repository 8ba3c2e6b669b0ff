"""Debiased gradient norms on the exact cases, and the gradient noise scale on the MNIST MLP.

1. Exact cases (the shipped linear configs: linreg/logreg on MNIST pixels, teacher-student),
   trained with mini-batches instead of full batches (SGD at the config's lr), the batch
   split into K gradient groups (``--parts``, default 2 and 4: the two-half mode and
   ``GradientGroups.split(B, 4)``) with the finite-population correction. At every step the
   full-data gradient norm at the same parameters is computed; printed: the share of checked
   steps (after the first 10) where the debiased ||grad L||^2 lies within 2 of its standard
   errors of it, the same for the raw mini-batch value (with the same band), the median
   raw / full and debiased / full ratios, and the bias over the checked steps in standard
   errors of its mean, t = mean(est - full) / (sd(est - full) / sqrt(n)) (|t| < 2 for an
   unbiased estimate). Goal: debiased >= 90 %, raw not. More groups give a smaller variance
   (the noise term of the estimate's variance scales as K / (K - 1)), so a narrower band;
   binary logistic regression on raw pixels has a gradient noise that is nearly rank one
   (its mini-batch bias tr(Sigma) / B is then about one standard deviation of the estimate),
   where the raw value leaves the two-half band on few steps and the 4-group band on more.
2. Noise scale B_noise = tr(Sigma_g) / ||grad L||^2 of the MNIST MLP (configs/mnist_mlp_sgd),
   trained 200 steps, then measured at those fixed weights with batches of 32, 128 and 512
   (draws of the two-half estimates, no update): a property of the model state, so the three
   intervals should overlap. The variance of one draw's ||grad L||^2 estimate grows as
   1 / B^2 (it is tr(Sigma^2)-dominated at small B), so a batch of B gets --draws x (512/B)^2
   draws: every batch size's interval is then about as narrow (at 60, batch 32 gets 15,360
   draws, about 10^4 x 32 samples; with 60 draws it had no finite upper end).

    python benchmarks/gradient_noise.py [--steps 150] [--draws 60]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lossrate.experiments import load_config
from lossrate.experiments.runner import build_model, load_data
from lossrate.experiments.train import build_optimizer, output_size, targets_for
from lossrate.measured import GradientNoise, NoiseRows, noise_scale
from lossrate.torch import GradientGroups, InstrumentedLoss, gradient_metrics

EXACT = ["linreg_mnist_gd", "logreg_mnist_binary_gd", "logreg_mnist_10_gd", "teacher_student_gd"]


def _setup(name: str, overrides: dict | None = None):
    cfg = load_config(name)
    if overrides:
        cfg = cfg.override(overrides)
    data = load_data(cfg)
    n_out = output_size(cfg.loss.name, data.info.n_classes)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, data.info, n_out)
    crit = InstrumentedLoss(cfg.loss.name, label_smoothing=cfg.loss.label_smoothing)
    y = targets_for(data.y_train, cfg.loss.name, n_out)
    return cfg, model, crit, data.x_train, y


def _grouped(model, crit, xb, yb, groups, parts=2):
    model.zero_grad()
    for part, w in GradientGroups.split(len(yb), parts):
        (crit(model(xb[part]), yb[part]) * w).backward()
        groups.mark(part.stop - part.start)


def exact_row(name: str, batch: int, steps: int, parts: int = 2) -> str:
    cfg, model, crit, x, y = _setup(name)
    opt = build_optimizer(cfg.optim, model)
    n = len(y)
    groups, rows = GradientGroups(model, population=n), NoiseRows()
    gen = torch.Generator().manual_seed(0)
    out = []
    for k in range(steps):
        model.zero_grad()
        crit(model(x), y).backward()
        full = float(sum(p.grad.square().sum() for p in model.parameters()))
        idx = torch.randperm(n, generator=gen)[:batch]
        _grouped(model, crit, x[idx], y[idx], groups, parts)
        gs = gradient_metrics(model, opt, groups=groups)
        r = rows.row(k, groups=parts, batch_size=batch, grad_sq_raw=gs.grad_sq,
                     grad_sq=gs.grad_sq_debiased, pgrad_sq_raw=gs.pgrad_sq,
                     pgrad_sq=gs.pgrad_sq_debiased, trace_sigma=gs.trace_sigma,
                     ptrace_sigma=gs.ptrace_sigma)  # fmt: skip
        opt.step()
        out.append((full, gs.grad_sq_debiased, gs.grad_sq, r[5]))
    full, deb, raw, se = np.array(out[10:]).T
    cov_d = np.mean(np.abs(deb - full) <= 2 * se)
    cov_r = np.mean(np.abs(raw - full) <= 2 * se)
    t_d, t_r = (_bias_t(v - full) for v in (deb, raw))
    return (
        f"{name:<24}{batch:>6}{parts:>6}{len(full):>8}{100 * cov_d:>11.0f}%{100 * cov_r:>9.0f}%"
        f"{np.median(deb / full):>12.3f}{np.median(raw / full):>11.3f}{t_d:>9.1f}{t_r:>9.1f}"
    )


def _bias_t(d: np.ndarray) -> float:
    """The mean of ``d`` in standard errors of the mean."""
    return float(np.mean(d) / (np.std(d, ddof=1) / np.sqrt(d.size)))


def noise_scales(draws: int) -> list[str]:
    cfg, model, crit, x, y = _setup("mnist_mlp_sgd")
    opt = build_optimizer(cfg.optim, model)
    n = len(y)
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):  # train to a fixed state with plain SGD at batch 64
        idx = torch.randint(0, n, (64,), generator=gen)
        opt.zero_grad()
        crit(model(x[idx]), y[idx]).backward()
        opt.step()
    lines, intervals = [], []
    for batch in (32, 128, 512):
        groups, rows = GradientGroups(model, population=n, second_order=False), NoiseRows()
        n_draws = draws * (512 // batch) ** 2
        for k in range(n_draws):
            idx = torch.randperm(n, generator=gen)[:batch]
            _grouped(model, crit, x[idx], y[idx], groups)
            gs = gradient_metrics(model, None, groups=groups)
            rows_k = rows.row(k, groups=2, batch_size=batch, grad_sq_raw=gs.grad_sq,
                              grad_sq=gs.grad_sq_debiased, pgrad_sq_raw=np.nan, pgrad_sq=np.nan,
                              trace_sigma=gs.trace_sigma, ptrace_sigma=np.nan)  # fmt: skip
            lines.append(rows_k)
        ns = noise_scale(GradientNoise.from_rows(np.array(lines[-n_draws:])), last=1.0)
        hi = "inf" if np.isinf(ns.upper) else f"{ns.upper:.4g}"
        intervals.append((ns.lower, ns.upper))
        yield (
            f"{batch:>6}{n_draws:>7}{ns.estimate:>12.4g}   [{ns.lower:.4g}, {hi}]{ns.ratio:>10.3g}"
        )
    lo, hi = max(a for a, _ in intervals), min(b for _, b in intervals)
    yield (
        f"the three 95 % intervals {'overlap' if lo <= hi else 'do NOT overlap'}: common part "
        f"[{lo:.4g}, {hi:.4g}]"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--draws", type=int, default=60)
    parser.add_argument("--skip-exact", action="store_true")
    parser.add_argument(
        "--parts", default="2,4", help="gradient groups per batch in the exact cases"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if not args.skip_exact:
        print("exact cases, mini-batch SGD, K gradient groups: |estimate - full-data norm| <= 2 se")
        print(f"{'config':<24}{'batch':>6}{'K':>6}{'checked':>8}{'debiased':>12}{'raw':>10}"
              f"{'deb/full':>12}{'raw/full':>11}{'t deb':>9}{'t raw':>9}")  # fmt: skip
        for name in EXACT:
            for batch in (32, 256):
                for parts in (int(v) for v in args.parts.split(",")):
                    print(exact_row(name, batch, args.steps, parts), flush=True)
        print(f"({time.perf_counter() - t0:.0f} s)\n")
    print("gradient noise scale of the MNIST MLP after 200 SGD steps, at fixed weights")
    print(f"{'batch':>6}{'draws':>7}{'B_noise':>12}   95 % interval{'B/B_noise':>14}")
    for line in noise_scales(args.draws):
        print(line, flush=True)


if __name__ == "__main__":
    main()
