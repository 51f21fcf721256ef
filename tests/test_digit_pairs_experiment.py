"""The digit-pairs experiment under the search: its task, its conditional auxiliary weight, and a
smoke search + retraining + report over two architectures on the offline digits source."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from search import cli, experiments, run
from search.experiments import digit_pairs as dp
from search.io import read_json

pytest.importorskip("sklearn")
EXP = experiments.get("digit-pairs")


def batch(n: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    classes = torch.randint(0, 10, (n, 2), generator=g)
    y = torch.cat([(classes[:, :1] <= classes[:, 1:]).long(), classes], dim=1)
    return torch.randn(n, 2, 14, 14, generator=g), y


@pytest.mark.parametrize("arch", dp.ARCHS)
def test_aux_weight_only_changes_the_loss_where_there_are_auxiliary_heads(arch):
    x, y = batch()
    config = {**EXP.defaults, "arch": arch, "dropout": 0.0}
    torch.manual_seed(0)
    model = EXP.task.build_model(config).eval()
    outputs = model(x)
    low = EXP.task.loss(outputs, y, {**config, "aux_weight": 0.1}).item()
    high = EXP.task.loss(outputs, y, {**config, "aux_weight": 5.0}).item()
    if arch == "shared_aux":  # comparison loss + aux_weight x digit loss
        assert high > low
    else:  # no auxiliary heads, or digits are the only loss (direct_digits)
        assert high == low
    assert "aux_weight" in EXP.inactive({"arch": arch}) or arch == "shared_aux"
    assert EXP.inactive({}) == set()  # architecture searched: aux_weight stays in the space


def test_metrics_by_hand():
    y = torch.tensor([[1, 2, 3], [0, 7, 1], [1, 4, 4]])
    digits = torch.full((3, 2, 10), -5.0)
    for i, (a, b) in enumerate([(2, 3), (7, 1), (4, 9)]):  # the last pair's second digit is wrong
        digits[i, 0, a] = digits[i, 1, b] = 5.0
    outputs = {"logit": torch.tensor([2.0, 1.0, 3.0]), "digits": digits}  # the second comparison is wrong
    m = EXP.task.metrics(outputs, y, {**EXP.defaults})
    assert m["acc"] == pytest.approx(2 / 3) and m["digit_acc"] == pytest.approx(5 / 6)


def test_unknown_source_and_source_on_shapes_are_one_line_errors(tmp_path, capsys):
    assert cli.run(run.main, ["digit-pairs", "--source", "emnist", "--results", str(tmp_path)]) == 2
    assert "digit-pairs reads mnist, mnist5k, digits" in capsys.readouterr().err
    assert cli.run(run.main, ["shapes", "--source", "digits", "--results", str(tmp_path)]) == 2
    assert "drop --source" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    code = cli.run(run.main, ["digit-pairs", "--source", "digits", "--smoke", "--trials", "3", "--max-epochs", "2",
                              "--set", "batch_size=50", "--top-k", "1", "--seeds", "2", "--results", str(results),
                              "--name", "d"])
    return code, results / "digit-pairs" / "d"


def test_smoke_search_retrain_and_report(digits_run):
    code, run_dir = digits_run
    assert code == 0
    info = read_json(run_dir / "run.json")
    assert info["options"]["source"] == "digits" and info["data"]["full_train"] == 1000
    trials = pd.read_csv(run_dir / "trials.csv")
    assert trials["arch"].iloc[0] == "direct_digits"  # the seed's setup is the warm start
    assert trials["arch"].nunique() >= 2
    retrained = pd.read_csv(run_dir / "retrain.csv")
    assert len(retrained) == 2 * 2 and retrained["test_acc"].between(0, 1).all()
    base = retrained[retrained["label"] == "baseline"]
    assert set(base["config_arch"]) == {"direct_digits"} and base["config_lr"].eq(3e-4).all()
    text = (run_dir / "report.md").read_text()
    assert "## Accuracy by architecture" in text and (run_dir / "report" / "accuracy_by_architecture.png").is_file()
    for arch in trials["arch"].unique():
        assert f"| {arch} |" in text
