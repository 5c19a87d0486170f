"""How many requests a push costs: repositories the destination does not know yet get
no blob HEADs, and a run cut short does not make the next one trust that."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bundler.registry.journal import UploadJournal
from bundler.sandbox import LocalRegistry, make_image, push
from bundler.sandbox.images import random_layer

BUNDLER = [sys.executable, "-m", "bundler.cli"]


def mirror(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BUNDLER, "mirror", *args], capture_output=True, text=True,
                          timeout=120)


def test_a_mirror_into_an_empty_registry_asks_about_no_blob(
        registry_factory, tmp_path: Path) -> None:
    source, dest = registry_factory(), registry_factory()
    base = random_layer(301, 5000)
    images = {}
    for n in range(3):
        image = make_image([base, random_layer(310 + n, 3000 + n)])
        push(source, f"team/app{n % 2}", image, tag=f"v{n}")
        images[f"team/app{n % 2}:v{n}"] = image
    mark = dest.mark()
    done = mirror(*(f"{source.host}/{name}" for name in images), "--to",
                  f"{dest.host}/copy", "-q")
    assert done.returncode == 0, done.stderr
    log = dest.access_log(mark)
    assert [u for m, u, _ in log if m == "HEAD" and "/blobs/" in u] == []
    # the first image of each repository is asked for; once its repository is found
    # new, no other image of it is (team/app0:v2 is not)
    assert sorted(u for m, u, _ in log if m == "HEAD" and "/manifests/" in u) == [
        "/v2/copy/team/app0/manifests/v0", "/v2/copy/team/app1/manifests/v1"]
    # one tags/list per new repository tells it is new
    assert sorted(u for m, u, _ in log if "/tags/list" in u) == [
        "/v2/copy/team/app0/tags/list?n=1", "/v2/copy/team/app1/tags/list?n=1"]
    # the shared base layer is uploaded once and mounted into the other repository
    quoted = base.digest.replace(":", "%3A")
    assert len([u for m, u, _ in log if m == "PUT" and quoted in u]) == 1
    assert len([u for m, u, s in log if m == "POST" and f"mount={quoted}" in u
                and s == 201]) == 1
    for name, image in images.items():
        repository, tag = name.split(":")
        answer = dest.client().head(f"{dest.url}/v2/copy/{repository}/manifests/{tag}",
                                    headers={"Accept": image.media_type})
        assert answer.headers["Docker-Content-Digest"] == image.digest
    journal = UploadJournal(Path(os.environ["BUNDLER_STATE_DIR"]) / "uploads.json")
    assert not journal.unfinished(dest.host, "copy/team/app0")
    assert not journal.unfinished(dest.host, "copy/team/app1")
    # a dry run of the same into a new prefix records nothing
    planned = mirror(*(f"{source.host}/{name}" for name in images), "--to",
                     f"{dest.host}/other", "--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert not journal.unfinished(dest.host, "other/team/app0")


def test_a_run_killed_in_a_new_repository_leaves_the_next_run_asking(
        registry: LocalRegistry, registry_factory, fault_proxy, tmp_path: Path) -> None:
    """SIGKILL after the small blobs reached a repository the destination did not
    know: the repository still has no tag, but the rerun asks (HEAD) and uploads none
    of them again."""
    dest = registry_factory()
    small, big = random_layer(321, 4000), random_layer(322, 400_000)
    image = make_image([small, big])
    push(registry, "cut/app", image, tag="1")
    proxy = fault_proxy(registry.url)
    proxy.stall(big.digest, 1000, 60)  # the big layer never finishes in the first run
    args = [f"{proxy.host}/cut/app:1", "--to", f"{dest.host}/copy", "-q"]
    proc = subprocess.Popen([*BUNDLER, "mirror", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    quoted = {blob.digest: blob.digest.replace(":", "%3A") for blob in image.blobs}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        puts = [u for m, u, s in dest.access_log() if m == "PUT" and s == 201]
        if all(any(quoted[b.digest] in u for u in puts) for b in (small, image.config)):
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    journal = UploadJournal(Path(os.environ["BUNDLER_STATE_DIR"]) / "uploads.json")
    assert journal.unfinished(dest.host, "copy/cut/app")
    proxy.clear_rules()
    mark = dest.mark()
    done = mirror(*args)
    assert done.returncode == 0, done.stderr
    log = dest.access_log(mark)
    heads = sorted(u for m, u, _ in log if m == "HEAD" and "/blobs/" in u)
    assert heads == sorted(f"/v2/copy/cut/app/blobs/{b.digest}" for b in image.blobs)
    uploaded = [u for m, u, _ in log if m == "PUT" and "/blobs/uploads/" in u]
    assert [u for u in uploaded if quoted[small.digest] in u] == []
    assert [u for u in uploaded if quoted[image.config.digest] in u] == []
    assert len([u for u in uploaded if quoted[big.digest] in u]) == 1
    answer = dest.client().get(f"{dest.url}/v2/copy/cut/app/manifests/1",
                               headers={"Accept": image.media_type})
    assert answer.content == image.manifest_bytes
    assert not journal.unfinished(dest.host, "copy/cut/app")
    assert json.loads((Path(os.environ["BUNDLER_STATE_DIR"]) / "uploads.json").read_text()) \
        == {}


def test_a_listing_longer_than_the_limit_is_refused(registry: LocalRegistry,
                                                    monkeypatch) -> None:
    """A registry that pages for ever (a new page of new tags each time) must not keep a
    listing going without end: past LISTED_LIMIT entries it is an error naming it."""
    import bundler.registry.client as client_module
    from bundler.errors import RegistryError
    from bundler.registry.client import RegistryClient, TransportOptions

    image = make_image([random_layer(341, 1000)])
    for n in range(7):
        push(registry, "many/tags", image, tag=f"t{n}")
    with RegistryClient(registry.host, TransportOptions(tls_verify=False)) as client:
        assert sorted(client.list_tags("many/tags", page_size=2)) == [f"t{n}" for n in range(7)]
        monkeypatch.setattr(client_module, "LISTED_LIMIT", 5)
        mark = registry.mark()
        try:
            client.list_tags("many/tags", page_size=2)
        except RegistryError as exc:
            assert str(exc) == (f"tags of {registry.host}/many/tags: more than 5 entries, "
                                "the most bundler reads from one listing")
        else:
            raise AssertionError("the listing went past the limit")
        asked = [u for m, u, _ in registry.access_log(mark) if "/tags/list" in u]
        assert 1 <= len(asked) <= 3  # pages of 2, or the whole list if n is not honoured
