"""Fashion-MNIST, CIFAR-10 and facades under the search: their shared classifier pieces checked by
hand, and a smoke search + retraining + report of each on data in its real on-disk format."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from test_fashion_cifar import write_cifar, write_fashion

from search import cli, run
from search.experiments.classify import ImageClassifierTask, translate
from search.loop import Split


def test_translate_moves_each_image_by_its_own_shift_with_zero_fill():
    x = torch.arange(2 * 1 * 4 * 5, dtype=torch.float).reshape(2, 1, 4, 5) + 1
    out = translate(x, torch.tensor([[1, -2], [0, 0]]))
    expected = torch.zeros(4, 5)
    expected[1:, :3] = x[0, 0, :3, 2:]  # down one row, left two columns
    assert torch.equal(out[0, 0], expected)
    assert torch.equal(out[1], x[1])


def test_statistics_are_the_training_splits_per_channel_mean_and_std():
    x = torch.zeros(2, 3, 2, 2, dtype=torch.uint8)
    x[:, 0] = 255  # channel 0 all 1.0; channel 1 half 0, half 1; channel 2 all 0
    x[0, 1] = 255
    stats = ImageClassifierTask(lambda c: None, 1).statistics(Split(x, torch.zeros(2)))
    assert stats["norm_mean"] == pytest.approx([1.0, 0.5, 0.0])
    assert stats["norm_std"] == pytest.approx([0.0, 0.5, 0.0], abs=1e-5)


def smoke(results, name, experiment, *extra):
    argv = [experiment, "--smoke", "--trials", "2", "--max-epochs", "1", "--top-k", "1", "--seeds", "2",
            "--results", str(results), "--name", name, *extra]
    assert cli.run(run.main, argv) == 0
    return results / experiment / name


@pytest.mark.parametrize("experiment, write, extras", [
    ("fashion-mnist", write_fashion, ["examples.png", "conv1_filters.png"]),
    ("cifar10", write_cifar, []),
])
@pytest.mark.slow
def test_classifier_smoke_on_real_format_files(tmp_path, experiment, write, extras):
    write(tmp_path / "data")
    run_dir = smoke(tmp_path / "results", "s", experiment, "--data-dir", str(tmp_path / "data"))
    retrained = pd.read_csv(run_dir / "retrain.csv")
    assert len(retrained) == 4 and retrained["test_acc"].between(0, 1).all()
    text = (run_dir / "report.md").read_text()
    assert "## Diagnostics of the best retrained model" in text and "| class | images | accuracy |" in text
    for name in extras:
        assert f"(report/{name})" in text and (run_dir / "report" / name).is_file()
    if experiment == "cifar10":
        assert "Softmax outputs" in text


@pytest.mark.slow
def test_facades_smoke_on_generated_facades(tmp_path):
    run_dir = smoke(tmp_path / "results", "f", "facades", "--set", "width=16")
    retrained = pd.read_csv(run_dir / "retrain.csv")
    assert set(retrained["config_width"]) == {16}  # the pin holds for the baseline too
    for column in ("test_map", "test_ap_window", "test_ap_balcony"):
        assert retrained[column].between(0, 1).all()
    row = retrained.iloc[0]
    aps = [row[f"test_ap_{c}"] for c in ("others", "facade", "pillar", "window", "balcony")]
    assert row["test_map"] == pytest.approx(sum(aps) / 5)
    text = (run_dir / "report.md").read_text()
    assert "| window |" in text and (run_dir / "report" / "facade_predictions.png").is_file()


def test_missing_data_is_one_line_naming_download(tmp_path, capsys):
    for experiment in ("fashion-mnist", "cifar10"):
        assert cli.run(run.main, [experiment, "--data-dir", str(tmp_path / "none"), "--results",
                                  str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--download" in err
    assert not (tmp_path / "r" / "fashion-mnist").exists() and not (tmp_path / "r" / "cifar10").exists()
