"""--settings: one search per setting of the experiment, then their retrained results side by side."""

from __future__ import annotations

import pandas as pd
import pytest

from search import cli, run
from search.io import read_json


@pytest.fixture(scope="module")
def settings_run(tmp_path_factory, generated_cache):
    results = tmp_path_factory.mktemp("results")
    argv = ["shapes", "--smoke", "--trials", "2", "--max-epochs", "1", "--top-k", "1", "--seeds", "2",
            "--settings", "cls,cnt", "--results", str(results), "--name", "s"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VISION_HPSEARCH_CACHE", str(generated_cache))
        code = cli.run(run.main, argv)
    return code, results / "shapes", argv


def test_one_run_per_setting_with_the_setting_pinned(settings_run):
    code, root, _ = settings_run
    assert code == 0
    for setting in ("cls", "cnt"):
        info = read_json(root / f"s-{setting}" / "run.json")
        assert info["pinned"] == {"setting": setting}
        assert "lambda_cnt" not in info["searched"]  # only the multitask setting weighs two losses
        table = pd.read_csv(root / f"s-{setting}" / "retrain.csv")
        assert set(table["config_setting"]) == {setting}  # the baseline too is trained in that setting
        assert (root / f"s-{setting}" / "report.md").is_file()


def test_comparison_table_has_every_run_and_config(settings_run):
    _, root, _ = settings_run
    table = pd.read_csv(root / "s-settings.csv")
    assert list(zip(table["run"], table["config"], strict=True)) == [
        ("s-cls", "baseline"), ("s-cls", "top1"), ("s-cnt", "baseline"), ("s-cnt", "top1")]
    for run_name, config in zip(table["run"], table["config"], strict=True):
        retrained = pd.read_csv(root / run_name / "retrain.csv")
        acc = retrained[retrained["label"] == config]["test_acc"]
        cell = table[(table["run"] == run_name) & (table["config"] == config)]["test_acc"].item()
        assert cell == f"{acc.mean():.4f} ± {acc.std(ddof=1):.4f}"
    assert "| s-cnt |" in (root / "s-settings.md").read_text()


def test_rerunning_skips_finished_settings(settings_run, capsys):
    _, root, argv = settings_run
    before = (root / "s-cls" / "trials.csv").stat().st_mtime_ns
    assert cli.run(run.main, argv) == 0
    out = capsys.readouterr().out
    assert out.count("done before") == 2
    assert (root / "s-cls" / "trials.csv").stat().st_mtime_ns == before


@pytest.mark.parametrize("extra, message", [
    (["--settings", "cls,bogus"], "setting='bogus' is not one of"),
    (["--settings", "cls", "--set", "setting=cnt"], "drop --set setting"),
    (["--settings", "cls,cls"], "distinct values"),
])
def test_bad_settings_one_line_exit_2(tmp_path, capsys, extra, message):
    assert cli.run(run.main, ["shapes", "--smoke", "--results", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not any(tmp_path.rglob("*.json"))
