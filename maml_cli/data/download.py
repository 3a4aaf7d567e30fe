"""Downloads that fail fast and leave nothing behind: TFDS's download manager (its checksums, its
manual folder) with every host probed before TFDS opens a URL, few retries and time-outs, a stop
honoured at the next block, and whatever a failed attempt created under ``data_dir`` removed.

Offline (a cluster's compute node, a machine behind a proxy that does not answer) TFDS on its own
retries for minutes and leaves ``*.tmp`` folders: here the probe says in seconds which host or proxy
did not answer.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import logging
import os
import re
import shutil
import socket
import ssl
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import requests.utils

from maml_cli import stop_signals

PROBE_TIMEOUT_S = 10  # a host's DNS lookup, connect (CONNECT, through a proxy) and TLS handshake, together
READ_TIMEOUT_S = 30  # a download that stops sending
DOWNLOAD_RETRIES = 2  # TFDS retries 10 times with doubling waits: 3.5 minutes for an unreachable host
STOP_WAIT_S = 1.0  # after a stop, the download's thread finishing its block or TFDS's rename
# TFDS's downloader is patched for one download; another thread's would undo it halfway
ONE_DOWNLOAD_AT_A_TIME = threading.Lock()


class Unreachable(OSError):
    """A host, or the proxy to it, that does not answer; the message says which and how."""


class Stopped(Exception):
    """The download was told to stop (Ctrl-C, a stop signal)."""


class BoundedNetwork:
    """TFDS's downloads, bounded: each URL's host is probed before TFDS opens it, its requests
    time out and retry little, and a stop ends them at their next block."""

    def __init__(self):
        self.stop = threading.Event()
        self.failed: str | None = None  # the set whose download failed

    @contextlib.contextmanager
    def installed(self):
        """TFDS's one way to the network (``downloader._open_url``) goes through ``open_url``."""
        from tensorflow_datasets.core.download import downloader

        saved = downloader._open_url, downloader.MAX_RETRIES
        downloader._open_url = functools.partial(self.open_url, saved[0])
        downloader.MAX_RETRIES = DOWNLOAD_RETRIES
        retries_log = logging.getLogger("urllib3.connectionpool")  # a warning per retry, on stderr
        saved_level = retries_log.level
        retries_log.setLevel(logging.ERROR)
        try:
            yield
        finally:
            downloader._open_url, downloader.MAX_RETRIES = saved
            retries_log.setLevel(saved_level)

    @contextlib.contextmanager
    def open_url(self, original, url: str, **kwargs):
        if self.stop.is_set():
            raise Stopped()
        probe(url)
        with original(url, timeout=(PROBE_TIMEOUT_S, READ_TIMEOUT_S), **kwargs) as (response, blocks):
            if self.stop.is_set():  # stopped while connecting: TFDS must not open its file
                raise Stopped()
            yield response, self._until_stopped(blocks)

    def _until_stopped(self, blocks):
        for block in blocks:
            if self.stop.is_set():
                raise Stopped()
            yield block

    def run(self, download, names: list) -> dict:
        """{name: download(name)}, one after the other in a thread, so that this (main) thread
        sees a stop at once (Ctrl-C, or a console script's deferred stop signal); a stop then
        waits a moment for the download to let go of its files."""
        paths: dict = {}
        errors: list = []

        def work():
            for name in names:
                try:
                    paths[name] = download(name)
                except BaseException as e:
                    self.failed = name
                    errors.append(e)
                    return

        worker = threading.Thread(target=work, name="omniglot-download", daemon=True)
        worker.start()
        try:
            while worker.is_alive() and not stop_signals.stop_pending():
                worker.join(0.1)
        finally:
            self.stop.set()
            worker.join(STOP_WAIT_S)
        if stop_signals.stop_pending():
            raise Stopped()
        if errors:
            raise errors[0]
        return paths


