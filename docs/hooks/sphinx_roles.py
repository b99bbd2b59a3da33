"""MkDocs hook: docstrings cite code with Sphinx roles (``:func:`audit```); show the code, drop the role."""

from __future__ import annotations

import re

ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|exc|obj|const):(?=<code>)")


def on_page_content(html: str, **kwargs: object) -> str:
    return ROLE.sub("", html)
