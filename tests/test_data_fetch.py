"""`dfkd data fetch`: the real download path (pooch over HTTP, OpenML's description then its ARFF
file, KEEL's zip, MNIST's IDX files) against a server on 127.0.0.1 that serves the public
sources' formats, made here from the local copies in ../shared/datasets; and the faults: a
corrupted file, a truncated one, a table that is not the expected one, a server that never
answers. Each fault is one line, exit 2, and nothing left in data_dir."""

from __future__ import annotations

import csv
import gzip
import hashlib
import http.server
import io
import json
import socket
import threading
import zipfile
from pathlib import Path

import pytest

from conftest import SHARED_DATA, dfkd_here
from dfkd_cli.data import fetch

pytestmark = pytest.mark.skipif(not SHARED_DATA.is_dir(),
                                reason="needs ../shared/datasets (the local copies)")
NOMINAL = {"mv": ("X3", "X7", "X8")}  # columns OpenML holds as categories


def arff(name: str) -> bytes:
    """The local copy of `name` as OpenML's ARFF: lower-case attribute names, the values as the
    CSV writes them, and the categorical columns as nominal attributes."""
    with gzip.open(SHARED_DATA / f"{name}.csv.gz", "rt") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    nominal = NOMINAL.get(name, ())
    lines = [f"% {name}, as served in the test", f"@relation '{name}'", ""]
    for i, column in enumerate(header):
        if column in nominal:
            levels = sorted({int(row[i]) for row in body})
            lines.append(f"@attribute {column.lower()} {{{','.join(f'c{v}' for v in levels)}}}")
        else:
            lines.append(f"@attribute {column.lower()} numeric")
    lines += ["", "@data"]
    for row in body:
        lines.append(",".join(f"c{int(v)}" if header[i] in nominal else v
                              for i, v in enumerate(row)))
    return ("\n".join(lines) + "\n").encode()


def keel_zip(name: str) -> bytes:
    """The local copy as KEEL's archive: <name>.zip holding <name>.dat, ARFF with ranges."""
    with gzip.open(SHARED_DATA / f"{name}.csv.gz", "rt") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    lines = [f"@relation {name}"]
    lines += [f"@attribute {c} real [0.0, 100.0]" for c in header]
    lines += [f"@inputs {', '.join(header[:-1])}", f"@outputs {header[-1]}", "@data"]
    lines += [", ".join(row) for row in body]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr(f"{name}.dat", "\n".join(lines) + "\n")
    return out.getvalue()


