"""The bench operator's window, ``labpcu gui``: a thin front end over the Runner, the
campaign engine and the store (DESIGN.md, "GUI").

One module per panel (bench, wafer map, protocol form, queue, live plot, data browser,
codebook viewer, log); :mod:`labpcu.gui.worker` is the one thread that owns the Bench
and talks to the panels only through Qt signals; :mod:`labpcu.gui.app` puts them in
a window. Nothing here does what the Python API cannot.
"""
