"""Loss terms, one per file, each a :class:`~patchdino.losses.terms.base.LossTerm`.

:data:`TERMS` maps each term's name (a section of ``loss.terms``) to its class, in the order
the terms are computed and logged.
"""

import dataclasses

from patchdino.config.loss import TermsConfig
from patchdino.losses.terms.base import CentringFor, LossTerm, TermInputs
from patchdino.losses.terms.cls import ClsTerm
from patchdino.losses.terms.koleo import KoLeoTerm, koleo
from patchdino.losses.terms.masked import MaskedTerm
from patchdino.losses.terms.patch import PatchTerm

TERMS: dict[str, type[LossTerm]] = {
    term.name: term for term in (ClsTerm, PatchTerm, MaskedTerm, KoLeoTerm)
}
"""Every loss term by name."""

if list(TERMS) != [f.name for f in dataclasses.fields(TermsConfig)]:
    raise ImportError(  # each term has a config section of its name, and each section a term
        f"loss terms {list(TERMS)} differ from the sections of loss.terms "
        f"{[f.name for f in dataclasses.fields(TermsConfig)]}"
    )

__all__ = [
    "TERMS",
    "CentringFor",
    "ClsTerm",
    "KoLeoTerm",
    "LossTerm",
    "MaskedTerm",
    "PatchTerm",
    "TermInputs",
    "koleo",
]
