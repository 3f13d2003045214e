"""The system store read through its hashed directory where that holds the bundle's CAs, else as before."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailrules import tls

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _openssl(*args: str, cwd: Path) -> str:
    return subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA (ca.pem) and a server certificate for `localhost` it signed (srv.pem, srv.key)."""
    d = tmp_path_factory.mktemp("pki")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
        cwd=d,
    )
    _openssl("req", *ec, "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=localhost", cwd=d)
    (d / "ext").write_text("subjectAltName=DNS:localhost\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
        cwd=d,
    )
    return d


def _hashed_dir(pki: Path, name: str) -> Path:
    directory = pki / name
    directory.mkdir(exist_ok=True)
    subject_hash = _openssl("x509", "-hash", "-noout", "-in", "ca.pem", cwd=pki).strip()
    shutil.copy(pki / "ca.pem", directory / f"{subject_hash}.0")
    return directory


@pytest.fixture
def system_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str | None, str | None]]]:
    """Sets what ssl.get_default_verify_paths() reports: append (cafile, capath)."""
    chosen: list[tuple[str | None, str | None]] = []
    real = ssl.get_default_verify_paths()

    def fake() -> ssl.DefaultVerifyPaths:
        cafile, capath = chosen[-1]
        fields: dict[str, Any] = {"cafile": cafile, "capath": capath}  # typeshed: str; OpenSSL: may be None
        return real._replace(**fields)

    monkeypatch.setattr(ssl, "get_default_verify_paths", fake)
    tls.ssl_context.cache_clear()
    yield chosen
    tls.ssl_context.cache_clear()


def _handshake(client_ctx: ssl.SSLContext, pki: Path) -> None:
    """A TLS handshake in memory with a server presenting srv.pem; raises when the client refuses it."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki / "srv.pem", pki / "srv.key")
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    finished: set[str] = set()
    for _ in range(10):
        for name, end, out, peer in (("client", client, c_out, s_in), ("server", server, s_out, c_in)):
            try:
                end.do_handshake()
                finished.add(name)
            except ssl.SSLWantReadError:
                pass
            peer.write(out.read())
        if finished == {"client", "server"}:
            return
    raise AssertionError("the handshake did not finish")


def test_a_hashed_directory_is_read_through_capath(
    pki: Path, system_store: list[tuple[str | None, str | None]]
) -> None:
    hashed = _hashed_dir(pki, "hashed")
    system_store.append(
        (str(hashed / "ca-certificates.crt"), str(hashed))
    )  # the bundle lies beside the links
    assert tls.system_capath() == str(hashed)
    ctx = tls.ssl_context(None)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.cert_store_stats()["x509_ca"] == 0  # nothing parsed up front: looked up by hash
    _handshake(ctx, pki)


def test_no_bundle_at_all_still_uses_the_directory(
    pki: Path, system_store: list[tuple[str | None, str | None]]
) -> None:
    hashed = _hashed_dir(pki, "hashed")
    system_store.append((None, str(hashed)))
    _handshake(tls.ssl_context(None), pki)


def test_a_directory_without_hash_links_falls_back(
    pki: Path, system_store: list[tuple[str | None, str | None]]
) -> None:
    plain = pki / "plain"
    plain.mkdir(exist_ok=True)
    shutil.copy(pki / "ca.pem", plain / "ca.pem")
    system_store.append((None, str(plain)))
    assert tls.system_capath() is None
    with pytest.raises(ssl.SSLCertVerificationError):  # the real system store: the test CA is not in it
        _handshake(tls.ssl_context(None), pki)


def test_a_bundle_outside_the_directory_falls_back(
    pki: Path, system_store: list[tuple[str | None, str | None]]
) -> None:
    hashed = _hashed_dir(pki, "hashed")
    system_store.append((str(pki / "ca.pem"), str(hashed)))  # e.g. SSL_CERT_FILE naming one's own bundle
    assert tls.system_capath() is None
    system_store.append((None, str(pki / "missing")))
    assert tls.system_capath() is None
    system_store.append((None, None))
    assert tls.system_capath() is None


def test_ca_file_adds_to_the_hashed_store(
    pki: Path, system_store: list[tuple[str | None, str | None]]
) -> None:
    empty = _hashed_dir(pki, "other")
    for link in empty.iterdir():  # a hashed directory that does not hold the test CA
        link.rename(empty / "00000000.0")
        (empty / "00000000.0").write_text("")
    system_store.append((None, str(empty)))
    assert tls.system_capath() == str(empty)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(tls.ssl_context(None), pki)
    _handshake(tls.ssl_context(str(pki / "ca.pem")), pki)
