"""Retraining the best configurations on fresh seeds, and the verdict against the baseline."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from models.shapes import ShapesNet
from search import cli, experiments, retrain, retraining, stats
from search.experiment import matches, warm_start

exp = experiments.get("shapes")


def test_retrain_table_has_top_k_plus_baseline_times_seeds(smoke_run):
    code, run_dir = smoke_run
    assert code == 0
    table = pd.read_csv(run_dir / "retrain.csv")
    assert len(table) == (2 + 1) * 2
    assert list(table["label"].drop_duplicates()) == ["baseline", "top1", "top2"]
    seeds = table.groupby("label")["seed"].apply(sorted)
    assert seeds.map(tuple).nunique() == 1  # every config on the same seeds: pairs line up
    trials = pd.read_csv(run_dir / "trials.csv")
    assert not set(seeds.iloc[0]) & set(trials["seed"])  # fresh seeds, not the search's
    for column in ("test_acc", "test_f1", "test_pair_acc", "test_rmse", "test_mae", "test_loss"):
        assert table[column].notna().all() and table[column].map(math.isfinite).all()
    # the two tuned configs are the search's two best distinct trials, in order, other than the
    # warm-start trial (the baseline itself, retrained anyway)
    warm = warm_start(dict(exp.defaults, epochs=1), {k: exp.space[k] for k in exp.space})
    others = trials[[not matches(r, warm) for _, r in trials.iterrows()]]
    assert len(others) == len(trials) - 1
    best = others.sort_values("best_val_acc", ascending=False, kind="stable")["trial_id"].iloc[:2]
    assert list(table.drop_duplicates("label")["trial_id"].iloc[1:]) == list(best)
    # the baseline is the experiment's hand-tuned config
    base = table[table["label"] == "baseline"].iloc[0]
    assert base["config_lr"] == 1e-3 and base["config_dropout"] == 0.5 and base["config_weight_decay"] == 0.0


def test_a_search_that_chooses_the_decoding_retrains_each_config_read_as_its_trial_was(smoke_run):
    """The smoke run chooses the decoding (--choose-decoding): tta, joint_decode and count_decode are not
    searched, every trial's last epoch names the reading it was scored with, and best_config.json, the
    retrained tuned configs and the report carry it; the baseline keeps the seeds' single plain pass."""
    _, run_dir = smoke_run
    keys = exp.decoding.keys
    assert set(keys) == {"tta", "joint_decode", "count_decode"}
    info = json.loads((run_dir / "run.json").read_text())
    assert info["plan"]["choose_decoding"] and not set(keys) & set(info["searched"])
    trials = pd.read_csv(run_dir / "trials.csv").set_index("trial_id")
    reported = trials[trials["status"] != "failed"]
    for key in keys:
        assert reported[f"best_decoded_{key}"].isin(exp.decoding.options()[key]).all()
    best = json.loads((run_dir / "best_config.json").read_text())
    assert all(best["config"][k] == trials.loc[best["trial_id"], f"best_decoded_{k}"] for k in keys)
    table = pd.read_csv(run_dir / "retrain.csv")
    for _, run in table.iterrows():
        if run["label"] == "baseline":
            assert all(run[f"config_{k}"] == exp.defaults[k] for k in keys)
        else:
            trial = trials.loc[run["trial_id"]]
            assert all(run[f"config_{k}"] == trial[f"best_decoded_{k}"] for k in keys)
    assert "| read with tta |" in (run_dir / "report.md").read_text()


def test_weights_load_safely_and_reproduce_the_score(smoke_run):
    _, run_dir = smoke_run
    table = pd.read_csv(run_dir / "retrain.csv")
    row = table.iloc[-1]
    state = torch.load(run_dir / "retrain" / f"{row['label']}-seed{row['seed']}" / "model.pt", weights_only=True)
    model = ShapesNet(dropout=row["config_dropout"], hidden=int(row["config_hidden"]))
    model.load_state_dict(state)  # every key present, shapes right
    history = pd.read_csv(run_dir / "retrain_history.csv")
    runs = history.groupby(["label", "seed"]).size()
    assert len(runs) == len(table) and (runs == 1).all()  # one epoch each (--max-epochs 1)
    assert "val_acc" not in history  # no validation split in retraining: the held-out is scored once


def test_verdict_written_with_paired_difference(smoke_run):
    _, run_dir = smoke_run
    table = pd.read_csv(run_dir / "retrain.csv")
    verdict = pd.read_csv(run_dir / "verdict.csv")
    assert list(verdict["label"]) == ["baseline", "top1", "top2"]
    base = table[table["label"] == "baseline"].set_index("seed")["test_acc"]
    top1 = table[table["label"] == "top1"].set_index("seed")["test_acc"]
    row = verdict.set_index("label").loc["top1"]
    assert row["diff_mean"] == pytest.approx((top1 - base).mean())
    assert row["mean"] == pytest.approx(top1.mean())


