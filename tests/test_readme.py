"""Every ```python block of README.md runs as written, in order, in one namespace, on
the simulated bench, in a fresh working directory: a reader who pastes the README's
snippets one after the other into one Python session gets no error.

A block whose first line is a marker comment is handled as the marker says (use them
sparingly, never to hide a broken snippet):

- ``# readme: skip (<reason>)`` does not run the block (it needs real hardware or
  another process that the README tells the reader to start);
- ``# readme: needs <module>`` runs the block only if ``<module>`` is installed (e.g.
  ``torch``, an optional extra); later blocks must not depend on its names.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^(?P<indent>[ \t]*)```python[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
MARKER = re.compile(r"^#\s*readme:\s*(?P<verb>skip|needs)\b\s*(?P<arg>.*)$")


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    code: str
    verb: str | None = None  # the marker's: "skip", "needs" or None
    arg: str = ""


def readme_blocks(text: str | None = None) -> list[Block]:
    """The ```python blocks of the README (indented ones, inside list items, too), dedented."""
    text = README.read_text(encoding="utf-8") if text is None else text
    blocks = []
    for m in FENCE.finditer(text):
        code = textwrap.dedent(m["body"])
        first = code.lstrip("\n").splitlines()[0].strip() if code.strip() else ""
        marker = MARKER.match(first)
        blocks.append(Block(text.count("\n", 0, m.start()) + 1, code,
                            marker["verb"] if marker else None, marker["arg"].strip() if marker else ""))
    return blocks


def test_blocks_are_found_with_their_markers() -> None:
    """The extraction finds top-level and indented blocks and reads the markers."""
    text = ("intro\n```python\nx = 1\n```\n- item\n\n  ```python\n  # readme: skip (hardware)\n  y = x\n  ```\n"
            "```bash\nls\n```\n```python\n# readme: needs torch\nimport torch\n```\n")
    blocks = readme_blocks(text)
    assert [b.line for b in blocks] == [2, 7, 14]
    assert blocks[0].code == "x = 1\n" and blocks[0].verb is None
    assert blocks[1].code.splitlines()[1] == "y = x" and (blocks[1].verb, blocks[1].arg) == ("skip", "(hardware)")
    assert (blocks[2].verb, blocks[2].arg) == ("needs", "torch")


def test_markers_are_few_and_give_a_reason() -> None:
    """Markers are the exception: at most two blocks, each with its reason or module."""
    marked = [b for b in readme_blocks() if b.verb]
    assert len(marked) <= 2, [(b.line, b.verb, b.arg) for b in marked]
    assert all(b.arg for b in marked), marked


@pytest.mark.slow
def test_readme_python_blocks_run_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each block runs after the ones above it, in one namespace, in an empty folder,
    as a reader pasting them into one session would run them."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LABPCU_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.delenv("LABPCU_FILE", raising=False)
    # the README registers a protocol of its own ("reads"): the rest of the session must not see it
    from labpcu.protocols import registry

    registry.names()  # the built-in ones loaded first, so the copy below holds them
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    blocks = readme_blocks()
    assert len(blocks) >= 10
    # a module of its own, as a pasted session's __main__ (dataclasses look their module up)
    module = types.ModuleType("__readme__")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    ran = 0
    for block in blocks:
        if block.verb == "skip":
            continue
        if block.verb == "needs" and importlib.util.find_spec(block.arg.split()[0]) is None:
            continue
        try:
            # dont_inherit: this file's `from __future__ import annotations` must not leak in
            code = compile(block.code, f"README.md:{block.line}", "exec", dont_inherit=True)
            exec(code, namespace)  # noqa: S102
        except BaseException as exc:
            raise AssertionError(f"README.md line {block.line}: the block fails as written: "
                                 f"{type(exc).__name__}: {exc}") from exc
        ran += 1
    assert ran >= len(blocks) - 3
    assert "reads" in registry.names()  # the README's own protocol was registered (and is dropped after)
