"""search.loop.fit with the shapes task (small generated subsets) and with a scripted stub task;
the shapes task's metrics helpers."""

from __future__ import annotations

import io
import math
import subprocess
import sys
from itertools import combinations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from datasets.shapes import KINDS, decode, encode
from datasets.shapes_generator import generate
from search.experiments.shapes import DEFAULTS, ShapesTask, counts_to_class, macro_f1
from search.loop import Decoding, NonFiniteError, Split, choose_decoding, evaluate, fit, predict

CPU = torch.device("cpu")
TASK = ShapesTask()
# fp32: the strictest setting for the equality checks below ("auto" would pick bf16 on some CPUs).
BASE = {**DEFAULTS, "precision": "fp32", "batch_size": 64, "patience": 0}
METRICS = ({"epoch", "time_s", "train_s", "train_loss", "val_loss", "val_rank_loss", "val_acc", "val_f1",
            "val_pair_acc", "val_rmse", "val_mae"}
           | {f"val_{m}_{k}" for m in ("rmse", "mae") for k in ("squares", "circles", "up", "right", "down", "left")})


@pytest.fixture(scope="module")
def data() -> tuple[Split, Split]:
    images, counts = generate(320, seed=11)
    return Split(images[:256, None], counts[:256]), Split(images[256:, None], counts[256:])


def small(data, n_train: int, n_val: int = 64) -> tuple[Split, Split]:
    train, val = data
    return Split(train.x[:n_train], train.y[:n_train]), Split(val.x[:n_val], val.y[:n_val])


def rows_without_time(history):
    return [{k: v for k, v in row.items() if k not in ("time_s", "train_s")} for row in history]


# ---------------------------------------------------------------- the shapes task in the loop


def test_training_loss_decreases_and_row_names(data):
    result = fit(TASK, {**BASE, "epochs": 3}, *data, device=CPU)
    losses = [row["train_loss"] for row in result.history]
    assert losses[2] < losses[1] < losses[0], losses
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    for row in result.history:
        assert set(row) == METRICS
        assert 0 <= row["val_acc"] <= row["val_pair_acc"] <= 1 and 0 <= row["val_f1"] <= 1
        assert row["val_rmse"] >= row["val_mae"] >= 0  # RMSE >= MAE always
        for k in KINDS:
            assert row[f"val_rmse_{k}"] >= row[f"val_mae_{k}"] >= 0
    times = [row["time_s"] for row in result.history]
    assert times == sorted(times)  # cumulative training time
    # each epoch's training alone: part of its time (time_s adds the validation passes)
    epoch_s = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert all(0 < row["train_s"] < s for row, s in zip(result.history, epoch_s, strict=True))
    assert result.best is not None and result.best["val_acc"] == max(r["val_acc"] for r in result.history)
    assert not result.stopped_early and isinstance(result.model, nn.Module)


def initial_model(config):
    torch.manual_seed(config["seed"])  # fit seeds model init the same way
    return TASK.build_model(config)


