"""``make lab``: register the project's environment as a Jupyter kernel and start JupyterLab on ``notebooks/``.

The notebooks' metadata name the kernel ``dwt`` ("DWT companion (<env>)"). It is registered inside the
environment (``--sys-prefix``), so it never leaks into another environment's kernel list, and again on every
``make lab``, so a moved or rebuilt venv never leaves a stale interpreter path behind. The headless paths do not
need it: ``dwt reproduce`` runs papermill with the current environment's kernel and ``make test`` runs nbval with
``--nbval-current-env``.

Widget callbacks run on the kernel's main thread: JupyterLab >= 4.4 sends widget messages to kernel subshells
(``commsOverSubshells``, default ``perCommTarget``), which ipykernel >= 7 runs on their own threads, and matplotlib
is not thread-safe: a redraw racing another draw can end in a traceback inside ``fig.tight_layout()``
(matplotlib/ipympl#610, jupyterlab/jupyterlab#19719). A slider redraw ended that way once in CI; whether through
this race is not established (here the callbacks ran on the main thread with and without the setting), but the
setting removes the race. ``make lab`` sets that setting's default to
``disabled`` for this environment (``<env>/etc/jupyter/labconfig/default_setting_overrides.json``; a user's own
setting still wins). A JupyterLab started otherwise: Settings > Settings Editor > Kernel > "Kernel Comms over
subshells" > Disabled.

    python -m dwt_lib.lab [--port 8888] [--root notebooks] [--register-only]
"""
from __future__ import annotations

import argparse
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import Optional

from dwt_lib.core.paths import REPO
from dwt_lib.core.io import atomic_write_json

KERNEL_NAME = "dwt"


def display_name() -> str:
    """``DWT companion (.venv)`` for the Makefile's venv, ``DWT companion (dwt)`` for the conda env."""
    return f"DWT companion ({Path(sys.prefix).name})"


def register_kernel(prefix: Optional[str] = None) -> Path:
    """Install the kernelspec ``dwt`` (this interpreter) under ``<prefix>/share/jupyter/kernels/dwt``.

    ``prefix`` defaults to the running environment (``sys.prefix``, i.e. ``--sys-prefix``); tests pass a temp
    folder and put ``<prefix>/share/jupyter`` on ``JUPYTER_PATH``. Returns the kernelspec's folder."""
    from ipykernel.kernelspec import install
    return Path(install(kernel_name=KERNEL_NAME, display_name=display_name(), prefix=prefix or sys.prefix))


# JupyterLab's setting that sends widget messages to kernel subshells (threads; see the module docstring).
SUBSHELL_SETTING = ("@jupyterlab/apputils-extension:kernels-settings", "commsOverSubshells")


def set_lab_defaults(config_dir: Optional[Path] = None) -> Path:
    """Default ``commsOverSubshells`` to ``disabled`` in ``<config_dir>/labconfig/default_setting_overrides.json``
    (``config_dir``: this environment's ``<sys.prefix>/etc/jupyter``, a folder on JupyterLab's config path),
    keeping whatever else the file holds. Written atomically; returns the file."""
    import json
    path = Path(config_dir or Path(sys.prefix) / "etc" / "jupyter") / "labconfig" / "default_setting_overrides.json"
    plugin, key = SUBSHELL_SETTING
    try:
        current = json.loads(path.read_text()) if path.exists() else {}
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e}): fix or delete it, then run `make lab` again") from None
    if not isinstance(current, dict) or not isinstance(current.get(plugin, {}), dict):
        raise ValueError(f"{path}: expected a JSON object of plugin ids -> settings objects: fix or delete it, "
                         f"then run `make lab` again")
    current.setdefault(plugin, {})[key] = "disabled"
    atomic_write_json(path, current)
    return path


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` and we may bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free right now (for tests that start a server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def lab_command(port: int, root: Path, token: str, host: str = "127.0.0.1", base_url: str = "/") -> list[str]:
    """The ``jupyter lab`` command line: bound to ``host`` only, no browser, no port hopping (and, as root, in a
    container or CI, ``--allow-root``: the server still listens on loopback only, behind a token)."""
    return [sys.executable, "-m", "jupyterlab", "--no-browser", f"--ip={host}", f"--port={port}",
            "--port-retries=0", f"--ServerApp.root_dir={root}", f"--ServerApp.base_url={base_url}",
            f"--IdentityProvider.token={token}"] + (["--allow-root"] if os.name == "posix" and os.geteuid() == 0 else [])


def parse_port(value: str, where: str) -> int:
    """A TCP port a server can listen on, 1-65535 (0 would let the OS choose one the printed URL cannot name);
    anything else is one ``dwt:`` line (:class:`ValueError`) naming where it came from."""
    try:
        port = int(str(value).strip())
    except ValueError:
        port = None
    if port is None or not 1 <= port <= 65535:
        raise ValueError(f"dwt: {where} {value!r} is not a port (1-65535); e.g. make lab PORT=8890 or "
                         f"python -m dwt_lib.lab --port 8890")
    return port


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dwt_lib.lab", description=__doc__.splitlines()[0])
    ap.add_argument("--port", default=None, help="1-65535 (default: $PORT, else 8888)")
    ap.add_argument("--root", type=Path, default=REPO / "notebooks")
    ap.add_argument("--register-only", action="store_true", help="register the kernel and exit")
    args = ap.parse_args(argv)
    try:
        args.port = (parse_port(args.port, "--port") if args.port is not None
                     else parse_port(os.environ.get("PORT") or "8888", "PORT"))
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    try:
        import ipywidgets  # noqa: F401
        import jupyterlab  # noqa: F401
    except ImportError as e:
        print(f"make lab: {e.name} is not installed in {sys.prefix}: run `make lab` from the repository (it "
              f"installs .[dev] into .venv), or `pip install -e '.[dev]'` in your environment", file=sys.stderr)
        return 2
    if not args.register_only and not port_free(args.port):
        print(f"make lab: port {args.port} on 127.0.0.1 is in use (another JupyterLab?): stop it, or choose "
              f"another port, e.g. `make lab PORT={args.port + 1}`", file=sys.stderr)
        return 2
    where = register_kernel()
    print(f"kernel '{KERNEL_NAME}' ({display_name()}) -> {where}")
    try:
        print(f"widget callbacks on the kernel's main thread (commsOverSubshells: disabled) -> {set_lab_defaults()}")
    except (OSError, ValueError) as e:
        print(f"make lab: could not set JupyterLab's default commsOverSubshells: {e}", file=sys.stderr)
    if args.register_only:
        return 0
    token = secrets.token_hex(16)
    print(f"\n    JupyterLab on {args.root}: http://127.0.0.1:{args.port}/lab?token={token}\n"
          f"    (Ctrl-C to stop; the notebooks' kernel is '{display_name()}')\n", flush=True)
    cmd = lab_command(args.port, args.root, token)
    os.execv(cmd[0], cmd)          # JupyterLab replaces this process: Ctrl-C goes straight to it
    return 0                       # not reached


if __name__ == "__main__":
    sys.exit(main())
