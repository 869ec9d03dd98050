"""RolloutState on a basic canary (no traffic router): weights come from the steps, not the status.

The real Argo Rollouts controller (see tests/cluster/) reports ``status.canary.weights`` only
when a traffic router sets them; with replica-count canaries the share is the last completed
``setWeight`` step. These objects are shaped like the controller's (v1.8.3) status.
"""

from __future__ import annotations

from typing import Any

import pytest

from clinops_lib.targets.kube.rollouts import RolloutState

pytestmark = pytest.mark.unit

STEPS = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}, {"pause": {"duration": "10s"}}]


def _rollout(status: dict[str, Any], traffic: bool = False) -> dict[str, Any]:
    canary: dict[str, Any] = {"steps": STEPS}
    if traffic:
        canary["trafficRouting"] = {"istio": {"virtualService": {"name": "vs"}}}
    return {
        "metadata": {"name": "r", "namespace": "n"},
        "spec": {"strategy": {"canary": canary}},
        "status": status,
    }


def test_weight_is_the_last_completed_set_weight_step() -> None:
    at_first_pause = _rollout({"currentStepIndex": 1, "currentPodHash": "new", "stableRS": "old"})
    assert RolloutState.from_object(at_first_pause).canary_weight == 20
    at_second_pause = _rollout({"currentStepIndex": 3, "currentPodHash": "new", "stableRS": "old"})
    state = RolloutState.from_object(at_second_pause)
    assert (state.canary_weight, state.stable_weight) == (60, 40)
    assert state.remaining_weights() == []


def test_no_canary_share_before_an_update_after_promotion_or_after_abort() -> None:
    assert (
        RolloutState.from_object(
            _rollout({"currentStepIndex": 4, "currentPodHash": "a", "stableRS": "a"})
        ).canary_weight
        == 0
    )
    aborted = _rollout({"currentStepIndex": 1, "currentPodHash": "new", "stableRS": "old", "abort": True})
    assert RolloutState.from_object(aborted).canary_weight == 0


def test_a_traffic_router_s_reported_weights_win() -> None:
    routed = _rollout({"currentStepIndex": 1, "currentPodHash": "new", "stableRS": "old"}, traffic=True)
    assert RolloutState.from_object(routed).canary_weight == 0  # router has not reported yet
    routed["status"]["canary"] = {"weights": {"canary": {"weight": 20}, "stable": {"weight": 80}}}
    assert RolloutState.from_object(routed).canary_weight == 20
