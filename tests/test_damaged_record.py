"""A run.json cut short, edited by hand, or not ours gives every command one line naming the file, not a
traceback; search.report refuses a run another process is writing."""

from __future__ import annotations

import pytest

from search import analyse, cli, report, retrain, run
from search.lock import RunLock


@pytest.mark.parametrize("text", ['{"experiment": "shap', "[1, 2]", '{"experiment": "shapes", "plan": 3}', ""])
@pytest.mark.parametrize("command", ["report", "analyse", "retrain", "resume"])
def test_a_damaged_run_json_is_one_line_naming_it(tmp_path, capsys, text, command):
    run_dir = tmp_path / "shapes" / "r"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(text)
    (run_dir / "trials.csv").write_text("trial_id\n")
    main, argv = {"report": (report.main, [str(run_dir)]), "analyse": (analyse.main, [str(run_dir)]),
                  "retrain": (retrain.main, [str(run_dir)]),
                  "resume": (run.main, ["shapes", "--name", "r", "--resume", "--results", str(tmp_path)])}[command]
    assert cli.run(main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run.json" in err[0] and "Traceback" not in err[0], err


def test_report_refuses_a_run_in_use(tmp_path, capsys):
    run_dir = tmp_path / "shapes" / "r"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text("{}")
    with RunLock(run_dir):
        assert cli.run(report.main, [str(run_dir)]) == 2
    assert "in use" in capsys.readouterr().err and not (run_dir / "report.md").exists()
