"""mkdocs hook: a line ``<!-- parameters: NAME -->`` in a page becomes the table of
protocol NAME's parameters (name, unit, limits or choices, default, help), made from
its parameter dataclass when the site is built, so the pages never disagree with the
code. An unknown protocol name fails the build."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

MARK = re.compile(r"^<!-- parameters: (?P<name>[\w-]+) -->$", re.M)


def parameter_table(name: str) -> str:
    from labpcu.protocols.registry import get

    rows = ["| parameter | flag | unit | range | default | meaning |", "|---|---|---|---|---|---|"]
    for s in get(name).Params.specs():
        if s.choices:
            span = ", ".join(f"`{c}`" for c in s.choices)
        elif s.limits:
            lo, hi = s.limits
            one = dataclasses.replace(s, is_list=False)  # a list's limits bound each value
            span = f"{one.format(lo) if lo is not None else '−∞'} … {one.format(hi) if hi is not None else '∞'}"
        else:
            span = ""
        kind = f"list of {s.kind.__name__}" if s.is_list else s.kind.__name__
        default = "empty" if s.is_list and s.default == () else s.format(s.default).replace(",", ", ")
        text = s.help.replace("|", "\\|")
        rows.append(f"| `{s.name}` ({kind}) | `--{s.name.replace('_', '-')}` | {s.unit or ''} | {span} | "
                    f"`{default}` | {text} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return MARK.sub(lambda m: parameter_table(m["name"]), markdown)
