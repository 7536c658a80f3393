"""OpenEnv adapter: ``TextToSQL-v0`` / ``TextToSQLAgent-v0`` over OpenEnv's HTTP/WebSocket protocol.

``pip install 'sqlenv[openenv]'`` (the ``openenv-core`` package), then::

    python -m sqlenv.integrations.openenv --env TextToSQLAgent-v0 --port 8000 --max-sessions 64

(binding a non-loopback ``--host`` needs a shared secret in ``SQLENV_TOKEN`` or ``--token``), and on
the client side (``token=`` defaults to ``SQLENV_TOKEN``)::

    from sqlenv.integrations.openenv import SQLAction, SQLEnvClient
    with SQLEnvClient(base_url="http://localhost:8000").sync() as client:
        result = client.reset(index=3)             # StepResult: observation, reward, done
        result = client.step(SQLAction(sql="<answer>SELECT 1</answer>"))

- :mod:`.models`: the wire types (``SQLAction``, ``SQLObservation``, ``SQLState``);
- :mod:`.server`: ``SQLEnvironment`` (an OpenEnv ``Environment`` around one Gymnasium env),
  ``create_app`` (OpenEnv's FastAPI app with its sessions, stateless ``/mcp`` and ``/step``
  replaced) and the CLI;
- :mod:`.sessions`: the ``/ws`` session (a slot per live connection, moves in the session's thread);
- :mod:`.guards`: token, body limit, per-request deadline, connection cap, rate-limited logs;
- :mod:`.client`: ``SQLEnvClient`` (OpenEnv's ``EnvClient``: one WebSocket session, one env).
"""

from sqlenv.integrations.openenv.client import SQLEnvClient
from sqlenv.integrations.openenv.models import SQLAction, SQLObservation, SQLState

__all__ = ["SQLAction", "SQLEnvClient", "SQLObservation", "SQLState"]
