"""The Argo Rollouts driver: start, watch, promote, abort and retry a Rollout through the API.

Why not the ``kubectl argo rollouts`` plugin: the runbooks need every step as data (which
step, which weight, which pause, which AnalysisRun failed on which metric) for the evidence
bundle, and the plugin is one more binary to install. The driver sends exactly the patches
the plugin sends (``pkg/kubectl-argo-rollouts/cmd/promote/promote.go``):

* promote one step: ``{"spec": {"paused": false}}`` on the object when ``spec.paused`` and
  ``{"status": {"pauseConditions": null}}`` on the *status subresource* when paused by a step;
  when a canary is not paused (an analysis step is running) the step index is advanced instead;
* full promotion: ``{"status": {"promoteFull": true}}`` on the status subresource;
* abort: ``{"status": {"abort": true}}``; retry: ``{"status": {"abort": false}}``;

all as JSON merge patches (``application/merge-patch+json``). Starting a rollout is a JSON
patch of the pod template's container image (a merge patch would replace the whole
``containers`` list of a custom resource, which has no strategic-merge semantics).

Every wait polls with a timeout and has a success and a failure condition; they raise
:class:`WaitTimeout` and :class:`WaitFailed` respectively, naming what was awaited and
what was last seen. The sleep between polls is injectable: tests play the Argo controller
there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...exceptions import TrafficError, WaitFailed, WaitTimeout
from .client import DEFAULT_REQUEST_TIMEOUT, api_call

__all__ = [
    "GROUP",
    "MERGE_PATCH",
    "VERSION",
    "AnalysisRunState",
    "RolloutState",
    "RolloutsDriver",
]

GROUP = "argoproj.io"
VERSION = "v1alpha1"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
POD_TEMPLATE_HASH = "rollouts-pod-template-hash"


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _client_phase(meta: dict[str, Any], status: dict[str, Any]) -> tuple[str, str]:
    """The phase a client may act on, as the controller's own client helper computes it
    (``utils/rollout/rolloututil.go`` ``GetRolloutPhase`` in v1.8.3).

    ``status.phase`` describes the spec the controller last *observed*: right after a spec
    change (a new image) it still says ``Healthy`` for the old revision until the controller
    has reconciled, so a wait for Healthy would return at once on a stale status. The
    controller writes ``status.observedGeneration`` as a decimal string; while it differs from
    ``metadata.generation`` the rollout is Progressing. Likewise after a promotion cleared
    ``status.pauseConditions`` while ``status.controllerPause`` is still true (the controller has
    not yet unpaused). A non-numeric or absent ``observedGeneration`` (rollouts before v0.10)
    counts as observed, as there.
    """
    observed = str(status.get("observedGeneration") or "")
    generation = _int(meta.get("generation"), -1)
    if observed.isdigit() and generation >= 0 and int(observed) < generation:
        return "Progressing", "waiting for rollout spec update to be observed"
    if status.get("controllerPause") and not status.get("pauseConditions"):
        return "Progressing", "waiting for rollout to unpause"
    return str(status.get("phase") or ""), str(status.get("message") or "")


@dataclass(frozen=True)
class RolloutState:
    """What a Rollout says about itself, flattened for waits, tables and evidence."""

    name: str
    namespace: str
    strategy: str  # "canary" | "blueGreen" | ""
    phase: str
    message: str
    current_step_index: int | None
    steps: list[dict[str, Any]]
    canary_weight: int
    stable_weight: int
    spec_paused: bool
    pause_conditions: list[dict[str, Any]]
    abort: bool
    current_pod_hash: str
    stable_rs: str
    images: dict[str, str]
    active_selector: str = ""
    preview_selector: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> RolloutState:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        strategy_spec = spec.get("strategy") or {}
        strategy = next((s for s in ("canary", "blueGreen") if s in strategy_spec), "")
        steps = list((strategy_spec.get("canary") or {}).get("steps") or [])
        weights = (status.get("canary") or {}).get("weights") or {}
        containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
        bg = status.get("blueGreen") or {}
        idx = status.get("currentStepIndex")
        canary_weight = _int((weights.get("canary") or {}).get("weight"))
        stable_weight = _int((weights.get("stable") or {}).get("weight"), 100)
        canary_spec = strategy_spec.get("canary") or {}
        if strategy == "canary" and not weights and not canary_spec.get("trafficRouting"):
            # basic canary (no traffic router): the controller reports no weights; the share is the
            # replica ratio of the last setWeight step completed, 0 once aborted or fully promoted
            current = status.get("currentPodHash")
            updating = bool(current) and current != status.get("stableRS")
            done = steps[: _int(idx)] if updating and not status.get("abort") else []
            canary_weight = next((_int(s["setWeight"]) for s in reversed(done)
                                  if isinstance(s, dict) and "setWeight" in s), 0)
            stable_weight = 100 - canary_weight
        phase, message = _client_phase(meta, status)
        return cls(
            name=str(meta.get("name", "")),
            namespace=str(meta.get("namespace", "")),
            strategy=strategy,
            phase=phase,
            message=message,
            current_step_index=None if idx is None else _int(idx),
            steps=steps,
            canary_weight=canary_weight,
            stable_weight=stable_weight,
            spec_paused=bool(spec.get("paused")),
            pause_conditions=list(status.get("pauseConditions") or []),
            abort=bool(status.get("abort")),
            current_pod_hash=str(status.get("currentPodHash") or ""),
            stable_rs=str(status.get("stableRS") or ""),
            images={str(c.get("name")): str(c.get("image")) for c in containers if isinstance(c, dict)},
            active_selector=str(bg.get("activeSelector") or ""),
            preview_selector=str(bg.get("previewSelector") or ""),
            raw=obj,
        )

    @property
    def paused(self) -> bool:
        """Waiting for a promotion: paused by a step (pauseConditions) or by ``spec.paused``."""
        return self.spec_paused or bool(self.pause_conditions)

    @property
    def healthy(self) -> bool:
        """Fully promoted: phase Healthy and the current pod template is the stable one."""
        same = not self.current_pod_hash or not self.stable_rs or self.current_pod_hash == self.stable_rs
        return self.phase == "Healthy" and same and not self.abort

    @property
    def aborted(self) -> bool:
        return self.abort

    @property
    def set_weights(self) -> list[int]:
        """The ``setWeight`` values of the canary steps, in step order."""
        return [_int(s["setWeight"]) for s in self.steps if isinstance(s, dict) and "setWeight" in s]

    def remaining_weights(self) -> list[int]:
        """``setWeight`` values at or after the current step (the weights still reachable)."""
        start = self.current_step_index or 0
        return [_int(s["setWeight"]) for s in self.steps[start:] if isinstance(s, dict) and "setWeight" in s]

    def summary(self) -> dict[str, Any]:
        """One row for a runbook table / the evidence bundle."""
        return {
            "rollout": f"{self.namespace}/{self.name}", "phase": self.phase, "step": self.current_step_index,
            "steps": len(self.steps), "canary_weight": self.canary_weight,
            "stable_weight": self.stable_weight,
            "paused": self.paused, "abort": self.abort, "message": self.message,
        }


@dataclass(frozen=True)
class AnalysisRunState:
    """One AnalysisRun: its phase and per-metric results (``status.metricResults``)."""

    name: str
    phase: str
    message: str
    metric_results: list[dict[str, Any]]

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> AnalysisRunState:
        status = obj.get("status") or {}
        return cls(
            name=str((obj.get("metadata") or {}).get("name", "")),
            phase=str(status.get("phase") or "Pending"),
            message=str(status.get("message") or ""),
            metric_results=list(status.get("metricResults") or []),
        )

    @property
    def failed(self) -> bool:
        return self.phase in ("Failed", "Error", "Inconclusive")

    def failing_metrics(self) -> list[str]:
        out = []
        for m in self.metric_results:
            if m.get("phase") in ("Failed", "Error", "Inconclusive"):
                out.append(f"{m.get('name')}={m.get('phase')} (failed {m.get('failed', 0)}/"
                           f"{m.get('count', 0)}){': ' + str(m['message']) if m.get('message') else ''}")
        return out

    def describe(self) -> str:
        metrics = "; ".join(self.failing_metrics())
        return f"AnalysisRun {self.name} {self.phase}" + (f" [{metrics}]" if metrics else "") + (
            f" {self.message}" if self.message else "")


class RolloutsDriver:
    """Drive the Rollouts of one namespace with the official ``CustomObjectsApi``.

    ``sleep`` is called between polls (default :func:`time.sleep`); ``clock`` measures the
    timeouts. Both are injectable so tests can act as the controller without real waiting.
    """

    def __init__(self, custom: Any, core: Any, namespace: str, *,
                 request_timeout: float = DEFAULT_REQUEST_TIMEOUT, poll_interval: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.custom = custom
        self.core = core
        self.namespace = namespace
        self.request_timeout = request_timeout
        self.poll_interval = poll_interval
        self._sleep = sleep
        self._clock = clock
        self.sent: list[tuple[str, str, Any]] = []  # (verb+subresource, name, body): audit trail

    # -- reads ---------------------------------------------------------------------------
    def raw(self, name: str) -> dict[str, Any]:
        with api_call("get", "Rollout", self.namespace, name):
            obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "rollouts", name, _request_timeout=self.request_timeout)
        return obj

    def get(self, name: str) -> RolloutState:
        return RolloutState.from_object(self.raw(name))

    def analysis_runs(self, name: str) -> list[AnalysisRunState]:
        """AnalysisRuns owned by Rollout ``name``, oldest first."""
        with api_call("list", "AnalysisRun", self.namespace, None):
            listing = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "analysisruns", _request_timeout=self.request_timeout)
        runs = []
        for item in listing.get("items") or []:
            owners = (item.get("metadata") or {}).get("ownerReferences") or []
            if any(o.get("kind") == "Rollout" and o.get("name") == name for o in owners):
                runs.append(item)
        runs.sort(key=lambda o: str((o.get("metadata") or {}).get("creationTimestamp") or ""))
        return [AnalysisRunState.from_object(o) for o in runs]

    def service_selector_hash(self, service: str) -> str:
        """The ``rollouts-pod-template-hash`` a Service selects (blue-green active/preview)."""
        with api_call("get", "Service", self.namespace, service):
            svc = self.core.read_namespaced_service(service, self.namespace,
                                                    _request_timeout=self.request_timeout)
        selector = (svc.spec.selector or {}) if getattr(svc, "spec", None) else {}
        return str(selector.get(POD_TEMPLATE_HASH, ""))

    def blue_green(self, name: str) -> dict[str, str]:
        """Active and preview Services of a blue-green Rollout and the pod hash each selects."""
        obj = self.raw(name)
        bg = ((obj.get("spec") or {}).get("strategy") or {}).get("blueGreen")
        if not bg:
            raise TrafficError(f"Rollout {self.namespace}/{name} is not a blue-green rollout")
        active, preview = str(bg.get("activeService", "")), str(bg.get("previewService") or "")
        out = {"active_service": active, "active_hash": self.service_selector_hash(active),
               "preview_service": preview, "preview_hash": ""}
        if preview:
            out["preview_hash"] = self.service_selector_hash(preview)
        return out

    # -- writes ----------------------------------------------------------------------------
    def _patch_status(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self.sent.append(("patch status", name, body))
        with api_call("patch", "Rollout", self.namespace, f"{name} (status)"):
            obj: dict[str, Any] = self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, self.namespace, "rollouts", name, body,
                _content_type=MERGE_PATCH, _request_timeout=self.request_timeout)
        return obj

    def _patch(self, name: str, body: Any, content_type: str = MERGE_PATCH) -> dict[str, Any]:
        self.sent.append(("patch", name, body))
        with api_call("patch", "Rollout", self.namespace, name):
            obj: dict[str, Any] = self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "rollouts", name, body,
                _content_type=content_type, _request_timeout=self.request_timeout)
        return obj

    def set_image(self, name: str, image: str, *, container: str | None = None,
                  env: dict[str, str] | None = None) -> RolloutState:
        """Start a rollout: replace the image (and optionally env values) of one container.

        The JSON patch carries a ``test`` of the container's name, so a concurrent change of
        the container list fails (HTTP 422/409) instead of patching the wrong container.
        """
        if not image or any(c.isspace() for c in image):
            raise TrafficError(
                f"image {image!r} for Rollout {self.namespace}/{name} is not an image reference")
        state = self.get(name)
        names = list(state.images)
        if not names:
            raise TrafficError(f"Rollout {self.namespace}/{name} has no containers in its pod template")
        cname = container or names[0]
        if cname not in names:
            raise TrafficError(
                f"Rollout {self.namespace}/{name} has no container {cname!r} (has: {', '.join(names)})")
        i = names.index(cname)
        base = f"/spec/template/spec/containers/{i}"
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": f"{base}/name", "value": cname},
            {"op": "replace", "path": f"{base}/image", "value": image},
        ]
        if env:
            template = (state.raw.get("spec") or {}).get("template") or {}
            containers = (template.get("spec") or {}).get("containers") or []
            current = [e for e in (containers[i].get("env") or []) if e.get("name") not in env]
            current += [{"name": k, "value": v} for k, v in sorted(env.items())]
            ops.append({"op": "add", "path": f"{base}/env", "value": current})
        return RolloutState.from_object(self._patch(name, ops, JSON_PATCH))

    def set_template(self, name: str, template: dict[str, Any]) -> RolloutState:
        """Replace the whole pod template (``kubectl argo rollouts undo`` copies a ReplicaSet's
        template into the Rollout the same way); a JSON patch, so nothing else of the spec moves."""
        if not isinstance(template, dict) or not (template.get("spec") or {}).get("containers"):
            raise TrafficError(f"pod template for Rollout {self.namespace}/{name} has no containers")
        return RolloutState.from_object(
            self._patch(name, [{"op": "replace", "path": "/spec/template", "value": template}], JSON_PATCH))

    def promote(self, name: str, *, full: bool = False) -> list[tuple[str, dict[str, Any]]]:
        """Promote like ``kubectl argo rollouts promote [--full]``; returns the patches sent."""
        state = self.get(name)
        sent: list[tuple[str, dict[str, Any]]] = []
        if full:
            if state.current_pod_hash != state.stable_rs or not state.stable_rs:
                body: dict[str, Any] = {"status": {"promoteFull": True}}
                self._patch_status(name, body)
                sent.append(("status", body))
            return sent
        if state.pause_conditions:
            body = {"status": {"pauseConditions": None}}
            self._patch_status(name, body)
            sent.append(("status", body))
        elif state.strategy == "canary" and state.steps:
            index = state.current_step_index or 0
            if index < len(state.steps):
                index += 1
            body = {"status": {"pauseConditions": None, "currentStepIndex": index}}
            self._patch_status(name, body)
            sent.append(("status", body))
        if state.spec_paused:
            body = {"spec": {"paused": False}}
            self._patch(name, body)
            sent.append(("spec", body))
        return sent

    def abort(self, name: str) -> None:
        """``kubectl argo rollouts abort``: all traffic back to stable."""
        self._patch_status(name, {"status": {"abort": True}})

    def retry(self, name: str) -> None:
        """``kubectl argo rollouts retry rollout``: clear the abort so the update starts over."""
        self._patch_status(name, {"status": {"abort": False}})

    # -- waits -------------------------------------------------------------------------------
    def wait(self, name: str, what: str, ok: Callable[[RolloutState], bool], *, timeout: float,
             fail: Callable[[RolloutState], str | None] | None = None,
             act: Callable[[RolloutState], None] | None = None) -> RolloutState:
        """Poll Rollout ``name`` until ``ok``; ``fail`` returning a reason raises WaitFailed;
        ``act`` runs on every poll that is neither (e.g. promote a paused step)."""
        fail = fail or self.abort_reason
        deadline = self._clock() + timeout
        state = self.get(name)
        while True:
            if ok(state):
                return state
            reason = fail(state)
            if reason:
                raise WaitFailed(f"waiting for Rollout {self.namespace}/{name} to {what}: {reason}")
            if self._clock() >= deadline:
                raise WaitTimeout(
                    f"Rollout {self.namespace}/{name} did not {what} within {timeout:g}s; last seen: "
                    f"phase={state.phase or '-'} step={state.current_step_index} "
                    f"weight={state.canary_weight} "
                    f"paused={state.paused} abort={state.abort} {state.message}".rstrip())
            if act is not None:
                act(state)
            self._sleep(self.poll_interval)
            state = self.get(name)

    def abort_reason(self, state: RolloutState) -> str | None:
        """Failure condition of forward waits: the rollout was aborted (says which analysis failed)."""
        if not state.abort:
            return None
        failed = [r.describe() for r in self.analysis_runs(state.name) if r.failed]
        detail = "; ".join(failed) if failed else (state.message or "status.abort is true")
        return f"rollout aborted: {detail}"

    def wait_healthy(self, name: str, *, timeout: float) -> RolloutState:
        return self.wait(name, "become Healthy (fully promoted)", lambda s: s.healthy, timeout=timeout)

    def wait_aborted(self, name: str, *, timeout: float) -> RolloutState:
        """After an abort: wait until the canary carries no traffic."""
        return self.wait(name, "take all traffic off the canary after abort",
                         lambda s: s.abort and s.canary_weight == 0, timeout=timeout, fail=lambda s: None)

    def step_to_weight(self, name: str, weight: int, *, timeout: float) -> RolloutState:
        """Promote step by step until ``status.canary.weights.canary.weight == weight``.

        Checked before any patch: the weight must be one the remaining steps set (or 100,
        the end of the rollout), and weights only go up during a rollout.
        """
        if not 0 <= weight <= 100:
            raise TrafficError(f"canary weight {weight} for Rollout {self.namespace}/{name} is not in 0..100")
        state = self.get(name)
        if state.strategy != "canary":
            raise TrafficError(f"Rollout {self.namespace}/{name} is not a canary rollout (strategy: "
                               f"{state.strategy or 'none'}); blue-green has no weights")
        if state.canary_weight == weight:
            return state
        if weight < state.canary_weight:
            raise TrafficError(
                f"Rollout {self.namespace}/{name} is at canary weight {state.canary_weight}; a rollout "
                f"only moves forward, so {weight} needs an abort (weight 0) instead")
        reachable = state.remaining_weights()
        if weight != 100 and weight not in reachable:
            raise TrafficError(
                f"canary weight {weight} is not a step of Rollout {self.namespace}/{name} "
                f"(remaining setWeight steps: {reachable or 'none'})")
        steps = len(state.steps)

        def reached(s: RolloutState) -> bool:
            return s.canary_weight == weight or (weight == 100 and (s.current_step_index or 0) >= steps
                                                 and s.current_pod_hash == s.stable_rs != "")

        def overshoot(s: RolloutState) -> str | None:
            if s.canary_weight > weight:
                return f"canary weight went past {weight} to {s.canary_weight}"
            return self.abort_reason(s)

        def promote_if_paused(s: RolloutState) -> None:
            if s.paused:
                self.promote(name)

        return self.wait(name, f"reach canary weight {weight}", reached, timeout=timeout,
                         fail=overshoot, act=promote_if_paused)