def same_params(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize("setting", ["multitask", "cls", "cnt"])
def test_settings(data, setting):
    train, val = small(data, 64)
    config = {**BASE, "epochs": 1, "setting": setting, "lambda_cnt": 2.0}
    result = fit(TASK, config, train, val, device=CPU)
    init = initial_model(config)
    # A head that the setting's loss does not use is never updated (no gradient reaches it).
    assert same_params(result.model.head_cls, init.head_cls) == (setting == "cnt")
    assert same_params(result.model.head_cnt, init.head_cnt) == (setting == "cls")
    assert not same_params(result.model.backbone, init.backbone)

    row = result.history[-1]
    log_probs, counts = predict(TASK, result.model, val, config, "fp32")
    true = encode(val.y)
    if setting == "cnt":  # the class is read off the predicted counts
        pred, pred_counts = counts_to_class(counts), counts
    elif setting == "cls":  # the counts are read off the predicted class
        pred, pred_counts = log_probs.argmax(1), decode(log_probs.argmax(1)).float()
        raw_rmse = (counts - val.y.float()).pow(2).mean().sqrt().item()
        assert not math.isclose(row["val_rmse"], raw_rmse, rel_tol=1e-3)  # the untrained count head is not used
    else:
        pred, pred_counts = log_probs.argmax(1), counts
    assert row["val_acc"] == pytest.approx((pred == true).float().mean().item())
    assert row["val_rmse"] == pytest.approx((pred_counts - val.y.float()).pow(2).mean().sqrt().item(), rel=1e-5)
    assert row["val_mae"] == pytest.approx((pred_counts - val.y.float()).abs().mean().item(), rel=1e-5)
    nll, cnt = F.nll_loss(log_probs, true).item(), F.smooth_l1_loss(counts, val.y.float()).item()
    expected_loss = {"cls": nll, "cnt": cnt, "multitask": nll + 2.0 * cnt}[setting]
    assert row["val_loss"] == pytest.approx(expected_loss, rel=1e-5)


def test_huge_lr_raises_non_finite(data):
    train, val = small(data, 64)
    with pytest.raises(NonFiniteError, match="epoch 1"):
        fit(TASK, {**BASE, "epochs": 3, "lr": 1e12, "batch_size": 16}, train, val, device=CPU)


def test_same_seed_same_history_other_seed_differs(data):
    train, val = small(data, 96)
    config = {**BASE, "epochs": 1, "batch_size": 32}
    a = fit(TASK, config, train, val, device=CPU)
    b = fit(TASK, config, train, val, device=CPU)
    c = fit(TASK, {**config, "seed": config["seed"] + 1}, train, val, device=CPU)
    assert rows_without_time(a.history) == rows_without_time(b.history)
    assert same_params(a.model, b.model)
    assert rows_without_time(a.history) != rows_without_time(c.history)


def test_resume_equals_uninterrupted_run(data):
    """Resuming from the epoch-1 checkpoint replays epoch 2 exactly (model, optimiser, both RNG streams).
    CPU kernels are deterministic for a fixed thread count, so exact equality is expected."""
    train, val = small(data, 96)
    config = {**BASE, "epochs": 2, "batch_size": 32}  # default augmentation on: the generator state matters
    saved = {}

    def on_epoch(row, checkpoint, *_):
        if row["epoch"] == 1:
            saved["live"] = checkpoint()  # kept in memory, as is
            buf = io.BytesIO()
            torch.save(checkpoint(), buf)  # as search.trial does
            saved["file"] = buf.getvalue()

    full = fit(TASK, config, train, val, device=CPU, on_epoch=on_epoch)
    from_file = torch.load(io.BytesIO(saved["file"]), weights_only=True)
    for state in (from_file, saved["live"]):
        assert state["epoch"] == 1 and len(state["history"]) == 1  # a snapshot of epoch 1
        resumed = fit(TASK, config, train, val, device=CPU, state=state)
        assert rows_without_time(resumed.history) == rows_without_time(full.history)
        assert same_params(resumed.model, full.model)


# ---------------------------------------------------------------- the loop's mechanics (stub task)


class ScriptedTask:
    """A linear model on 4 features whose validation accuracy follows a script, one value per epoch."""

    def __init__(self, accs):
        self.accs, self.calls = list(accs), 0

    def build_model(self, config):
        return nn.Linear(4, 1)

    def prepare(self, x, y, config, generator):
        return x, y

    def loss(self, outputs, y, config):
        return F.mse_loss(outputs.squeeze(1), y)

    def metrics(self, outputs, y, config):
        self.calls += 1
        return {"acc": self.accs[self.calls - 1]}


STUB_CONFIG = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "batch_size": 8,
               "precision": "fp32", "seed": 0, "epochs": 8, "patience": 2}


@pytest.fixture
def stub_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    return Split(x, x.sum(1)), Split(x[:8], x[:8].sum(1))


