"""A long audit says what it is doing: plain progress lines on stderr when it is not a terminal."""

from __future__ import annotations

from test_model_refusals import bright, make

import eis.audit


def test_redirected_audit_prints_progress_lines(capsys):
    x, y = bright()
    eis.audit.audit(make(), x, y, detectors=["specificity", "random_scorer"], synthesis=None, progress=True)
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("audit: detectors: 0/3")
    assert err[-1].startswith("audit: evidence: 3/3")
