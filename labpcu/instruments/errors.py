"""Exceptions every driver raises, so the runner can react without knowing the model."""

from __future__ import annotations


class InstrumentError(RuntimeError):
    """The instrument reported an error; carries its own code and text."""

    def __init__(self, instrument: str, code: int, message: str) -> None:
        super().__init__(f"{instrument}: error {code}: {message}")
        self.instrument = instrument
        self.code = code
        self.message = message


class InstrumentCommunicationError(RuntimeError):
    """A timeout or a lost connection: the instrument's state is unknown."""


class LimitError(ValueError):
    """A requested level or setting is outside what the bench or instrument allows.

    Raised before anything is sent."""


class DataFormatError(InstrumentCommunicationError):
    """A reply that does not parse: out of step with the request, or garbled."""


class BenchBusyError(LimitError):
    """Another process holds an instrument of this bench (see
    :mod:`labpcu.instruments.lock`); nothing has been sent to any instrument.

    A :class:`LimitError` (refused before anything is sent) so that the command line
    reports it as one line with exit code 2, as it does every LimitError."""

    def __init__(self, message: str, *, name: str = "", address: str = "", pid: int | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.address = address
        self.pid = pid


class InstrumentOpenError(InstrumentCommunicationError):
    """An instrument of the bench could not be opened: a bad or unreachable address,
    a refused connection, a VISA library missing. Nothing was measured."""
