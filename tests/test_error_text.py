"""Quoting a dependency's error in one line."""

from __future__ import annotations

from patchdino.error_text import first_line


def test_first_line_skips_a_title_and_blank_lines() -> None:
    err = RuntimeError("Error(s) in loading state_dict for Net:\n\tMissing key(s): 'w'.\nmore")
    assert first_line(err) == "Missing key(s): 'w'."
    assert first_line(ValueError("\n  bad value  \nsecond")) == "bad value"
    assert first_line(ValueError("only: one line:")) == "only: one line:"
    assert first_line(KeyError()) == "KeyError"
