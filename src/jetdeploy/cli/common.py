"""What every command group shares: the exit status of a checked stage, the checks' one-line summary."""

from __future__ import annotations

import argparse
import sys

FMT = argparse.ArgumentDefaultsHelpFormatter


def status(ok: bool | None, failure: str) -> int:
    """Exit status of a command whose checks passed (0) or failed (1, with the reason on stderr); None: the
    command checked nothing (0; its JSON says why)."""
    if ok is False or (ok is not None and not ok):
        print(f"error: {failure}", file=sys.stderr)
        return 1
    return 0


def print_checks(checks: list[dict]) -> None:
    for c in checks:
        print(f"  [{'ok' if c['ok'] else 'FAIL'}] {c['name']}")


def fractions(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}': expected comma-separated fractions, e.g. 0.8,0.6,0.45,0.35") from None


def blocks(text: str) -> list[int]:
    """Comma-separated block indices, e.g. 0,2."""
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}': expected comma-separated block indices, e.g. 0 or 0,2") from None


def quiet(p: argparse.ArgumentParser, what: str = "only the summary") -> None:
    p.add_argument("--quiet", action="store_true", help=what)
