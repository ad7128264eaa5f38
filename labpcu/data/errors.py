"""The run store's errors, in a module of their own so front ends can catch them
without importing h5py and pandas."""

from __future__ import annotations


class StoreError(RuntimeError):
    """The store cannot do what was asked; the message says why."""


class SchemaError(StoreError):
    """The file is not a labpcu file, or is of a schema version this labpcu cannot read."""


class StoreBusyError(StoreError):
    """Another live process is writing a run into the file."""
