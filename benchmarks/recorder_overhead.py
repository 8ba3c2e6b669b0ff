"""Overhead of instrumenting a training step (lossrate.torch), on CPU, and where it goes.

An MNIST-sized MLP (784-256-10, ReLU; ``--model mlp``, the default: a ~2 ms step where the
per-op Python overhead dominates, the worst case) or the project's Fashion-MNIST CNN
(``--model cnn``: lossrate.experiments.models.CNN(1, 28, 10), two conv blocks of 32 and 64
channels and a 128-unit hidden layer, as configs/fashion_cnn_adam_cosine.toml builds it; the
realistic row), batch 128 of random data, SGD (or Adam), torch on one thread. Variants of
the same training step are timed interleaved in short blocks (5 steps; the order rotates
every round) so that drifts and other processes hit all of them alike.
They form chains in which every variant is the previous one plus one component:

  plain                   nn.CrossEntropyLoss, backward, step
  wrapper, stats dropped  InstrumentedLoss's call only (its queue is emptied unread)
  wrapper                 + the deferred statistics (computed once per 64 calls)
  recorded                + Recorder.log(batch=crit.last) (the loss read each step; the
                          statistics, the CSV rows and an fsync every 50 rows)
  +grads                  + gradient_metrics(model, optimizer) before the step
  recorded every=k, +grads every=k   the lighter mode (InstrumentedLoss(..., every=k);
                          gradient metrics on those steps only)
  acc4                    gradient accumulation, 4 micro-batches of 32, one step
  acc4 recorded           + 4 wrapper calls, BatchStats.combine, Recorder.log
  acc4 +grads             + gradient_metrics
  +debiased acc4 -2nd     + GradientGroups(second_order=False): its parameter hooks, mark
                          after each micro-batch and gradient_metrics(..., groups=): the
                          debiased norms, tr(Sigma_g) (the debiased variants train their own
                          copy of the model, so the hooks slow only them)
  +debiased acc4          + update_dot (second_order=True, the default)
  two halves              the opt-in two-half-batch mode's split alone: two backward passes
                          of 64 instead of one of 128
  +two-half               + recording, gradient metrics, 2 marks, group sums, update_dot
  acc4 recorded, own copy acc4 recorded on a copy of the model, as the debiased variants train
                          (the floor of the cadence rows: the loss recorded at every step)
  +debiased acc4 every=k  +debiased acc4 with the measurement cadence GradientGroups(every=k)
                          (``--cadence``, default 4 and 10): the debiased columns on every
                          k-th step only, the loss recorded at every step; the others mark
                          (a count), read (None, no norms) and log grad=None. Its chain gives
                          the median step (an unmeasured one; at small k it leans towards the
                          slower measured steps and the parameter copy before them) and the
                          mean (the measured steps amortised: the figure that falls with k)

Printed per chain: each variant's median CPU step (this thread's CPU time, robust on a
shared machine), its ratio to the chain's base, the ratio of mean CPU steps (which adds the
work done every 50th step) and of median wall steps; and the component each variant adds
(the difference of consecutive medians from this one run, so the components sum exactly to
the excess). Then the same pieces timed alone in a tight loop: inside a step they cost
several times more (the step's matrix products leave the caches cold for the Python and
the small tensor ops that follow), which is why timing them alone under-counts.
Targets: recorded <= 1.03, +grads <= 1.10 (to plain), +debiased acc4 and ddp +debiased
<= 1.10 (to acc4 / ddp); +two-half is reported as it is.

With ``--ddp`` the same model is trained by 2 gloo processes (DistributedDataParallel, batch
64 per rank), each timing: ddp (plain step), ddp +grads (recorded with gradient_metrics),
ddp +debiased -2nd and ddp +debiased (DDPGradients: the per-parameter norms of the rank's
gradient taken in the comm hook before the all-reduce, a copy only for a per-entry P, five
numbers all-reduced per step), with ``--optimizer``'s optimizer, and ddp +debiased every=k
(DDPGradients(every=k): the comm hook of an unmeasured step only all-reduces) beside ddp
recorded (the wrapper and Recorder.log alone, the floor of the cadence rows: the loss is
still recorded at every step); rank 0 prints the chains.
Every debiased variant, here and above, trains its own copy of the model (the hooks of one
GradientGroups or DDPGradients slow no other variant).

    python benchmarks/recorder_overhead.py [--model mlp] [--rounds 300] [--block 5] [--threads 1]
        [--optimizer sgd] [--every 10] [--cadence 4,10] [--chains loss,...] [--ddp]

``--chains`` times only the named chains' variants (loss, lighter, accumulation, two-half,
cadence; default all) to keep the slower CNN runs short.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from lossrate import RunMeta
from lossrate.experiments.models import CNN
from lossrate.torch import GradientGroups, InstrumentedLoss, Recorder, gradient_metrics
from lossrate.torch.losses import BatchStats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300, help="rounds of one block per variant")
    parser.add_argument("--block", type=int, default=5, help="steps per block")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    parser.add_argument("--ddp", action="store_true", help="the DDP rows (2 gloo processes)")
    parser.add_argument(
        "--model", choices=("mlp", "cnn"), default="mlp", help="784-256-10 MLP or Fashion CNN"
    )
    parser.add_argument(
        "--every", type=int, default=10, help="k of the lighter mode's rows (statistics every k)"
    )
    parser.add_argument(
        "--cadence",
        default="4,10",
        help="comma-separated k of the debiased rows measured every k-th step (groups every=k)",
    )
    parser.add_argument(
        "--chains",
        default=",".join(_CHAINS),
        help=f"comma-separated chains to time (of {', '.join(_CHAINS)}; single process)",
    )
    args = parser.parse_args()
    args.cadence = [int(c) for c in args.cadence.split(",") if c.strip()]
    args.chains = [c.strip() for c in args.chains.split(",") if c.strip()]
    unknown = sorted(set(args.chains) - set(_CHAINS))
    if unknown or any(c < 1 for c in args.cadence):
        parser.error(f"--chains takes {', '.join(_CHAINS)}; --cadence integers >= 1")
    if args.ddp:
        ddp_main(args)
        return

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = _net(args.model)
    make = torch.optim.SGD if args.optimizer == "sgd" else torch.optim.Adam
    opt = make(model.parameters(), lr=1e-3)
    x, y = _inputs(args.model, 128), torch.randint(0, 10, (128,))
    plain_loss = nn.CrossEntropyLoss()
    crit = InstrumentedLoss("ce")
    dropped = InstrumentedLoss("ce")  # the wrapper's call alone: its queue is emptied unread
    light = InstrumentedLoss("ce", every=args.every)
    run_dir = Path(tempfile.mkdtemp(prefix="lossrate-bench-"))
    rec = Recorder(run_dir, meta=RunMeta(loss="ce", classes=10, optimizer=args.optimizer))
    step = 0

    def plain() -> None:
        loss = plain_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def wrapper(keep: bool) -> None:
        loss = (crit if keep else dropped)(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if not keep:
            dropped._latest.queue.clear()

    def recorded(grads: bool) -> None:
        nonlocal step
        loss = crit(model(x), y)
        opt.zero_grad()
        loss.backward()
        gs = gradient_metrics(model, opt) if grads else None
        opt.step()
        rec.log(step=step, lr=1e-3, batch=crit.last, grad=gs)
        step += 1

    def lighter(grads: bool) -> None:
        nonlocal step
        loss = light(model(x), y)
        opt.zero_grad()
        loss.backward()
        full = (light.calls - 1) % light.every == 0  # the calls that computed statistics
        gs = gradient_metrics(model, opt) if grads and full else None
        opt.step()
        rec.log(step=step, lr=1e-3, batch=light.last, grad=gs)
        step += 1

    # each debiased variant trains its own copy of the model: GradientGroups' parameter hooks
    # run on every backward of the model they watch, and would slow the other variants too
    debiased = {}
    for key, kw in (
        ("2nd", {}),
        ("-2nd", {"second_order": False}),
        ("two-half", {}),
        *((f"every={c}", {"every": c}) for c in args.cadence),
        ("own copy", None),
    ):
        net = _net(args.model)
        net.load_state_dict(model.state_dict())
        marks = GradientGroups(net, **kw) if kw is not None else None
        debiased[key] = (net, make(net.parameters(), lr=1e-3), marks)

    def accumulated(parts: int, record: bool = False, grads: bool = False, groups=None) -> None:
        nonlocal step
        net, optim, marks = debiased[groups] if groups else (model, opt, None)
        optim.zero_grad()
        stats = []
        for part, w in GradientGroups.split(128, parts):
            if record:
                (crit(net(x[part]), y[part]) * w).backward()
                if marks is not None:
                    marks.mark(part.stop - part.start)
                stats.append(crit.last)
            else:
                (plain_loss(net(x[part]), y[part]) * w).backward()
        gs = gradient_metrics(net, optim, groups=marks) if grads else None
        optim.step()
        if record:
            rec.log(step=step, lr=1e-3, batch=BatchStats.combine(stats), grad=gs)
            step += 1

    k = args.every
    variants = {
        "plain": plain,
        "wrapper, stats dropped": lambda: wrapper(False),
        "wrapper": lambda: wrapper(True),
        "recorded": lambda: recorded(False),
        "+grads": lambda: recorded(True),
        f"recorded every={k}": lambda: lighter(False),
        f"+grads every={k}": lambda: lighter(True),
        "acc4": lambda: accumulated(4),
        "acc4 recorded": lambda: accumulated(4, record=True),
        "acc4 +grads": lambda: accumulated(4, record=True, grads=True),
        "+debiased acc4 -2nd": lambda: accumulated(4, True, True, "-2nd"),
        "+debiased acc4": lambda: accumulated(4, True, True, "2nd"),
        "two halves": lambda: accumulated(2),
        "+two-half": lambda: accumulated(2, True, True, "two-half"),
    }
    variants["acc4 recorded, own copy"] = lambda: accumulated(4, True, False, "own copy")
    for c in args.cadence:
        variants[f"+debiased acc4 every={c}"] = lambda c=c: accumulated(4, True, True, f"every={c}")
    chains = [
        (
            "loss statistics and gradient metrics, batch 128",
            ["plain", "wrapper, stats dropped", "wrapper", "recorded", "+grads"],
            {
                "wrapper, stats dropped": "the wrapper's call (fused loss, queueing the logits)",
                "wrapper": "the statistics (deferred: one pass per 64 calls)",
                "recorded": "Recorder.log (its row; every 50 rows the pass, CSV, fsync)",
                "+grads": "gradient_metrics",
            },
        ),
        ("lighter mode", ["plain", f"recorded every={k}", f"+grads every={k}"], {}),
        (
            "gradient accumulation, 4 micro-batches of 32",
            ["acc4", "acc4 recorded", "acc4 +grads", "+debiased acc4 -2nd", "+debiased acc4"],
            {
                "acc4 recorded": "4 wrapper calls, BatchStats.combine, Recorder.log",
                "acc4 +grads": "gradient_metrics",
                "+debiased acc4 -2nd": "hooks, 4 groups.mark, the group sums (the debiasing)",
                "+debiased acc4": "update_dot (second_order=True)",
            },
        ),
        (
            "two-half-batch mode, batch 128",
            ["plain", "two halves", "+two-half"],
            {
                "two halves": "two backward passes of 64 instead of one of 128",
                "+two-half": "recorded + grads + 2 marks, group sums, update_dot",
            },
        ),
        (
            "measurement cadence: debiased acc4 on every k-th step only (mean: amortised)",
            [
                "acc4",
                "acc4 recorded",
                "acc4 recorded, own copy",
                "+debiased acc4",
                *(f"+debiased acc4 every={c}" for c in args.cadence),
            ],
            {},
        ),
    ]
    chains = [ch for key, ch in zip(_CHAINS, chains) if key in args.chains]
    used = {name for _, names, _ in chains for name in names}
    variants = {name: f for name, f in variants.items() if name in used}
    alone = _alone(model, x, y, plain_loss, args) if "loss" in args.chains else None
    _time(variants, chains, args, f"{_NAMES[args.model]}, batch 128, {args.optimizer}", alone)
    rec.close()
    for path in run_dir.iterdir():
        path.unlink()
    run_dir.rmdir()


_NAMES = {"mlp": "MLP 784-256-10", "cnn": "Fashion-MNIST CNN (32-64 conv, 128 hidden)"}
#: the single-process chains, in the order main() builds them (--chains)
_CHAINS = ("loss", "lighter", "accumulation", "two-half", "cadence")


def _net(kind: str) -> nn.Module:
    """The benchmark's model, initialised from the current torch random state."""
    if kind == "cnn":  # as configs/fashion_cnn_adam_cosine.toml builds it
        return CNN(1, 28, 10, channels=32, hidden=128)
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


