"""Every subcommand has a --help that runs."""

from __future__ import annotations

import pytest

from analysis.cli import _commands, build_parser, main


def test_top_level_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for mod in _commands():
        assert mod.NAME in out


@pytest.mark.parametrize("name", [m.NAME for m in _commands()])
def test_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([name, "--help"])
    assert exc.value.code == 0
    assert "usage: clipaudit " + name in capsys.readouterr().out


def test_list_commands(capsys):
    assert main(["models", "clipaudit-*"]) == 0
    assert "clipaudit-tiny-vit" in capsys.readouterr().out
    assert main(["prompts"]) == 0
    assert "openai_imagenet" in capsys.readouterr().out
    assert main(["datasets"]) == 0
    assert "fashion-mnist" in capsys.readouterr().out
