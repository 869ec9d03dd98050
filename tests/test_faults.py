"""The fault grammar: every form parses to what it says, prints back canonically, and bad input is
refused naming the parameter (unit tier; the services' behaviour is in tests/test_services.py)."""

from __future__ import annotations

import pytest

from clinops_lib.exceptions import ParameterError
from clinops_lib.faults import FaultProfile

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("text", [
    "none", "errors:5%", "errors:2%@/v1/predict", "errors:0..10%/60s", "errors:1..5%/500ms@/v1/predict",
    "latency:+100ms", "latency:+400ms@5%", "latency:+400ms@5%@/v1/predict", "crash:after=500",
    "errors:10%,flap:5s/5s", "latency:+50ms@10%,errors:1%,flap:500ms/2s",
])
def test_every_form_round_trips(text: str) -> None:
    p = FaultProfile.parse(text)
    assert FaultProfile.parse(str(p)) == p


def test_forms_mean_what_they_say() -> None:
    p = FaultProfile.parse("errors:2%@/v1/predict")
    assert p.error_probability("/v1/predict", 0) == pytest.approx(0.02)
    assert p.error_probability("/v1/observations", 0) == 0
    ramp = FaultProfile.parse("errors:0..10%/60s")
    assert ramp.error_probability("/x", 0) == 0
    assert ramp.error_probability("/x", 30) == pytest.approx(0.05)
    assert ramp.error_probability("/x", 600) == pytest.approx(0.10)
    tail = FaultProfile.parse("latency:+400ms@5%")
    assert tail.latency_for("/x", 0, 0.04) == pytest.approx(0.4)
    assert tail.latency_for("/x", 0, 0.06) == 0
    flap = FaultProfile.parse("errors:100%,flap:5s/5s")
    assert flap.error_probability("/x", 1) == 1 and flap.error_probability("/x", 6) == 0
    assert flap.error_probability("/x", 11) == 1
    assert FaultProfile.parse("latency:+1s").added_latency_s == 1.0
    assert not FaultProfile.parse("errors:0..10%/60s").is_none
    assert FaultProfile.parse("errors:2%@/v1/predict,latency:+5ms@1%@/v1/x").paths == {"/v1/predict", "/v1/x"}


@pytest.mark.parametrize("text", [
    "errors:101%", "errors:5", "errors:5%@v1/predict", "errors:10..5%/60s", "errors:0..10%/0s",
    "latency:+0ms", "latency:+61s", "latency:+400ms@0%", "latency:+400ms@150%", "flap:5s/5s",
    "crash:after=500,flap:1s/1s", "flap:0s/5s,errors:1%", "errors:1%,errors:2%", "bogus",
    "errors:1%@/v1/$(rm -rf)", "latency:-5ms",
])
def test_bad_forms_are_refused_naming_the_parameter(text: str) -> None:
    with pytest.raises(ParameterError) as err:
        FaultProfile.parse(text, parameter="stable_fault")
    assert err.value.name == "stable_fault"
