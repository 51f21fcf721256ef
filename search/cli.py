"""What every command shares: user mistakes become one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import errno
import math
import signal
import sys
import threading
from collections.abc import Callable

import torch

from datasets.errors import DataError
from search.config import UserError

EXIT_USER_ERROR = 2
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # a full disk, or the user's quota used up


def disk_full(e: BaseException | None) -> OSError | None:
    """The full-disk OSError that `e` is or was caused by (Ray Tune wraps a callback's error), else None."""
    while e is not None:
        if isinstance(e, OSError) and e.errno in DISK_FULL:
            return e
        e = e.__cause__ or e.__context__
    return None


def disk_full_message(e: OSError, then: str, where: object = None) -> str:
    return (f"no space left on the device holding {e.filename or where} ({e.strerror}); files are written whole "
            f"or not at all: free some space, then {then}")


def whole(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number in [low, high], refused while the command line is parsed (before Ray
    starts or anything is written), where 0 or -1 would otherwise mean the default or reach Ray."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value}: give a whole number " + (
                f"from {low} to {high}" if high is not None else f"of at least {low}"))
        return value
    return parse


def number(low: float = 0.0, *, zero: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number above `low` (or equal to it where `zero`): NaN and inf, which pass
    every comparison or none, are refused, as are a negative share or minutes."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value < low or (value == low and not zero):
            raise argparse.ArgumentTypeError(f"{text}: give a finite number {'of at least' if zero else 'above'} "
                                             f"{low:g}")
        return value
    return parse


SEED = whole(0, 2**32 - 1)  # NumPy's and Ray's seeds are 32-bit unsigned


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors in one line (it prints the usage block, then the error, by default)."""

    def error(self, message: str):
        # a UserError: `run` prints it as every other mistake (one line, exit 2), and returns the code
        raise UserError(f"{message}; see `{self.prog} --help`")


def _sigterm_as_sigint(signum, frame) -> None:
    """`kill` stops a run the way Ctrl-C does: cleanly, resumable. A process started in the background
    by a shell (`nohup ... &`) ignores SIGINT from its start: raised as a signal it would be lost."""
    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
        raise KeyboardInterrupt
    signal.raise_signal(signal.SIGINT)  # through the handler in place (Ray Tune's, during a search)


def stop_on_sigterm() -> None:
    """Route SIGTERM to the Ctrl-C path. Call again after ray.init(): Ray's driver installs its own
    SIGTERM handler, which only logs a stack trace and exits with status 1."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm_as_sigint)


def run(main: Callable[[list[str]], int], argv: list[str] | None = None) -> int:
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM)
    stop_on_sigterm()
    try:
        return main(sys.argv[1:] if argv is None else argv)
    except (UserError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        if disk_full(e) is None:
            raise
        print(f"error: {disk_full_message(e, 'run the same command again')}", file=sys.stderr)
        return EXIT_USER_ERROR
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is visible here; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: not a device name; use auto, cpu, cuda or cuda:N") from None