def test_early_stopping_and_keep_best(stub_data):
    task = ScriptedTask([0.5, 0.6, 0.55, 0.58, 0.9, 0.9, 0.9, 0.9])
    calls, snapshots = [], {}

    def on_epoch(row, checkpoint, last):
        calls.append((row["epoch"], last))
        snapshots[row["epoch"]] = checkpoint()["model"]

    result = fit(task, STUB_CONFIG, *stub_data, device=CPU, on_epoch=on_epoch, keep_best=True)
    assert result.stopped_early
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4]  # two epochs without improvement
    assert calls == [(1, False), (2, False), (3, False), (4, True)]
    assert result.best["epoch"] == 2 and result.best["val_acc"] == 0.6
    # keep_best: the returned model has epoch 2's weights, not epoch 4's.
    assert all(torch.equal(result.model.state_dict()[k], v) for k, v in snapshots[2].items())
    assert not all(torch.equal(snapshots[4][k], v) for k, v in snapshots[2].items())


def test_patience_zero_never_stops(stub_data):
    task = ScriptedTask([0.9, 0.1, 0.1, 0.1])
    result = fit(task, {**STUB_CONFIG, "epochs": 4, "patience": 0}, *stub_data, device=CPU)
    assert len(result.history) == 4 and not result.stopped_early and result.best["epoch"] == 1


@pytest.mark.parametrize("schedule, epochs_run", [("constant", 4), ("cosine", 8), ("onecycle", 8)])
def test_patience_waits_for_a_plateau_under_a_constant_rate_only(stub_data, schedule, epochs_run):
    """A decaying schedule plans its own end: its plateaus are not the end of learning."""
    task = ScriptedTask([0.5, 0.6, 0.55, 0.58, 0.9, 0.9, 0.9, 0.9])
    result = fit(task, {**STUB_CONFIG, "schedule": schedule}, *stub_data, device=CPU)
    assert len(result.history) == epochs_run and result.stopped_early == (schedule == "constant")


def test_patience_exhausted_on_last_epoch_is_not_early(stub_data):
    task = ScriptedTask([0.5, 0.4, 0.3])
    result = fit(task, {**STUB_CONFIG, "epochs": 3, "patience": 2}, *stub_data, device=CPU)
    assert len(result.history) == 3 and not result.stopped_early


def test_objective_mode_min(stub_data):
    task = ScriptedTask([0.5, 0.2, 0.3, 0.1])
    result = fit(task, {**STUB_CONFIG, "epochs": 4, "patience": 0}, *stub_data, device=CPU,
                 objective=("val_acc", "min"))
    assert result.best["epoch"] == 4


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_metric_raises_naming_it(stub_data, bad):
    task = ScriptedTask([0.5, bad, 0.7])
    with pytest.raises(NonFiniteError) as info:
        fit(task, {**STUB_CONFIG, "epochs": 3}, *stub_data, device=CPU)
    assert "val_acc" in str(info.value) and "epoch 2" in str(info.value)
    assert "train_loss" not in str(info.value)  # only the bad value is named


class ReadTask(ScriptedTask):
    """Its validation accuracy depends on how the model is read: `view`, a key of the forward pass (each
    pass is logged), and `shift`, read off the outputs. The plain reading (0, 0) follows the script."""

    READ = {(0, 1.0): 0.6, (1, 0.0): 0.7, (1, 1.0): 0.7}

    def __init__(self, accs):
        super().__init__(accs)
        self.passes = []

    def eval_forward(self, model, x, config):
        self.passes.append(config["view"])
        return model(x)

    def metrics(self, outputs, y, config):
        read = (config["view"], config["shift"])
        return {"acc": self.READ[read]} if read in self.READ else super().metrics(outputs, y, config)


READINGS = Decoding(forward={"view": (0, 1)}, outputs={"shift": (0.0, 1.0)})
READ_CONFIG = {**STUB_CONFIG, "view": 0, "shift": 0.0, "patience": 0}


