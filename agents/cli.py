"""A frozen dataclass as a command line: one ``--flag`` per field, its docstring as the help.

The training scripts (``agents/grpo_train.py``, ``agents/sft_warmup.py``) and the TRL examples
(``examples/trl_grpo.py``, ``examples/trl_environment.py``) describe their settings as a dataclass with
a docstring under each field, as CleanRL does; this module, the one builder they share, turns such a
class into an ``argparse`` parser and gives invalid values one shape of error, ``ConfigError``, whose
message names the field and its flag. A script exits with status 2 and that message (``exit_with``),
never with a traceback.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import sys
import textwrap
import typing
from dataclasses import fields
from typing import Any, Mapping, NoReturn


class ConfigError(ValueError):
    """An invalid configuration value; the message names the field and says what to set."""


def flag(name: str) -> str:
    """The command-line flag of a field: ``num_generations`` -> ``--num-generations``."""
    return "--" + name.replace("_", "-")


def bad(name: str, value: Any, what: str) -> NoReturn:
    """Raise the ``ConfigError`` of field ``name``: "name=value (--name) what"."""
    raise ConfigError(f"{name}={value!r} ({flag(name)}) {what}")


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (as CleanRL/tyro read them), joined to one line."""
    docs: dict[str, str] = {}
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def converter(tp: Any, name: str):
    """argparse type for a field annotation: int, float, str, or X | None ("none" -> None)."""
    args = typing.get_args(tp)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), tp) if args else tp

    def convert(text: str):
        if optional and text.lower() in ("none", "null", ""):
            return None
        try:
            return base(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} expects {base.__name__}, got {text!r}") from None

    convert.__name__ = base.__name__  # argparse's "invalid <name> value" message
    return convert


def dataclass_parser(cls: type, prog: str, description: str, usage: str | None = None,
                     presets: Mapping[str, Mapping[str, Any]] | None = None,
                     extra_help: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """A parser with one flag per field of ``cls``; unset flags are absent from the parsed namespace.

    Booleans get ``--x/--no-x``. ``presets`` (name -> field overrides) are listed in each field's help.
    ``extra_help`` (field -> text) follows a field's docstring: help rendered from a table when the
    parser is built (the reward presets, the registered datasets). A name that is not a field raises.
    """
    unknown = set(extra_help or {}) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"extra_help names {sorted(unknown)}, which are not fields of {cls.__name__}")
    parser = argparse.ArgumentParser(prog=prog, usage=usage, description=description)
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        help_text = " ".join(t for t in (docs.get(f.name, ""), (extra_help or {}).get(f.name, "")) if t)
        overrides = {p: v[f.name] for p, v in (presets or {}).items() if f.name in v}
        if overrides:
            help_text += " [" + "; ".join(f"{p} preset: {v}" for p, v in overrides.items()) + "]"
        help_text += f" (default: {f.default})"
        if hints[f.name] is bool:
            parser.add_argument(flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag(f.name), dest=f.name, type=converter(hints[f.name], f.name),
                                default=argparse.SUPPRESS, metavar=f.name.upper(), help=help_text)
    return parser


def registry_help() -> dict[str, str]:
    """``extra_help`` for the ``dataset``, ``model`` and ``reward`` fields: the registered datasets, models and
    reward presets as they are when the parser is built."""
    from agents.models import MODEL_NAMES
    from sqlenv.datasets import available_datasets
    from sqlenv.rewards import preset_help

    names = {"dataset": ", ".join(available_datasets()), "model": ", ".join(MODEL_NAMES), "reward": preset_help()}
    return {field: text + "." for field, text in names.items()}


def exit_with(prog: str, error: Exception, status: int = 2) -> NoReturn:
    """End the script as argparse ends it on a bad flag: "<prog>: error: <message>" and status 2."""
    print(f"{prog}: error: {error}", file=sys.stderr, flush=True)
    raise SystemExit(status)
