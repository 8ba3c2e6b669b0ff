"""Leave-one-out transfer: a target's own points never enter its prior; evaluation rows."""

from __future__ import annotations

import numpy as np
import pytest

from _transfer_data import make_run
from lossrate import InvalidArgumentError
from lossrate._model import RunData
from lossrate.transfer import (
    leave_one_out_priors,
    prior_sources,
    schedule_group,
    summarise,
    transfer_evaluate,
)


def _runs(seed_shift: int = 0) -> dict[str, RunData]:
    out = {}
    for i, (eta, shape) in enumerate(
        [(0.1, "constant"), (0.2, "cosine"), (0.4, "wsd"), (0.2, "wsd")]
    ):
        name = f"{shape}_{eta:g}_{i}"
        out[name] = make_run(name, eta, shape, seed=i + seed_shift, every=25)[0]
    return out


def _perturbed(run: RunData, rng: np.random.Generator) -> RunData:
    y = run.traj.loss * np.exp(rng.normal(0, 0.05, run.traj.n))  # every point, prefix and suffix
    return RunData(run.traj.replace(loss=np.maximum.accumulate(y[::-1])[::-1]), run.schedule)


def test_target_points_never_enter_its_prior():
    runs = _runs()
    priors = leave_one_out_priors(runs, "momentum", max_points=40, bootstrap=0)
    rng = np.random.default_rng(0)
    for target in runs:
        assert target not in priors[target].source_names
        assert set(priors[target].source_names) == set(runs) - {target}
    target = "wsd_0.4_2"
    changed = dict(runs)
    changed[target] = _perturbed(runs[target], rng)
    again = leave_one_out_priors(changed, "momentum", max_points=40, bootstrap=0)
    assert again[target].to_dict() == priors[target].to_dict()  # bit-identical
    # the perturbation is real: priors of the other targets, which see it, change
    other = next(n for n in runs if n != target)
    assert again[other].to_dict() != priors[other].to_dict()


def test_hold_out_rule_excludes_a_whole_group():
    runs = _runs()
    same_lr = lambda a, b: a.split("_")[1] == b.split("_")[1]  # noqa: E731
    src = prior_sources("cosine_0.2_1", runs, same_lr)
    assert set(src) == {"constant_0.1_0", "wsd_0.4_2"}
    with pytest.raises(InvalidArgumentError, match="target"):
        prior_sources("nope", runs)


def test_transfer_rows_and_summary():
    runs = _runs()
    rows = transfer_evaluate(
        runs,
        ("momentum",),
        (0.5,),
        prior_options={"max_points": 40},
        fit_options={"bootstrap": 0},
    )
    assert {r.with_prior for r in rows} == {True, False}
    assert {r.group for r in rows} == {"constant", "cosine", "wsd"}
    for r in rows:
        if "failed" not in r.scores:
            assert 0.0 <= r.scores["coverage"] <= 1.0
            assert r.scores["final_rel_err"] >= 0
    table = summarise(rows)
    assert {t["group"] for t in table} == {"constant", "cosine", "wsd"}
    assert sum(t["n"] for t in table) == len(rows)
    with pytest.raises(InvalidArgumentError, match="fractions"):
        transfer_evaluate(runs, ("momentum",), (1.5,))


def test_schedule_group_names():
    run = make_run("x", 0.1, "wsd", 0)[0]
    assert schedule_group(run) == "wsd"
