"""How a finished shapes run's retrained models count when their counts are read from both heads.

    python benchmarks/count_reading.py RUN_DIR [--weights 0,0.25,0.5,0.75,1]

For every retrained model of RUN_DIR (retrain/<label>-seed<S>/model.pt), prints the held-out count
RMSE with the counts read as (1 - w) x the counting head's + w x the counts the class head expects
(the config key `count_decode`, search/experiments/shapes_task.py blended_counts), each w of
--weights, and with the decoded class's own counts ("class"). The rest of the reading (tta,
joint_decode) is the model's own config. The held-out split is the run's own, scored once per model;
it chooses nothing here: a search chooses count_decode on its validation split.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from datasets import shapes
from search import cli, experiments
from search.config import UserError
from search.experiments.shapes_task import blended_counts
from search.loop import predict
from search.record import RunRecord
from search.stages import cut_to_plan


def rmse(counts: torch.Tensor, true: torch.Tensor) -> float:
    return (counts - true.float()).pow(2).mean().sqrt().item()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--weights", default="0,0.25,0.5,0.75,1", help="count_decode values, comma-separated")
    args = p.parse_args(argv)
    weights = [float(w) for w in args.weights.split(",")]
    record = RunRecord.read(args.run_dir)
    if record.experiment != "shapes":
        raise UserError(f"{args.run_dir} is a {record.experiment} run; this reads shapes models only")
    exp = experiments.get("shapes")
    folders = sorted(p for p in (args.run_dir / "retrain").glob("*-seed*") if (p / "model.pt").is_file())
    if not folders:
        raise UserError(f"{args.run_dir}: no retrained model (retrain/*/model.pt); run its retraining first")
    test = cut_to_plan(exp.load(record.data_options()), record.plan).test
    torch.set_num_threads(2)
    print("model", *(f"w={w:g}" for w in weights), "class", sep="\t")
    for folder in folders:
        config = json.loads((folder / "metrics.json").read_text())["config"]
        model = exp.task.build_model(config)
        model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
        with torch.no_grad():
            log_probs, head = predict(exp.task, model, test, config, "fp32")
        pred, _ = exp.task.predictions((log_probs, head), config)
        row = [rmse(blended_counts(log_probs, head, w), test.y) for w in weights] + [rmse(shapes.decode(pred), test.y)]
        print(folder.name, *(f"{v:.3f}" for v in row), sep="\t", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
