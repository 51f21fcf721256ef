"""The GPU and cluster paths, shown on a CPU (issue: ready for GPU clusters): the device a trial trains
on, the checkpoint's shared-memory fallback when /dev/shm is full, no host-to-device copy of the
class-encoding table per step, fp16 refused, several nodes without a shared --storage refused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from search import cli, ray_session, run, trial
from search.config import UserError
from search.plan import Hardware


def test_a_trial_trains_on_the_gpu_ray_gave_it_and_fails_loudly_without_cuda(monkeypatch):
    monkeypatch.setattr(trial.ray, "get_gpu_ids", lambda: [])
    assert trial.trial_device() == torch.device("cpu")
    monkeypatch.setattr(trial.ray, "get_gpu_ids", lambda: [3])  # Ray's id; CUDA_VISIBLE_DEVICES=3 makes it cuda:0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="assigned GPU 3 to this trial, but torch here sees no CUDA"):
        trial.trial_device()
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert trial.trial_device() == torch.device("cuda", 0) and chosen == [torch.device("cuda", 0)]


def test_a_full_shared_memory_falls_back_to_the_temp_folder_when_torch_save_fails(tmp_path, monkeypatch):
    """torch.save reports a failed write as RuntimeError ("file write failed"), not OSError: a
    container's 64 MB /dev/shm, smaller than one shapes checkpoint, must not fail the trial."""
    import tempfile

    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(trial, "SHARED_MEMORY", shm)
    real_save = torch.save

    def save(obj, path, *a, **k):
        if Path(path).is_relative_to(shm):
            raise RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing "
                               "file data/0: file write failed")
        return real_save(obj, path, *a, **k)
    monkeypatch.setattr(torch, "save", save)
    with trial.written_checkpoint(lambda snapshot: {"w": torch.ones(2), "history": []}) as d:
        assert Path(d).parent == Path(tempfile.gettempdir()) and (Path(d) / trial.STATE_FILE).is_file()
    assert list(shm.iterdir()) == []


def test_the_class_table_reaches_a_device_once_not_every_step():
    from datasets import shapes

    shapes._pair_index_on.cache_clear()
    counts = torch.tensor([[3, 7, 0, 0, 0, 0], [0, 0, 5, 5, 0, 0]])
    for _ in range(3):  # three loss steps
        shapes.encode(counts)
    assert shapes._pair_index_on.cache_info().misses == 1 and shapes._pair_index_on.cache_info().hits == 2


