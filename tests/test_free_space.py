"""A run that cannot fit on its disk is refused in one line before anything is written; one that may not fit
at its peak (a scheduler that keeps paused trials' checkpoints) is warned about."""

from __future__ import annotations

from collections import namedtuple

import pytest

from search import experiments, schedulers, stages
from search.config import UserError
from search.plan import Hardware, make_plan

Usage = namedtuple("Usage", "total used free")
GB = 2**30


def cpu_plan(**kw):
    return make_plan(experiments.get("shapes"), Hardware(cpus=2, gpus=0), trials=None, max_epochs=None,
                     time_budget_min=None, concurrency=None, cpus_per_trial=None, gpus_per_trial=None, smoke=False,
                     **kw)


def test_what_a_run_needs_counts_its_checkpoints_and_retrained_models():
    exp = experiments.get("shapes")
    plan = cpu_plan()
    weights = sum(p.numel() * 4 for p in exp.task.build_model(dict(exp.defaults)).parameters())  # 51.6 MB
    asha = schedulers.get("asha")
    sure, peak = stages.disk_needed(exp, dict(exp.defaults), plan, asha, retrain=True)
    running = plan.concurrency * (asha.checkpoints_to_keep(plan) + 1) * 3 * weights
    assert sure == peak == running + (plan.retrain_top_k + 1) * plan.retrain_seeds * weights
    assert stages.disk_needed(exp, dict(exp.defaults), plan, asha, retrain=False)[0] == running
    # PBT keeps every paused trial's checkpoints: the peak is far above what is needed for sure
    pbt_sure, pbt_peak = stages.disk_needed(exp, dict(exp.defaults), cpu_plan(scheduler="pbt"),
                                            schedulers.get("pbt"), retrain=True)
    assert pbt_peak > 4 * pbt_sure


@pytest.mark.parametrize("free_gb, outcome", [(0.5, "refused"), (3.0, "warned"), (50.0, "quiet")])
def test_free_space_is_checked_before_the_run_writes(tmp_path, monkeypatch, free_gb, outcome):
    monkeypatch.setattr(stages.shutil, "disk_usage", lambda path: Usage(100 * GB, 0, int(free_gb * GB)))
    said = []
    target = tmp_path / "results" / "shapes" / "r"  # not made yet: the check looks at the disk above it
    if outcome == "refused":
        with pytest.raises(UserError, match=r"needs about 1\.\d GB free there .* 0\.5 GB are free"):
            stages.check_free_space(target, 1 * GB, 2 * GB, said.append)
    else:
        stages.check_free_space(target, 1 * GB, 4 * GB, said.append)
    assert (len(said) == 1 and "may hold up to 4.2 GB" in said[0]) == (outcome == "warned")
    assert not target.exists()