def test_choose_decoding_reads_every_way_with_one_pass_per_forward_value(stub_data):
    task, model = ReadTask([0.5]), nn.Linear(4, 1)
    best = choose_decoding(task, model, stub_data[1], READ_CONFIG, "fp32", READINGS, ("val_acc", "max"))
    assert task.passes == [0, 1]  # the outputs are read both ways from one pass
    # (1, 0.0) and (1, 1.0) tie at 0.7: the earlier, plainer reading is kept
    assert (best["val_acc"], best["decoded_view"], best["decoded_shift"]) == (0.7, 1, 0.0)
    worst = choose_decoding(ReadTask([0.5]), model, stub_data[1], READ_CONFIG, "fp32", READINGS, ("val_acc", "min"))
    assert (worst["val_acc"], worst["decoded_view"], worst["decoded_shift"]) == (0.5, 0, 0.0)


class TiedReadTask(ReadTask):
    """As ReadTask, with an error that only `shift` moves (as shapes' count reading moves no class)."""

    def metrics(self, outputs, y, config):
        return {**super().metrics(outputs, y, config), "err": 1.0 - 0.25 * config["shift"]}


def test_readings_equal_on_the_objective_are_chosen_on_the_tie_break(stub_data):
    model = nn.Linear(4, 1)
    tied = Decoding(READINGS.forward, READINGS.outputs, tie_break=(("val_err", "min"),))
    best = choose_decoding(TiedReadTask([0.5]), model, stub_data[1], READ_CONFIG, "fp32", tied, ("val_acc", "max"))
    # (1, 0.0) and (1, 1.0) tie at 0.7; the lower error of shift 1.0 decides; (0, 1.0) has it too but 0.6
    assert (best["val_acc"], best["val_err"], best["decoded_view"], best["decoded_shift"]) == (0.7, 0.75, 1, 1.0)
    assert tied.unpinned({"view": 0}).tie_break == tied.tie_break


@pytest.mark.parametrize("schedule, accs, epochs", [
    ("cosine", [0.5, 0.55, 0.4, 0.4], 3),  # its planned end
    ("constant", [0.5, 0.4, 0.3, 0.3], 3),  # patience 2 ends it at epoch 3
])
def test_a_runs_last_epoch_is_scored_with_its_best_decoding_and_each_row_names_its_own(stub_data, schedule, accs,
                                                                                      epochs):
    task = ReadTask(accs)
    config = {**READ_CONFIG, "schedule": schedule, "epochs": 3 if schedule == "cosine" else 8, "patience": 2}
    lasts = []
    result = fit(task, config, *stub_data, device=CPU, decoding=READINGS,
                 on_epoch=lambda row, _, last: lasts.append(last))
    assert len(result.history) == epochs and lasts == [False] * (epochs - 1) + [True]
    assert task.passes == [0] * epochs + [0, 1]  # one plain pass an epoch, then the last one read every way
    *earlier, last = result.history
    assert all((r["decoded_view"], r["decoded_shift"]) == (0, 0.0) for r in earlier)
    assert [r["val_acc"] for r in earlier] == accs[:epochs - 1]
    assert (last["val_acc"], last["decoded_view"], last["decoded_shift"]) == (0.7, 1, 0.0)
    assert result.best is last  # better than any epoch read plainly


def test_a_pinned_key_is_never_chosen_for_it():
    """`--set view=1` pins it: the trials are read only the ways left (or plainly, where none is)."""
    from types import SimpleNamespace

    from search.stages import trial_readings

    assert READINGS.unpinned({"view": 1, "lr": 0.1}) == Decoding(forward={}, outputs={"shift": (0.0, 1.0)})
    assert READINGS.unpinned({"view": 1, "shift": 0.0}) is None
    ctx = lambda choose, pinned: SimpleNamespace(exp=SimpleNamespace(decoding=READINGS),  # noqa: E731
                                                 plan=SimpleNamespace(choose_decoding=choose),
                                                 record=SimpleNamespace(pinned=pinned))
    assert trial_readings(ctx(True, {"shift": 1.0})).keys == ("view",)
    assert trial_readings(ctx(False, {})) is None


