"""HAProxy config generation and admin-socket client: against a real HAProxy with two tiny
HTTP backends (in-process threads), and against an injected transport for the parsers."""

from __future__ import annotations

import os
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from ports import PortAllocator

from clinops_lib.exceptions import TrafficError
from clinops_lib.targets.local import supervisor as sup
from clinops_lib.targets.local.haproxy import AdminSocket, HAProxyService, render_config

pytestmark = pytest.mark.component

Proxy = tuple[AdminSocket, str, dict[str, ThreadingHTTPServer]]


def _backend(port: int, name: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = name.encode()
            # readiness fails (as an overloaded gateway's does): HAProxy must keep routing by liveness
            self.send_response(503 if self.path == "/readyz" else 200)
            self.send_header("X-Clinops-Version", name)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def proxy(port_allocator: PortAllocator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    PORTS = port_allocator.block().portmap()  # noqa: N806 - reads as the constant it was
    if not sup._which("haproxy"):
        pytest.fail("haproxy is not on PATH: scripts/setup.sh installs Debian's haproxy; run it first")
    state = tmp_path_factory.mktemp("haproxy")  # pytest removes it (a mkdtemp was left in /tmp per run)
    svc = HAProxyService("svc", PORTS.service_frontend(0), PORTS.service_preview(0),
                         PORTS.service_backend(0, 0), PORTS.service_backend(0, 1), 100, 0)
    backends = {"stable": _backend(svc.stable_port, "v1"), "canary": _backend(svc.canary_port, "v2")}
    sock = state / "admin.sock"
    cfg = state / "haproxy.cfg"
    cfg.write_text(render_config([svc], stats_port=PORTS.haproxy_stats, admin_socket=sock))
    proc = sup.start(sup.ProcessSpec("haproxy", ["haproxy", "-db", "-f", str(cfg)], state / "haproxy.log",
                                     state / "haproxy.pid", ports=[PORTS.haproxy_stats, svc.frontend_port]))
    try:
        admin = AdminSocket(sock)
        sup.wait_healthy(proc, lambda: "Version" in admin.show_info(), 20, "admin socket")
        sup.wait_for("both servers UP", lambda: all(
            s.status.startswith("UP") for s in admin.server_stats("svc").values()), timeout=20)
        yield admin, f"http://127.0.0.1:{svc.frontend_port}", backends
    finally:
        sup.stop(proc)
        for b in backends.values():
            b.shutdown()
            b.server_close()


def _split(url: str, n: int) -> Counter[str]:
    with httpx.Client(timeout=5) as client:
        return Counter(client.get(url).headers.get("X-Clinops-Version", "?") for _ in range(n))


def test_generated_config_validates_with_haproxy(tmp_path: Path) -> None:
    svc = HAProxyService("clinical-gateway", 1, 2, 3, 4, 90, 10)
    cfg = tmp_path / "h.cfg"
    cfg.write_text(render_config([svc], stats_port=5, admin_socket=tmp_path / "a.sock"))
    text = cfg.read_text()
    assert "server stable 127.0.0.1:3 check weight 90" in text
    assert "server canary 127.0.0.1:4 check weight 10" in text
    assert "option redispatch" in text and "prometheus-exporter" in text
    r = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_server_failing_readiness_but_alive_stays_in_rotation(proxy: Proxy) -> None:
    """Both backends answer /readyz with 503 and /healthz with 200: they are UP and share traffic.
    Readiness gates a track's entry (the target waits for it); taking a busy *stable* out later
    sent all traffic to a 10 % canary (haproxy.py's docstring has the measurement)."""
    admin, url, _ = proxy
    assert {s.status.split()[0] for s in admin.server_stats("svc").values()} == {"UP"}
    admin.set_weight("svc", "canary", 50)
    try:
        assert set(_split(url + "/v1/x", 20)) == {"v1", "v2"}
    finally:
        admin.set_weight("svc", "canary", 0)


def test_checks_are_liveness_with_time_to_answer(tmp_path: Path) -> None:
    text = render_config([HAProxyService("s", 1, 2, 3, 4)], stats_port=5, admin_socket=tmp_path / "a.sock")
    assert "option httpchk GET /healthz" in text and "/readyz" not in text
    assert "timeout check 3s" in text


def test_weight_set_and_read_back(proxy: Proxy) -> None:
    admin, _, _ = proxy
    admin.set_weight("svc", "canary", 37)
    assert admin.get_weight("svc", "canary") == 37
    assert admin.server_stats("svc")["canary"].weight == 37
    admin.set_weight("svc", "canary", 0)
    assert admin.get_weight("svc", "canary") == 0


def test_traffic_split_follows_weights(proxy: Proxy) -> None:
    admin, url, _ = proxy
    admin.set_weight("svc", "stable", 75)
    admin.set_weight("svc", "canary", 25)
    counts = _split(url, 400)
    share = counts["v2"] / 400
    assert abs(share - 0.25) <= 0.06, counts
    admin.set_weight("svc", "stable", 100)
    admin.set_weight("svc", "canary", 0)
    assert _split(url, 100)["v2"] == 0


def test_disabled_server_gets_no_traffic(proxy: Proxy) -> None:
    admin, url, _ = proxy
    admin.set_weight("svc", "stable", 50)
    admin.set_weight("svc", "canary", 50)
    admin.disable_server("svc", "canary")
    try:
        assert admin.server_stats("svc")["canary"].status.startswith("MAINT")
        assert _split(url, 100)["v2"] == 0
    finally:
        admin.enable_server("svc", "canary")
        admin.set_weight("svc", "stable", 100)
        admin.set_weight("svc", "canary", 0)


def test_bad_commands_raise_traffic_error(proxy: Proxy) -> None:
    admin, _, _ = proxy
    with pytest.raises(TrafficError, match="nosuch"):
        admin.set_weight("nosuch", "canary", 10)
    with pytest.raises(TrafficError, match="between 0 and 256"):
        admin.set_weight("svc", "canary", 300)


def test_parsers_with_injected_transport() -> None:
    replies = {
        "get weight b/canary": "10 (initial 0)\n",
        "show stat": "# pxname,svname,qcur,status,weight\nb,FRONTEND,,OPEN,\n"
                     "b,stable,0,UP,90\nb,canary,0,MAINT,10\n",
        "set weight b/x 5": "No such server.\n",
    }
    admin = AdminSocket(Path("/nonexistent"), transport=lambda cmd: replies[cmd])
    assert admin.get_weight("b", "canary") == 10
    stats = admin.server_stats("b")
    assert stats["stable"].weight == 90 and stats["canary"].status == "MAINT" and "FRONTEND" not in stats
    with pytest.raises(TrafficError, match="No such server"):
        admin.set_weight("b", "x", 5)


def test_unreachable_socket_is_traffic_error(tmp_path: Path) -> None:
    with pytest.raises(TrafficError, match="admin socket"):
        AdminSocket(tmp_path / "none.sock").show_info()
    assert not os.path.exists(tmp_path / "none.sock")
