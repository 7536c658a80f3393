"""Adapters to other libraries. Each submodule imports its library only when used.

- :mod:`sqlenv.integrations.trl`: a TRL ``reward_funcs`` function and ``to_trl_dataset``.
"""
