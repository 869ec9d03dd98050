"""model-serving (Level 4): scores a subject's risk of an adverse event with the released model.

At start it loads ``s3://$CLINOPS_MODEL_BUCKET/$CLINOPS_MODEL_KEY`` and its metadata (written
by :mod:`clinops_lib.services.training`), verifies the artifact's sha256 against the
metadata and only then becomes ready: ``/readyz`` answers 503 (naming why) until a model
that passes those checks is loaded, so a release pointing at a missing or tampered
artifact never receives traffic. Loading retries in the background; the process stays
live meanwhile.

``POST /v1/subjects/{subject_id}/risk`` scores a *subject* instead (issue 14's data path): the
model is the version the MLflow registry's alias points at (``$CLINOPS_REGISTERED_MODEL`` @
``$CLINOPS_MODEL_ALIAS``, resolved through the tracking server's REST API, its artifact fetched
through the server's artifact proxy and checked against the version's ``artifact_sha256`` tag),
and the features are the subject's online features from the Feast feature server
(``$CLINOPS_FEAST_URL``). The alias is re-resolved every :data:`ALIAS_REFRESH_S` seconds, so a
new registered version is served without a restart. 404 when the online store has no features
for the subject, 503 while the registry or feature server cannot answer.

``POST /v1/predict`` takes the features of :data:`~clinops_lib.services.synthetic.FEATURES`
and answers ``{"risk": p, "high_risk": bool, "model_version": ...}``; the model version is
also in the ``X-Clinops-Model-Version`` header, next to the service's ``X-Clinops-Version``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, field_validator

from ..exceptions import ServiceError
from ._common import (
    ERROR_RESPONSES,
    ErrorMessage,
    ServiceConfig,
    ServiceRuntime,
    aws_client,
    build_app,
    diastolic_below_systolic,
    field_error_response,
)
from .subject_risk import SubjectRiskModel
from .training import RiskModel, metadata_key

__all__ = [
    "ModelStore",
    "PredictRequest",
    "Prediction",
    "RegistryModel",
    "app",
    "create_app",
    "load_model",
    "online_features",
]

SERVICE = "model-serving"
PREDICT_PATH = "/v1/predict"
SUBJECT_PATH = "/v1/subjects/{subject_id}/risk"
ALIAS_REFRESH_S = 10.0
_SUBJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{1,39}$")


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


class RegistryModel:
    """The subject model the registry alias points at, resolved over MLflow's REST API.

    Only ``httpx``: the serving image carries no MLflow client. Resolution = one GET of the
    alias (version, source, tags) and, when the version changed, one GET of the artifact through
    the tracking server's artifact proxy; a hash that differs from the version's
    ``artifact_sha256`` tag is refused (an artifact changed after registration).
    """

    def __init__(self, config: ServiceConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self._http = client
        self.model: SubjectRiskModel | None = None
        self.registry_version = ""
        self.resolved_at = 0.0

    @property
    def configured(self) -> bool:
        return bool(self.config.mlflow_url and self.config.registered_model and self.config.model_alias)

    async def current(self) -> tuple[SubjectRiskModel, str]:
        if not self.configured:
            raise ServiceError(
                "subject scoring is not configured (CLINOPS_MLFLOW_URL, CLINOPS_REGISTERED_MODEL, "
                "CLINOPS_MODEL_ALIAS)"
            )
        if self.model is None or time.monotonic() - self.resolved_at > ALIAS_REFRESH_S:
            await self._resolve()
        assert self.model is not None
        return self.model, self.registry_version

    async def _resolve(self) -> None:
        base = self.config.mlflow_url.rstrip("/")
        name, alias = self.config.registered_model, self.config.model_alias
        try:
            r = await self._http.get(f"{base}/api/2.0/mlflow/registered-models/alias",
                                     params={"name": name, "alias": alias})
        except httpx.HTTPError as e:
            raise ServiceError(f"model registry unreachable: {type(e).__name__}") from e
        if r.status_code != 200:
            raise ServiceError(f"registry has no version for {name}@{alias} (HTTP {r.status_code})")
        mv = r.json()["model_version"]
        version = str(mv["version"])
        if version == self.registry_version and self.model is not None:
            self.resolved_at = time.monotonic()
            return
        tags = {t["key"]: t["value"] for t in mv.get("tags", [])}
        source = str(mv.get("source", ""))
        prefix = "mlflow-artifacts:/"
        if not source.startswith(prefix):
            raise ServiceError(
                f"{name} version {version}: source {source!r} is not served by the tracking server"
            )
        path = f"{source[len(prefix):].strip('/')}/{tags.get('artifact_file', 'model.json')}"
        try:
            art = await self._http.get(f"{base}/api/2.0/mlflow-artifacts/artifacts/{path}")
        except httpx.HTTPError as e:
            raise ServiceError(f"artifact of {name} version {version} unreachable: {type(e).__name__}") from e
        if art.status_code != 200:
            raise ServiceError(f"artifact of {name} version {version}: HTTP {art.status_code}")
        digest = hashlib.sha256(art.content).hexdigest()
        if digest != tags.get("artifact_sha256"):
            raise ServiceError(
                f"{name} version {version}: artifact sha256 {digest} differs from the registered "
                f"{tags.get('artifact_sha256')!r}"
            )
        try:
            model = SubjectRiskModel.from_artifact(json.loads(art.content))
        except ValueError as e:
            raise ServiceError(f"{name} version {version}: artifact is not JSON") from e
        self.model, self.registry_version, self.resolved_at = model, version, time.monotonic()


async def online_features(client: httpx.AsyncClient, feast_url: str, model: SubjectRiskModel,
                          subject_id: str) -> dict[str, float | None]:
    """The subject's online values of the model's features, from Feast's feature server."""
    if not feast_url:
        raise ServiceError("CLINOPS_FEAST_URL is not set")
    try:
        r = await client.post(f"{feast_url.rstrip('/')}/get-online-features",
                              json={"features": model.feature_refs(),
                                    "entities": {"subject_id": [subject_id]}})
    except httpx.HTTPError as e:
        raise ServiceError(f"feature server unreachable: {type(e).__name__}") from e
    if r.status_code != 200:
        raise ServiceError(f"feature server answered HTTP {r.status_code}")
    body = r.json()
    names = body["metadata"]["feature_names"]
    return {n: res["values"][0] for n, res in zip(names, body["results"], strict=True) if n != "subject_id"}