def probe(url: str) -> None:
    """Raise ``Unreachable`` unless ``url``'s host answers within PROBE_TIMEOUT_S, directly or
    through the proxy that requests would use for it. A thread bounds the DNS lookup, which has
    no timeout of its own."""

    target = urlsplit(url)
    port = target.port or (443 if target.scheme == "https" else 80)
    proxy_url = requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url))
    proxy = urlsplit(proxy_url if "://" in proxy_url else f"http://{proxy_url}") if proxy_url else None
    outcome: list = []

    def attempt():
        try:
            _connect(target.hostname, port, proxy, tls=target.scheme == "https")
            outcome.append(None)
        except OSError as e:
            outcome.append(e)

    thread = threading.Thread(target=attempt, name="omniglot-probe", daemon=True)
    thread.start()
    thread.join(PROBE_TIMEOUT_S)
    error = outcome[0] if outcome else TimeoutError()
    if error is None:
        return
    # the proxy by host and port, never with its credentials
    where = f"the proxy {proxy.hostname}:{_port(proxy)} (set in the environment)" if proxy else ""
    if isinstance(error, socket.gaierror):
        what = f"cannot resolve {proxy.hostname if proxy else target.hostname} ({error.strerror})"
    else:
        where = where or f"{target.hostname}:{port}"
        if isinstance(error, TimeoutError):
            what = f"no answer within {PROBE_TIMEOUT_S} s"
        elif isinstance(error, ConnectionRefusedError):
            what = "connection refused"
        elif isinstance(error, ssl.SSLError):
            what = f"no TLS handshake ({error.reason or error})"
        else:
            what = error.strerror or str(error)
    raise Unreachable(f"{where}: {what}" if where else what)


def _connect(host: str, port: int, proxy, tls: bool) -> None:
    """A connection to host:port, directly or through an http proxy's CONNECT, and for https its
    TLS handshake (unverified: requests verifies; this only asks whether the host answers)."""
    if proxy is None:
        sock = socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S)
    else:
        sock = socket.create_connection((proxy.hostname, _port(proxy)), timeout=PROBE_TIMEOUT_S)
        if not tls or proxy.scheme != "http":  # an https or SOCKS proxy: that it answers is all we ask
            sock.close()
            return
        auth = ""
        if proxy.username:
            token = base64.b64encode(f"{unquote(proxy.username)}:{unquote(proxy.password or '')}".encode())
            auth = f"Proxy-Authorization: Basic {token.decode()}\r\n"
        try:
            sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}\r\n".encode())
            status = sock.recv(4096).split(b"\r\n", 1)[0].decode("latin-1").strip()
        except BaseException:
            sock.close()
            raise
        if not re.match(r"HTTP/\S+ 2\d\d", status):
            sock.close()
            raise Unreachable(f"answered {status or 'nothing'!r} to CONNECT {host}:{port}")
    with sock:
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.wrap_socket(sock, server_hostname=host).close()


def _port(proxy) -> int:
    return proxy.port or {"http": 80, "https": 443}.get(proxy.scheme, 1080)  # 1080: SOCKS


def cause(error: BaseException, manual_file: Path | None) -> str:
    """One line on what went wrong: TFDS's and requests' messages run over several lines."""
    from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

    if isinstance(error, NonMatchingChecksumError):
        if manual_file is not None and manual_file.is_file():
            return f"{manual_file} is not the official file (its sha256 is not the one TFDS registers)"
        return "the downloaded file is not the official one (its sha256 is not the one TFDS registers)"
    if isinstance(error, Unreachable):
        return str(error)
    reason = getattr(error.args[0], "reason", None) if error.args else None  # requests' MaxRetryError
    if reason is not None:  # urllib3 wraps the exception that says what happened
        error = reason.args[0] if reason.args and isinstance(reason.args[0], BaseException) else reason
    return f"{type(error).__name__}: {' '.join(str(error).split())}"[:300]


class Created:
    """What exists under ``data_dir`` now, so that what a failed attempt adds can be removed."""

    DEPTH = 3  # TFDS writes downloads/, downloads/extracted/ and downloads/omniglot/NAME(.tmp.UUID)

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        # the first folder on the way to data_dir that does not exist yet: all of it is new
        self.missing = next((p for p in [*reversed(data_dir.parents), data_dir] if not p.exists()), None)
        self.before = set() if self.missing else self._listing()

    def _listing(self) -> set:
        found, level = set(), [self.data_dir]
        for _ in range(self.DEPTH):
            below = []
            for folder in level:
                try:
                    entries = list(os.scandir(folder))
                except OSError:
                    continue
                for entry in entries:
                    found.add(entry.path)
                    if entry.is_dir(follow_symlinks=False):
                        below.append(entry.path)
            level = below
        return found

    def remove(self) -> None:
        if self.missing is not None:
            shutil.rmtree(self.missing, ignore_errors=True)
            return
        for path in sorted(self._listing() - self.before, key=len):  # a folder before what is in it
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
