"""OpenEnv adapter: ``TextToSQL-v0`` / ``TextToSQLAgent-v0`` served over OpenEnv's HTTP/WebSocket protocol.

``pip install 'sqlenv[openenv]'`` (the ``openenv-core`` package), then::

    python -m sqlenv.integrations.openenv --env TextToSQLAgent-v0 --port 8000 --max-sessions 64

and on the client side::

    from sqlenv.integrations.openenv import SQLAction, SQLEnvClient
    with SQLEnvClient(base_url="http://localhost:8000").sync() as client:
        result = client.reset(index=3)             # StepResult: observation, reward, done
        result = client.step(SQLAction(sql="<answer>SELECT 1</answer>"))

- :mod:`.models`: the wire types (``SQLAction``, ``SQLObservation``, ``SQLState``);
- :mod:`.server`: ``SQLEnvironment`` (an OpenEnv ``Environment`` around one Gymnasium env), ``create_app``
  (OpenEnv's FastAPI app with a request-size limit) and the CLI;
- :mod:`.client`: ``SQLEnvClient`` (OpenEnv's ``EnvClient``: one WebSocket session, one env).
"""

from sqlenv.integrations.openenv.client import SQLEnvClient
from sqlenv.integrations.openenv.models import SQLAction, SQLObservation, SQLState

__all__ = ["SQLAction", "SQLEnvClient", "SQLObservation", "SQLState"]
