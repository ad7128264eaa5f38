"""TSP's Lua 5.0 dialect on a Lua 5.1 runtime: the source-level part.

The 2600A/B and 3706A run Lua 5.0 (the 2600A manual: "TSL is an implementation of
the Lua programming language, Copyright 1994-2004"). The emulator runs lupa's Lua 5.1,
whose compatibility switches already give 5.0's ``arg`` table in vararg functions,
``math.mod``, ``string.gfind`` and ``table.getn``; the runtime adds ``table.setn``
and 5.0's ``gcinfo``/``collectgarbage``. Two differences are lexical and are handled
here, before Lua compiles a chunk:

* ``for k, v in t do`` with ``t`` a table: Lua 5.0 iterates it as with ``pairs``;
  Lua 5.1 tries to call the table. Every generic ``for`` has its expression list
  wrapped, ``for k, v in EXPLIST do`` → ``for k, v in _tsp_forin(EXPLIST) do``
  (same line, so error lines stay right); ``_tsp_forin(f, s, c)`` returns ``next, f,
  nil`` when ``f`` is a table and ``f, s, c`` otherwise. Found by a tokenizer that
  skips strings and comments and tracks brackets and ``function … end`` bodies, so a
  ``do`` inside a function literal in the list does not end it. (A metatable
  ``__call`` on tables cannot work: tables that scripts build have no metatable.)
* Number literals: Lua 5.0 reads only decimal digits, so ``0x10`` and ``0x1p4`` are
  syntax errors there; Lua 5.1 accepts both. They are refused here with
  ``malformed number near '0x10'`` (queued as -285 by the runtime).

* ``#x``: Lua 5.1 ignores a ``__len`` metamethod on tables, and instrument objects
  (reading buffers) are tables with a length, so every unary ``#`` becomes
  ``_tsp_len(x)`` (the operand: a prefix expression with its ``.``/``[]``/call
  suffixes, a string or a table constructor), which asks an instrument object for
  its length and is ``#x`` for anything else.

Everything Lua 5.1 itself rejects that 5.0 rejects too (``//``, ``&``, ``|``, ``~``,
``<<``, ``>>``, ``goto``/labels, ``<const>``/``<close>``, integer division) needs no
work: 5.1's parser refuses it. Lua 5.1 additions that 5.0 lacks (``#``, ``%``, ``...``
in expressions, ``select``, ``string.gmatch``) are *accepted*: drivers and the 2600
emulator's own tests use ``#buf``, and refusing them would break working code for
no benefit to a simulation (a script written for the instrument never uses them).
All rewrites stay on their line, so error line numbers are the script's.
"""

from __future__ import annotations

import re

__all__ = ["FORIN_NAME", "LEN_NAME", "DialectError", "transform"]

#: the sandbox global that implements 5.0's ``for k in table do``
FORIN_NAME = "_tsp_forin"
#: the sandbox global that ``#x`` is routed through (instrument objects' lengths)
LEN_NAME = "_tsp_len"

_NEEDS_WORK = re.compile(r"\bfor\b|0[xX]|#")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[A-Za-z0-9_.]*")
_LONG_OPEN = re.compile(r"\[(=*)\[")
_SPACE = re.compile(r"[ \t\r\n\f\v]+")


class DialectError(Exception):
    """A chunk TSP's Lua 5.0 would not compile (message in Lua's own form)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"{line}: {message}")
        self.line = line
        self.message = message


def _tokens(src: str) -> list[tuple[str, str, int, int]]:
    """(kind, text, start, end) for names, keywords, punctuation, strings (text
    empty) and numbers (checked); comments are skipped. Unterminated strings end the
    scan: Lua's own parser reports them."""
    out: list[tuple[str, str, int, int]] = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        m = _SPACE.match(src, i)
        if m:
            i = m.end()
            continue
        if src.startswith("--", i):
            m = _LONG_OPEN.match(src, i + 2)
            if m:
                end = src.find("]" + m.group(1) + "]", m.end())
                i = n if end < 0 else end + len(m.group(1)) + 2
            else:
                end = src.find("\n", i)
                i = n if end < 0 else end + 1
            continue
        if c == "[":
            m = _LONG_OPEN.match(src, i)
            if m:
                end = src.find("]" + m.group(1) + "]", m.end())
                if end < 0:
                    return out
                out.append(("string", "", i, end + len(m.group(1)) + 2))
                i = end + len(m.group(1)) + 2
                continue
        if c in "\"'":
            j = i + 1
            while j < n and src[j] != c:
                if src[j] == "\\":
                    j += 1
                elif src[j] == "\n":
                    return out
                j += 1
            if j >= n:
                return out
            out.append(("string", "", i, j + 1))
            i = j + 1
            continue
        if c.isdigit() or (c == "." and i + 1 < n and src[i + 1].isdigit()):
            m = _NUMBER.match(src, i)
            assert m is not None
            text = m.group(0)
            if text[:2] in ("0x", "0X"):
                raise DialectError(src.count("\n", 0, i) + 1, f"malformed number near '{text}'")
            out.append(("number", text, i, m.end()))
            i = m.end()
            continue
        if c.isalpha() or c == "_":
            m = _NAME.match(src, i)
            assert m is not None
            out.append(("name", m.group(0), i, m.end()))
            i = m.end()
            continue
        if src.startswith("...", i):
            out.append(("op", "...", i, i + 3))
            i += 3
            continue
        out.append(("op", c, i, i + 1))
        i += 1
    return out


