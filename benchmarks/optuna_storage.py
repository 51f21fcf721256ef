"""Optuna storage for a run's study: journal file against SQLite, the driver writing as a search does
(ask, a user attribute, 10 intermediate values, tell), then load_study as a reader would.

    python benchmarks/optuna_storage.py [TRIALS]
"""

import os
import shutil
import sys
import tempfile
import time

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

optuna.logging.set_verbosity(optuna.logging.WARNING)
N, EPOCHS = int(sys.argv[1]) if len(sys.argv) > 1 else 200, 10
d = tempfile.mkdtemp()
for name, make in (("journal", lambda: JournalStorage(JournalFileBackend(os.path.join(d, "s.journal")))),
                   ("sqlite", lambda: RDBStorage(f"sqlite:///{os.path.join(d, 's.db')}"))):
    storage = make()
    study = optuna.create_study(study_name="search", storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    t = time.perf_counter()
    for i in range(N):
        tr = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
        tr.set_user_attr("ray_trial_id", f"t{i}")
        for e in range(1, EPOCHS + 1):
            tr.report(1.0 / e, e)
        study.tell(tr, 0.1)
    write = time.perf_counter() - t
    t = time.perf_counter()
    again = optuna.load_study(study_name="search", storage=make())
    n = len(again.trials)
    read = time.perf_counter() - t
    prefix = "s." + ("journal" if name == "journal" else "db")
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.startswith(prefix))
    per_call = 1000 * write / N / (EPOCHS + 2)
    print(f"{name:8s} {N} trials x {EPOCHS} epochs: write {write:6.2f} s ({per_call:.2f} ms per call), "
          f"load_study {read:5.2f} s ({n} trials), {size / 1024:.0f} KiB")
shutil.rmtree(d)
