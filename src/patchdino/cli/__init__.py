"""Command-line interface: ``patchdino <command>``."""
