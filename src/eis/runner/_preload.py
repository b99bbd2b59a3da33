"""Imported once by the forkserver process: every worker forked from it starts with these loaded."""

import torch  # noqa: F401

from eis.runner.plugins import load_builtins

load_builtins()
