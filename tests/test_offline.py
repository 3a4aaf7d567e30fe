"""Omniglot through TFDS without a network: a failure in seconds, one line on what to fetch and
where to put it, and nothing left behind. The unreachable cases are this machine's own state
where it is offline, and simulated ones (a closed port, an unroutable address, a name that does
not resolve, proxies that refuse or stay silent) everywhere; the downloads that work are served
from localhost with the official small zips, whose sha256 TFDS registers."""

from __future__ import annotations

import _thread
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from maml_cli.data import omniglot_source
from maml_cli.data.download import probe
from maml_cli.data.omniglot_source import OFFICIAL_SETS, SMALL_SETS, download_with_tfds
from maml_cli.errors import UserError
from tests.conftest import SHARED_DATA, run_command

OFFICIAL_DIR = SHARED_DATA / "omniglot" / "official"
needs_small_zips = pytest.mark.skipif(
    not all((OFFICIAL_DIR / f"{name}.zip").is_file() for name in SMALL_SETS),
    reason=f"the official small Omniglot zips (TFDS's checksums must match) are not in {OFFICIAL_DIR}",
)
GITHUB = "https://github.com"
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
WITHIN_S = 30  # an unreachable host fails this fast
MACHINE_PROXIES = {name: os.environ[name] for name in PROXY_VARIABLES if name in os.environ}


def _online() -> bool:
    try:
        probe(f"{GITHUB}/")
        return True
    except OSError:
        return False


ONLINE = _online()


def tree(root: Path) -> set:
    """Every path under root, as a set of relative paths (root itself included, if it exists)."""
    if not root.exists():
        return set()
    return {"."} | {str(p.relative_to(root)) for p in root.rglob("*")}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def home(tmp_path, monkeypatch):
    """HOME in tmp_path, and no proxy unless a test sets one."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return home


def serve_from(monkeypatch, base: str) -> dict:
    """Point TFDS's registered Omniglot URLs (and their checksums) at ``base``; {set: url}."""
    registered = omniglot_source.official_urls()
    moved = {url.replace(GITHUB, base): info for url, info in registered.items()}
    monkeypatch.setattr(omniglot_source, "official_urls", lambda: moved)
    return {name: next(u for u in moved if u.endswith(f"/{name}.zip")) for name in OFFICIAL_SETS + SMALL_SETS}


def assert_offline_failure(data_dir, urls, call, sets=OFFICIAL_SETS):
    """call() raises, within WITHIN_S, one line naming the sets' URLs and both ways to give the files."""
    start = time.monotonic()
    with pytest.raises(UserError) as raised:
        call()
    took = time.monotonic() - start
    message = str(raised.value)
    assert took < WITHIN_S, f"took {took:.1f} s: {message}"
    assert "\n" not in message
    assert all(urls[name] in message for name in sets)
    assert "dataset.path=DIR" in message and f"{data_dir}/downloads/manual/" in message
    return message


@pytest.mark.skipif(ONLINE, reason="this machine reaches github.com: the simulated cases stand in")
def test_this_offline_machine_fails_fast_with_what_to_fetch_and_nothing_left(home, monkeypatch):
    """dataset.data_dir unset: ~/tensorflow_datasets, which is not created."""
    for name, value in MACHINE_PROXIES.items():  # the machine as it is, its proxy settings included
        monkeypatch.setenv(name, value)
    urls = {name: f"{GITHUB}/brendenlake/omniglot/raw/master/python/{name}.zip" for name in OFFICIAL_SETS}
    assert_offline_failure(home / "tensorflow_datasets", urls, lambda: download_with_tfds(None))
    assert tree(home) == {"."}


class _SilentListener:
    """A port that accepts connections (the kernel's backlog) and never says a word."""

    def __enter__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        return self.sock.getsockname()[1]

    def __exit__(self, *exc):
        self.sock.close()


# case: (where the URLs point, HTTPS_PROXY or None, what the message says; None where the network
# decides, as an unroutable address through a machine's transparent proxy)
UNREACHABLE = {
    "refused": ("https://127.0.0.1:{closed}", None, "127.0.0.1:{closed}: connection refused"),
    "unroutable": ("https://10.255.255.1", None, None),
    "unresolvable": ("https://omniglot.invalid", None, "cannot resolve omniglot.invalid"),  # RFC 6761
    "host silent": ("https://127.0.0.1:{silent}", None, "127.0.0.1:{silent}: no answer within 10 s"),
    "proxy refuses": (GITHUB, "http://user:secret@127.0.0.1:{closed}", "the proxy 127.0.0.1:{closed}"),
    "proxy silent": (GITHUB, "http://127.0.0.1:{silent}", "the proxy 127.0.0.1:{silent}"),
    "proxy unresolvable": (GITHUB, "http://proxy.invalid:3128", "cannot resolve proxy.invalid"),
}


