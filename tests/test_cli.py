"""agents.cli: the one dataclass-to-argparse builder (the trainer's scripts and the TRL examples use it)."""

from dataclasses import dataclass

import pytest

from agents.cli import dataclass_parser


@dataclass(frozen=True)
class Settings:
    reward: str = "binary"
    """Reward preset:"""
    limit: int | None = None
    """Questions to use."""
    save: bool = False
    """Save at the end."""


def test_extra_help_follows_the_docstring_and_precedes_the_default():
    parser = dataclass_parser(Settings, prog="prog", description="d", extra_help={"reward": "binary, paper."})
    helps = {a.dest: a.help for a in parser._actions}
    assert helps["reward"] == "Reward preset: binary, paper. (default: binary)"
    assert helps["limit"] == "Questions to use. (default: None)"
    assert Settings(**vars(parser.parse_args(["--limit", "none", "--save"]))) == Settings(save=True)
    assert Settings(**vars(parser.parse_args([]))) == Settings()


def test_extra_help_for_a_field_that_does_not_exist_is_refused():
    with pytest.raises(ValueError, match=r"\['rewards'\], which are not fields of Settings"):
        dataclass_parser(Settings, prog="prog", description="d", extra_help={"rewards": "typo"})
