"""Every option of every ``unimix`` subcommand says what it does in ``--help``."""

from __future__ import annotations

import argparse
import importlib

import pytest

from unimix.cli import SUBCOMMANDS


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_option_has_help_text(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    actions: list[argparse.Action] = []
    add_argument = argparse._ActionsContainer.add_argument

    def recording(self, *args, **kwargs):  # every argument any parser of the command declares
        action = add_argument(self, *args, **kwargs)
        actions.append(action)
        return action

    monkeypatch.setattr(argparse._ActionsContainer, "add_argument", recording)
    module, function, _ = SUBCOMMANDS[command]
    with pytest.raises(SystemExit) as done:
        getattr(importlib.import_module(module), function)(["--help"])
    assert done.value.code == 0
    options = [a for a in actions if a.option_strings and a.dest != "help"]
    assert options, f"unimix {command}: no options recorded"
    missing = [a.option_strings[0] for a in options if not a.help]
    assert not missing, f"unimix {command}: options without help text: {missing}"
