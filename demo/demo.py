"""bundler demo: registry -> one bundle -> a second registry, every digest preserved.

Starts two throwaway registries on 127.0.0.1, seeds the first with the standard image
set (shared base layers, a multi-arch index with attestations, a Docker schema2 image,
an image known only by digest, a signature artifact), then runs the real CLI:

    bundler export --images-file images.txt -o bundle
    bundler verify bundle
    bundler list bundle
    bundler import bundle --to 127.0.0.1:PORT/mirror

and checks with skopeo, independently of bundler, that each image has the same digest
in the destination as in the source. Exit status 0 when all match, 1 otherwise.
Everything (registries, temp directory) is cleaned up, also on Ctrl-C.
"""

from __future__ import annotations

import hashlib
import shlex
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from bundler import list_bundle
from bundler.sandbox import seed_standard_set, start_registry

BUNDLER = str(Path(sys.executable).parent / "bundler")  # the venv's console script


def run(workdir: Path, *args: str) -> None:
    """Echo a command as a user would type it, run it in ``workdir``, stop on failure."""
    print(f"\n$ {shlex.join(['bundler', *args])}", flush=True)
    done = subprocess.run([BUNDLER, *args], cwd=workdir)
    if done.returncode != 0:
        raise SystemExit(f"demo: 'bundler {args[0]}' failed with exit status {done.returncode}")


def manifest_digest(reference: str) -> str:
    """sha256 of the manifest bytes a registry serves for ``reference`` (read by skopeo)."""
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{reference}"],
        capture_output=True, check=False,
    )
    if raw.returncode != 0:
        return "(missing: " + raw.stderr.decode(errors="replace").strip().splitlines()[-1] + ")"
    return "sha256:" + hashlib.sha256(raw.stdout).hexdigest()


def mib(size: int) -> str:
    return f"{size / 1024 / 1024:.2f} MiB"


def demo(workdir: Path) -> bool:
    print("Starting two local registries on 127.0.0.1 ...")
    registries = []  # stopped in the finally block, whatever happens
    try:
        source = start_registry(workdir / "source-registry")
        registries.append(source)
        dest = start_registry(workdir / "destination-registry")
        registries.append(dest)
        seeded = seed_standard_set(source, scale=8)
        print(f"  source      {source.host}  seeded with {len(seeded.entries)} references")
        print(f"  destination {dest.host}  empty")

        images_file = workdir / "images.txt"
        images_file.write_text(
            "# one reference per line; tags and digests both work\n"
            + "".join(f"{ref}\n" for ref in seeded.references)
        )
        print(f"\n$ cat images.txt\n{images_file.read_text()}", end="")

        run(workdir, "export", "--images-file", "images.txt", "-o", "bundle")
        run(workdir, "verify", "bundle")
        run(workdir, "list", "bundle")
        run(workdir, "import", "bundle", "--to", f"{dest.host}/mirror")

        listing = list_bundle(workdir / "bundle")
        saved = listing.total_bytes - listing.unique_bytes
        pct = 100 * saved / listing.total_bytes if listing.total_bytes else 0
        print("\n=== Summary ===")
        print(f"images in bundle    {len(listing.images)}")
        print(f"unique bytes        {mib(listing.unique_bytes)} in {listing.blob_count} blobs")
        print(f"without dedup       {mib(listing.total_bytes)}")
        print(f"dedup saving        {mib(saved)} ({pct:.0f}%)")
        print("\nsource digest == destination digest (both read with skopeo, hashed here):")
        all_ok = True
        for entry in seeded.entries:
            suffix = f":{entry.tag}" if entry.tag else f"@{entry.digest}"
            want = manifest_digest(f"{source.host}/{entry.repository}{suffix}")
            got = manifest_digest(f"{dest.host}/mirror/{entry.repository}{suffix}")
            ok = want == got and want.startswith("sha256:")
            all_ok &= ok
            name = entry.repository + (f":{entry.tag}" if entry.tag else "@" + entry.digest[:19])
            name = name if len(name) <= 34 else name[:33] + "\u2026"
            print(f"  {'OK' if ok else 'MISMATCH':<8}  {name:<34}  {want[:19]}  "
                  f"{'==' if ok else '!='}  {got if not ok else got[:19]}")
        print(f"\n{'All digests preserved.' if all_ok else 'DIGEST MISMATCH: see above.'}")
        return all_ok
    finally:
        for registry in registries:
            registry.stop()


def main() -> int:
    # SIGTERM behaves like Ctrl-C so the finally blocks below always run.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        with tempfile.TemporaryDirectory(prefix="bundler-demo-") as tmp:
            return 0 if demo(Path(tmp)) else 1
    except KeyboardInterrupt:
        print("\ndemo interrupted; registries stopped and temp files removed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
