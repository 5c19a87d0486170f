"""export, import, mirror and copy are one engine (``PushRun``) over different stores.

Read from the source: every driver starts a ``PushRun``, over registries or over a
bundle (a layout, an OCI archive, a docker archive), and no driver moves a blob itself:
not the copy of an archive read once into a layout, not the docker-archive writer. The behaviour of each command is asserted by
its own end-to-end tests on real registries (test_export, test_import, test_mirror,
test_copy, test_archive, ...).
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import bundler
from bundler.engine.bundle_destination import BundleDestination
from bundler.engine.destination import (
    BlobMount,
    BlobStream,
    RegistryDestination,
    StagedManifests,
)
from bundler.engine.export_sources import ImageBlobs, StoreImage, StoreSource
from bundler.events import NullReporter
from bundler.registry.client import RegistryClient
from bundler.stores.archive_export import ArchiveExport
from bundler.stores.docker_archive_writer import DockerArchiveExport
from bundler.stores.layout import LayoutStore

ENGINE = Path(bundler.__file__).parent / "engine"
STORES = Path(bundler.__file__).parent / "stores"

#: the verbs that move content (a blob or a manifest) into or out of a store
MOVING = {"put_blob", "open_blob", "iter_blob", "stream_blob", "put_manifest", "mount_blob"}


def _calls(module: str, folder: Path = ENGINE, *, outside: tuple[str, ...] = ()) -> list[ast.Call]:
    """The calls in a module (leaving out the bodies of the functions ``outside``)."""
    tree = ast.parse((folder / f"{module}.py").read_text())
    skipped = {id(node) for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef)
               and fn.name in outside for node in ast.walk(fn)}
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and id(node) not in skipped]


def _name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _runs(module: str) -> list[str]:
    """The destination each ``PushRun(...)`` of a module is given: the class called,
    there or in the assignment of the name it is given."""
    tree = ast.parse((ENGINE / f"{module}.py").read_text())
    bound = {target.id: node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
             for target in node.targets if isinstance(target, ast.Name)}
    found = []
    for call in _calls(module):
        if _name(call) == "PushRun" and call.args:
            arg = call.args[0]
            arg = bound.get(arg.id, arg) if isinstance(arg, ast.Name) else arg
            found.append(_name(arg) if isinstance(arg, ast.Call) else "?")
    return found


def test_each_driver_starts_a_push_run_over_its_destination() -> None:
    assert _runs("exporting") == ["BundleDestination"]
    assert _runs("importing") == ["RegistryDestination"]
    assert _runs("archive_import") == ["RegistryDestination"]
    assert _runs("docker_export") == ["BundleDestination"]
    assert {_name(c) for c in _calls("mirroring")} >= {"push_images"}
    copy_calls = {_name(c) for c in _calls("copying")}
    assert copy_calls >= {"export_bundle", "export_from_store", "push_images",
                          "import_archive", "mirror_images", "feed_archive",
                          "copy_to_docker_archive"}
    # an archive read once into a layout or archive: an export run whose blobs the
    # archive feeds as its members go by, the same feed as the one-pass import
    assert "move" in {k.arg for c in _calls("copying") if _name(c) == "_from_store"
                      for k in c.keywords}
    assert "take" in {_name(c) for c in _calls("archive_import")}
    # export and import share the random-access driver
    assert "transfer" in {_name(c) for c in _calls("exporting")}
    assert "transfer" in {_name(c) for c in _calls("importing")}
    assert "transfer" in {_name(c) for c in _calls("docker_export")}


def test_no_driver_moves_a_blob_itself() -> None:
    for module in ("exporting", "importing", "mirroring", "archive_import", "copying"):
        assert {_name(c) for c in _calls(module)} & MOVING == set(), module
    # the docker-archive driver reads a config before the run (the diff_ids that
    # manifest.json names for zstd layers), and no other blob
    assert {_name(c) for c in _calls("docker_export", outside=("zstd_layers",))} \
        & MOVING == set()
    # blobs are placed in one place per destination kind: the ladder, which calls the
    # destination's put_blob, and the bundle destination, which calls its store's
    movers = {path.stem for path in ENGINE.glob("*.py")
              if "put_blob" in {_name(c) for c in _calls(path.stem)}}
    assert movers == {"ladder", "bundle_destination"}
    # an archive is read member by member only by the one-pass feed, the checks (an
    # archive's own, and verify --base of a compressed base: differential_check), the
    # receipt reader (the receipt at an archive's head) and inspect (one config)
    readers = {path.stem for path in ENGINE.glob("*.py")
               if "ArchiveReader" in {_name(c) for c in _calls(path.stem)}}
    assert readers == {"archive_import", "archive_check", "differential_check", "inspecting",
                       "receipts"}
    # the docker-archive writer takes each blob from the engine (put_blob's source), and
    # reads none itself
    assert {_name(c) for c in _calls("docker_archive_writer", STORES)} \
        & {"open_blob", "iter_blob", "stream_blob", "get_manifest"} == set()


def test_a_registry_and_a_bundle_offer_the_same_destination_verbs(tmp_path) -> None:
    layout = LayoutStore(tmp_path / "b", create=True)
    bundle = BundleDestination(layout, NullReporter())
    assert bundle.get("") is bundle
    for verb in ("resolve", "has_blob", "put_blob", "put_manifest"):
        ours = list(inspect.signature(getattr(BundleDestination, verb)).parameters)
        theirs = list(inspect.signature(getattr(RegistryClient, verb)).parameters)
        assert ours == theirs, verb
    for method in ("get", "plan"):
        assert (list(inspect.signature(getattr(BundleDestination, method)).parameters)
                == list(inspect.signature(getattr(RegistryDestination, method)).parameters))
    # optional abilities: a registry mounts; a bundle stores its manifests at the end
    assert issubclass(RegistryClient, BlobMount) and not isinstance(bundle, BlobMount)
    assert isinstance(bundle, StagedManifests)
    assert not issubclass(RegistryClient, StagedManifests)
    # an export's source streams a blob from an offset to the bundle, which checks it
    source = StoreSource(layout)
    blobs = source.for_image(StoreImage("x"))
    assert isinstance(blobs, ImageBlobs) and isinstance(blobs, BlobStream)


def test_a_docker_archive_is_a_bundle_store_as_an_oci_archive_is(tmp_path) -> None:
    """The docker-archive writer has the verbs of the other bundle stores, with the same
    parameters, and the ``start``/``position`` of the OCI archive writer."""
    for verb in ("has_blob", "put_blob", "put_manifest", "read_index", "write_index", "sync",
                 "position", "commit", "abort"):
        ours = list(inspect.signature(getattr(DockerArchiveExport, verb)).parameters)
        theirs = list(inspect.signature(getattr(ArchiveExport, verb)).parameters)
        assert ours == theirs, verb
    for verb in ("has_blob", "put_blob", "put_manifest", "read_index", "write_index", "sync"):
        assert (list(inspect.signature(getattr(DockerArchiveExport, verb)).parameters)
                == list(inspect.signature(getattr(LayoutStore, verb)).parameters)), verb
    archive = DockerArchiveExport(tmp_path / "d.tar")
    try:
        assert BundleDestination(archive, NullReporter()).get("") is not None
    finally:
        archive.abort()
    assert list(tmp_path.iterdir()) == []
