"""Find this kernel's notebook by asking the running Jupyter servers for their sessions."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

from .processes import pid_alive

TOTAL_TIMEOUT = 0.5  # seconds for all servers together: this runs while a kernel starts


def kernel_id() -> str | None:
    """This kernel's id, from its connection file name (kernel-<id>.json)."""
    try:
        from ipykernel.connect import get_connection_file

        name = os.path.basename(get_connection_file())
    except Exception:  # not in a kernel
        return None
    match = re.match(r"kernel-(.+)\.json$", name)
    return match.group(1) if match else None


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True  # no pid recorded: let the request decide
    return pid_alive(pid)


def running_servers() -> list[dict[str, Any]]:
    """The server info files of live servers, newest first; stale files are skipped."""
    try:
        from jupyter_core.paths import jupyter_runtime_dir

        runtime = Path(jupyter_runtime_dir())
    except Exception:
        return []
    servers = []
    for info_file in sorted(runtime.glob("jpserver-*.json"), key=os.path.getmtime, reverse=True):
        try:
            info = json.loads(info_file.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(info, dict) and "url" in info and _pid_alive(info.get("pid")):
            servers.append(info)
    return servers


def _sessions(info: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
    url = info["url"].rstrip("/") + "/api/sessions"
    request = urllib.request.Request(url)
    if info.get("token"):
        request.add_header("Authorization", f"token {info['token']}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data = json.loads(response.read())
    return data if isinstance(data, list) else []


def notebook_from_servers(kid: str | None = None, timeout: float = TOTAL_TIMEOUT) -> Path | None:
    """The path of the notebook whose session runs kernel `kid` (default: this kernel), asking
    the servers for at most `timeout` seconds in all."""
    kid = kid or kernel_id()
    if not kid:
        return None
    deadline = time.monotonic() + timeout
    for info in running_servers():
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            sessions = _sessions(info, left)
        except Exception:  # a stale or unreachable server: try the next one
            continue
        for session in sessions:
            if (session.get("kernel") or {}).get("id") != kid:
                continue
            rel = session.get("path") or (session.get("notebook") or {}).get("path")
            if not rel or not str(rel).endswith(".ipynb"):
                continue
            root = info.get("root_dir") or info.get("notebook_dir") or os.getcwd()
            return Path(root) / rel
    return None
