"""The base of every config section: it checks itself and its nested sections."""

from __future__ import annotations

import dataclasses
import typing

from patchdino.config.checks import choice_problem, literal_values


class Section:
    """A dataclass of settings that reports its own impossible values.

    :meth:`problems` checks every ``Literal`` field against its allowed values (the values
    are written once, in the annotation), recurses into nested sections, then adds the
    section's own rules (:meth:`rules`). Subclasses are dataclasses.
    """

    def problems(self, prefix: str) -> list[str]:
        """Every problem of this section, each message naming its key (``prefix`` + field)."""
        hints = typing.get_type_hints(type(self))
        found: list[str] = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, Section):
                found += value.problems(f"{prefix}{f.name}.")
                continue
            allowed = literal_values(hints[f.name])
            if allowed is not None and value is not None:
                problem = choice_problem(prefix + f.name, value, allowed)
                if problem is not None:
                    found.append(problem)
        return found + self.rules(prefix)

    def rules(self, prefix: str) -> list[str]:
        """Problems of this section's values besides their choices; none by default."""
        return []