def create_app(config: ServiceConfig | None = None, *, s3_client: Any = None) -> FastAPI:
    """Build model-serving; an S3 client may be injected (tests), otherwise it comes from ``config``."""
    config = config or ServiceConfig.from_env(SERVICE)
    runtime = ServiceRuntime.create(config, [PREDICT_PATH])
    store = ModelStore(config, runtime, s3_client)
    http = httpx.AsyncClient(timeout=5.0)
    registry = RegistryModel(config, http)

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
            await http.aclose()
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

    @app.post(
        SUBJECT_PATH,
        responses={
            **ERROR_RESPONSES,
            404: {"model": ErrorMessage, "description": "No online features for this subject"},
            409: {"model": ErrorMessage, "description": "The registry's model cannot score these features"},
        },
    )
    async def score_subject(subject_id: str, response: Response) -> Any:
        """Risk of one subject from its online features and the registry's current model."""
        if not _SUBJECT_ID.match(subject_id):
            return field_error_response(
                [{"field": "subject_id", "message": "2-40 letters, digits, - or _", "type": "value_error"}]
            )
        try:
            model, registry_version = await registry.current()
            values = await online_features(http, config.feast_url, model, subject_id)
        except ServiceError as e:
            return JSONResponse(status_code=503, content={"error": str(e)})
        if all(v is None for v in values.values()):
            return JSONResponse(status_code=404, content={"error": "no online features for this subject"})
        try:
            risk = model.score(values)
        except ServiceError as e:
            return JSONResponse(status_code=409, content={"error": str(e)})
        response.headers["X-Clinops-Model-Version"] = model.version
        return {
            "subject_id": subject_id,
            "risk": round(risk, 6),
            "high_risk": risk >= model.threshold,
            "registered_model": config.registered_model,
            "registry_version": registry_version,
            "alias": config.model_alias,
            "model_version": model.version,
            "features": values,
            "version": config.version,
        }

    return app


app = create_app()