@pytest.mark.parametrize("case", list(UNREACHABLE))
def test_an_unreachable_host_fails_fast_with_what_to_fetch_and_nothing_left(case, home, tmp_path, monkeypatch):
    data_dir = tmp_path / "tfds"
    (data_dir / "mnist").mkdir(parents=True)  # someone's other dataset
    (data_dir / "mnist" / "notes.txt").write_text("kept")
    before = tree(data_dir)
    closed = closed_port()
    with _SilentListener() as silent:
        base, proxy, says = (None if t is None else t.format(closed=closed, silent=silent) for t in UNREACHABLE[case])
        if proxy:
            monkeypatch.setenv("HTTPS_PROXY", proxy)
        urls = serve_from(monkeypatch, base)
        message = assert_offline_failure(data_dir, urls, lambda: download_with_tfds(str(data_dir)))
    assert says is None or says in message, message
    assert "secret" not in message
    assert tree(data_dir) == before  # no downloads/ folder, no .tmp files
    assert tree(home) == {"."}


@needs_small_zips
def test_a_zip_in_the_manual_dir_is_used_offline_after_the_checksum_check(home, tmp_path, monkeypatch):
    urls = serve_from(monkeypatch, f"https://127.0.0.1:{closed_port()}")  # any network use would fail
    data_dir = tmp_path / "tfds"
    manual = data_dir / "downloads" / "manual"
    manual.mkdir(parents=True)
    for name in SMALL_SETS:
        shutil.copy(OFFICIAL_DIR / f"{name}.zip", manual)
    sources = download_with_tfds(str(data_dir), sets=SMALL_SETS)
    assert [(s.name, s.location) for s in sources] == [(n, manual / f"{n}.zip") for n in SMALL_SETS]

    (manual / "images_background_small1.zip").write_bytes(b"not the official zip")
    before = tree(data_dir)
    small1 = ("images_background_small1",)
    message = assert_offline_failure(data_dir, urls, lambda: download_with_tfds(str(data_dir), sets=small1), small1)
    assert f"{manual / 'images_background_small1.zip'} is not the official file" in message
    assert tree(data_dir) == before


class _Zips(BaseHTTPRequestHandler):
    """Serves the official small zips by name; ``wrong`` serves other bytes, ``trickle`` sends
    them slowly (a download in flight)."""

    wrong = False
    trickle: threading.Event | None = None  # set once the first bytes went out

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        data = b"x" * 1000 if self.wrong else (OFFICIAL_DIR / name).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            if self.trickle is None:
                self.wfile.write(data)
                return
            for start in range(0, len(data), 1024):
                self.wfile.write(data[start : start + 1024])
                self.wfile.flush()
                self.trickle.set()
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


@contextmanager
def serving(handler):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@needs_small_zips
def test_a_host_that_answers_is_downloaded_through_tfds_and_its_copy_then_used_offline(home, tmp_path, monkeypatch):
    data_dir = tmp_path / "tfds"
    with serving(_Zips) as base:
        serve_from(monkeypatch, base)
        sources = download_with_tfds(str(data_dir), sets=SMALL_SETS)
    for source in sources:
        assert source.location.parent == data_dir / "downloads" / "omniglot"
        official = (OFFICIAL_DIR / f"{source.name}.zip").read_bytes()
        assert hashlib.sha256(source.location.read_bytes()).digest() == hashlib.sha256(official).digest()
    assert not [p for p in tree(data_dir) if ".tmp." in p]
    # the server is gone: TFDS's downloaded copy is used without the network
    assert [s.location for s in download_with_tfds(str(data_dir), sets=SMALL_SETS)] == [s.location for s in sources]


@needs_small_zips
def test_a_download_with_the_wrong_checksum_leaves_nothing(home, tmp_path, monkeypatch):
    data_dir = tmp_path / "tfds"
    data_dir.mkdir()

    class Wrong(_Zips):
        wrong = True

    with serving(Wrong) as base:
        urls = serve_from(monkeypatch, base)
        message = assert_offline_failure(
            data_dir, urls, lambda: download_with_tfds(str(data_dir), sets=SMALL_SETS), SMALL_SETS
        )
    assert "the downloaded file is not the official one" in message
    assert tree(data_dir) == {"."}


