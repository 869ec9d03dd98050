"""Running Terraform against LocalStack for :func:`clinops_lib.inventory.provision`.

The configuration in ``terraform/`` is used as is; LocalStack is selected with variables
(``use_localstack``, ``localstack_endpoint``) and the inventory comes in with ``-var-file``,
exactly as on AWS. Plugins and state live under ``settings.state_dir`` so the repository
stays clean and each environment has its own state file.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from ..config import Settings, child_environment
from ..exceptions import InventoryError
from .model import Inventory, default_inventory_path

__all__ = ["TerraformInitError", "terraform_apply", "terraform_commands", "terraform_init"]

INIT_TIMEOUT_S = 600.0
APPLY_TIMEOUT_S = 1200.0


class TerraformInitError(InventoryError):
    """``terraform init`` failed (typically: providers cannot be downloaded on this machine)."""


def terraform_commands(settings: Settings, inv: Inventory,
                       tf: str) -> tuple[list[str], list[str], dict[str, str]]:
    """The init and apply command lines and the environment they run with (pure: tests read them)."""
    tf_dir = settings.project_root / "terraform"
    state = settings.state_dir / "terraform" / inv.env
    var_file = inv.source or default_inventory_path()
    # No backend block in terraform/ (production adds its S3 backend with an override file),
    # so the local backend's -state flag puts LocalStack state under the state dir.
    init = [tf, f"-chdir={tf_dir}", "init", "-input=false", "-no-color"]
    apply = [tf, f"-chdir={tf_dir}", "apply", "-input=false", "-no-color", "-auto-approve",
             f"-state={state / 'terraform.tfstate'}",
             f"-var-file={Path(var_file).resolve()}",
             f"-var-file={(tf_dir / 'localstack.tfvars.json').resolve()}",
             f"-var=environment={inv.env}", f"-var=localstack_endpoint={settings.localstack_url}"]
    env = child_environment({"TF_DATA_DIR": str(state / ".terraform"), "TF_IN_AUTOMATION": "1",
                             "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                             "AWS_DEFAULT_REGION": "us-east-1"})
    return init, apply, env


def _run(cmd: list[str], env: dict[str, str], timeout: float, what: str, error: type[InventoryError],
         say: Callable[[str], None]) -> str:
    say(f"terraform: {what}")
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise error(f"terraform {what}: no result after {timeout:.0f} s") from e
    except OSError as e:
        raise error(f"terraform {what}: could not start {cmd[0]}: {e}") from e
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        lines = out.strip().splitlines()
        headline = next((ln.strip() for ln in lines if ln.strip().startswith("Error:")), "see the log below")
        tail = "\n".join(lines[-15:])
        raise error(f"terraform {what} failed (exit {proc.returncode}): {headline}\n{tail}")
    return out


def terraform_init(settings: Settings, inv: Inventory, tf: str,
                   progress: Callable[[str], None] | None = None) -> str:
    init, _, env = terraform_commands(settings, inv, tf)
    (settings.state_dir / "terraform" / inv.env).mkdir(parents=True, exist_ok=True)
    return _run(init, env, INIT_TIMEOUT_S, "init", TerraformInitError, progress or (lambda _m: None))


def terraform_apply(settings: Settings, inv: Inventory, tf: str,
                    progress: Callable[[str], None] | None = None) -> str:
    """``terraform apply`` (after :func:`terraform_init`); returns the combined log."""
    _, apply, env = terraform_commands(settings, inv, tf)
    return _run(apply, env, APPLY_TIMEOUT_S, "apply", InventoryError, progress or (lambda _m: None))
