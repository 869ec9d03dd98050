"""Host state a single-node cluster leaves outside its own folder, found and removed.

kubelet, containerd and the CNI plugins write to places they hard-code: pod network namespaces
(``/run/netns/cni-*``), the ``cni0`` bridge, iptables chains (``KUBE-*`` from kube-proxy and
kubelet, ``CNI-*`` from the bridge/portmap plugins), ``/var/lib/kubelet``, ``/var/lib/cni``,
``/var/log/pods``, ``/var/log/containers`` and the ``kubepods`` cgroups (kubelet leaks pod
directories in the hybrid cgroup2 ``unified`` hierarchy). Containerd's shims outlive containerd
(each shim detaches into its own process group under init).

:func:`leftovers` lists every trace (the acceptance check of ``delete``; an empty list means
the machine is as before, except the two sysctls ``net.ipv4.ip_forward`` and
``net.bridge.bridge-nf-call-iptables``, which stay on); :func:`clean` removes them. Only one
cluster runs per machine, so these names are the cluster's own; nothing else is touched: the
iptables cleanup removes exactly the rules and chains whose names carry those prefixes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "HOST_DIRS",
    "clean",
    "ensure_bridge",
    "leftovers",
    "our_processes",
    "set_sysctls",
]

HOST_DIRS = (
    Path("/var/lib/kubelet"),
    Path("/var/lib/cni"),
    Path("/var/log/pods"),
    Path("/var/log/containers"),
)
NETNS_DIR = Path("/run/netns")
BRIDGE = "cni0"
RULE_MARKERS = ("KUBE-", "CNI-", "k8s-pod-network")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _run(
    argv: list[str], *, input_text: str | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, input=input_text, capture_output=True, text=True, timeout=timeout, check=False
    )


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace").split("\0")
    except OSError:
        return []


def our_processes(root: Path, binaries: Iterable[Path]) -> list[tuple[int, str]]:
    """Processes that belong to the cluster in ``root``: its binaries, and anything whose
    command line names a path under ``root`` (etcd, containerd, the shims' ``-address``)."""
    exes = {str(b) for b in binaries}
    marker = str(root) + "/"
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        args = _cmdline(pid)
        if not args or not args[0]:
            continue
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            exe = ""
        if exe in exes or any(a.startswith(marker) or f"={marker}" in a for a in args):
            found.append((pid, " ".join(a for a in args if a)[:200]))
    return found


def _mounts(root: Path) -> list[str]:
    prefixes = (str(root) + "/", "/var/lib/kubelet/", str(NETNS_DIR / "cni-"))
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        point = line.split()[1].replace("\\040", " ")
        if point.startswith(prefixes) or point == str(root):
            out.append(point)
    return out


def _iptables_lines(cmd: str) -> list[str]:
    if shutil.which(cmd) is None:
        return []
    out = _run([cmd])
    return [ln for ln in out.stdout.splitlines() if any(m in ln for m in RULE_MARKERS)]


def _kubepods_cgroups() -> list[Path]:
    if not CGROUP_ROOT.is_dir():
        return []
    found = []
    for controller in CGROUP_ROOT.iterdir():
        d = controller / "kubepods"
        if d.is_dir():
            found.append(d)
    if (CGROUP_ROOT / "kubepods").is_dir():
        found.append(CGROUP_ROOT / "kubepods")
    return found


def leftovers(root: Path, binaries: Iterable[Path]) -> list[str]:
    """Every trace a stopped cluster must not leave; empty when the machine is clean."""
    found = [f"process {pid}: {args}" for pid, args in our_processes(root, binaries)]
    found += [f"mount {m}" for m in _mounts(root)]
    if NETNS_DIR.is_dir():
        found += [f"network namespace {p}" for p in sorted(NETNS_DIR.glob("cni-*"))]
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        found.append(f"network link {BRIDGE}")
    for cmd in ("iptables-save", "ip6tables-save"):
        found += [f"{cmd}: {ln}" for ln in _iptables_lines(cmd)]
    found += [f"cgroup {d}" for d in _kubepods_cgroups()]
    found += [f"directory {d}" for d in HOST_DIRS if d.exists()]
    return found


def set_sysctls() -> None:
    """Forwarding and bridge netfilter, which kube-proxy's iptables mode needs."""
    subprocess.run(["modprobe", "br_netfilter"], capture_output=True, check=False)
    for key, value in (("net/ipv4/ip_forward", "1"), ("net/bridge/bridge-nf-call-iptables", "1")):
        path = Path("/proc/sys") / key
        if path.exists():
            path.write_text(value)


def ensure_bridge(gateway: str, prefix_length: int) -> None:
    """Create the pod bridge with its gateway address now, as the CNI bridge plugin would at the
    first pod: the host's services are relayed onto that address for pods (the cluster's
    ``hostAddress`` fact), which must be bindable before any pod has run. The plugin adopts an
    existing bridge; ``clean`` removes it with the rest."""
    if not Path(f"/sys/class/net/{BRIDGE}").exists():
        out = _run(["ip", "link", "add", "name", BRIDGE, "type", "bridge"])
        if out.returncode != 0 and "File exists" not in out.stderr:
            raise OSError(f"ip link add {BRIDGE}: {out.stderr.strip()}")
    addresses = _run(["ip", "-4", "-o", "addr", "show", "dev", BRIDGE]).stdout
    if f" {gateway}/" not in addresses:
        out = _run(["ip", "addr", "add", f"{gateway}/{prefix_length}", "dev", BRIDGE])
        if out.returncode != 0 and "File exists" not in out.stderr:
            raise OSError(f"ip addr add {gateway}/{prefix_length} dev {BRIDGE}: {out.stderr.strip()}")
    _run(["ip", "link", "set", BRIDGE, "up"])


def _kill_all(pids: Iterable[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _strip_rules(save: str, restore: str) -> None:
    """Remove every rule and chain carrying a cluster marker, table by table, atomically."""
    if shutil.which(save) is None or shutil.which(restore) is None:
        return
    dump = _run([save]).stdout
    if not any(m in dump for m in RULE_MARKERS):
        return
    kept = [ln for ln in dump.splitlines() if not any(m in ln for m in RULE_MARKERS)]
    _run([restore], input_text="\n".join(kept) + "\n")


def _rmdir_tree(path: Path) -> None:
    """cgroup folders are removed bottom-up with rmdir (their files cannot be deleted)."""
    for d, subdirs, _ in os.walk(path, topdown=False):
        for s in subdirs:
            try:
                os.rmdir(os.path.join(d, s))
            except OSError:
                pass
    try:
        os.rmdir(path)
    except OSError:
        pass


def clean(root: Path, binaries: Iterable[Path], *, keep: Iterable[Path] = ()) -> list[str]:
    """Kill what is left of the cluster, remove its host state; returns what is still there.

    ``keep``: folders under ``root`` to preserve (the logs of the run, for the post-mortem).
    """
    binaries = list(binaries)
    for _ in range(3):
        procs = [pid for pid, _ in our_processes(root, binaries)]
        if not procs:
            break
        _kill_all(procs)
        time.sleep(0.3)
    for point in sorted(_mounts(root), key=len, reverse=True):
        _run(["umount", "-l", point])
    if NETNS_DIR.is_dir():
        for ns in NETNS_DIR.glob("cni-*"):
            try:
                ns.unlink()
            except OSError:
                pass
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        _run(["ip", "link", "delete", BRIDGE])
    _strip_rules("iptables-save", "iptables-restore")
    _strip_rules("ip6tables-save", "ip6tables-restore")
    for _ in range(3):
        groups = _kubepods_cgroups()
        if not groups:
            break
        for d in groups:
            _rmdir_tree(d)
        time.sleep(0.3)
    for d in HOST_DIRS:
        shutil.rmtree(d, ignore_errors=True)
    kept = {Path(k).resolve() for k in keep}
    if root.is_dir():
        for child in root.iterdir():
            if child.resolve() in kept:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
    return leftovers(root, binaries)
