"""Kubernetes client construction and the ONE place where API errors become clinops errors.

Why a module of its own: every Kubernetes call the library makes (the Rollouts driver, the
Argo CD waits, the Kubernetes targets) goes through :func:`api_call`, so a 403, a 404, a 409
conflict, a 5xx or a timeout always reads the same way in a runbook's evidence:
``patch Rollout clinical-mlops/model-serving failed (HTTP 409): ...``.

The kubeconfig and its context are checked *before* any client is built, so a missing file
or a misspelt context fails with a :class:`PrerequisiteError` without touching the network.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ...config import Settings
from ...exceptions import KubernetesAPIError, PrerequisiteError

__all__ = [
    "DEFAULT_REQUEST_TIMEOUT",
    "KubeClients",
    "api_call",
    "describe",
    "kubeconfig_contexts",
    "load_clients",
    "raw_get",
    "resolve_kubeconfig",
]

DEFAULT_REQUEST_TIMEOUT = 30.0
LOCAL_HINT = "run on this machine without a cluster with --target local"


def describe(kind: str, namespace: str | None, name: str | None) -> str:
    """``Rollout clinical-mlops/model-serving`` — how every error names an object."""
    if namespace and name:
        where = f"{namespace}/{name}"
    else:
        where = name or (f"in {namespace}" if namespace else "")
    return f"{kind} {where}".strip()


@contextmanager
def api_call(verb: str, kind: str, namespace: str | None = None, name: str | None = None) -> Iterator[None]:
    """Convert whatever the official client raises into :class:`KubernetesAPIError`.

    ``ApiException`` carries the HTTP status and the server's ``Status.message``; urllib3
    timeouts and refused connections have no status and say so.
    """
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError as Urllib3Error

    obj = describe(kind, namespace, name)
    try:
        yield
    except ApiException as e:
        raise KubernetesAPIError(verb, obj, e.status, _server_message(e)) from e
    except Urllib3Error as e:
        text = str(e)
        reason = "timed out" if "timed out" in text.lower() or "timeout" in type(e).__name__.lower() else text
        raise KubernetesAPIError(verb, obj, None,
                                 f"API server unreachable: {reason} ({type(e).__name__})") from e
    except (TimeoutError, ConnectionError) as e:
        raise KubernetesAPIError(verb, obj, None, f"API server unreachable: {e}") from e


def _server_message(e: Any) -> str:
    """The ``message`` of the Kubernetes ``Status`` body, or the HTTP reason phrase."""
    body = getattr(e, "body", None)
    if body:
        try:
            import json

            data = json.loads(body)
            if isinstance(data, dict) and data.get("message"):
                reason = data.get("reason") or e.reason
                return f"{reason}: {str(data['message'])[:300]}"
        except (ValueError, TypeError):
            pass
    return str(getattr(e, "reason", "") or "no reason given")


def resolve_kubeconfig(settings: Settings) -> Path:
    """The kubeconfig file to use: ``settings.kubeconfig`` (from ``KUBECONFIG``) or ``~/.kube/config``."""
    path = settings.kubeconfig or Path(os.path.expanduser("~/.kube/config"))
    path = Path(path).expanduser()
    if not path.is_file():
        raise PrerequisiteError(
            f"kubeconfig {path} does not exist; point KUBECONFIG at a cluster's kubeconfig "
            f"(for kind: `clinops kind create`), or {LOCAL_HINT}"
        )
    return path


def kubeconfig_contexts(path: Path) -> tuple[list[str], str | None]:
    """The context names in a kubeconfig and its ``current-context`` (parsed, not contacted)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise PrerequisiteError(f"kubeconfig {path} cannot be read: {e}") from e
    if not isinstance(data, dict):
        raise PrerequisiteError(f"kubeconfig {path} is not a kubeconfig (top level is not a mapping)")
    names = [str(c.get("name")) for c in data.get("contexts") or [] if isinstance(c, dict)]
    current = data.get("current-context") or None
    return names, current


@dataclass
class KubeClients:
    """The official clients sharing one ``ApiClient`` (one connection pool, one kubeconfig)."""

    api_client: Any
    core: Any
    apps: Any
    custom: Any
    kubeconfig: Path
    context: str
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT

    @property
    def host(self) -> str:
        return str(self.api_client.configuration.host)

    def close(self) -> None:
        close = getattr(self.api_client, "close", None)
        if close is not None:
            close()


def load_clients(settings: Settings, *, context: str | None = None,
                 request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> KubeClients:
    """Build the clients for ``settings``; raises before any network call when the kubeconfig
    or the requested context is missing."""
    path = resolve_kubeconfig(settings)
    names, current = kubeconfig_contexts(path)
    wanted = context or settings.kube_context or current
    if not wanted:
        raise PrerequisiteError(
            f"kubeconfig {path} has no current-context and none was given (CLINOPS_KUBE_CONTEXT)"
        )
    if wanted not in names:
        known = ", ".join(names) or "none"
        raise PrerequisiteError(
            f"context {wanted!r} is not in kubeconfig {path} (contexts: {known}); {LOCAL_HINT}"
        )
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    try:
        api_client = config.new_client_from_config(config_file=str(path), context=wanted)
    except (ConfigException, OSError, ValueError, TypeError) as e:
        raise PrerequisiteError(f"kubeconfig {path} context {wanted!r} is unusable: {e}") from e
    return KubeClients(
        api_client=api_client,
        core=client.CoreV1Api(api_client),
        apps=client.AppsV1Api(api_client),
        custom=client.CustomObjectsApi(api_client),
        kubeconfig=path,
        context=wanted,
        request_timeout=request_timeout,
    )


def raw_get(clients: KubeClients, path: str, query: list[tuple[str, str]], *, verb: str, kind: str,
            namespace: str | None, name: str | None, timeout: float | None = None) -> bytes:
    """GET an API-server path the generated client has no method for (service proxy with a
    query string); non-2xx answers become :class:`KubernetesAPIError` like every other call."""
    with api_call(verb, kind, namespace, name):
        method, url, headers, body, post = clients.api_client.param_serialize(
            "GET", path, query_params=query, header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"])
        resp = clients.api_client.call_api(method, url, header_params=headers, body=body, post_params=post,
                                           _request_timeout=timeout or clients.request_timeout)
        data: bytes = resp.read()
        if not 200 <= resp.status < 300:
            raise _api_exception(resp.status, resp.reason, data)
    return data


def _api_exception(status: int, reason: str | None, data: bytes) -> Exception:
    from kubernetes.client.exceptions import ApiException

    e = ApiException(status=status, reason=reason or "")
    e.body = data.decode("utf-8", "replace")
    return e
