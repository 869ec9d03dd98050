"""The Argo Rollouts driver against a stateful Kubernetes API emulator over real HTTP.

The test plays the Argo Rollouts controller (``ArgoController.tick``) in the driver's sleep
between polls, and asserts the exact requests the driver sent.
"""

from __future__ import annotations

import asyncio

import kmock
import pytest
from kube_emulator import (
    ANALYSISRUNS,
    ROLLOUTS,
    SERVICES,
    ArgoController,
    Emulator,
    emulator,
    rollout,
    weights,
)

from clinops_lib.config import Settings
from clinops_lib.exceptions import KubernetesAPIError, TrafficError, WaitFailed, WaitTimeout
from clinops_lib.targets.kube.client import load_clients
from clinops_lib.targets.kube.rollouts import MERGE_PATCH, RolloutsDriver, RolloutState

pytestmark = pytest.mark.unit

__all__ = ["emulator"]

NS = "clinical-mlops"


class FakeClock:
    """Time that advances only when the driver sleeps: timeouts without real waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def driver_for(emu: Emulator, controller: ArgoController | None = None,
               timeout: float = 30.0) -> RolloutsDriver:
    clients = load_clients(Settings(kubeconfig=emu.kubeconfig))
    clock = FakeClock()

    def sleep(seconds: float) -> None:
        clock.now += seconds
        if controller is not None:
            controller.tick()

    return RolloutsDriver(clients.custom, clients.core, NS, poll_interval=1.0, sleep=sleep, clock=clock,
                          request_timeout=timeout)


def writes(emu: Emulator) -> list[tuple[str, str, str | None, object]]:
    return [(str(r.method.value).lower(), str(r.url.path), r.headers.get("Content-Type"), r.data)
            for r in emu.requests() if str(r.method.value).upper() in ("PATCH", "POST", "PUT", "DELETE")]


def test_start_rollout_patches_image_and_env_of_the_named_container(emulator: Emulator) -> None:
    emulator.put(ROLLOUTS, NS, "model-serving", rollout("model-serving", NS))
    d = driver_for(emulator)
    d.set_image("model-serving", "ghcr.io/clinops/model-serving:1.1.0", env={"CLINOPS_FAULT": "errors:5%"})
    obj = emulator.obj(ROLLOUTS, NS, "model-serving")
    container = obj["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/clinops/model-serving:1.1.0"
    assert container["env"] == [{"name": "CLINOPS_FAULT", "value": "errors:5%"}]
    (verb, path, ctype, body), = writes(emulator)
    assert (verb, path, ctype) == (
        "patch", f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/rollouts/model-serving",
        "application/json-patch+json")
    assert body[0] == {"op": "test", "path": "/spec/template/spec/containers/0/name", "value": "app"}
    assert body[1]["value"] == "ghcr.io/clinops/model-serving:1.1.0"


def test_bad_image_and_unknown_container_fail_before_any_patch(emulator: Emulator) -> None:
    emulator.put(ROLLOUTS, NS, "model-serving", rollout("model-serving", NS))
    d = driver_for(emulator)
    with pytest.raises(TrafficError, match="not an image reference"):
        d.set_image("model-serving", "bad image")
    with pytest.raises(TrafficError, match="no container 'sidecar'"):
        d.set_image("model-serving", "x:1", container="sidecar")
    assert writes(emulator) == []


def test_steps_are_observed_and_promoted_one_by_one_to_the_requested_weight(emulator: Emulator) -> None:
    emulator.put(ROLLOUTS, NS, "model-serving", rollout("model-serving", NS))
    ctl = ArgoController(emulator, NS, "model-serving")
    d = driver_for(emulator, ctl)
    d.set_image("model-serving", "ghcr.io/clinops/model-serving:1.1.0")
    ctl.start_update()

    s10 = d.step_to_weight("model-serving", 10, timeout=60)
    assert s10.canary_weight == 10 and s10.stable_weight == 90
    # reaching 10 needs no promotion: setWeight 10 is the first step
    assert not [w for w in writes(emulator) if w[1].endswith("/status")]

    s50 = d.step_to_weight("model-serving", 50, timeout=60)
    assert s50.canary_weight == 50
    status_patches = [(w[2], w[3]) for w in writes(emulator) if w[1].endswith("/model-serving/status")]
    # exactly one promotion, the one the plugin sends for a step pause, as a merge patch
    assert status_patches == [(MERGE_PATCH, {"status": {"pauseConditions": None}})]
    assert ctl.ticks >= 3  # the weight came from the controller, observed across polls


def test_full_promotion_sends_promote_full_and_waits_healthy(emulator: Emulator) -> None:
    emulator.put(ROLLOUTS, NS, "model-serving", rollout("model-serving", NS))
    emulator.patch(ROLLOUTS, NS, "model-serving", {"status": {
        "phase": "Paused", "currentStepIndex": 1, "currentPodHash": "bbb222",
        "pauseConditions": [{"reason": "CanaryPauseStep"}], **weights(10)}})
    ctl = ArgoController(emulator, NS, "model-serving")
    d = driver_for(emulator, ctl)
    sent = d.promote("model-serving", full=True)
    assert sent == [("status", {"status": {"promoteFull": True}})]
    state = d.wait_healthy("model-serving", timeout=30)
    assert state.healthy and state.stable_rs == "bbb222"
    assert [(w[2], w[3]) for w in writes(emulator)] == [(MERGE_PATCH, {"status": {"promoteFull": True}})]


def test_promote_of_spec_paused_rollout_unpauses_spec(emulator: Emulator) -> None:
    obj = rollout("model-serving", NS)
    obj["spec"]["paused"] = True
    emulator.put(ROLLOUTS, NS, "model-serving", obj)
    emulator.patch(ROLLOUTS, NS, "model-serving", {"status": {
        "currentStepIndex": 1, "pauseConditions": [{"reason": "CanaryPauseStep"}]}})
    d = driver_for(emulator)
    d.promote("model-serving")
    got = writes(emulator)
    assert [(p.rsplit("/", 1)[-1], b) for _, p, _, b in got] == [
        ("status", {"status": {"pauseConditions": None}}),
        ("model-serving", {"spec": {"paused": False}}),
    ]
    assert emulator.obj(ROLLOUTS, NS, "model-serving")["spec"]["paused"] is False


def test_failed_analysis_run_aborts_and_the_wait_fails_naming_the_metric(emulator: Emulator) -> None:
    emulator.put(ROLLOUTS, NS, "model-serving", rollout("model-serving", NS))
    ctl = ArgoController(emulator, NS, "model-serving", fail_analysis_at=2)
    d = driver_for(emulator, ctl)
    d.set_image("model-serving", "ghcr.io/clinops/model-serving:1.1.0")
    ctl.start_update()
    expected = r"aborted: AnalysisRun model-serving-bbb222-2 Failed \[success-rate=Failed"
    with pytest.raises(WaitFailed, match=expected):
        d.step_to_weight("model-serving", 50, timeout=60)
    runs = d.analysis_runs("model-serving")
    assert [r.phase for r in runs] == ["Failed"] and runs[0].failed
    state = d.wait_aborted("model-serving", timeout=30)
    assert state.abort and state.canary_weight == 0 and state.phase == "Degraded"


def test_abort_and_retry_are_merge_patches_on_the_status_subresource(emulator: Emulator) -> None:
    emulator.put(ROLLOUTS, NS, "model-serving", rollout("model-serving", NS))
    d = driver_for(emulator)
    d.abort("model-serving")
    d.retry("model-serving")
    path = f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/rollouts/model-serving/status"
    assert writes(emulator) == [("patch", path, MERGE_PATCH, {"status": {"abort": True}}),
                                ("patch", path, MERGE_PATCH, {"status": {"abort": False}})]
    assert emulator.obj(ROLLOUTS, NS, "model-serving")["status"]["abort"] is False


def test_weight_not_a_step_or_backwards_fails_before_any_patch(emulator: Emulator) -> None:
    emulator.put(ROLLOUTS, NS, "model-serving", rollout("model-serving", NS))
    emulator.patch(ROLLOUTS, NS, "model-serving", {"status": {"currentStepIndex": 3, **weights(50)}})
    d = driver_for(emulator)
    with pytest.raises(TrafficError, match=r"weight 70 is not a step .*remaining setWeight steps: \[100\]"):
        d.step_to_weight("model-serving", 70, timeout=5)
    with pytest.raises(TrafficError, match="only moves forward"):
        d.step_to_weight("model-serving", 10, timeout=5)
    assert writes(emulator) == []


def test_wait_times_out_naming_what_it_waited_for(emulator: Emulator) -> None:
    emulator.put(ROLLOUTS, NS, "model-serving", rollout("model-serving", NS))
    emulator.patch(ROLLOUTS, NS, "model-serving",
                   {"status": {"phase": "Progressing", "currentPodHash": "bbb"}})
    d = driver_for(emulator)  # no controller: nothing ever changes
    with pytest.raises(WaitTimeout, match=r"did not become Healthy \(fully promoted\) within 5s; last seen: "
                                          r"phase=Progressing"):
        d.wait_healthy("model-serving", timeout=5)


def test_blue_green_reads_active_and_preview_selectors(emulator: Emulator) -> None:
    emulator.put(ROLLOUTS, NS, "clinical-gateway", rollout("clinical-gateway", NS, blue_green=True))
    for svc, h in (("clinical-gateway-active", "aaa111"), ("clinical-gateway-preview", "bbb222")):
        emulator.put(SERVICES, NS, svc, {"apiVersion": "v1", "kind": "Service",
                                         "metadata": {"name": svc, "namespace": NS},
                                         "spec": {"selector": {"app": "clinical-gateway",
                                                               "rollouts-pod-template-hash": h}}})
    d = driver_for(emulator)
    assert d.blue_green("clinical-gateway") == {
        "active_service": "clinical-gateway-active", "active_hash": "aaa111",
        "preview_service": "clinical-gateway-preview", "preview_hash": "bbb222"}
    with pytest.raises(TrafficError, match="blue-green has no weights"):
        d.step_to_weight("clinical-gateway", 10, timeout=5)


@pytest.mark.parametrize(("status", "reason"), [
    (403, "Forbidden"), (409, "Conflict"), (500, "InternalError"), (503, "ServiceUnavailable")])
def test_api_errors_name_verb_object_and_status(emulator: Emulator, status: int, reason: str) -> None:
    emulator.put(ROLLOUTS, NS, "model-serving", rollout("model-serving", NS))
    emulator.rule("patch", ROLLOUTS, kmock.name("model-serving")) << kmock.KubernetesError(
        status=status, reason=reason, message=f"injected {status}")
    d = driver_for(emulator)
    with pytest.raises(KubernetesAPIError) as err:
        d.abort("model-serving")
    e = err.value
    assert (e.verb, e.status) == ("patch", status)
    assert e.obj == f"Rollout {NS}/model-serving (status)"
    assert f"HTTP {status}" in str(e) and f"injected {status}" in str(e)


def test_missing_object_is_a_404_naming_it(emulator: Emulator) -> None:
    d = driver_for(emulator)
    emulator.put(ANALYSISRUNS, NS, "unrelated", {"metadata": {"name": "unrelated", "namespace": NS}})
    with pytest.raises(KubernetesAPIError, match=rf"get Rollout {NS}/nope failed \(HTTP 404\)"):
        d.get("nope")


def test_api_timeout_is_a_clear_error(emulator: Emulator) -> None:
    emulator.put(ROLLOUTS, NS, "model-serving", rollout("model-serving", NS))

    async def slow() -> dict[str, object]:
        await asyncio.sleep(3)
        return {}

    emulator.rule("get", ROLLOUTS, kmock.name("model-serving")) << (lambda: slow())
    clients = load_clients(Settings(kubeconfig=emulator.kubeconfig))
    clients.api_client.configuration.retries = 0
    d = RolloutsDriver(clients.custom, clients.core, NS, request_timeout=0.3)
    with pytest.raises(KubernetesAPIError, match=rf"get Rollout {NS}/model-serving failed: .*timed out"):
        d.get("model-serving")


def _stale(generation: int, observed: str, **status: object) -> dict[str, object]:
    """A Rollout whose status the controller wrote for ``observed`` (a decimal string, as v1.8.3
    writes it) while the spec is at ``generation``."""
    obj = rollout("analysed", NS)
    obj["metadata"]["generation"] = generation
    obj["status"] = {"phase": "Healthy", "currentPodHash": "aaa", "stableRS": "aaa",
                     "observedGeneration": observed, **status}
    return obj


def test_a_status_written_for_an_older_generation_is_progressing_not_healthy() -> None:
    """Right after ``set_image`` the status still says Healthy for the old revision; a wait
    for Healthy returned at once on the real controller (the cluster tier's AnalysisRun test)."""
    stale = RolloutState.from_object(_stale(3, "2"))
    assert (stale.phase, stale.healthy) == ("Progressing", False)
    assert stale.message == "waiting for rollout spec update to be observed"
    assert RolloutState.from_object(_stale(3, "3")).healthy
    # not numeric (v0.9 and older wrote a hash) or absent: taken as observed, as the controller's helper does
    assert RolloutState.from_object(_stale(3, "5d4f8c")).healthy
    assert RolloutState.from_object(_stale(3, "")).healthy


def test_a_promotion_not_yet_seen_by_the_controller_is_progressing() -> None:
    unpausing = RolloutState.from_object(_stale(2, "2", controllerPause=True, pauseConditions=None))
    assert (unpausing.phase, unpausing.healthy) == ("Progressing", False)
    paused = RolloutState.from_object(_stale(2, "2", phase="Paused", controllerPause=True,
                                             pauseConditions=[{"reason": "CanaryPauseStep"}]))
    assert paused.phase == "Paused" and paused.paused


def test_wait_healthy_after_a_spec_change_waits_for_the_controller(emulator: Emulator) -> None:
    emulator.put(ROLLOUTS, NS, "analysed", _stale(3, "2"))
    seen: list[str] = []

    def controller_catches_up() -> None:
        obj = emulator.obj(ROLLOUTS, NS, "analysed")
        seen.append(obj["status"]["observedGeneration"])
        obj["status"].update(observedGeneration="3", abort=True, phase="Degraded", message="RolloutAborted")
        emulator.put(ROLLOUTS, NS, "analysed", obj)

    d = driver_for(emulator)
    d._sleep = lambda _s: controller_catches_up()
    with pytest.raises(WaitFailed, match="rollout aborted"):
        d.wait_healthy("analysed", timeout=30)
    assert seen == ["2"]