@needs_small_zips
def test_ctrl_c_during_a_download_stops_it_and_leaves_nothing(home, tmp_path, monkeypatch):
    data_dir = tmp_path / "tfds"
    data_dir.mkdir()
    first_bytes = threading.Event()

    class Slow(_Zips):
        trickle = first_bytes

    def interrupt():
        if first_bytes.wait(30):
            interrupted.append(time.monotonic())
            _thread.interrupt_main()  # Ctrl-C, as Python in a notebook sees it

    interrupted: list = []
    with serving(Slow) as base:
        serve_from(monkeypatch, base)
        threading.Thread(target=interrupt, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            download_with_tfds(str(data_dir), sets=SMALL_SETS)
        assert time.monotonic() - interrupted[0] < 5
        assert tree(data_dir) == {"."}
        time.sleep(0.5)  # the download's thread, had it gone on, would write now
    assert tree(data_dir) == {"."}


# --- through the real command --------------------------------------------------------------------


def _train_dry_run(tmp_path, env: dict):
    """maml-train's dry run on Omniglot from TFDS: its arguments, the folder it runs in, and its
    environment (HOME in tmp_path, the given proxy settings only)."""
    work = tmp_path / "work"
    work.mkdir()
    command = ["experiment=omniglot_tiny", "train.dry_run=true", f"dataset.data_dir={tmp_path / 'tfds'}"]
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARIABLES} | {"HOME": str(tmp_path / "home")} | env
    return command, work, env


@pytest.mark.parametrize("case", ["this machine", "proxy refuses"])
def test_maml_train_offline_says_one_line_and_creates_nothing(case, home, tmp_path):
    if case == "this machine" and ONLINE:
        pytest.skip("this machine reaches github.com: the refusing proxy stands in")
    proxy = {"HTTPS_PROXY": f"http://127.0.0.1:{closed_port()}"} if case == "proxy refuses" else MACHINE_PROXIES
    command, work, env = _train_dry_run(tmp_path, proxy)
    before = tree(tmp_path)
    start = time.monotonic()
    done = run_command("maml-train", *command, cwd=work, env=env, timeout=120)
    took = time.monotonic() - start
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("maml-train: error: could not get Omniglot through TensorFlow Datasets: ")
    assert "Traceback" not in done.stderr + done.stdout
    assert f"{tmp_path / 'tfds'}/downloads/manual/" in lines[0]
    assert took < WITHIN_S, f"took {took:.1f} s"
    assert tree(tmp_path) == before


class _Endless(BaseHTTPRequestHandler):
    """Any URL: 100 MB promised, a KB sent every 50 ms (a download in flight)."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(100 << 20))
        self.end_headers()
        try:
            for _ in range(100 << 10):
                self.wfile.write(b"x" * 1024)
                self.wfile.flush()
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


# maml-train's console entry point, with TFDS's URLs moved to the test's server
TRAIN_FROM = """
import sys
from maml_cli.data import omniglot_source
registered = omniglot_source.official_urls()
moved = {{url.replace({github!r}, {base!r}): info for url, info in registered.items()}}
omniglot_source.official_urls = lambda: moved
sys.argv = ["maml-train", *sys.argv[1:]]
from maml_cli.commands.entry import train
train()
"""


def test_maml_train_stopped_by_ctrl_c_during_a_download_leaves_nothing(home, tmp_path):
    data_dir = tmp_path / "tfds"
    with serving(_Endless) as base:
        command, work, env = _train_dry_run(tmp_path, {})
        before = tree(tmp_path)
        script = TRAIN_FROM.format(github=GITHUB, base=base)
        process = subprocess.Popen(
            [sys.executable, "-c", script, *command], cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            deadline = time.monotonic() + 120
            while not any(p.is_file() and p.stat().st_size for p in data_dir.rglob("*.tmp.*/*")):
                assert time.monotonic() < deadline and process.poll() is None, "the download never started"
                time.sleep(0.1)
            process.send_signal(signal.SIGINT)
            start = time.monotonic()
            _, stderr = process.communicate(timeout=30)
            took = time.monotonic() - start
        finally:
            process.kill()
    assert process.returncode == 130, stderr.decode()
    assert stderr.decode().strip().splitlines() == [
        "maml-train: stopped by SIGINT; nothing is half-written. Run the same command again to continue."
    ]
    assert took < 5
    assert tree(tmp_path) == before
