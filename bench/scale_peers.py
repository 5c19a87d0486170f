"""The peers of ``bench_scale.py --peers``: how a skopeo, crane or regctl user moves N
images, for the per-image figures next to bundler's.

Each peer does two steps on the list of N references, each timed as one command:

* export: into ONE OCI layout directory (crane: one ``crane pull --format oci
  --annotate-ref REF... DIR``; skopeo: a loop of ``skopeo copy --all docker://REF
  oci:DIR:NAME``; regctl: a loop of ``regctl image copy REF ocidir://DIR:TAG``);
* mirror: registry to registry on empty storage, a loop of one copy per image
  (``skopeo copy --all``, ``crane copy``, ``regctl image copy``).

None of them has one command for a list of images to copy between registries, so a
loop is how their users do it (``skopeo sync`` needs a YAML of its own and copies
whole repositories). At 20,000 images each loop takes hours on this machine, so the
benchmark runs peers only up to ``--peer-max`` images.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

TOOLS_BIN = Path(__file__).resolve().parent.parent / ".tools" / "bin"
PEERS = ("skopeo", "crane", "regctl")
PEER_STEPS = ("export", "mirror")


def peer_binary(name: str) -> str | None:
    """The peer's program, or None when it is not installed or built here."""
    if name == "skopeo":
        return shutil.which("skopeo")
    path = TOOLS_BIN / name
    return str(path) if os.access(path, os.X_OK) else None


def _tag(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)


def _script(path: Path, commands: list[list[str]]) -> list[str]:
    path.write_text("set -e\n" + "\n".join(shlex.join(c) for c in commands) + "\n")
    return ["sh", str(path)]


class ScalePeer:
    """One peer's commands on a list of ``host/repository:tag`` references."""

    def __init__(self, name: str, work: Path) -> None:
        binary = peer_binary(name)
        if binary is None:
            raise FileNotFoundError(name)
        self.name, self.binary, self.work = name, binary, work
        self.env = dict(os.environ, HOME=str(work / "home"))  # regctl's configuration
        (work / "home").mkdir(parents=True, exist_ok=True)

    def allow_http(self, host: str) -> None:
        """Tell the peer ``host`` is plain http (regctl keeps it in its configuration)."""
        if self.name == "regctl":
            subprocess.run([self.binary, "registry", "set", "--tls", "disabled", host],
                           env=self.env, check=True, stdout=subprocess.DEVNULL)

    def export(self, refs: list[str], layout: Path) -> list[str]:
        if self.name == "crane":
            return [self.binary, "pull", "--insecure", "--format", "oci", "--annotate-ref",
                    *refs, str(layout)]
        per: Callable[[str], list[str]] = {
            "skopeo": lambda r: [self.binary, "copy", "-q", "--all", "--src-tls-verify=false",
                                 f"docker://{r}", f"oci:{layout}:{r.split('/', 1)[1]}"],
            "regctl": lambda r: [self.binary, "image", "copy", r,
                                 f"ocidir://{layout}:{_tag(r.split('/', 1)[1])}"],
        }[self.name]
        return _script(self.work / f"{self.name}-export.sh", [per(r) for r in refs])

    def mirror(self, refs: list[str], dest: str) -> list[str]:
        def target(ref: str) -> str:
            return f"{dest}/copy/{ref.split('/', 1)[1]}"

        per: Callable[[str], list[str]] = {
            "skopeo": lambda r: [self.binary, "copy", "-q", "--all", "--src-tls-verify=false",
                                 "--dest-tls-verify=false", f"docker://{r}",
                                 f"docker://{target(r)}"],
            "crane": lambda r: [self.binary, "copy", "--insecure", r, target(r)],
            "regctl": lambda r: [self.binary, "image", "copy", r, target(r)],
        }[self.name]
        return _script(self.work / f"{self.name}-mirror.sh", [per(r) for r in refs])