def test_no_decoding_without_a_validation_split(stub_data):
    task = ReadTask([])
    result = fit(task, {**READ_CONFIG, "epochs": 2}, stub_data[0], None, device=CPU, decoding=READINGS)
    assert task.passes == [] and all("decoded_view" not in r for r in result.history)


def test_shapes_last_epoch_scores_are_the_chosen_readings_own(data):
    """On the real task: the last row's metrics are exactly evaluate() with the decoding it names, and
    at least as good as the plain reading's."""
    from search.experiments.shapes import EXPERIMENT

    train, val = small(data, 128)
    config = {**BASE, "epochs": 2}
    result = fit(TASK, config, train, val, device=CPU, decoding=EXPERIMENT.decoding)
    last = result.history[-1]
    chosen = {k: last["decoded_" + k] for k in EXPERIMENT.decoding.keys}
    assert chosen["tta"] in (0, 1) and chosen["joint_decode"] in EXPERIMENT.decoding.outputs["joint_decode"]
    scored = evaluate(TASK, result.model, val, {**config, **chosen}, "fp32")
    assert scored == {k: last[k] for k in scored}
    plain = evaluate(TASK, result.model, val, config, "fp32")
    assert last["val_acc"] >= plain["val_acc"]
    assert last["val_rmse"] <= evaluate(TASK, result.model, val, {**config, **chosen, "count_decode": 0.0},
                                        "fp32")["val_rmse"]  # the counts are read the best way for that class


def test_no_validation_split(stub_data):
    result = fit(ScriptedTask([]), {**STUB_CONFIG, "epochs": 2}, stub_data[0], None, device=CPU)
    assert [set(r) for r in result.history] == [{"epoch", "train_loss", "train_s", "time_s"}] * 2
    assert result.best is None and not result.stopped_early


def denormal_survives() -> bool:
    return (torch.tensor([1e-38]) / 20).item() != 0  # below float32's smallest normal number, 1.2e-38


@pytest.fixture
def flush_supported():
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush denormal numbers")


def test_training_on_a_cpu_computes_denormal_numbers_as_zero(stub_data, flush_supported):
    torch.set_flush_denormal(False)
    try:
        assert denormal_survives()
        during = []
        fit(ScriptedTask([]), {**STUB_CONFIG, "epochs": 2}, stub_data[0], None, device=CPU,
            on_epoch=lambda *_: during.append(denormal_survives()))
        assert during == [False, False]  # they cost an fp32 epoch 1.2-1.8x its time on a CPU
    finally:
        torch.set_flush_denormal(True)