def test_fp16_is_refused_in_one_line(capsys):
    assert cli.run(run.main, ["shapes", "--set", "precision=fp16", "--smoke"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "precision='fp16' is not one of auto, fp32, bf16" in err


def test_several_nodes_need_a_storage_all_of_them_see():
    """Without --storage, Ray keeps trial data in the driver's run folder: trials on other nodes would
    fail at their first checkpoint. Refused before anything runs."""
    run.check_storage(Hardware(cpus=8, gpus=0, nodes=1), None)  # one node: the run folder serves
    run.check_storage(Hardware(cpus=8, gpus=0, nodes=3), "/mnt/shared/ray")
    with pytest.raises(UserError, match="3 nodes: pass --storage"):
        run.check_storage(Hardware(cpus=8, gpus=0, nodes=3), None)


def test_work_no_node_can_take_is_refused_in_one_line_not_queued_forever():
    """Resuming a GPU-planned run (or retraining one) where the cluster has no GPU: Ray would queue it
    for ever. Said in one line, with what to do."""
    from search.stages import check_resources

    check_resources(1, 0.25, Hardware(cpus=16, gpus=1), "trials", "x")  # fits
    with pytest.raises(UserError, match=r"need 8 CPU and 0.5 GPU each; this Ray cluster has 2 CPUs and 0 GPUs "
                                        r"in all: resume it where"):
        check_resources(8, 0.5, Hardware(cpus=2, gpus=0), "this run's trials", "resume it where the cluster has them")
    with pytest.raises(UserError, match="need 4 CPU each"):
        check_resources(4, 0, Hardware(cpus=2, gpus=0), "the retrain runs", "pass a smaller --cpus-per-run")


def test_a_trial_that_fits_the_clusters_totals_but_no_single_node_is_refused():
    """Three 4-CPU nodes (12 CPUs, 2 GPUs in all): a trial of 6 CPUs, or of 4 CPUs and a GPU on the 2-CPU GPU
    node, fits the totals but no node, and Ray would keep it pending for ever."""
    from search.plan import cluster_hardware
    from search.stages import check_resources

    nodes = [{"Alive": True, "Resources": r} for r in ({"CPU": 4}, {"CPU": 4, "GPU": 0}, {"CPU": 2, "GPU": 2})]
    nodes.append({"Alive": False, "Resources": {"CPU": 64, "GPU": 8}})  # a dead node offers nothing
    hw = cluster_hardware(nodes)
    check_resources(4, 0, hw, "trials", "x")
    check_resources(2, 1, hw, "trials", "x")
    for cpus, gpus in ((6, 0), (4, 1), (2, 3)):
        with pytest.raises(UserError, match="no node of this Ray cluster has that much|in all"):
            check_resources(cpus, gpus, hw, "trials", "ask for less")
    with pytest.raises(UserError, match=r"no node .*4 CPUs \+ 0 GPUs, 2 CPUs \+ 2 GPUs"):
        check_resources(6, 0, hw, "trials", "ask for less")


def test_a_cluster_refusing_our_token_is_named_in_the_error(monkeypatch):
    """With Ray's token authentication a client without the head's token is refused: the one-line
    error names the token, RAY_AUTH_MODE and RAY_AUTH_TOKEN."""
    import argparse

    def refuse(**kwargs):
        raise ConnectionError("GCS rejected the request: InvalidAuthToken (status UNAUTHENTICATED)")
    monkeypatch.setattr(ray_session.ray, "init", refuse)
    args = argparse.Namespace(address="10.0.0.5:6379", dashboard=False)
    with pytest.raises(UserError) as error:
        with ray_session.ray_session(args, Hardware(cpus=1, gpus=0)):
            pass
    text = str(error.value)
    assert "\n" not in text and "InvalidAuthToken" in text
    assert "RAY_AUTH_MODE=token" in text and "RAY_AUTH_TOKEN" in text and "~/.ray/auth_token" in text


def test_a_retrained_facades_run_keeps_the_image_size_it_was_searched_at(monkeypatch):
    """The facades size depends on whether the loading machine has a GPU (128 px) or not (64): a run
    searched at 64 px and retrained on a GPU machine must load 64 px again, as run.json recorded."""
    from search.experiment import DataOptions
    from search.experiments import facades as facades_exp

    sizes = []

    def generated(size):
        sizes.append(size)
        x = torch.zeros(20, 3, size, size, dtype=torch.uint8)
        return x, torch.zeros(20, size, size, dtype=torch.long), x[:5], torch.zeros(5, size, size, dtype=torch.long)
    monkeypatch.setattr(facades_exp.facades, "generated", generated)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the retraining machine has a GPU
    assert facades_exp.load(DataOptions()).info["size_px"] == 128
    assert facades_exp.load(DataOptions(recorded={"size_px": 64})).info["size_px"] == 64 and sizes == [128, 64]


def test_cudnn_picks_its_fastest_convolutions_on_a_gpu_only(monkeypatch):
    from search.loop import use_fast_convolutions

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    use_fast_convolutions(torch.device("cpu"))
    assert torch.backends.cudnn.benchmark is False
    use_fast_convolutions(torch.device("cuda", 0))
    assert torch.backends.cudnn.benchmark is True


def test_a_gpu_is_shared_by_eight_small_trials_and_tpe_spreads_their_proposals():
    from search.experiments import shapes
    from search.plan import make_plan
    from search.searcher import make_searcher

    def plan(hw):
        return make_plan(shapes.EXPERIMENT, hw, trials=None, max_epochs=None, time_budget_min=None,
                         concurrency=None, cpus_per_trial=None, gpus_per_trial=None, smoke=False)
    one = plan(Hardware(cpus=16, gpus=1))  # an H200 box
    assert (one.gpus_per_trial, one.cpus_per_trial, one.concurrency) == (0.125, 2.0, 8)
    eight = plan(Hardware(cpus=64, gpus=8))
    assert (eight.gpus_per_trial, eight.cpus_per_trial, eight.concurrency) == (0.125, 1.0, 64)
    searcher = make_searcher(0, [], "val_rank_loss", "min", trials=60, concurrency=one.concurrency)
    assert searcher._sampler._constant_liar
    assert not make_searcher(0, [], "val_rank_loss", "min", trials=16, concurrency=2)._sampler._constant_liar


def test_the_gpu_check_says_in_one_line_that_there_is_no_gpu_here():
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: benchmarks/gpu_check.py measures instead (minutes)")
    done = subprocess.run([sys.executable, str(repo / "benchmarks" / "gpu_check.py")], cwd=repo, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().count("\n") == 0
    assert done.stdout.startswith("gpu_check: no CUDA GPU here")


def test_a_gpu_trials_cpus_come_from_the_gpu_nodes_not_a_cpu_only_head():
    """A 64-CPU head without GPU and one worker of 8 CPUs and 1 GPU: sized from the cluster's 72 CPUs a
    trial would ask for 9, which the GPU node cannot give, and wait for ever."""
    from search.experiments import shapes
    from search.plan import cluster_hardware, make_plan

    hw = cluster_hardware([{"Alive": True, "Resources": {"CPU": 64.0}},
                           {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}},
                           {"Alive": False, "Resources": {"CPU": 96.0, "GPU": 8.0}}])
    assert (hw.cpus, hw.gpus, hw.nodes, hw.cpus_per_gpu, hw.gpu_node_cpus) == (72, 1, 2, 8, 8)

    def plan(**kw):
        return make_plan(shapes.EXPERIMENT, hw, trials=None, max_epochs=None, time_budget_min=None,
                         concurrency=None, smoke=False, **{"cpus_per_trial": None, "gpus_per_trial": None, **kw})
    p = plan()
    assert (p.gpus_per_trial, p.cpus_per_trial, p.concurrency) == (0.125, 1.0, 8)
    assert plan(gpus_per_trial=1.0).cpus_per_trial == 8.0
    with pytest.raises(UserError, match="--cpus-per-trial 9: no GPU node has that many CPUs"):
        plan(cpus_per_trial=9.0)


def writes(share, epoch_s: float, write_s: float, epochs: int) -> list[int]:
    """The epochs after which CheckpointClock writes, on a fake clock: each epoch and each write take
    the given seconds."""
    now = [0.0]
    clock = trial.CheckpointClock(share, clock=lambda: now[0])
    out = []
    for epoch in range(1, epochs + 1):
        now[0] += epoch_s
        if clock.due():
            started = now[0]
            now[0] += write_s
            clock.wrote(started)
            out.append(epoch)
    return out


def test_checkpoints_take_at_most_their_share_of_a_trials_time():
    """The 155 MB state of a shapes trial takes about 0.2 s to write and copy. On a CPU (epochs of
    seconds) every epoch writes; on a GPU (0.1 s epochs) writing every epoch would be 2/3 of the
    time: it writes after the first epoch, then once 20 x the write's cost has passed."""
    assert writes(0.05, epoch_s=10.0, write_s=0.2, epochs=5) == [1, 2, 3, 4, 5]
    gpu = writes(0.05, epoch_s=0.1, write_s=0.2, epochs=100)
    gaps = [b - a for a, b in zip(gpu, gpu[1:], strict=False)]
    assert gpu[0] == 1 and len(gpu) == 3 and all(40 <= g <= 41 for g in gaps)  # 4 s of epochs between writes
    assert (len(gpu) - 1) * 0.2 <= 0.05 * 100 * 0.1 * 1.01  # the writes after the first: within the share
    assert writes(None, epoch_s=0.1, write_s=0.2, epochs=4) == [1, 2, 3, 4]  # PBT: every epoch


class FakeTune:
    """What run_trial asks of Ray Tune, in process: reports and checkpoints are kept in memory."""

    def __init__(self, tmp: Path, checkpoint=None):
        import types

        self.reports, self.tmp, self.checkpoint = [], tmp, checkpoint
        resources = types.SimpleNamespace(required_resources={"CPU": 1})
        self.context = types.SimpleNamespace(get_trial_resources=lambda: resources, get_trial_dir=lambda: str(tmp),
                                             get_trial_id=lambda: "t1")
        self.Checkpoint = trial.tune.Checkpoint

    def get_context(self):
        return self.context

    def get_checkpoint(self):
        return self.checkpoint

    def report(self, row, checkpoint=None):
        import shutil

        kept = None
        if checkpoint is not None:  # Ray copies the folder into the run's storage
            kept = self.tmp / f"checkpoint_{len(self.reports):06d}"
            shutil.copytree(checkpoint.path, kept)
        self.reports.append((row, kept))


def test_a_trials_last_epoch_keeps_its_history_not_its_weights_and_a_restored_end_trains_nothing(tmp_path,
                                                                                               monkeypatch):
    import json
    import types

    from datasets.shapes_generator import generate
    from search.experiments import shapes
    from search.loop import Split
    from search.protocol import FINISHED, HISTORY_FILE

    images, counts = generate(96, seed=3)
    train, val = Split(images[:64, None], counts[:64]), Split(images[64:, None], counts[64:])
    base = {**shapes.DEFAULTS, "epochs": 3, "seed": 0, "batch_size": 64, "precision": "fp32"}
    fake = FakeTune(tmp_path)
    monkeypatch.setattr(trial, "tune", fake)
    monkeypatch.setattr(trial.ray, "get_gpu_ids", lambda: [])
    monkeypatch.setattr(trial.ray, "get_runtime_context",
                        lambda: types.SimpleNamespace(get_node_id=lambda: "node0123456789"))
    trial.run_trial({}, experiment="shapes", base=base, train=train, val=val, marker_dir=str(tmp_path))
    assert [row["epoch"] for row, _ in fake.reports] == [1, 2, 3]
    assert [row[FINISHED] for row, _ in fake.reports] == [False, False, True]
    first, last = fake.reports[0][1], fake.reports[-1][1]
    assert (first / trial.STATE_FILE).is_file()  # epochs of seconds on a CPU: written
    assert not (last / trial.STATE_FILE).exists() and (last / trial.ENDED_FILE).is_file()
    assert [r["epoch"] for r in json.loads((last / HISTORY_FILE).read_text())] == [1, 2, 3]

    again = FakeTune(tmp_path / "again", checkpoint=trial.tune.Checkpoint.from_directory(last))
    monkeypatch.setattr(trial, "tune", again)
    trial.run_trial({}, experiment="shapes", base=base, train=train, val=val, marker_dir=str(tmp_path))
    assert again.reports == []  # restored after its last report: it ended then


def test_retrain_runs_take_a_trials_gpu_share_and_keep_their_worker():
    """Eight retrain runs share a GPU as trials do, and a worker runs one after another (Ray's default
    for a GPU task, a fresh worker each, pays a CUDA context per run)."""
    from search import retraining
    from search.plan import GPU_SHARE

    options = retraining.retrain_task(1, GPU_SHARE)._default_options
    assert options["num_gpus"] == GPU_SHARE == 0.125 and options["max_calls"] == 0


@pytest.mark.slow
def test_a_uri_storage_is_passed_to_ray_as_a_uri_and_read_back_through_pyarrow(tmp_path, monkeypatch, capsys):
    """--storage file:///... (pyarrow's local filesystem behind a URI, as s3:// or gs:// would be): Ray
    writes the trial folders there, a diverged trial's marker goes there through pyarrow, and the
    tables, the resume check and the report's file list read it back without turning the URI into a
    local path."""
    from search.faults import ENV as FAULT_ENV

    shared = tmp_path / "bucket"
    uri = f"file://{shared}"
    monkeypatch.setenv(FAULT_ENV, "nan@1:schedule=constant")  # the warm start diverges, its one-cycle variant not
    args = ["shapes", "--smoke", "--trials", "2", "--max-epochs", "1", "--concurrency", "1", "--seed", "0",
            "--results", str(tmp_path / "results"), "--name", "u", "--storage", uri]
    assert cli.run(run.main, args) == 0
    run_dir = tmp_path / "results" / "shapes" / "u"
    trials = __import__("pandas").read_csv(run_dir / "trials.csv")
    assert len(trials) == 2 and sorted(trials["status"]) == ["completed", "failed"]
    folder = json.loads((run_dir / "run.json").read_text())["storage_folder"]  # the run's own, unique
    assert re.fullmatch(r"shapes-u-[0-9a-f]{8}", folder) and [p.name for p in shared.iterdir()] == [folder]
    assert len(list((shared / folder).glob("*/params.json"))) == 2 and not (run_dir / "tune").exists()
    assert len(list((shared / folder / "diverged").glob("*.txt"))) == 1
    assert f"{uri}/{folder}/" in (run_dir / "report.md").read_text()
    capsys.readouterr()
    # a finished search resumes straight to the retraining: the URI's experiment folder is found
    assert cli.run(run.main, ["shapes", "--results", str(tmp_path / "results"), "--name", "u", "--resume"]) == 0
    assert "search: already finished" in capsys.readouterr().out


def test_a_storage_that_cannot_be_written_is_one_line_before_anything_runs(tmp_path, capsys):
    args = ["shapes", "--smoke", "--results", str(tmp_path), "--name", "x", "--storage", "nosuch://bucket/path"]
    assert cli.run(run.main, args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --storage nosuch://bucket/path: cannot write there") and len(err.splitlines()) == 1
    assert not (tmp_path / "shapes" / "x").exists()
