"""The README documents every CLI command (settings are checked in tests/hub/test_config.py)."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _commands() -> list[str]:
    """Every command and subcommand of the real parser, e.g. ``himalia users add``."""
    import argparse

    from hub.cli import build_parser

    def walk(parser: argparse.ArgumentParser, prefix: str) -> list[str]:
        out: list[str] = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    out.append(f"{prefix} {name}")
                    out.extend(walk(sub, f"{prefix} {name}"))
        return out

    return [c for c in walk(build_parser(), "himalia") if c != "himalia serve"]


COMMANDS = _commands()


def test_every_command_is_documented_in_the_readme() -> None:
    readme = README.read_text() if README.exists() else ""
    missing = [c for c in COMMANDS if c not in readme]
    assert not missing, f"README.md does not document: {', '.join(missing)}"
