"""report.md, the analysis API and TensorBoard events of a finished smoke run."""

from __future__ import annotations

import math
import re

import matplotlib.image
import pandas as pd
import pytest

from search import analyse, cli, report, tensorboard
from search.config import UserError
from search.plan import SMOKE_SUBSET

PNG = b"\x89PNG\r\n\x1a\n"


def linked_images(text: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)


def test_report_names_every_section_and_links_valid_images(smoke_run):
    code, run_dir = smoke_run
    assert code == 0
    text = (run_dir / "report.md").read_text()
    for section in report.SECTIONS:
        assert f"\n## {section}\n" in text, section
    assert "## Diagnostics of the best retrained model" in text  # shapes' own section
    images = linked_images(text)
    names = {p.split("/")[-1] for p in images}
    assert {"objective_vs_params.png", "curves_best_trials.png", "curves_retrain.png", "best_so_far.png",
            "retrain_test.png", "confusion_pairs.png", "per_kind_error.png"} <= names
    for link in images:
        path = run_dir / link
        assert path.read_bytes()[:8] == PNG, link
        pixels = matplotlib.image.imread(path)
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100, link
    # the diagnosed model is scored on the held-out images its retrain run was scored on (a smoke run's
    # first 256) and gets that run's score
    label, seed = re.search(r"## Diagnostics of the best retrained model \((\w+), seed (\d+)\)", text).groups()
    table = pd.read_csv(run_dir / "retrain.csv")
    scored = table[(table["label"] == label) & (table["seed"] == int(seed))].iloc[0]
    n, acc = re.search(r"(\d+) held-out images\. Accuracy \(135 classes\) \*\*([0-9.]+)\*\*", text).groups()
    assert int(n) == SMOKE_SUBSET and float(acc) == pytest.approx(scored["test_acc"], abs=5e-5)


def test_report_states_the_verdict_from_the_retrain_table(smoke_run):
    _, run_dir = smoke_run
    text = (run_dir / "report.md").read_text()
    table = pd.read_csv(run_dir / "retrain.csv")
    base = table[table["label"] == "baseline"]["test_acc"]
    # the baseline row shows its seeds' runs, then their mean ± std, as computed here from retrain.csv
    runs = " ".join(f"{v:.3f}" for v in table[table["label"] == "baseline"].sort_values("seed")["test_acc"])
    assert f"| baseline | 2 | {runs} | {base.mean():.4f} ± {base.std(ddof=1):.4f} |" in text
    run = analyse.load(run_dir)
    # the warm-start trial is the first one: the search keeps the baseline when that trial is its best
    assert run.kept_baseline() == (run.best()["trial_id"] == run.trials["trial_id"].iloc[0])
    if run.kept_baseline():
        assert "the search recommends keeping the baseline" in text
    else:
        assert ("beats the baseline beyond seed noise" in text) or ("does not beat the baseline" in text)
    counts = run.trials["status"].value_counts()
    assert f"- trials: {len(run.trials)} ({counts.get('completed', 0)} completed" in text


def test_rebuilding_the_report_gives_the_same_bytes(smoke_run):
    _, run_dir = smoke_run
    files = [run_dir / "report.md", *sorted((run_dir / report.FIGURES).glob("*.png"))]
    before = {p: p.read_bytes() for p in files}
    assert cli.run(report.main, [str(run_dir)]) == 0
    assert {p: p.read_bytes() for p in files} == before


def test_analyse_load_returns_the_documented_frames(smoke_run):
    _, run_dir = smoke_run
    run = analyse.load(run_dir)
    assert len(run.trials) == 4 and set(run.trials["status"]) <= {"completed", "stopped", "failed"}
    assert len(run.history) == run.trials["epochs_run"].sum()
    assert len(run.retrain) == 3 * 2 and {"label", "seed", "test_acc", "config_lr"} <= set(run.retrain.columns)
    assert len(run.retrain_history) == 3 * 2  # one epoch per retrain run
    assert run.options["smoke"] is True and run.plan["trials"] == 4 and run.objective == "val_acc"
    assert run.best()["trial_id"] == run.trials.loc[run.trials["best_val_acc"].idxmax(), "trial_id"]
    v = run.verdict().set_index("label")
    assert v.loc["top1", "mean"] == pytest.approx(run.retrain[run.retrain["label"] == "top1"]["test_acc"].mean())


def test_analyse_cli_summary_and_compare(smoke_run, capsys):
    _, run_dir = smoke_run
    assert cli.run(analyse.main, [str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "top trials:" in out and "retrained on fresh seeds" in out and "verdict:" in out
    assert cli.run(analyse.main, [str(run_dir), "--compare", str(run_dir)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert len(lines) == 1 + 2 * 3  # header, then baseline/top1/top2 of each run
    assert "±" in lines[1]


def test_analyse_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    with pytest.raises(UserError, match="not a run directory"):
        analyse.load(tmp_path)
    assert cli.run(report.main, [str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a run directory" in err
    assert not (tmp_path / "report.md").exists()


def test_retrain_runs_write_readable_tensorboard_events(smoke_run):
    _, run_dir = smoke_run
    table = pd.read_csv(run_dir / "retrain.csv")
    for _, row in table.iterrows():
        scalars = tensorboard.read_scalars(run_dir / "retrain" / f"{row['label']}-seed{row['seed']}")
        assert [step for step, _ in scalars["retrain/train_loss"]] == [1]  # one point per epoch
        ((_, acc),) = scalars["hparam/test_acc"]
        assert acc == pytest.approx(row["test_acc"], abs=1e-6)


def test_trials_write_readable_tensorboard_events(smoke_run):
    _, run_dir = smoke_run
    history = pd.read_csv(run_dir / "history.csv")
    scalars = tensorboard.read_scalars(run_dir / "tune")
    assert len(scalars["ray/tune/val_acc"]) == len(history)  # one point per trial per epoch
    assert sorted(v for _, v in scalars["ray/tune/val_acc"]) == pytest.approx(sorted(history["val_acc"]), abs=1e-6)


def test_history_keeps_wall_timestamps_for_best_so_far(smoke_run):
    _, run_dir = smoke_run
    history = pd.read_csv(run_dir / "history.csv")
    assert history["timestamp"].notna().all()
    assert all(math.isfinite(t) and t > 1.7e9 for t in history["timestamp"])  # Unix seconds, after 2023


def test_trial_ids_that_look_like_numbers_stay_text(tmp_path):
    """Ray's hex trial ids such as 1e509a2f or 00123456 must not be read back as 1e509 (inf) or 123456."""
    from search.io import read_csv, write_csv

    write_csv(tmp_path / "trials.csv", pd.DataFrame({"trial_id": ["1e509a2f", "00123456", "abc12345"], "v": [1, 2, 3]}))
    assert list(read_csv(tmp_path / "trials.csv")["trial_id"]) == ["1e509a2f", "00123456", "abc12345"]
