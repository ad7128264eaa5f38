"""The exception that ends a run at its next step, defined below every layer that
raises it: the runner (on :meth:`~labpcu.runner.Runner.abort`), the bench's manual
prober (the operator answers "abort"), a protocol's context. Kept apart so the bench
layer need not import the runner that uses it."""

from __future__ import annotations


class RunAborted(Exception):
    """Raised inside a protocol at its next step after an abort was asked for."""
