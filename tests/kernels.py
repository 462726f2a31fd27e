"""Helpers for tests that run real kernels and a real Jupyter server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jupyter_client import BlockingKernelClient, KernelManager


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any lamin_magic or Jupyter session variables, plus `extra`."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("LAMIN_MAGIC_", "JPY_", "PYTEST_"))
    }
    env.update(extra)
    return env


def run_code(client: BlockingKernelClient, code: str, timeout: float = 60) -> dict[str, Any]:
    """Execute `code`; returns its stdout, stderr, result text and error name."""
    got: dict[str, Any] = {"stdout": "", "stderr": "", "result": None, "error": None}

    def hook(msg: dict[str, Any]) -> None:
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            got[content["name"]] += content["text"]
        elif kind == "execute_result":
            got["result"] = content["data"].get("text/plain")
        elif kind == "error":
            got["error"] = (content["ename"], content["evalue"], content["traceback"])

    got["reply"] = client.execute_interactive(code, output_hook=hook, timeout=timeout)["content"]
    return got


def first_cell(stdout: str, tracked: str) -> str:
    """The first cell's own output, after the line that says what is tracked (checked)."""
    notice, _, rest = stdout.partition("\n")
    assert notice.startswith(f"lamin_magic: tracking {tracked} (run "), stdout
    return rest


@contextmanager
def kernel(env: dict[str, str], cwd: Path, kernel_name: str = "python3") -> Iterator[Any]:
    """A real ipykernel started by jupyter_client; shut down cleanly at the end."""
    km = KernelManager(kernel_name=kernel_name)
    km.start_kernel(env=env, cwd=str(cwd))
    client = km.blocking_client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        yield km, client
    finally:
        client.stop_channels()
        km.shutdown_kernel(now=False)


def add_kernel_spec(folder: Path, name: str, argv: list[str]) -> None:
    """A kernel spec NAME under FOLDER/kernels (FOLDER goes on JUPYTER_PATH)."""
    spec = folder / "kernels" / name
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": name, "language": "python"})
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A jupyter_server on 127.0.0.1 with its own root, runtime and data folders."""

    def __init__(self, root: Path, home: Path, env: dict[str, str]) -> None:
        self.root, self.token, self.port = root, "lamin-test-token", free_port()
        self.runtime = home / "runtime"
        self.env = {
            **env,
            "JUPYTER_RUNTIME_DIR": str(self.runtime),
            "JUPYTER_DATA_DIR": str(home / "data"),
            "JUPYTER_CONFIG_DIR": str(home / "config"),
            "JUPYTER_PATH": str(home / "data"),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        log = open(self.runtime.parent / "server.log", "wb")  # noqa: SIM115 (closed in stop)
        self.log = log
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter_server",
                f"--ServerApp.root_dir={self.root}",
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={self.port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={self.token}",
                "--ServerApp.open_browser=False",
                "--ServerApp.allow_root=True",  # CI machines run as root
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                self.request("GET", "/api/status")
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the Jupyter server did not start: " + self.read_log())

    def read_log(self) -> str:
        return (self.runtime.parent / "server.log").read_text(errors="replace")

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method
        )
        req.add_header("Authorization", f"token {self.token}")
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=60) as response:
            text = response.read()
        return json.loads(text) if text else None

    def new_session(self, path: str, kernel_name: str = "python3") -> dict[str, Any]:
        return self.request(
            "POST",
            "/api/sessions",
            {"path": path, "type": "notebook", "name": "", "kernel": {"name": kernel_name}},
        )

    def client_for(self, kernel_id: str) -> BlockingKernelClient:
        client = BlockingKernelClient(
            connection_file=str(self.runtime / f"kernel-{kernel_id}.json")
        )
        client.load_connection_file()
        client.start_channels()
        client.wait_for_ready(timeout=60)
        return client

    def stop(self) -> None:
        if self.proc is not None:
            try:
                for session in self.request("GET", "/api/sessions"):
                    self.request("DELETE", f"/api/sessions/{session['id']}")
            except OSError:
                pass
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.log.close()


def run_in_server_session(
    root_dir: Path,
    home: Path,
    env: dict[str, str],
    path: str,
    code: str,
    kernel_name: str = "python3",
) -> dict[str, Any]:
    """Start a server, open a session for notebook `path`, run `code` in its kernel, stop."""
    server = Server(root_dir, home, env).start()
    try:
        session = server.new_session(path, kernel_name=kernel_name)
        client = server.client_for(session["kernel"]["id"])
        try:
            return run_code(client, code)
        finally:
            client.stop_channels()
    finally:
        server.stop()
