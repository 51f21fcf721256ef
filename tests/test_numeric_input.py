"""Every numeric flag of every command refuses NaN, inf, negative and out-of-range values while the command
line is parsed: one line, exit 2, before Ray starts or anything is written (`0` no longer means the default)."""

from __future__ import annotations

import pytest

from search import cli, retrain, run, train

NOT_NUMBERS = ["nan", "inf", "-inf", "x"]
RUN_FLAGS = {  # flag: values it must refuse besides NOT_NUMBERS
    "--seed": ["-1", str(2**32), "1.5"], "--trials": ["0", "-3"], "--max-epochs": ["0"],
    "--time-budget": ["0", "-1"], "--grace-epochs": ["0"], "--concurrency": ["0"], "--cpus-per-trial": ["0", "-1"],
    "--gpus-per-trial": ["-0.5"], "--top-k": ["0"], "--seeds": ["0"], "--retrain-epochs": ["0"],
    "--retrain-minutes": ["0", "-2"], "--max-failures": ["-1"],
}
RETRAIN_FLAGS = {"--top-k": ["0"], "--seeds": ["0"], "--epochs": ["0"], "--cpus-per-run": ["0", "-1"],
                 "--gpus-per-run": ["-1"]}
TRAIN_FLAGS = {"--epochs": ["0", "-1"], "--seed": ["-1", str(2**32)], "--subset": ["0", "-5"]}


def refused(main, argv, capsys) -> str:
    code = cli.run(main, argv)
    err = capsys.readouterr().err
    assert code == cli.EXIT_USER_ERROR and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("flag, value", [(f, v) for f, bad in RUN_FLAGS.items() for v in [*bad, *NOT_NUMBERS]
                                         if not (f == "--seed" and v == "x")])
def test_search_refuses_a_bad_number_before_anything_starts(tmp_path, flag, value, capsys):
    err = refused(run.main, ["shapes", "--smoke", f"{flag}={value}", "--results", str(tmp_path / "r")], capsys)
    assert flag in err and not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag, value", [(f, v) for f, bad in RETRAIN_FLAGS.items() for v in [*bad, "nan", "inf"]])
def test_retrain_refuses_a_bad_number(tmp_path, flag, value, capsys):
    assert flag in refused(retrain.main, [str(tmp_path), f"{flag}={value}"], capsys)


@pytest.mark.parametrize("flag, value", [("--gpus-per-trial", "0"), ("--seed", str(2**32 - 1)), ("--seed", "0"),
                                         ("--max-failures", "0"), ("--cpus-per-trial", "0.5")])
def test_values_at_the_edges_pass(flag, value):
    args = run.parser().parse_args(["shapes", flag, value])
    assert getattr(args, flag[2:].replace("-", "_")) == float(value)


@pytest.mark.parametrize("flag, value", [(f, v) for f, bad in TRAIN_FLAGS.items() for v in [*bad, "nan", "1.5"]])
def test_train_refuses_a_bad_number(tmp_path, flag, value, capsys):
    out = tmp_path / "out"
    assert flag in refused(train.main, ["shapes", f"{flag}={value}", "--out", str(out)], capsys)
    assert not out.exists()


def test_train_refuses_an_unwritable_out_before_it_trains(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(train, "fit", lambda *a, **k: pytest.fail("trained before checking --out"))
    err = refused(train.main, ["shapes", "--epochs", "1", "--out", str(tmp_path / "file" / "out")], capsys)
    assert "--out" in err and "cannot write" in err
