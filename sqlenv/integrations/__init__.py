"""Adapters to other libraries. Each submodule imports its library only when used; docs/integrations.md
has an example of each. Every adapter turns a completion into SQL with
:func:`sqlenv.completion.extract_sql` (the trainer's extractor) and scores it through the env's own
scoring.

- :mod:`sqlenv.integrations.trl`: a TRL ``reward_funcs`` function and ``to_trl_dataset``.
- :mod:`sqlenv.integrations.trl_env`: ``GRPOTrainer(environment_factory=...)`` tools over the envs.
- :mod:`sqlenv.integrations.verifiers`: a verifiers taskset and env with our reward as the rubric.
- :mod:`sqlenv.integrations.openenv`: an OpenEnv server (one env per session) and its client.
- :mod:`sqlenv.integrations.skyrl`: the envs registered with skyrl-gym.
- :mod:`sqlenv.integrations.chat_server`: a local OpenAI-compatible chat endpoint serving a policy.
"""
