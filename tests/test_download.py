"""MNIST download against HTTP servers on 127.0.0.1: a good mirror, one that serves other bytes,
one that drops the connection mid-file, and none at all. The real test files of ../shared are
served for the end-to-end run, so their published MD5s are what is checked."""

import hashlib
import shutil
import threading
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ldm import download
from ldm.errors import LdmError
from stage_scripts import assert_one_line_error, run_inline

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


class Handler(BaseHTTPRequestHandler):
    """Serves `files` (name: bytes); `behaviour` "good", "corrupt" (every byte flipped) or "drop"
    (announces the whole file, sends half and closes)."""

    def __init__(self, files, behaviour, *args, **kwargs):
        self.files, self.behaviour = files, behaviour
        super().__init__(*args, **kwargs)

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        if name not in self.files:
            self.send_error(404)
            return
        body = self.files[name]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.behaviour == "corrupt":
            body = bytes(b ^ 0xFF for b in body)
        elif self.behaviour == "drop":
            body = body[:len(body) // 2]
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    servers = []

    def start(files: dict[str, bytes], behaviour: str = "good") -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, files, behaviour))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/mnist/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    """A URL nothing listens on: a port bound and released again."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    return f"http://127.0.0.1:{port}/"


FILES = {"a.gz": b"first file " * 1000, "b.gz": bytes(range(256)) * 64}
CHECKSUMS = {name: hashlib.md5(body).hexdigest() for name, body in FILES.items()}


def test_a_good_mirror_gives_every_file_checked(serve, tmp_path, monkeypatch):
    monkeypatch.setenv(download.MIRROR_ENV, serve(FILES))
    fetched = download.download_mnist(tmp_path / "data", CHECKSUMS, progress=False)
    assert fetched == [tmp_path / "data" / name for name in FILES]
    assert all((tmp_path / "data" / name).read_bytes() == body for name, body in FILES.items())
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted(FILES)  # no temporary left
    assert download.download_mnist(tmp_path / "data", CHECKSUMS, progress=False) == []  # present: not fetched again


@pytest.mark.parametrize("behaviour", ["corrupt", "drop"])
def test_a_bad_mirror_is_passed_over_for_the_next(serve, tmp_path, monkeypatch, behaviour):
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    monkeypatch.setattr(download, "MIRRORS", (serve(FILES, behaviour), serve(FILES)))
    download.download_mnist(tmp_path, CHECKSUMS, progress=False)
    assert all((tmp_path / name).read_bytes() == body for name, body in FILES.items())


@pytest.mark.parametrize("behaviour", ["corrupt", "drop", "no server"])
def test_no_good_mirror_is_one_error_naming_the_file_and_leaves_nothing(serve, tmp_path, monkeypatch, behaviour):
    url = closed_port_url() if behaviour == "no server" else serve(FILES, behaviour)
    monkeypatch.setenv(download.MIRROR_ENV, url)
    with pytest.raises(LdmError) as error:
        download.download_mnist(tmp_path, CHECKSUMS, progress=False)
    message = str(error.value)
    assert message.startswith("a.gz: could not be downloaded") and url in message and "DATA=" in message
    assert {"corrupt": "MD5", "drop": "closed", "no server": "refused"}[behaviour] in message
    assert list(tmp_path.iterdir()) == []  # no temporary file


def test_prepare_data_fetches_the_missing_files_and_reads_them(serve, tmp_path, monkeypatch):
    """The real MNIST test files, served locally, pass their published checksums; the training
    files are already there and are not fetched."""
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        shutil.copy(SHARED / name, data / name)
    url = serve({name: (SHARED / name).read_bytes() for name in ("t10k-images-idx3-ubyte.gz",
                                                                  "t10k-labels-idx1-ubyte.gz")})
    monkeypatch.setenv(download.MIRROR_ENV, url)
    result = run_inline("prepare_data", "--data-dir", data, "--download", "--out", tmp_path / "data.json")
    assert result.returncode == 0, result.stderr
    assert "test: 10000 images" in result.stdout and (tmp_path / "data.json").is_file()
    assert sorted(p.name for p in data.iterdir()) == sorted(download.MNIST_FILES)


def test_prepare_data_offline_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(download.MIRROR_ENV, closed_port_url())
    result = run_inline("prepare_data", "--data-dir", tmp_path / "data", "--download", "--out", tmp_path / "data.json")
    assert_one_line_error(result, "train-images-idx3-ubyte.gz: could not be downloaded", "DATA=")
    assert not (tmp_path / "data.json").exists() and not (tmp_path / "data").exists()  # no folder left either
