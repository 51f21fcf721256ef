"""python -m search.train: a tiny real run, and every user mistake -> exit 2, one line, nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from models.shapes import ShapesNet
from search import cli, train
from search.experiment import DataOptions
from search.experiments.shapes import DEFAULTS, EXPERIMENT
from search.loop import evaluate

REPO = Path(__file__).resolve().parents[1]
KINDS = ("squares", "circles", "up", "right", "down", "left")
METRIC_COLUMNS = ({"epoch", "time_s", "train_s", "train_loss", "val_loss", "val_rank_loss", "val_acc", "val_f1",
                   "val_pair_acc", "val_rmse", "val_mae"} | {f"val_{m}_{k}" for m in ("rmse", "mae") for k in KINDS})
TEST_KEYS = {k.replace("val_", "test_", 1) for k in METRIC_COLUMNS - {"epoch", "time_s", "train_s", "train_loss"}}


@pytest.fixture
def offline(generated_cache, monkeypatch) -> Path:
    """The default (generated) data, already built in a session cache."""
    monkeypatch.setenv("VISION_HPSEARCH_CACHE", str(generated_cache))
    return generated_cache


@pytest.mark.slow
def test_tiny_run_writes_results(offline, tmp_path, capsys):
    out = tmp_path / "runs" / "tiny"
    code = cli.run(train.main, ["shapes", "--subset", "128", "--epochs", "2", "--out", str(out),
                                "--set", "precision=fp32", "--set", "dropout=0.25", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err == ""
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "model.pt", "summary.json"]
    assert [p.name for p in out.parent.iterdir()] == ["tiny"]  # no temporary folder left beside it

    metrics = pd.read_csv(out / "metrics.csv")
    assert set(metrics.columns) == METRIC_COLUMNS
    assert metrics["epoch"].tolist() == [1, 2]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"] == {**DEFAULTS, "epochs": 2, "precision": "fp32", "dropout": 0.25}
    assert summary["data"]["train"] == 128 and summary["data"]["test"] == 1000
    assert summary["epochs_run"] == 2
    assert summary["final"] == pytest.approx(metrics.iloc[-1].to_dict())
    assert summary["best"]["val_acc"] == metrics["val_acc"].max()
    assert set(summary["held_out"]) == TEST_KEYS

    # model.pt: a plain state_dict of the best epoch's weights; it reproduces the held-out scores.
    state = torch.load(out / "model.pt", weights_only=True)
    model = ShapesNet(dropout=0.25, hidden=DEFAULTS["hidden"])
    model.load_state_dict(state)
    data = EXPERIMENT.load(DataOptions())
    again = evaluate(EXPERIMENT.task, model, data.test, summary["config"], "fp32", prefix="test_")
    assert again == pytest.approx(summary["held_out"], rel=1e-4)


def broken_labels(tmp_path: Path) -> Path:
    from datasets.shapes_generator import write_dataset

    folder = tmp_path / "broken"
    write_dataset(folder, 4, seed=0)
    lines = (folder / "labels.csv").read_text().splitlines()
    lines[2] = "img_00001.png,1,1,1,1,1,5"
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder


BAD = {
    # case: (extra arguments, words the one-line message must contain)
    "unknown key": (["--set", "learning_rate=0.1"], ["learning_rate"]),
    "wrong type": (["--set", "lr=abc"], ["lr", "abc"]),
    "int not integer": (["--set", "hidden=1.5"], ["hidden"]),
    "dropout out of range": (["--set", "dropout=1.5"], ["dropout", "1.5"]),
    "negative lr": (["--set", "lr=-0.1"], ["lr"]),
    "unknown setting": (["--set", "setting=foo"], ["setting", "foo"]),
    "malformed set": (["--set", "lr"], ["lr", "key=value"]),
    "zero epochs": (["--epochs", "0"], ["epochs"]),
    "missing data dir": (["--data-dir", "{tmp}/no-such-data"], ["no-such-data"]),
    "broken labels.csv": (["--data-dir", "{broken}"], ["labels.csv", "line 3"]),
    "subset zero": (["--subset", "0"], ["--subset"]),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input(offline, tmp_path, capsys, case):
    extra, words = BAD[case]
    broken = broken_labels(tmp_path) if case == "broken labels.csv" else None
    extra = [a.format(tmp=tmp_path, broken=broken) for a in extra]
    out = tmp_path / "runs" / "out"
    code = cli.run(train.main, ["shapes", "--subset", "32", "--epochs", "1", "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    for w in words:
        assert w in err, err
    assert not (tmp_path / "runs").exists()  # nothing written, not even the parent folder


def test_diverging_config_is_a_user_error(offline, tmp_path, capsys):
    out = tmp_path / "runs" / "out"
    code = cli.run(train.main, ["shapes", "--subset", "32", "--epochs", "2", "--out", str(out),
                                "--set", "lr=1e12", "--set", "precision=fp32"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "not finite" in err and "lr" in err
    assert not (tmp_path / "runs").exists()


def test_unknown_experiment(offline, tmp_path, capsys):
    code = cli.run(train.main, ["nope", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "nope" in err and "shapes" in err  # names the known ones
    assert not (tmp_path / "out").exists()


def test_non_empty_out(offline, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code = cli.run(train.main, ["shapes", "--subset", "32", "--epochs", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(out) in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"


def test_out_is_a_file(offline, tmp_path, capsys):
    out = tmp_path / "out"
    out.write_text("mine")
    code = cli.run(train.main, ["shapes", "--subset", "32", "--epochs", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(out) in err
    assert out.read_text() == "mine"


@pytest.mark.parametrize("case", ["dropout out of range", "broken labels.csv"])
def test_subprocess_user_error_is_one_line(offline, tmp_path, case):
    extra, words = BAD[case]
    broken = broken_labels(tmp_path) if case == "broken labels.csv" else None
    extra = [a.format(tmp=tmp_path, broken=broken) for a in extra]
    out = tmp_path / "runs" / "out"
    env = {**os.environ, "VISION_HPSEARCH_CACHE": str(offline)}
    proc = subprocess.run([sys.executable, "-m", "search.train", "shapes", "--subset", "32", "--epochs", "1",
                           "--out", str(out), *extra], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: ") and all(w in proc.stderr for w in words)
    assert not (tmp_path / "runs").exists()
