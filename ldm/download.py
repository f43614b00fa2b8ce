"""MNIST fetched with the standard library: the four IDX files from the mirrors torchvision uses,
each checked against its published MD5 before it is kept.

A file is streamed into a temporary file beside its destination and renamed into place only once
its checksum matches, so a killed or failed download leaves nothing behind and is simply redone.
A mirror that cannot be reached, drops the connection or serves other bytes is passed over for
the next; when none has the file, one error names it and says how to use local files instead.
`LDM_MNIST_MIRROR` replaces the mirror list (a URL ending in "/"; the tests serve files from a
local server that way).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from .errors import LdmError
from .outputs import folder_made_for

# torchvision's mirrors, in its order
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
MIRROR_ENV = "LDM_MNIST_MIRROR"
# the published MD5 of each file of the original distribution
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
TIMEOUT_SECONDS = 30
CHUNK = 1 << 16


def mirrors() -> tuple[str, ...]:
    """The mirrors to try, in order: LDM_MNIST_MIRROR alone when it is set."""
    override = os.environ.get(MIRROR_ENV)
    return (override if override.endswith("/") else override + "/",) if override else MIRRORS


def fetch(url: str, destination: Path, md5: str, progress: bool = True) -> None:
    """Download `url` to `destination` if its MD5 is `md5`; raise OSError (unreachable, dropped
    connection) or ValueError (other bytes) otherwise, leaving no file."""
    handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent)
    try:
        digest, received = hashlib.md5(), 0
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            total = response.length  # None when the server does not say
            with tqdm(total=total, unit="B", unit_scale=True, desc=destination.name, leave=False,
                      disable=not progress) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            if total is not None and received != total:  # a connection closed early without an error
                raise OSError(f"connection closed after {received} of {total} bytes")
        if digest.hexdigest() != md5:
            raise ValueError(f"MD5 {digest.hexdigest()}, expected {md5}")
        os.replace(temporary, destination)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def download_mnist(data_dir: str | os.PathLike, files: dict[str, str] = MNIST_FILES, progress: bool = True) -> list[Path]:
    """Fetch each of `files` (name: MD5) missing from `data_dir`; return the paths fetched."""
    data_dir = Path(data_dir)
    fetched = []
    if not files:
        return fetched
    with folder_made_for(data_dir):  # removed again if nothing could be fetched into it
        for name, md5 in files.items():
            _fetch_missing(data_dir, name, md5, progress, fetched)
    return fetched


def _fetch_missing(data_dir: Path, name: str, md5: str, progress: bool, fetched: list[Path]) -> None:
    """Fetch `name` into `data_dir` from the first mirror that has it, unless it is there."""
    destination = data_dir / name
    if destination.is_file():
        return
    problems = []
    for mirror in mirrors():
        try:
            fetch(mirror + name, destination, md5, progress)
            break
        except (OSError, ValueError, http.client.HTTPException) as e:  # URLError and timeouts are OSErrors
            reason = e.reason if isinstance(e, urllib.error.URLError) else e
            problems.append(f"{mirror}: {reason}")
    else:
        raise LdmError(f"{name}: could not be downloaded ({'; '.join(problems)}); without a network, put the "
                       f"four MNIST files in a folder and run with DATA=/that/folder")
    print(f"downloaded {destination} (MD5 checked)")
    fetched.append(destination)
