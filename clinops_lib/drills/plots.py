"""Plotly evidence for a drill: what traffic went where, how each version behaved, and when
the decision was taken.

Every figure is computed from the drill's per-request records and events, never from
summaries, so the pictures and the interval table tell the same story. Time is shown in
seconds since the drill started; step boundaries are dotted lines, the decision a solid red
(abort) or green (promote) line.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..catalog import percentile
from .result import DrillResult

__all__ = [
    "failed_requests_frame", "intervals_frame", "traffic_figure", "version_summary_frame", "weight_figure",
]

_DECISION_COLOUR = {
    "PROMOTED": "green", "ABORTED": "red", "PAUSED": "orange", "AWAITING_APPROVAL": "royalblue",
}


def _marks(fig: go.Figure, res: DrillResult, rows: int = 1) -> None:
    t0 = res.started_at
    for e in res.events:
        if e.kind in ("weight", "switch"):
            for r in range(1, rows + 1):
                fig.add_vline(x=e.at - t0, line_dash="dot", line_color="grey", row=r, col=1)
    colour = _DECISION_COLOUR[res.outcome]
    for r in range(1, rows + 1):
        fig.add_vline(x=res.decided_at - t0, line_color=colour, line_width=2, row=r, col=1)
    fig.add_annotation(x=res.decided_at - t0, y=1.02, yref="paper", showarrow=False,
                       text=f"{res.outcome}", font={"color": colour})


def weight_figure(res: DrillResult) -> go.Figure:
    """Canary (green) weight in force over time, as the engine set and read it back."""
    t0 = res.started_at
    xs, ys, labels = [0.0], [0], ["start"]
    for e in res.events:
        if e.weight is not None and e.kind in ("weight", "switch", "abort", "promote", "deploy"):
            xs.append(e.at - t0)
            ys.append(e.weight if e.kind != "promote" else 100)
            labels.append(e.detail)
    xs.append(res.ended_at - t0)
    ys.append(ys[-1])
    labels.append("end")
    fig = go.Figure(go.Scatter(x=xs, y=ys, mode="lines+markers", line_shape="hv", text=labels,
                               name=f"{res.canary_version} weight %"))
    fig.update_layout(title=f"{res.kind} drill of {res.service}: {res.stable_version} -> {res.canary_version}"
                      f" — {res.outcome}", xaxis_title="seconds since start", yaxis_title="canary weight %",
                      yaxis_range=[-5, 105])
    _marks(fig, res)
    return fig


def _bucketed(res: DrillResult, bucket_s: float, trim_edges: bool = True) -> pd.DataFrame:
    df = res.records_frame()
    if df.empty:
        return df
    df = df[df["status"] != -1].copy()
    df["t"] = ((df["sent"] - res.started_at) // bucket_s) * bucket_s
    # the first and last buckets are only partly covered by the load: leave them out of rates
    for label, g in df.groupby("label") if trim_edges else []:
        edges = {g["t"].min(), g["t"].max()}
        if g["t"].nunique() > 2:
            df = df[~((df["label"] == label) & df["t"].isin(edges))]
    df["series"] = df["version"].where(df["version"] != "", "<no version>")
    df["failed"] = (df["status"] == 0) | (df["status"] >= 500)
    return df


def traffic_figure(res: DrillResult, bucket_s: float = 1.0) -> go.Figure:
    """Requests/s, error rate and p50/p95/p99 latency per version over time."""
    df = _bucketed(res, bucket_s)
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=("requests/s per version", "error rate per version",
                                        "latency per version (ms)"))
    worst_error_rate = 0.0
    if not df.empty:
        for version, g in df.groupby("series"):
            grp = g.groupby("t")
            rate = grp.size() / bucket_s
            err = grp["failed"].mean()
            worst_error_rate = max(worst_error_rate, float(err.max()))
            fig.add_trace(go.Scatter(x=rate.index, y=rate.values, name=f"{version} req/s",
                                     legendgroup=str(version)), row=1, col=1)
            fig.add_trace(go.Scatter(x=err.index, y=err.values, name=f"{version} error rate",
                                     legendgroup=str(version)), row=2, col=1)
            ok = g[~g["failed"]]
            for q, dash in ((0.5, "solid"), (0.95, "dash"), (0.99, "dot")):
                lat = ok.groupby("t")["latency_s"].agg(lambda s, q=q: percentile(s, q)) * 1000
                fig.add_trace(go.Scatter(x=lat.index, y=lat.values, name=f"{version} p{int(q * 100)}",
                                         legendgroup=str(version), line_dash=dash), row=3, col=1)
    fig.update_yaxes(title_text="req/s", row=1, col=1)
    # a rate is never negative; without errors plotly would centre a flat zero line on -1..1
    fig.update_yaxes(title_text="fraction", range=[0, max(0.05, worst_error_rate * 1.05)], row=2, col=1)
    fig.update_yaxes(title_text="ms", type="log", row=3, col=1)
    fig.update_xaxes(title_text="seconds since start", row=3, col=1)
    fig.update_layout(height=850, title=f"Traffic by version — decision: {res.outcome} ({res.reason[:120]})")
    _marks(fig, res, rows=3)
    return fig


def intervals_frame(res: DrillResult) -> pd.DataFrame:
    """Every analysis interval with its measurements and verdict (times relative to start)."""
    df = pd.DataFrame(res.interval_rows())
    if not df.empty:
        df["start"] = (df["start"] - res.started_at).round(2)
        df["end"] = (df["end"] - res.started_at).round(2)
    return df


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def version_summary_frame(res: DrillResult) -> pd.DataFrame:
    """Requests, failures and latency quantiles per load stream and serving version."""
    df = _bucketed(res, 1.0, trim_edges=False)
    rows: list[dict[str, Any]] = []
    if df.empty:
        return pd.DataFrame(rows)
    for (label, version), g in df.groupby(["label", "series"]):
        ok = g[~g["failed"]]["latency_s"].tolist()
        rows.append({
            "stream": label, "version": version, "requests": len(g), "failed": int(g["failed"].sum()),
            **{f"p{int(q * 100)}_ms": _ms(percentile(ok, q)) for q in (0.5, 0.95, 0.99)},
        })
    return pd.DataFrame(rows)


#: At most this many failed requests are listed one by one; the per-version table has the totals.
FAILED_REQUESTS_SHOWN = 200


def failed_requests_frame(res: DrillResult, limit: int = FAILED_REQUESTS_SHOWN) -> pd.DataFrame:
    """Each failed request (no answer, or a 5xx) with when it was sent, how long it took, who served
    it and the client's own error text (a timeout, a reset): a check that counts failures says that
    something failed, this table says what. Dropped requests (the generator's own limit) are not
    failures and are not listed. Times are relative to the drill's start."""
    failed = sorted((r for r in res.records if r.failed), key=lambda r: r.sent)
    rows = [{
        "stream": r.label, "seq": r.seq, "sent_s": round(r.sent - res.started_at, 3),
        "seconds": round(r.done - r.sent, 3), "status": r.status, "version": r.version or "",
        "error": r.error,
    } for r in failed[:limit]]
    return pd.DataFrame(rows, columns=["stream", "seq", "sent_s", "seconds", "status", "version", "error"])
