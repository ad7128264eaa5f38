"""The manual prober's request as a dialog: "move the probes to site A3", with the
devices there; OK confirms, Abort ends the run (it stops in the safe state)."""

from __future__ import annotations

from typing import Any


def ask(parent: Any, request: Any) -> bool:
    """Show ``request`` (a :class:`labpcu.probers.ProberRequest`); True once the
    operator confirms the probes are on the site, False to abort the run."""
    from PyQt5 import QtWidgets

    box = QtWidgets.QMessageBox(parent)
    box.setWindowTitle("Move the probes")
    box.setIcon(QtWidgets.QMessageBox.Question)
    box.setText(request.message)
    devices = ", ".join(request.devices[:12]) + (" …" if len(request.devices) > 12 else "")
    box.setInformativeText(f"Site {request.site}: {devices}\n\nThe outputs are off and the relays open.")
    ok = box.addButton("Probes are on the site", QtWidgets.QMessageBox.AcceptRole)
    box.addButton("Abort the run", QtWidgets.QMessageBox.RejectRole)
    box.setDefaultButton(ok)
    box.exec_()
    return box.clickedButton() is ok