def test_a_process_that_imports_the_loop_flushes_denormals_on_every_thread(flush_supported):
    """Threads torch started before the flag was set keep computing them: the flag is set at import,
    before a CLI loads its data (which starts the threads), not only when fit() starts."""
    script = (
        "import torch; torch.set_num_threads(2)\n"
        "import search.loop\n"
        "(torch.rand(1 << 22) * 2).sum()  # loading the data starts torch's threads\n"
        "print(int((torch.full((1 << 22,), 1e-38) / 20).count_nonzero()))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == "0"


# ---------------------------------------------------------------- metric helpers

MY_PAIRS = list(combinations(range(6), 2))


def test_counts_to_class():
    pred = torch.tensor([
        [0.2, 7.6, 0.1, 2.4, 0.0, 0.0],  # circles 8 + right 2
        [0.0, 0.0, 0.0, 0.0, 0.4, 11.0],  # down 0.4 -> clamped to 1, left 9
        [9.7, 0.3, 0.0, 0.0, 0.0, 0.0],  # squares 9.7 -> clamped to 9, circles 1
        [-1.0, 0.0, 4.2, 0.0, 0.0, 5.1],  # up 4 + left 6 (the other counts ignored)
        [0.0, 0.0, 0.0, 6.0, 3.9, 0.0],  # right and down: the lower KIND (right) decides: 6, down 4
    ])
    expected = [MY_PAIRS.index((1, 3)) * 9 + 7, MY_PAIRS.index((4, 5)) * 9 + 0, MY_PAIRS.index((0, 1)) * 9 + 8,
                MY_PAIRS.index((2, 5)) * 9 + 3, MY_PAIRS.index((3, 4)) * 9 + 5]
    assert counts_to_class(pred).tolist() == expected


def test_counts_to_class_exact_counts_round_trip():
    classes = torch.arange(135)
    assert torch.equal(counts_to_class(decode(classes).float()), classes)


def test_macro_f1_hand_computed():
    true = torch.tensor([0, 0, 1, 1, 2])
    pred = torch.tensor([0, 1, 1, 1, 3])
    # class 0: P 1, R 1/2 -> 2/3; class 1: P 2/3, R 1 -> 0.8; class 2 (only in truth) 0; class 3 (only
    # predicted) 0; classes 4..134 occur in neither and do not count.
    assert macro_f1(pred, true, 135) == pytest.approx((2 / 3 + 0.8) / 4)


def reference_macro_f1(pred: list[int], true: list[int]) -> float:
    """scikit-learn's f1_score(average='macro'): labels = classes in truth or predictions,
    F1 = 2PR/(P+R) with 0 where undefined."""
    scores = []
    for c in sorted(set(true) | set(pred)):
        tp = sum(p == t == c for p, t in zip(pred, true, strict=True))
        n_pred, n_true = pred.count(c), true.count(c)
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_true if n_true else 0.0
        scores.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return sum(scores) / len(scores)


@pytest.mark.parametrize("seed", range(5))
def test_macro_f1_matches_reference(seed):
    g = torch.Generator().manual_seed(seed)
    true = torch.randint(0, 20, (200,), generator=g)
    pred = torch.where(torch.rand(200, generator=g) < 0.5, true, torch.randint(0, 25, (200,), generator=g))
    assert macro_f1(pred, true, 135) == pytest.approx(reference_macro_f1(pred.tolist(), true.tolist()))


# ---------------------------------------------------------------- learning-rate schedules


def test_schedules_by_hand():
    from search.loop import lr_at

    assert [lr_at("constant", 0.1, s, 10) for s in (0, 5, 9)] == [0.1, 0.1, 0.1]
    # cosine: 5% warm-up (1 step of 20), peak at step 1, cosine to ~0 at the end, half way at the middle
    cos = [lr_at("cosine", 1.0, s, 20) for s in range(20)]
    assert cos[0] == pytest.approx(1.0) and cos[1] == pytest.approx(1.0)
    assert cos[1 + 19 // 2] == pytest.approx(0.5 * (1 + math.cos(math.pi * 9 / 19)))
    assert all(a >= b for a, b in zip(cos[1:], cos[2:], strict=False)) and cos[-1] < 0.01
    warm = [lr_at("cosine", 1.0, s, 100) for s in range(6)]  # 5 warm-up steps of 100: 0.2, 0.4, ..., 1
    assert warm[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    # one-cycle: lr/25 at the first step, the peak 30% in, lr/1e4 at the last
    one = [lr_at("onecycle", 1.0, s, 11) for s in range(11)]
    assert one[0] == pytest.approx(1 / 25) and one[3] == pytest.approx(1.0) and one[-1] == pytest.approx(1e-4)
    assert one[0] < one[1] < one[2] < one[3] > one[4] > one[10]
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_at("step", 1.0, 0, 10)


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_the_optimiser_steps_at_the_schedules_rate_and_a_resume_continues_the_curve(stub_data, schedule):
    """Every optimiser step of a 3-epoch run uses lr_at(step) of the whole planned run (4 steps an
    epoch here); a run resumed from the epoch-1 checkpoint continues the same curve, step for step."""
    from search.loop import lr_at

    config = {**STUB_CONFIG, "epochs": 3, "patience": 0, "schedule": schedule, "lr": 0.05}
    seen: list[float] = []
    real_step = torch.optim.SGD.step

    def recording_step(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    saved = {}

    def on_epoch(row, checkpoint, *_):
        if row["epoch"] == 1:
            saved["state"] = checkpoint()

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.SGD, "step", recording_step)
        full = fit(ScriptedTask([0.1] * 3), config, *stub_data, device=CPU, on_epoch=on_epoch)
        full_lrs, seen[:] = list(seen), []
        resumed = fit(ScriptedTask([0.1] * 3), config, *stub_data, device=CPU, state=saved["state"])
    assert full_lrs == pytest.approx([lr_at(schedule, 0.05, s, 12) for s in range(12)])
    assert seen == pytest.approx(full_lrs[4:])  # epochs 2 and 3: steps 4..11 of the same curve
    assert same_params(resumed.model, full.model)


def test_constant_schedule_leaves_the_optimisers_lr_alone(stub_data):
    """The hand-tuned baselines run exactly as the seeds ran them: no per-step lr is set at all."""
    with_key = fit(ScriptedTask([0.1] * 2), {**STUB_CONFIG, "epochs": 2, "schedule": "constant"}, *stub_data,
                   device=CPU)
    without = fit(ScriptedTask([0.1] * 2), {**STUB_CONFIG, "epochs": 2}, *stub_data, device=CPU)
    assert same_params(with_key.model, without.model)


# ---------------------------------------------------------------- generated images in the training pool


def test_generated_images_join_the_pool_from_their_own_seed(data):
    from datasets.shapes import generated_tensors
    from search.experiments.shapes_task import GENERATED_SEED

    train, _ = small(data, 64)
    assert TASK.training_pool(train, {**BASE, "generated": 0.0}) is train  # the seeds' training, untouched
    pool = TASK.training_pool(train, {**BASE, "generated": 1.5, "seed": 3})
    assert len(pool) == 64 + 96 and pool.x.dtype == train.x.dtype and pool.x.shape[1:] == train.x.shape[1:]
    assert torch.equal(pool.x[:64], train.x) and torch.equal(pool.y[:64], train.y)
    extra_x, extra_y = generated_tensors(96, GENERATED_SEED + 3)
    assert torch.equal(pool.x[64:], extra_x) and torch.equal(pool.y[64:], extra_y)
    assert torch.equal(decode(encode(pool.y[64:])), pool.y[64:])  # labels of valid classes
    other = TASK.training_pool(train, {**BASE, "generated": 1.5, "seed": 4})
    assert not torch.equal(other.x[64:], pool.x[64:])  # each seed its own images
    # never the offline default data set's images (generator seed 0), whose held-out part is scored on
    assert not torch.equal(pool.x[64:], generate(96, seed=0)[0][:, None])


class RecordingShapesTask(ShapesTask):
    """The shapes task, recording every training batch it prepares."""

    def __init__(self):
        self.batches: list[torch.Tensor] = []

    def prepare(self, x, y, config, generator):
        if generator is not None:
            self.batches.append(x.clone())
        return super().prepare(x, y, config, generator)


def test_an_epoch_draws_as_many_images_as_the_real_split_has_from_the_whole_pool(data):
    """A config with generated images costs what one without does: each epoch draws len(train) images of
    the pool, none twice, and generated ones among them; the pool is fixed by the seed, so runs repeat."""
    train, val = small(data, 64)
    config = {**BASE, "generated": 1.0, "batch_size": 16, "epochs": 2, "tta": 0}
    task = RecordingShapesTask()
    first = fit(task, config, train, val, device=CPU)
    assert [len(b) for b in task.batches] == [16] * 8  # 2 epochs x 64 images, not 2 x 128
    real = {bytes(img.numpy()) for img in train.x}
    pool = {bytes(img.numpy()) for img in TASK.training_pool(train, config).x}
    for epoch in (task.batches[:4], task.batches[4:]):
        seen = [bytes(img.numpy()) for batch in epoch for img in batch]
        assert set(seen) <= pool and len(set(seen)) == 64  # drawn from the pool, without repeats
        assert 0 < sum(s not in real for s in seen) < 64  # real and generated images alike
    again = fit(RecordingShapesTask(), config, train, val, device=CPU)
    assert rows_without_time(again.history) == rows_without_time(first.history)