_OPENERS = {"function", "if", "do"}
_KEYWORDS = {"and", "break", "do", "else", "elseif", "end", "false", "for", "function", "if", "in",
             "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while"}
_BRACKETS = {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}


def _match(toks: list[tuple[str, str, int, int]], k: int) -> int:
    """Index of the bracket closing the one at ``k`` (or the last token)."""
    depth = 0
    for m in range(k, len(toks)):
        if toks[m][0] == "op":
            depth += _BRACKETS.get(toks[m][1], 0)
            if depth == 0:
                return m
    return len(toks) - 1


def _operand_end(toks: list[tuple[str, str, int, int]], k: int) -> int | None:
    """Last token of the operand of a unary ``#`` at ``k`` (a prefix expression with
    its suffixes, a string or a table constructor), or None if there is none."""
    j = k + 1
    if j >= len(toks):
        return None
    kind, text = toks[j][0], toks[j][1]
    if kind == "string":
        return j
    if kind == "op" and text == "{":
        return _match(toks, j)
    if kind == "name" and text not in _KEYWORDS:
        last = j
    elif kind == "op" and text == "(":
        last = _match(toks, j)
    else:
        return None
    while last + 1 < len(toks):
        kind, text = toks[last + 1][0], toks[last + 1][1]
        if kind == "op" and text == "." and last + 2 < len(toks) and toks[last + 2][0] == "name":
            last += 2
        elif kind == "op" and text in "([{" and text:
            last = _match(toks, last + 1)
        elif kind == "string":
            last += 1
        elif (kind == "op" and text == ":" and last + 3 < len(toks) and toks[last + 2][0] == "name"
              and (toks[last + 3][1] in ("(", "{") or toks[last + 3][0] == "string")):
            last += 2
        else:
            break
    return last


_BEFORE_EXPRESSION = {"return", "and", "or", "not", "in", "if", "elseif", "while", "until"}
_NOT_BEFORE_EXPRESSION = {")", "]", "}", ".", ":", ";", "#"}


def _expression_may_start(toks: list[tuple[str, str, int, int]], k: int) -> bool:
    """Whether an expression can begin at token ``k`` (after an operator, an opening
    bracket, ``=``, ``,`` or an expression keyword), so that ``#`` there is unary."""
    if k == 0:
        return False
    kind, text = toks[k - 1][0], toks[k - 1][1]
    if kind == "op":
        return text not in _NOT_BEFORE_EXPRESSION and text != "..."
    return kind == "name" and text in _BEFORE_EXPRESSION


def transform(source: str) -> str:
    """``source`` with every generic ``for`` made 5.0-compatible and every ``#x``
    routed through :data:`LEN_NAME`; raises :class:`DialectError` for what 5.0 cannot
    lex. Unchanged text when nothing applies."""
    if not _NEEDS_WORK.search(source):
        return source
    toks = _tokens(source)
    # (start, end, order, text): replace source[start:end] by text; at one position
    # closers go first (inner before outer), then openers
    edits: list[tuple[int, int, int, str]] = []
    for k, (kind, text, pos, _end) in enumerate(toks):
        if kind == "op" and text == "#":
            if not _expression_may_start(toks, k):
                continue  # not a unary #: Lua reports the syntax error on the original
            last = _operand_end(toks, k)
            if last is not None:
                edits.append((pos, pos + 1, 3, LEN_NAME + "("))
                edits.append((toks[last][3], toks[last][3], 0, ")"))
            continue
        if kind != "name" or text != "for":
            continue
        j = k + 1
        # namelist: Name {',' Name} 'in'
        if j >= len(toks) or toks[j][0] != "name":
            continue
        j += 1
        while j + 1 < len(toks) and toks[j][1] == "," and toks[j + 1][0] == "name":
            j += 2
        if j >= len(toks) or toks[j][:2] != ("name", "in"):
            continue  # a numeric for, or a syntax error Lua will report
        first = j + 1
        if first >= len(toks):
            continue
        brackets = blocks = 0
        end = None
        for m in range(first, len(toks)):
            kind2, t2 = toks[m][0], toks[m][1]
            if kind2 == "op":
                brackets += _BRACKETS.get(t2, 0)
                if brackets < 0:
                    break
            elif kind2 == "name":
                if t2 == "do" and brackets == 0 and blocks == 0:
                    end = m
                    break
                if t2 in _OPENERS or t2 == "repeat":
                    blocks += 1
                elif t2 in ("end", "until"):
                    blocks -= 1
                    if blocks < 0:
                        break
        if end is None or end == first:
            continue
        edits.append((toks[first][2], toks[first][2], 2, FORIN_NAME + "("))
        edits.append((toks[end][2], toks[end][2], 1, ") "))
    if not edits:
        return source
    edits.sort(key=lambda e: (e[0], e[2]))
    parts: list[str] = []
    last_pos = 0
    for a, b, _order, text in edits:
        parts.append(source[last_pos:a])
        parts.append(text)
        last_pos = max(last_pos, b)
    parts.append(source[last_pos:])
    return "".join(parts)