def site(tables: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """Every path the sources ask for -> its bytes; `tables` replaces some datasets' ARFF."""
    pages = {}
    for name, source in fetch.SOURCES.items():
        if source.kind == "openml":
            data = (tables or {}).get(name) or arff(name)
            file_id = 9000 + int(source.ident)
            pages[f"/api/v1/json/data/{source.ident}"] = json.dumps({"data_set_description": {
                "id": source.ident, "name": name, "format": "ARFF", "file_id": str(file_id),
                "md5_checksum": hashlib.md5(data).hexdigest()}}).encode()
            pages[f"/data/v1/download/{file_id}"] = data
        elif source.kind == "keel":
            pages[f"/dataset/data/regression/{source.ident}.zip"] = keel_zip(name)
    for path in (SHARED_DATA / "mnist").iterdir():
        pages[f"/mnist/{path.name}"] = path.read_bytes()
    return pages


class Server:
    """An HTTP server on 127.0.0.1 in a thread: `pages` (path -> bytes); `fault` changes what
    it sends: "truncate" (half the body, the full length announced), "silent" (never answers)."""

    def __init__(self, pages: dict[str, bytes], fault: str | None = None):
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = owner.pages.get(self.path.split("?")[0])
                if owner.fault == "silent":
                    owner.release.wait(30)
                    return
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:len(body) // 2] if owner.fault == "truncate" else body)

            def log_message(self, *args):
                pass

        self.pages, self.fault, self.release = pages, fault, threading.Event()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def env(self) -> dict[str, str]:
        return {"DFKD_OPENML_URL": self.url, "DFKD_KEEL_URL": self.url,
                "DFKD_MNIST_URL": f"{self.url}/mnist"}

    def __enter__(self) -> "Server":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def pages() -> dict[str, bytes]:
    return site()


def test_the_recorded_checksums_are_the_local_copies():
    """The SHA-256 each table is checked against is that of the copy the configs were measured
    on; MNIST's files are the published ones."""
    for name, source in fetch.SOURCES.items():
        if source.kind in ("openml", "keel"):
            assert fetch.checksum(SHARED_DATA / f"{name}.csv.gz") == source.sha256, name
    assert fetch.present(fetch.SOURCES["mnist"], SHARED_DATA) == "ok"


def test_fetch_all_from_the_public_formats(tmp_path, pages):
    """OpenML's ARFF (lower-case names, categories as nominal values), KEEL's zip and MNIST's
    files become the tables the configs read, value for value; a second fetch keeps them."""
    with Server(pages) as server:
        proc = dfkd_here("data", "fetch", "all", "--data-dir", "data", cwd=tmp_path,
                         env=server.env())
        again = dfkd_here("data", "fetch", "cpusmall", "mnist", "--data-dir", "data",
                          cwd=tmp_path, env=server.env())
    data = tmp_path / "data"
    assert sorted(p.name for p in data.iterdir()) == sorted(
        [f"{n}.csv.gz" for n in fetch.ALL if n != "mnist"] + ["mnist"])
    for name in ("compactiv", "cpusmall", "mv", "pole", "puma32h"):
        assert fetch.read_csv_rows(data / f"{name}.csv.gz") == \
            fetch.read_csv_rows(SHARED_DATA / f"{name}.csv.gz"), name
    for path in (SHARED_DATA / "mnist").iterdir():
        assert (data / "mnist" / path.name).read_bytes() == path.read_bytes()
    assert proc.stdout.count("checksum ok") == 5 and "checksums ok" in proc.stdout
    assert again.stdout.count("is there already") == 2
    listed = dfkd_here("data", "list", "--data-dir", "data", cwd=tmp_path).stdout
    assert [line.split()[1] for line in listed.splitlines()] == \
        ["ok"] * 6 + ["missing", "missing"]


def test_a_fetched_table_trains(tmp_path, pages):
    """The fetched CSV is what `dataset=cpusmall` reads from the default data_dir (./data)."""
    from conftest import make_config
    from dfkd_cli.data.datasets import load_table

    with Server(pages) as server:
        dfkd_here("data", "fetch", "cpusmall", cwd=tmp_path, env=server.env())
    cfg = make_config("train_teacher", ["dataset=cpusmall", f"data_dir={tmp_path / 'data'}"])
    table = load_table(cfg.dataset, cfg.data_dir)
    assert table.x.shape == (8192, 12) and table.targets == ["usr"]


def _refused(tmp_path, server: Server, *names: str, timeout: str = "20"):
    proc = dfkd_here("data", "fetch", *names, "--data-dir", "data", "--timeout", timeout,
                     cwd=tmp_path, env=server.env(), check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 2 and lines[1].startswith("dfkd data: error: "), proc.stderr
    assert not (tmp_path / "data").exists(), list((tmp_path / "data").rglob("*"))
    return lines[1]


def test_a_corrupted_file_is_refused(tmp_path, pages):
    """One byte changed after OpenML's MD5 was taken: pooch refuses it, nothing is kept."""
    changed = dict(pages)
    path = next(p for p in changed if p.startswith("/data/v1/download/"))
    body = bytearray(changed[path])
    body[len(body) // 2] ^= 0x01
    changed[path] = bytes(body)
    with Server(changed) as server:
        line = _refused(tmp_path, server, "all")
    assert "not the published one" in line


def test_a_truncated_download_is_refused(tmp_path, pages):
    with Server(pages, fault="truncate") as server:
        line = _refused(tmp_path, server, "pole")
    assert "cannot download" in line and "pole.zip" in line


def test_another_table_is_refused_by_its_checksum(tmp_path, pages):
    """A file that is what its server says (its MD5 holds) but not the expected table: one row
    changed upstream. The CSV's SHA-256 catches it before anything is written."""
    text = arff("cpusmall").decode().replace("\n6,2,1036,", "\n7,2,1036,", 1).encode()
    with Server(site({"cpusmall": text})) as server:
        line = _refused(tmp_path, server, "cpusmall")
    assert "is not the table dfkd expects" in line


def test_a_server_that_never_answers(tmp_path, pages):
    with Server(pages, fault="silent") as server:
        line = _refused(tmp_path, server, "mnist", timeout="0.5")
    assert "no answer within 0.5 s" in line


def test_a_file_in_the_way_is_kept(tmp_path, pages):
    """data_dir already holds another table under the name: refused, the file left as it was."""
    (tmp_path / "data").mkdir()
    mine = tmp_path / "data" / "cpusmall.csv.gz"
    mine.write_bytes(gzip.compress(b"a,b\n1,2\n3,4\n"))
    with Server(pages) as server:
        proc = dfkd_here("data", "fetch", "cpusmall", "--data-dir", "data", cwd=tmp_path,
                         env=server.env(), check=False)
    assert proc.returncode == 2 and "holds another table" in proc.stderr
    assert gzip.decompress(mine.read_bytes()) == b"a,b\n1,2\n3,4\n"
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["cpusmall.csv.gz"]


@pytest.mark.parametrize("args, expected", [
    (["nope"], "unknown dataset 'nope'; valid: all, compactiv"),
    (["protein"], "protein: no public copy"),
    (["cpusmall", "--timeout", "0"], "--timeout 0: expected a number of seconds > 0"),
])
def test_bad_requests_are_one_line(tmp_path, args, expected):
    proc = dfkd_here("data", "fetch", *args, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and expected in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "data").exists()


def test_no_server_at_all(tmp_path):
    """Nothing listening at the address (a machine offline): one line, within seconds."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = dfkd_here("data", "fetch", "cpusmall", cwd=tmp_path, check=False,
                     env={"DFKD_OPENML_URL": f"http://127.0.0.1:{port}"})
    assert proc.returncode == 2 and "no connection to the server" in proc.stderr
