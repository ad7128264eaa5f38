"""labpcu: bench software for perovskite computing units (PCUs).

Layers (see DESIGN.md): front ends -> protocols -> runner -> bench -> instruments,
with ``labpcu.sim`` standing in for the hardware and ``labpcu.data`` keeping results.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("labpcu")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