def test_interrupted_retraining_resumes_only_missing_runs(smoke_run, capsys):
    _, run_dir = smoke_run
    table = pd.read_csv(run_dir / "retrain.csv")
    victim = run_dir / "retrain" / f"top2-seed{table['seed'].iloc[0]}"
    untouched = run_dir / "retrain" / f"top1-seed{table['seed'].iloc[0]}" / "model.pt"
    mtime = untouched.stat().st_mtime_ns
    (victim / "metrics.json").unlink()  # as if killed before that run finished
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(retraining, "STATUS_EVERY_S", 0.05)  # a status line while it runs
        assert cli.run(retrain.main, [str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "5 of 6 runs already done, 1 to go" in out
    assert "retrain: 5 of 6 runs done" in out  # said while the sixth ran
    assert (victim / "metrics.json").is_file() and untouched.stat().st_mtime_ns == mtime
    assert len(pd.read_csv(run_dir / "retrain.csv")) == 6


def test_verdict_statistics_by_hand():
    frame = pd.DataFrame({
        "label": ["baseline"] * 3 + ["top1"] * 3,
        "seed": [1, 2, 3] * 2,
        "test_acc": [0.40, 0.42, 0.44, 0.45, 0.46, 0.50],
    })
    v = stats.verdict(frame, "test_acc", "max").set_index("label")
    # top1 - baseline per seed: 0.05, 0.04, 0.06 -> mean 0.05, sd 0.01, t(2) = 4.303
    assert v.loc["top1", "diff_mean"] == pytest.approx(0.05)
    half = 4.303 * 0.01 / math.sqrt(3)
    assert v.loc["top1", "diff_low"] == pytest.approx(0.05 - half)
    assert bool(v.loc["top1", "beats_baseline"]) is True
    assert v.loc["baseline", "std"] == pytest.approx(0.02)
    noisy = frame.assign(test_acc=[0.40, 0.50, 0.44, 0.45, 0.42, 0.50])  # diffs 0.05, -0.08, 0.06
    assert bool(stats.verdict(noisy, "test_acc", "max").set_index("label").loc["top1", "beats_baseline"]) is False
    assert "does not beat" in stats.verdict_sentence(stats.verdict(noisy, "test_acc", "max"), "test_acc")
    worse = frame.assign(test_acc=[0.45, 0.46, 0.50, 0.40, 0.42, 0.44])  # the baseline ahead on every seed
    v = stats.verdict(worse, "test_acc", "max")
    assert bool(v.set_index("label").loc["top1", "worse_than_baseline"]) is True
    assert "is worse than the baseline" in stats.verdict_sentence(v, "test_acc")
    # the search's best trial was the baseline's own: the search recommends it, the other is for reference
    kept = stats.verdict_sentence(v, "test_acc", kept_baseline=True)
    assert "recommends keeping the baseline" in kept and "for reference" in kept and "-0.0500" in kept
    assert bool(stats.verdict(worse, "test_acc", "min").set_index("label").loc["top1", "beats_baseline"]) is True


def test_retrain_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert cli.run(retrain.main, [str(tmp_path)]) == 2
    assert "not a finished search" in capsys.readouterr().err


def test_kill_during_retraining_then_resume_retrains_only_the_rest(smoke_run_story):
    """The shared smoke run was killed after its second retrain run (conftest.smoke_run_story):
    it stopped with the --resume command and nothing half-done; --resume kept the search as it was
    and ran only the four missing retrain runs."""
    story, run_dir = smoke_run_story, smoke_run_story["run_dir"]
    assert story["killed_code"] == 130 and story["code"] == 0, story["killed_err"][-2000:]
    assert "interrupted while retraining" in story["killed_err"] and "--name r --resume" in story["killed_err"]
    assert "search: already finished" in story["resumed_out"]
    assert "2 of 6 runs already done, 4 to go" in story["resumed_out"]
    assert "retrain.csv" not in story["files_at_kill"] and "report.md" not in story["files_at_kill"]
    assert (run_dir / "trials.csv").read_bytes() == story["trials_at_kill"]  # the search was not run again
    kept = {n: (run_dir / "retrain" / n / "model.pt").stat().st_mtime_ns for n in story["saved"]}
    assert kept == story["mtimes_at_kill"]
    assert len(pd.read_csv(run_dir / "retrain.csv")) == 6


def test_retraining_cut_to_its_minutes_keeps_the_cut_when_resumed(smoke_run_story):
    """--retrain-minutes 0.01 leaves time for 1 of the 3 epochs asked; the cut is saved in run.json before
    the first run, so the resumed retraining trains 1 epoch too, without cutting again."""
    story, run_dir = smoke_run_story, smoke_run_story["run_dir"]
    assert "fewer epochs if they would take more than 0.01 min" in story["killed_out"]
    assert "retrain: 1 epoch, not 3, to end within 0.01 min" in story["killed_out"]
    plan = json.loads((run_dir / "run.json").read_text())["plan"]
    assert plan["retrain_epochs"] == 1 and plan["retrain_fitted"] is True
    assert "not 3" not in story["resumed_out"]
    for metrics in (run_dir / "retrain").glob("*/metrics.json"):
        assert json.loads(metrics.read_text())["config"]["epochs"] == 1
    assert len(list((run_dir / "retrain").glob("*/metrics.json"))) == 6


def test_a_full_disk_stops_with_one_line_and_leaves_no_partial_file(smoke_run_story):
    """The first resume of the shared smoke run found the disk full (conftest.smoke_run_story)."""
    story = smoke_run_story
    assert story["full_code"] == 2
    assert story["full_err"].count("\n") == 1 and "no space left" in story["full_err"]
    assert "--name r --resume" in story["full_err"]
    assert story["tmp_files_after_full"] == []  # every temp file of a failed write removed
    assert story["code"] == 0 and "2 of 6 runs already done, 4 to go" in story["resumed_out"]
