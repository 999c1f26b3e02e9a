"""Start the real ``vdm grpc serve`` process for a test, and talk to it.

The client is built from our own ``.proto`` (the committed stubs, which
``tests/unit/test_grpc_stubs.py`` keeps equal to it).
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from tests.support.gateway import clean_env, free_port
from tests.support.waiting import BOUND, wait_for, wait_text
from vdm.grpc import llm_proxy_pb2 as pb
from vdm.grpc import llm_proxy_pb2_grpc as pb_grpc

SECRET = "test-secret-for-the-grpc-tests-0123456789"  # >= 32 bytes


@dataclass
class GrpcServer:
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]  # the server's environment (HOME, secret): for `vdm token ...`
    tls_root: bytes | None = None

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = BOUND) -> str:
        """The log once it holds ``text`` (fails after ``timeout`` seconds)."""
        return wait_text(self.log, text, timeout)

    @contextmanager
    def stub(self) -> Iterator[pb_grpc.VibectlLLMProxyStub]:
        if self.tls_root is not None:
            channel = grpc.secure_channel(self.target, grpc.ssl_channel_credentials(self.tls_root))
        else:
            channel = grpc.insecure_channel(self.target)
        with channel:
            yield pb_grpc.VibectlLLMProxyStub(channel)

    def vdm(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run ``vdm ARGS`` with the server's environment (same HOME, same secret)."""
        return subprocess.run(
            [sys.executable, "-m", "vdm", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def token(self, subject: str = "tester", expires_in: str = "1h") -> str:
        done = self.vdm("token", "generate", subject, "--expires-in", expires_in)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def execute_request(
    *user: str,
    model: str | None = None,
    system: Sequence[str] = (),
    schema: str | None = None,
    request_id: str = "",
) -> pb.ExecuteRequest:
    request = pb.ExecuteRequest(
        system_fragments=list(system), user_fragments=list(user), request_id=request_id
    )
    if model is not None:
        request.model_name = model
    if schema is not None:
        request.response_model_schema = schema
    return request


@contextmanager
def run_grpc(
    env: Mapping[str, str],
    tmp: Path,
    *,
    args: Sequence[str] = (),
    tls: bool = False,
    timeout: float = 20.0,
) -> Iterator[GrpcServer]:
    """Run ``vdm grpc serve`` with exactly ``env`` (plus a private HOME and the
    test secret) until the block ends; ``tls`` makes a certificate for it."""
    port = free_port()
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    log_path = tmp / f"grpc-{port}.log"
    full_env = {
        **clean_env(),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_STATE_HOME": str(home / ".state"),
        "LOG_LEVEL": "INFO",
        "MODELS_PREFETCH": "false",
        "VDM_JWT_SECRET": SECRET,
        **env,
    }
    command = [
        sys.executable,
        "-m",
        "vdm",
        "grpc",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *args,
    ]
    root = None
    if tls:
        cert, key = make_certificate(tmp)
        command += ["--tls-cert", str(cert), "--tls-key", str(key)]
        root = cert.read_bytes()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=full_env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT
        )
    server = GrpcServer("127.0.0.1", port, process, log_path, full_env, root)
    try:
        wait_listening(server, timeout)
        yield server
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def wait_listening(server: GrpcServer, timeout: float) -> None:
    def listening() -> bool:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"vdm grpc serve exited with {server.process.returncode}:\n{server.log()}"
            )
        if "listening on" not in server.log():
            return False
        try:
            with socket.create_connection((server.host, server.port), timeout=1):
                return True
        except OSError:
            return False

    if not wait_for(listening, timeout, every=0.05):
        raise RuntimeError(f"vdm grpc serve not listening after {timeout}s:\n{server.log()}")


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1 (its own CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
