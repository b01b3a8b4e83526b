"""CSV cells a spreadsheet must show as text, never run: OWASP's CSV-injection rule, reversibly.

Every CSV sentirefine writes with user text in it (the review export, the MLflow sample of
corrections) passes its text cells through :func:`guard_cell`; what sentirefine reads back
(``review import``) passes them through :func:`unguard_cell`, so the round trip is exact.
"""

from __future__ import annotations

import re

# OWASP CSV injection: a spreadsheet runs a cell starting with one of these as a formula
# (=HYPERLINK(...), =cmd|' /C calc'!A0, +, -, @; tab and CR also start one in some of them).
FORMULA_PREFIXES = "=+-@\t\r"
# A cell the guard has touched, or must touch: quotes (any number, even none) before a formula prefix.
_GUARDED = re.compile(f"'*[{re.escape(FORMULA_PREFIXES)}]", re.S)


def guard_cell(value: str) -> str:
    """``value`` with a ``'`` prepended when a spreadsheet would read it as a formula; reversible.

    The quote makes Excel/LibreOffice/Sheets show the text instead of running it. So that
    :func:`unguard_cell` can tell a guard from a text's own quote, a text that already is
    quotes followed by a formula prefix (``'=x``) gets one more quote too; any other text,
    a leading quote included (``'tis``), is written as it is.
    """
    return "'" + value if _GUARDED.match(value) else value


def unguard_cell(value: str) -> str:
    """The inverse of :func:`guard_cell`: one leading ``'`` is removed only where the guard put it."""
    return value[1:] if value.startswith("'") and _GUARDED.match(value, 1) else value
