"""python -m resviz.prepare: downloads checked end to end against a loopback HTTP server serving files the test makes
(a good file, a bad hash, a truncated download, a server that stops answering), and nothing partial left behind."""
import hashlib
import http.server
import io
import tarfile
import threading
from types import SimpleNamespace

import pytest

from resviz import prepare
from resviz.inputs import weights

PAYLOAD = b"resviz test checkpoint " * 4096  # 94 KB: several reads, nothing like a real download


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    release = threading.Event()

    def do_GET(self):  # noqa: N802 - http.server's name
        name = self.path.rsplit("/", 1)[-1]
        if name.startswith("silent"):
            self.release.wait(30)  # never answers while the client waits
            return
        body = self.files.get(name)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if name.startswith("cut") else body)

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Handler.release.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}/files/"
    _Handler.release.set()
    server.shutdown()
    server.server_close()


def _item(mirror: str, name: str, body: bytes, digest: str | None = None) -> prepare.Download:
    _Handler.files[name] = body
    return prepare.Download(mirror + name, name, "sha256", digest or hashlib.sha256(body).hexdigest())


def test_a_good_file_arrives_checked(mirror, tmp_path):
    seen = []
    dest = prepare.fetch(_item(mirror, "good.pth", PAYLOAD), tmp_path / "good.pth",
                         progress=lambda got, total: seen.append((got, total)))
    assert dest.read_bytes() == PAYLOAD
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert [p.name for p in tmp_path.iterdir()] == ["good.pth"]


@pytest.mark.parametrize("name, digest, said", [
    ("bad.pth", "0" * 64, "not the published file"),
    ("cut.pth", None, "stopped after 47,104 of 94,208 bytes"),
    ("silent.pth", None, "could not download it"),
    ("missing.pth", None, "could not download it (HTTPError"),
])
def test_a_failed_download_says_why_and_leaves_nothing(mirror, tmp_path, name, digest, said):
    item = _item(mirror, name, PAYLOAD, digest) if name != "missing.pth" else prepare.Download(
        mirror + name, name, "sha256", "00")
    with pytest.raises(prepare.PrepareError, match="^" + name.replace(".", r"\.")) as e:
        prepare.fetch(item, tmp_path / name, timeout=0.5)
    assert said in str(e.value)
    assert list(tmp_path.iterdir()) == []  # no partial file, no temporary file
    assert str(tmp_path) not in str(e.value)


def test_weights_through_a_mirror_land_in_torch_hubs_cache(mirror, tmp_path, monkeypatch):
    """End to end: the checkpoint's name carries its hash prefix, as torchvision's do; the page then finds it."""
    name = f"tiny-{hashlib.sha256(PAYLOAD).hexdigest()[:8]}.pth"
    _Handler.files[name] = PAYLOAD
    fake = SimpleNamespace(url=f"https://download.pytorch.org/models/{name}")
    monkeypatch.setattr(weights, "pretrained_weights", lambda cfg: fake)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert not weights.is_cached(fake)
    said = prepare.prepare_weights("resnet18", mirror=mirror, progress=lambda *a: None)
    assert said.startswith("resnet18: downloaded and checked")
    assert weights.is_cached(fake) and weights.checkpoint_path(fake).read_bytes() == PAYLOAD
    assert prepare.prepare_weights("resnet18", mirror=mirror) == "resnet18: already here"


def test_a_mirrored_file_with_another_hash_is_refused(mirror, tmp_path, monkeypatch):
    name = "tiny-deadbeef.pth"  # the name promises a hash the bytes do not have
    _Handler.files[name] = PAYLOAD
    fake = SimpleNamespace(url=f"https://download.pytorch.org/models/{name}")
    monkeypatch.setattr(weights, "pretrained_weights", lambda cfg: fake)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(prepare.PrepareError, match="not the published file"):
        prepare.prepare_weights("resnet18", mirror=mirror, progress=lambda *a: None)
    assert not weights.is_cached(fake)


def test_cifar10_archive_is_checked_and_unpacked(mirror, tmp_path, monkeypatch):
    from torchvision import datasets

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        member = tarfile.TarInfo("cifar-10-batches-py/batches.meta")
        member.size = 5
        tar.addfile(member, io.BytesIO(b"hello"))
    archive = buf.getvalue()
    _Handler.files[datasets.CIFAR10.filename] = archive
    monkeypatch.setattr(datasets.CIFAR10, "tgz_md5", hashlib.md5(archive).hexdigest())
    said = prepare.prepare_dataset("CIFAR10", tmp_path, mirror=mirror, progress=lambda *a: None)
    assert said == "CIFAR10: downloaded, checked and unpacked"
    assert (tmp_path / "cifar-10-batches-py" / "batches.meta").read_bytes() == b"hello"
    assert not (tmp_path / datasets.CIFAR10.filename).exists()  # the archive is not kept


def test_the_command_offline_says_what_is_not_ready(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("RESVIZ_MIRROR", "http://127.0.0.1:9/")  # the discard port: refused at once
    assert prepare.main(["--weights", "resnet18", "--datasets", "--no-pairs", "--timeout", "2"]) == 1
    out = capsys.readouterr().out
    assert "weights resnet18" in out and "NOT READY: resnet18-f37072fd.pth: could not download it" in out
    assert "1 item(s) not ready" in out and str(tmp_path) not in out


def test_pairs_are_trained_only_when_missing(monkeypatch):
    from resviz import builtin_pair

    on_disk, trained = {"resnet20"}, []
    monkeypatch.setattr(builtin_pair, "load", lambda r: object() if r.cfg.name in on_disk else None)
    monkeypatch.setattr(builtin_pair, "train", lambda r, device: trained.append((r.cfg.name, device)))
    said = prepare.prepare_pairs(("resnet20", "resnet56"))
    assert trained == [("resnet56", "cpu")]
    assert said[0].endswith("already here") and said[1].endswith("trained")
