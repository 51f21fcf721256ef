"""run.json as one typed record: the only module that reads or writes it.

A run's record says what was asked (command, options), what was decided (the plan, the base
config, the searched space) and how far the run got (search_done, wall times). Every stage reads
it through `RunRecord.read` and changes it through `RunRecord.update`, which writes it at once
(one process holds the run's lock, so the record in memory is the file's). A resumed run starts
from the record its earlier attempt left, so its wall times add up. Runs written
before this module existed have the same keys and read the same way.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from search.config import UserError
from search.experiment import DataOptions, narrowed, warm_start
from search.io import read_json, write_json
from search.plan import SMOKE_SUBSET, Plan

FILE = "run.json"


@dataclass
class RunRecord:
    experiment: str
    name: str
    plan: Plan
    objective: str = "val_acc"
    mode: str = "max"
    searched: list[str] = field(default_factory=list)  # the searched keys, in the space's order
    space: dict[str, str] = field(default_factory=dict)  # key -> its range, as text
    base_config: dict[str, Any] = field(default_factory=dict)  # the baseline with the search's epochs and seed
    pinned: dict[str, Any] = field(default_factory=dict)  # --set values
    argv: list[str] = field(default_factory=list)  # the command line, with --name (resume reruns it)
    command: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # every parsed option, paths as text
    hardware: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)  # source and split sizes
    versions: dict[str, str] = field(default_factory=dict)
    started: str = ""
    finished: str | None = None
    search_done: bool = False  # every trial ended: a resume goes straight to retraining
    search_wall_s: float = 0.0  # summed over resumes
    retrain_wall_s: float = 0.0
    # Each time the finished search was grown (`--resume --trials N`): {"round", "trials_before",
    # "trials", "started"}. Round k's trials are in Ray's experiment folder tune-k (search/tuner.py).
    grown: list[dict[str, Any]] = field(default_factory=list)
    # Ray's experiment folder under --storage (search/tuner.py storage_folder); "" without --storage, and
    # in runs from before it was recorded (their folder is <experiment>-<name>)
    storage_folder: str = ""
    # The data's content (data_fingerprint) at the start, so that a resume or a retraining on other data is
    # refused; "" for an experiment's offline data (made from the seed) and in older runs.
    data_fingerprint: str = ""
    # What the user accepted with --force, e.g. a resume on data whose fingerprint changed: {"what", "at", ...}
    forced: list[dict[str, Any]] = field(default_factory=list)

    # ------------------------------------------------------------------ derived values

    @property
    def test_objective(self) -> str:
        """The objective's column in retrain.csv: val_acc is scored as test_acc on the held-out split."""
        return "test_" + self.objective.removeprefix("val_")

    @property
    def tuned_with(self) -> dict[str, Any]:
        """The budget's values every trial trained with and the retrained baseline did not (--set pins excepted)."""
        return self.plan.tuned_with_unpinned(self.pinned)

    @property
    def warm_start_is_baseline(self) -> bool:
        """Whether the search's first trial (the warm start) is the baseline itself: not where every trial
        trained with a budget's `tuned_with` values, which the baseline is retrained without."""
        return not self.tuned_with

    def searched_space(self, exp) -> dict:
        """The space the search drew from: the experiment's dimensions of the searched keys, in the plan's
        ranges (a budget's narrower bounds). After prepare this is the one source of the space: the
        retraining, the report and the analysis read it here, never from the experiment's space alone."""
        return narrowed({k: exp.space[k] for k in self.searched if k in exp.space}, self.plan.ranges)

    def warm_start_point(self, exp) -> dict[str, Any]:
        """The search's first trial, the baseline as a point of the searched space (a value outside a range,
        the budget's own included, at its nearest bound): how every later stage finds the baseline's trial."""
        return warm_start(dict(self.base_config), self.searched_space(exp))

    @property
    def rounds(self) -> int:
        """Ray Tune experiments this search ran in: 1, plus one per growth."""
        return 1 + len(self.grown)

    @property
    def seed(self) -> int:
        return int(self.base_config.get("seed", self.options.get("seed", 0)))

    def data_options(self) -> DataOptions:
        """The data the run used (never downloads again)."""
        o = self.options
        return DataOptions(Path(o["data_dir"]) if o.get("data_dir") else None, False,
                           split_seed=int(o.get("seed", 0)), source=o.get("source"), recorded=dict(self.data))

    # ------------------------------------------------------------------ the file

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRecord:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        plan = dict(d.get("plan") or {})
        if "val_subset" not in plan and (d.get("options") or {}).get("smoke"):
            plan["val_subset"] = SMOKE_SUBSET  # smoke runs cut the validation split before it was planned
        try:
            values["plan"] = Plan.from_dict(plan)
            return cls(**values)
        except TypeError as e:  # a required key missing: not a run.json this project wrote
            raise UserError(f"{FILE}: not a run record of this project ({e}); start a new run") from None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["plan"] = self.plan.as_dict()
        return out

    @classmethod
    def read(cls, run_dir: Path) -> RunRecord:
        path = Path(run_dir) / FILE
        if not path.is_file():
            raise UserError(f"{run_dir}: not a run directory (no {FILE}); give results/<experiment>/<name>")
        try:
            return cls.from_dict(read_json(path))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:  # cut, edited, or not ours
            raise UserError(f"{path} is damaged ({type(e).__name__}: {str(e)[:120]}); restore it, or delete "
                            f"the run folder {Path(run_dir).name} by hand") from None

    def write(self, run_dir: Path) -> None:
        write_json(Path(run_dir) / FILE, self.to_dict())

    def update(self, run_dir: Path, **changes: Any) -> RunRecord:
        """Set fields and write the record at once (the caller holds the run's lock)."""
        for key, value in changes.items():
            if not hasattr(self, key):
                raise AttributeError(f"RunRecord has no field {key}")
            setattr(self, key, value)
        self.write(run_dir)
        return self


def data_fingerprint(path: Path | None) -> str:
    """sha256 over a data file's bytes, or over a folder's files (relative names and bytes, in name order);
    "" for no path. About 0.02 s for the 4.7 MB GSN zip; a missing path is the loader's to report."""
    if path is None or not Path(path).exists():
        return ""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if file != path:
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def check_same_data(run: RunRecord, data_dir: Path | None, force: bool, run_dir: Path,
                    then: str = "point --data-dir at that data, or add --force to go on with this one "
                                "(run.json records it)") -> list[dict[str, Any]]:
    """Refuse to go on with a run on other data than it started on (a moved or replaced file), unless
    `force`; returns what to add to run.json's `forced` (empty when the data is the same)."""
    was, now = run.data_fingerprint, data_fingerprint(data_dir)
    if not was or was == now:
        return []
    if not force:
        raise UserError(f"{run_dir.name}: its data {data_dir} is not the data it started on (run.json's "
                        f"data_fingerprint {was[:19]}..., now {now[:19] or 'missing'}...); {then}")
    return [{"what": "other data", "at": time.strftime("%Y-%m-%d %H:%M:%S"), "data_dir": str(data_dir),
             "was": was, "now": now}]


def exists(run_dir: Path) -> bool:
    return (Path(run_dir) / FILE).is_file()


def argv_of(run_dir: Path) -> list[str]:
    """The command line a run was started with (resume parses it again before anything else)."""
    try:
        return list(read_json(Path(run_dir) / FILE)["argv"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{run_dir}: its {FILE} is unreadable; cannot resume it") from None
