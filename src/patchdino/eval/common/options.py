"""What every evaluation command offers on the command line, importable without torch.

``patchdino <command> --help`` builds every command's options; keeping their allowed values
and defaults in pure-Python ``options`` modules keeps it instant. This one holds those of the
shared pipeline (:mod:`~patchdino.eval.common.features`); each task package has its own.
"""

from __future__ import annotations

POOLS = ("cls", "mean", "both")
"""Token poolings of a feature: the CLS token, the mean patch token, or both concatenated."""
