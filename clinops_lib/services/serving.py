"""model-serving (Level 4): scores a subject's risk of an adverse event with the released model.

At start it loads ``s3://$CLINOPS_MODEL_BUCKET/$CLINOPS_MODEL_KEY`` and its metadata (written
by :mod:`clinops_lib.services.training`), verifies the artifact's sha256 against the
metadata and only then becomes ready: ``/readyz`` answers 503 (naming why) until a model
that passes those checks is loaded, so a release pointing at a missing or tampered
artifact never receives traffic. Loading retries in the background; the process stays
live meanwhile.

``POST /v1/predict`` takes the features of :data:`~clinops_lib.services.synthetic.FEATURES`
and answers ``{"risk": p, "high_risk": bool, "model_version": ...}``; the model version is
also in the ``X-Clinops-Model-Version`` header, next to the service's ``X-Clinops-Version``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, field_validator

from ..exceptions import ServiceError
from ._common import (
    ERROR_RESPONSES,
    ServiceConfig,
    ServiceRuntime,
    aws_client,
    build_app,
    diastolic_below_systolic,
)
from .training import RiskModel, metadata_key

__all__ = ["ModelStore", "PredictRequest", "Prediction", "app", "create_app", "load_model"]

SERVICE = "model-serving"
PREDICT_PATH = "/v1/predict"


class PredictRequest(BaseModel):
    """The model's features for one subject; bounds mirror what the gateway accepts.

    Strict types: ``true`` is not an age and ``"5"`` is not a count (lax parsing would score them).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    age_years: StrictFloat = Field(ge=0, le=120)
    weight_kg: StrictFloat = Field(gt=0.5, le=400)
    systolic_bp: StrictFloat = Field(ge=60, le=260)
    diastolic_bp: StrictFloat = Field(ge=30, le=160)
    heart_rate: StrictFloat = Field(ge=20, le=250)
    temperature_c: StrictFloat = Field(ge=30, le=45)
    alt_u_l: StrictFloat = Field(ge=0, le=5000)
    creatinine_mg_dl: StrictFloat = Field(ge=0.05, le=25)
    dose_mg: StrictFloat = Field(ge=0, le=5000)
    prior_adverse_events: StrictInt = Field(ge=0, le=100)

    _below_systolic = field_validator("diastolic_bp")(diastolic_below_systolic)


class Prediction(BaseModel):
    """The 200 answer (the model version is also in ``X-Clinops-Model-Version``)."""

    risk: float
    high_risk: bool
    threshold: float
    model_version: str
    version: str


def load_model(s3_client: Any, bucket: str, key: str) -> tuple[RiskModel, dict[str, Any]]:
    """Fetch artifact + metadata, check the hash and version; :class:`ServiceError` says what failed."""
    from botocore.exceptions import BotoCoreError, ClientError

    if not bucket or not key:
        raise ServiceError("CLINOPS_MODEL_BUCKET and CLINOPS_MODEL_KEY must both be set")
    try:
        body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
        meta_raw = s3_client.get_object(Bucket=bucket, Key=metadata_key(key))["Body"].read()
    except (BotoCoreError, ClientError) as e:
        raise ServiceError(f"cannot read model s3://{bucket}/{key} (or its metadata): {e}") from e
    try:
        metadata = json.loads(meta_raw)
        doc = json.loads(body)
    except ValueError as e:
        raise ServiceError(f"model s3://{bucket}/{key}: artifact or metadata is not JSON") from e
    digest = hashlib.sha256(body).hexdigest()
    if metadata.get("artifact_sha256") != digest:
        raise ServiceError(
            f"model s3://{bucket}/{key}: sha256 {digest} differs from the metadata's "
            f"{metadata.get('artifact_sha256')!r} (artifact changed after release)"
        )
    model = RiskModel.from_artifact(doc)
    if metadata.get("version") != model.version:
        raise ServiceError(
            f"model s3://{bucket}/{key}: artifact version {model.version!r} differs from "
            f"metadata version {metadata.get('version')!r}"
        )
    return model, metadata


class ModelStore:
    """Holds the loaded model; loads it in the background until it succeeds."""

    def __init__(self, config: ServiceConfig, runtime: ServiceRuntime, s3_client: Any = None) -> None:
        self.config = config
        self.rt = runtime
        self._s3 = s3_client
        self.model: RiskModel | None = None
        self.metadata: dict[str, Any] = {}
        self.last_error = "not loaded yet"
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._load_until_ready(), name="model-loader")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _load_until_ready(self, retry_s: float = 2.0) -> None:
        attempt = 0
        while self.model is None:
            attempt += 1
            try:
                if self._s3 is None:
                    self._s3 = aws_client("s3", self.config)
                model, metadata = await asyncio.to_thread(
                    load_model, self._s3, self.config.model_bucket, self.config.model_key
                )
            except ServiceError as e:
                self.last_error = str(e)
                if attempt == 1 or attempt % 10 == 0:
                    self.rt.log.event("model.load_failed", level="warning", attempt=attempt, error=str(e))
                await asyncio.sleep(retry_s)
                continue
            self.model, self.metadata = model, metadata
            self.rt.log.event(
                "model.loaded",
                model_version=model.version,
                bucket=self.config.model_bucket,
                key=self.config.model_key,
                artifact_sha256=metadata.get("artifact_sha256"),
                metrics=metadata.get("metrics"),
            )

    async def readiness(self) -> dict[str, str]:
        return {"model": "ok" if self.model is not None else self.last_error}


def create_app(config: ServiceConfig | None = None, *, s3_client: Any = None) -> FastAPI:
    """Build model-serving; an S3 client may be injected (tests), otherwise it comes from ``config``."""
    config = config or ServiceConfig.from_env(SERVICE)
    runtime = ServiceRuntime.create(config, [PREDICT_PATH])
    store = ModelStore(config, runtime, s3_client)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        runtime.log.event(
            "startup", fault=str(config.fault), bucket=config.model_bucket, key=config.model_key
        )
        store.start()
        try:
            yield
        finally:
            await store.stop()
            runtime.log.event("shutdown")

    app = build_app(runtime, title=SERVICE, readiness=store.readiness, lifespan=lifespan)
    app.state.model_store = store

    @app.post(PREDICT_PATH, response_model=Prediction, responses=ERROR_RESPONSES)
    async def predict(req: PredictRequest, response: Response) -> Any:
        """Risk of an adverse event; 503 while no model is loaded."""
        model = store.model
        if model is None:
            return JSONResponse(status_code=503, content={"error": f"model not loaded: {store.last_error}"})
        risk = model.score(req.model_dump())
        response.headers["X-Clinops-Model-Version"] = model.version
        return {
            "risk": round(risk, 6),
            "high_risk": risk >= model.threshold,
            "threshold": model.threshold,
            "model_version": model.version,
            "version": config.version,
        }

    return app


app = create_app()
