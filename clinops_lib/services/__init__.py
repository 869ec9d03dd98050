"""The platform's own workloads: clinical-gateway (Level 1), model-serving and the training job (Level 4).

Each is a module: ``gateway`` and ``serving`` expose an ASGI ``app`` (started under uvicorn,
see docs/CONTRACTS.md, section Services), ``training`` is a command (``python -m``) and a
function. ``synthetic`` generates the fictitious clinical data they and the drills use.
Shared parts, one place each: ``_common`` (configuration from the environment, logs, metrics,
faults), ``_publisher`` (the bounded background publisher under the SNS publisher and the Kafka
producer of ``_kafka``) and ``_logreg`` (the risk models' scoring and artifact checks).
Nothing is imported here, so importing one service never builds another's app.
"""

__all__: list[str] = []
