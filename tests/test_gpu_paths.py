"""The GPU and cluster paths, shown on a CPU (issue: ready for GPU clusters): the device a trial trains
on, the checkpoint's shared-memory fallback when /dev/shm is full, no host-to-device copy of the
class-encoding table per step, fp16 refused, several nodes without a shared --storage refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from search import cli, run, trial
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


def test_a_cluster_refusing_our_token_is_named_in_the_error(monkeypatch):
    """With Ray's token authentication a client without the head's token is refused: the one-line
    error names the token, RAY_AUTH_MODE and RAY_AUTH_TOKEN."""
    import argparse

    def refuse(**kwargs):
        raise ConnectionError("GCS rejected the request: InvalidAuthToken (status UNAUTHENTICATED)")
    monkeypatch.setattr(run.ray, "init", refuse)
    args = argparse.Namespace(address="10.0.0.5:6379", dashboard=False)
    with pytest.raises(UserError) as error:
        with run.ray_session(args, Hardware(cpus=1, gpus=0)):
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