def _inputs(kind: str, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    shape = (n, 1, 28, 28) if kind == "cnn" else (n, 784)
    return torch.randn(*shape, generator=generator)


def _alone(model, x, y, plain_loss, args) -> dict[str, float]:
    """Per-call CPU time of pieces of the recorded step timed alone, in a tight loop (warm
    caches), to set beside what they cost inside the step."""
    z = model(x)
    crit = InstrumentedLoss("ce")
    run_dir = Path(tempfile.mkdtemp(prefix="lossrate-bench-alone-"))
    rec = Recorder(run_dir, meta=RunMeta(loss="ce", classes=10))
    step = 0

    def logged() -> None:
        nonlocal step
        rec.log(step=step, lr=1e-3, batch=crit.last)
        step += 1

    pieces = {
        "nn.CrossEntropyLoss": lambda: plain_loss(z, y),
        "wrapper call": lambda: crit(z, y),
        "wrapper call + Recorder.log": lambda: (crit(z, y), logged()),
    }
    out = {}
    for name, f in pieces.items():
        for _ in range(200):
            f()
        times = []
        for _ in range(20):
            c0 = time.thread_time()
            for _ in range(200):
                f()
            times.append((time.thread_time() - c0) / 200)
        out[name] = statistics.median(times)
    rec.close()
    for path in run_dir.iterdir():
        path.unlink()
    run_dir.rmdir()
    return out


def _time(
    variants: dict, chains: list, args: argparse.Namespace, title: str, alone: dict | None = None
) -> None:
    """Time the variants in interleaved blocks and print the table and the breakdowns.

    Each chain is (title, variants in order, {variant: what it adds}): every variant is the
    previous one plus one component, so the components (differences of consecutive median
    CPU step times, measured in the same interleaved run) sum exactly to the last variant's
    excess over the first."""
    clocks = {"wall": time.perf_counter, "cpu": time.thread_time}
    steps = {(c, k): [] for c in clocks for k in variants}  # single-step times
    for f in variants.values():  # warm-up
        for _ in range(20):
            f()
    names = list(variants)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            f = variants[name]
            for _ in range(args.block):
                t0, c0 = time.perf_counter(), time.thread_time()
                f()
                steps["wall", name].append(time.perf_counter() - t0)
                steps["cpu", name].append(time.thread_time() - c0)

    med = {key: statistics.median(v) for key, v in steps.items()}
    bmed = {key: statistics.fmean(v) for key, v in steps.items()}  # with every 50th step
    print(
        f"{title}, {args.threads} thread(s), "
        f"{args.rounds} rounds x {args.block} steps per variant (interleaved)"
    )
    print(
        "cpu: this thread's CPU time, median single step (robust on a busy machine); "
        "mean: the mean cpu step (adds the amortised work of every 50th step: the deferred "
        "statistics, the CSV rows, fsync); wall: elapsed time, median step (adds fsync waits "
        "and time taken by other processes)"
    )
    for chain_title, chain, adds in chains:
        base = chain[0]
        print(f"\n{chain_title} (ratios to {base})")
        print(
            f"  {'variant':<24}{'cpu step':>11}{'ratio':>8}{'mean':>8}{'wall':>8}   "
            f"{'component it adds':<52}{'us':>7}{'% of ' + base:>12}"
        )
        prev = None
        for name in chain:
            st = med["cpu", name]
            ratio = st / med["cpu", base]
            block = bmed["cpu", name] / bmed["cpu", base]
            wall = med["wall", name] / med["wall", base]
            extra = ""
            if prev is not None:
                d = st - med["cpu", prev]
                extra = (
                    f"{adds.get(name, 'the rest'):<52}{d * 1e6:>7.1f}{d / med['cpu', base]:>12.1%}"
                )
            print(
                f"  {name:<24}{st * 1e3:>8.3f} ms{ratio:>8.3f}{block:>8.3f}{wall:>8.3f}   {extra}"
            )
            prev = name if adds else prev
        if adds:
            total = med["cpu", chain[-1]] - med["cpu", base]
            print(
                f"  {'':<61}{'sum (the excess)':<52}{total * 1e6:>7.1f}{total / med['cpu', base]:>12.1%}"
            )
    if alone:
        print("\ntimed alone in a tight loop (warm caches), cpu per call:")
        for name, t in alone.items():
            print(f"  {name:<30}{t * 1e6:>8.1f} us")
    print(
        "\ntargets: recorded <= 1.03, +grads <= 1.10 (to plain); +debiased acc4 and ddp "
        "+debiased <= 1.10 (to acc4 / ddp); +two-half reported as it is; every=k rows: the "
        "median is an unmeasured step, the mean amortises the measured ones (each costs what "
        "an every=1 step does)"
    )


def _ddp_worker(rank: int, port: int, args: argparse.Namespace) -> None:
    import os

    import torch.distributed as dist

    from lossrate.torch import DDPGradients

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    nets = {}
    cadence = [f"ddp +debiased every={c}" for c in args.cadence]
    names = ("ddp", "ddp recorded", "ddp +grads", "ddp +debiased", "ddp +debiased -2nd")
    for name in (*names, *cadence):
        torch.manual_seed(0)
        nets[name] = nn.parallel.DistributedDataParallel(_net(args.model))
    all_groups = {
        "ddp +debiased": DDPGradients(nets["ddp +debiased"]),
        "ddp +debiased -2nd": DDPGradients(nets["ddp +debiased -2nd"], second_order=False),
        **{n: DDPGradients(nets[n], every=c) for n, c in zip(cadence, args.cadence)},
    }
    make = torch.optim.SGD if args.optimizer == "sgd" else torch.optim.Adam
    opts = {k: make(m.parameters(), lr=1e-3) for k, m in nets.items()}
    g = torch.Generator().manual_seed(rank)
    x, y = _inputs(args.model, 64, g), torch.randint(0, 10, (64,), generator=g)
    plain_loss, crit = nn.CrossEntropyLoss(), InstrumentedLoss("ce")
    run_dir = Path(tempfile.mkdtemp(prefix=f"lossrate-bench-ddp{rank}-"))
    meta = RunMeta(loss="ce", classes=10, optimizer=args.optimizer)
    rec = Recorder(run_dir, meta=meta, rank=rank)
    step = 0

    def train(name: str) -> None:
        nonlocal step
        model, opt = nets[name], opts[name]
        opt.zero_grad()
        if name == "ddp":
            plain_loss(model(x), y).backward()
            opt.step()
            return
        crit(model(x), y).backward()
        groups = all_groups.get(name)
        if groups is not None:
            groups.mark(64)
        gs = None if name == "ddp recorded" else gradient_metrics(model, opt, groups=groups)
        opt.step()
        rec.log(step=step, lr=1e-3, batch=crit.last, grad=gs)
        step += 1

    variants = {name: (lambda name=name: train(name)) for name in nets}
    chains = [
        (
            "DDP, 2 gloo processes, 64 per rank",
            ["ddp", "ddp +grads", "ddp +debiased -2nd", "ddp +debiased"],
            {
                "ddp +grads": "wrapper, Recorder.log, gradient_metrics",
                "ddp +debiased -2nd": "comm-hook norms, mark, sums + 5-number all-reduce",
                "ddp +debiased": "update_dot (second_order=True)",
            },
        ),
        (
            "DDP measurement cadence: debiased on every k-th step only (mean: amortised)",
            ["ddp", "ddp recorded", "ddp +grads", "ddp +debiased", *cadence],
            {},
        ),
    ]
    title = f"DDP, 2 gloo processes, {_NAMES[args.model]}, batch 64 per rank, {args.optimizer}"
    if rank == 0:
        _time(variants, chains, args, title)
    else:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            _time(variants, chains, args, "")
    rec.close()
    dist.barrier()
    dist.destroy_process_group()
    for path in run_dir.iterdir():
        path.unlink()
    run_dir.rmdir()


def ddp_main(args: argparse.Namespace) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, args), nprocs=2, join=True)


if __name__ == "__main__":
    main()
