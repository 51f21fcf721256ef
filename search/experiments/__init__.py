"""The experiment registry: one entry per experiment, looked up by name, unknown names fail loudly."""

from __future__ import annotations

from search.config import UserError
from search.experiment import Experiment


def _registry() -> dict[str, Experiment]:
    # Imported here, not at module level, so `--list` and errors stay fast and each experiment's
    # module (and its data code) only loads when asked for.
    from search.experiments import cifar10, digit_pairs, facades, fashion_mnist, shapes

    return {e.name: e for e in (shapes.EXPERIMENT, digit_pairs.EXPERIMENT, fashion_mnist.EXPERIMENT,
                                cifar10.EXPERIMENT, facades.EXPERIMENT)}


def names() -> list[str]:
    return list(_registry())


def get(name: str) -> Experiment:
    registry = _registry()
    if name not in registry:
        raise UserError(f"unknown experiment {name!r}; known: {', '.join(registry)}")
    return registry[name]
