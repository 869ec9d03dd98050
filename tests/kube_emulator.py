"""A stateful Kubernetes API over real HTTP for the Kubernetes-target tests.

kmock's ``KubernetesEmulator`` (an aiohttp server keeping objects in memory, applying merge
and JSON patches, serving get/list/watch) runs on its own event loop in a background thread;
the code under test uses the official synchronous ``kubernetes`` client through a generated
kubeconfig, exactly as it would against a cluster. Tests reach into the emulator's state
(``emu.obj(...)``, ``emu.put(...)``) to play the Argo Rollouts controller between polls, and
read ``emu.requests()`` to assert the exact calls and bodies sent.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml
from ports import PortBlock

ROLLOUTS = kmock.resource("argoproj.io", "v1alpha1", "rollouts")
ANALYSISRUNS = kmock.resource("argoproj.io", "v1alpha1", "analysisruns")
APPLICATIONS = kmock.resource("argoproj.io", "v1alpha1", "applications")
SERVICES = kmock.resource("", "v1", "services")
REPLICASETS = kmock.resource("apps", "v1", "replicasets")
NODES = kmock.resource("", "v1", "nodes")
EVENTS = kmock.resource("", "v1", "events")
DEPLOYMENTS = kmock.resource("apps", "v1", "deployments")
STATEFULSETS = kmock.resource("apps", "v1", "statefulsets")
PODS = kmock.resource("", "v1", "pods")
APPPROJECTS = kmock.resource("argoproj.io", "v1alpha1", "appprojects")
KNOWN = ("argoproj.io/v1alpha1/rollouts", "argoproj.io/v1alpha1/analysisruns",
         "argoproj.io/v1alpha1/applications", "argoproj.io/v1alpha1/appprojects",
         "v1/services", "v1/pods", "v1/events", "v1/nodes",
         "apps/v1/deployments", "apps/v1/statefulsets", "apps/v1/replicasets")


class Emulator:
    """The emulator, its thread and the kubeconfig pointing at it."""

    def __init__(self, kubeconfig: Path, port: int, context: str = "emulator") -> None:
        self.kubeconfig = kubeconfig
        self.context = context
        self.port = port
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.k: Any = None
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Emulator:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError(f"kube emulator did not start on port {self.port}: {self._error!r}")
        if self._error:
            raise RuntimeError(f"kube emulator failed: {self._error!r}")
        self.write_kubeconfig()
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # noqa: BLE001 - surfaced by start()
            self._error = e
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with kmock.KubernetesEmulator() as k, kmock.Server(k, port=self.port):
            for res in KNOWN:  # listing an undeclared resource is a 404 in kmock
                k.resources[res] = {}
            self.k = k
            self._ready.set()
            await self._stop.wait()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def write_kubeconfig(self, *, contexts: tuple[str, ...] | None = None) -> Path:
        names = contexts or (self.context,)
        doc = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "tester", "user": {"token": "not-a-secret"}}],
            "contexts": [{"name": n, "context": {"cluster": "emulator", "user": "tester"}} for n in names],
            "current-context": names[0],
        }
        self.kubeconfig.write_text(yaml.safe_dump(doc), encoding="utf-8")
        return self.kubeconfig

    # -- state ----------------------------------------------------------------------------------
    def put(self, res: Any, namespace: str | None, name: str, obj: dict[str, Any]) -> None:
        self.k.objects[res, namespace, name] = obj

    def obj(self, res: Any, namespace: str | None, name: str) -> dict[str, Any]:
        got = self.k.objects[res, namespace, name]
        raw = got.raw if hasattr(got, "raw") else got
        return dict(raw)

    def patch(self, res: Any, namespace: str | None, name: str, changes: dict[str, Any]) -> None:
        """What the controller would write (a merge patch, ``None`` deletes)."""
        self.k.objects[res, namespace, name].patch(changes)

    def requests(self) -> list[Any]:
        return list(self.k)

    def rule(self, *criteria: Any) -> Any:
        """``emu.rule("patch", ROLLOUTS, kmock.name("x")) << response`` (highest priority)."""
        return self.k[criteria]


@pytest.fixture()
def emulator(tmp_path: Path, port_block: PortBlock) -> Iterator[Emulator]:
    emu = Emulator(tmp_path / "kubeconfig", port_block.port()).start()
    try:
        yield emu
    finally:
        emu.stop()


def rollout(name: str, namespace: str, *, image: str = "ghcr.io/clinops/model-serving:1.0.0",
            steps: list[dict[str, Any]] | None = None, blue_green: bool = False) -> dict[str, Any]:
    """A Rollout as the chart renders it, fully promoted (the state before a new version)."""
    strategy: dict[str, Any]
    if blue_green:
        strategy = {"blueGreen": {"activeService": f"{name}-active", "previewService": f"{name}-preview",
                                  "autoPromotionEnabled": False}}
    else:
        strategy = {"canary": {"steps": steps if steps is not None else [
            {"setWeight": 10}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "30s"}},
            {"setWeight": 100}]}}
    return {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": 2, "strategy": strategy,
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{
                                  "name": "app", "image": image,
                                  "env": [{"name": "CLINOPS_FAULT", "value": "none"}]}]}}},
        "status": {"phase": "Healthy", "currentPodHash": "aaa111", "stableRS": "aaa111",
                   "currentStepIndex": len(steps if steps is not None else [1, 2, 3, 4, 5]),
                   "canary": {"weights": {"canary": {"weight": 0, "podTemplateHash": "aaa111"},
                                          "stable": {"weight": 100, "podTemplateHash": "aaa111"}}}},
    }


def weights(canary: int, canary_hash: str = "bbb222", stable_hash: str = "aaa111") -> dict[str, Any]:
    return {"canary": {"weights": {"canary": {"weight": canary, "podTemplateHash": canary_hash},
                                   "stable": {"weight": 100 - canary, "podTemplateHash": stable_hash}}}}


class ArgoController:
    """Plays the Argo Rollouts controller for one Rollout, one reconcile per ``tick``.

    A ``setWeight`` step sets the weights and moves on; a ``pause`` step adds a pause
    condition and stays until the pause conditions are cleared (a promotion); an abort sets
    the canary weight to 0 and the phase Degraded; ``promoteFull`` completes the rollout.
    ``fail_analysis_at`` makes an AnalysisRun fail when that step is reached and aborts.
    """

    def __init__(self, emu: Emulator, namespace: str, name: str, *, new_hash: str = "bbb222",
                 fail_analysis_at: int | None = None) -> None:
        self.emu, self.ns, self.name, self.new_hash = emu, namespace, name, new_hash
        self.fail_analysis_at = fail_analysis_at
        self.paused_at: set[int] = set()
        self.ticks = 0
        self.seen_image = self._image()
        self.stable_image = self.seen_image

    def _image(self) -> str:
        obj = self.emu.obj(ROLLOUTS, self.ns, self.name)
        return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])

    def start_update(self) -> None:
        """What the controller does when it sees a new pod template."""
        self.seen_image = self._image()
        self.emu.patch(ROLLOUTS, self.ns, self.name, {"status": {
            "phase": "Progressing", "currentStepIndex": 0, "currentPodHash": self.new_hash,
            "message": "more replicas need to be updated"}})

    def tick(self, _seconds: float = 0.0) -> None:
        self.ticks += 1
        if self._image() != self.seen_image:  # a new pod template: a new revision starts
            self.seen_image = self._image()
            self.paused_at.clear()
            if self.seen_image == self.stable_image:  # back to the stable template (undo)
                stable = self.emu.obj(ROLLOUTS, self.ns, self.name)["status"].get("stableRS", "aaa111")
                self.emu.patch(ROLLOUTS, self.ns, self.name, {"status": {
                    "phase": "Healthy", "abort": None, "message": None, "pauseConditions": None,
                    "currentPodHash": stable, **weights(0, stable, stable)}})
            else:
                self.start_update()
            return
        obj = self.emu.obj(ROLLOUTS, self.ns, self.name)
        status = obj.get("status") or {}
        steps = obj["spec"]["strategy"].get("canary", {}).get("steps", [])
        stable = status.get("stableRS", "aaa111")
        if status.get("abort"):
            self.emu.patch(ROLLOUTS, self.ns, self.name, {"status": {
                "phase": "Degraded", "message": "RolloutAborted: Rollout aborted update to revision 2",
                "pauseConditions": None, **weights(0, self.new_hash, stable)}})
            return
        if status.get("promoteFull"):
            self.stable_image = self.seen_image
            self.emu.patch(ROLLOUTS, self.ns, self.name, {"status": {
                "phase": "Healthy", "promoteFull": None, "pauseConditions": None, "stableRS": self.new_hash,
                "currentStepIndex": len(steps), "message": None,
                **weights(0, self.new_hash, self.new_hash)}})
            return
        idx = status.get("currentStepIndex")
        if idx is None or status.get("phase") == "Healthy":
            return
        if idx >= len(steps):
            self.stable_image = self.seen_image
            self.emu.patch(ROLLOUTS, self.ns, self.name, {"status": {
                "phase": "Healthy", "stableRS": self.new_hash, "message": None,
                **weights(0, self.new_hash, self.new_hash)}})
            return
        if self.fail_analysis_at is not None and idx == self.fail_analysis_at:
            self.emu.put(ANALYSISRUNS, self.ns, f"{self.name}-{self.new_hash}-2", {
                "apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisRun",
                "metadata": {"name": f"{self.name}-{self.new_hash}-2", "namespace": self.ns,
                             "creationTimestamp": "2026-01-01T00:00:00Z",
                             "ownerReferences": [{"kind": "Rollout", "name": self.name}]},
                "status": {"phase": "Failed", "message": "Metric \"success-rate\" assessed Failed",
                           "metricResults": [{"name": "success-rate", "phase": "Failed", "count": 3,
                                              "failed": 3, "successful": 0}]}})
            self.emu.patch(ROLLOUTS, self.ns, self.name, {"status": {"abort": True}})
            return
        step = steps[idx]
        if "setWeight" in step:
            self.emu.patch(ROLLOUTS, self.ns, self.name, {"status": {
                "currentStepIndex": idx + 1, **weights(int(step["setWeight"]), self.new_hash, stable)}})
        elif "pause" in step:
            if idx not in self.paused_at:
                self.paused_at.add(idx)
                self.emu.patch(ROLLOUTS, self.ns, self.name, {"status": {
                    "phase": "Paused", "pauseConditions": [{"reason": "CanaryPauseStep",
                                                            "startTime": "2026-01-01T00:00:00Z"}]}})
            elif not status.get("pauseConditions"):
                self.emu.patch(ROLLOUTS, self.ns, self.name, {"status": {
                    "phase": "Progressing", "currentStepIndex": idx + 1}})
        else:
            self.emu.patch(ROLLOUTS, self.ns, self.name, {"status": {"currentStepIndex": idx + 1}})
