"""sqlenv as a verifiers environment package: ``vf-eval sqlenv-verifiers``.

verifiers finds a taskset, its env and its default harness by importing the id as a top-level module
and taking the ``Taskset``, ``Env`` and ``Harness`` subclasses it exports. The classes live in
:mod:`sqlenv.integrations.verifiers`.
"""

from sqlenv.integrations.verifiers import SQLAgentEnv, SQLChatHarness, SQLTaskset

__all__ = ["SQLAgentEnv", "SQLChatHarness", "SQLTaskset"]
