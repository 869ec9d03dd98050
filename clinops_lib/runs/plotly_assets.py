"""One copy of plotly.js per bundle: ``assets/plotly-<version>.min.js``, referenced by every page.

plotly.js is 4.6 MiB. Inlining it wherever a figure appears (each notebook output, the HTML
copy, each figure file) made a canary drill's bundle about 20 MB. Instead:

* notebook outputs carry plotly's JSON mime type (``application/vnd.plotly.v1+json``, the
  ``plotly_mimetype`` renderer): data only, no library; JupyterLab renders it natively;
* the HTML copy turns each such output into a ``<div>`` plus a ``Plotly.newPlot`` call and
  loads the library once, with a *relative* ``<script src="assets/...">``;
* figure files (``data/<name>.html``) reference ``../assets/...`` the same way.

Relative references keep a copied bundle working offline: the asset travels with it. The
asset is byte-identical to the file the installed plotly package ships, so the secret gate may
skip it by hash (:func:`asset_sha256`) instead of scanning 4.6 MiB of minified JavaScript.
"""

from __future__ import annotations

import functools
import hashlib
import html
import json
from pathlib import Path
from typing import Any

__all__ = [
    "ASSETS_DIR",
    "PLOTLY_MIME",
    "asset_name",
    "asset_sha256",
    "figure_div",
    "script_tag",
    "write_asset",
]

ASSETS_DIR = "assets"
PLOTLY_MIME = "application/vnd.plotly.v1+json"


@functools.cache
def _plotlyjs() -> bytes:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode("utf-8")


def asset_name() -> str:
    """``plotly-<plotly.js version>.min.js`` (the version of the library the package ships)."""
    from plotly.offline import get_plotlyjs_version

    return f"plotly-{get_plotlyjs_version()}.min.js"


@functools.cache
def asset_sha256() -> str:
    return hashlib.sha256(_plotlyjs()).hexdigest()


def write_asset(root: Path) -> Path:
    """Write ``<root>/assets/plotly-<version>.min.js`` unless an identical copy is there."""
    out = root / ASSETS_DIR / asset_name()
    if out.is_file() and out.stat().st_size == len(_plotlyjs()):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(_plotlyjs())
    return out


def script_tag(prefix: str = "") -> str:
    """``<script src="{prefix}assets/plotly-...min.js">``: the one reference a page needs."""
    return f'<script charset="utf-8" src="{html.escape(prefix)}{ASSETS_DIR}/{asset_name()}"></script>'


def figure_div(figure: dict[str, Any], div_id: str) -> str:
    """HTML that draws one figure (from its JSON) with the page's already loaded Plotly."""
    parts = (figure.get("data", []), figure.get("layout", {}), figure.get("config", {"responsive": True}))
    # "</" escaped so a string in the figure cannot close the <script> early
    data, layout, config = (json.dumps(p, separators=(",", ":")).replace("</", "<\\/") for p in parts)
    return (
        f'<div id="{div_id}" class="plotly-graph-div" style="height:100%; width:100%;"></div>'
        f'<script type="text/javascript">Plotly.newPlot("{div_id}", {data}, {layout}, {config});</script>'
    )
