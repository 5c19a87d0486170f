"""Checking a YAML document node by node, every error kept with its line.

PyYAML's composed node tree keeps each node's position (``start_mark``); a
:class:`NodeChecker` reads mappings, strings, booleans and regexes from it and records
``FILE:LINE: message`` for each problem instead of stopping at the first, so that a user
fixes a file in one go.

Spec: YAML 1.1 (PyYAML's ``compose``; core schema tags ``str``, ``int``, ``bool``).
"""

from __future__ import annotations

import yaml

from .tagfilter import FilterError, compile_regex

__all__ = ["NodeChecker"]


class NodeChecker:
    """Checks the nodes of a YAML document, collecting every error with its line.

    Args:
        path: the file's name, for ``FILE:LINE``.

    Attributes:
        errors: ``FILE:LINE: message`` each, in the order found.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.errors: list[str] = []

    def at(self, node: yaml.Node) -> str:
        return f"{self.path}:{node.start_mark.line + 1}"

    def error(self, node: yaml.Node, message: str) -> None:
        self.errors.append(f"{self.at(node)}: {message}")

    def mapping(self, node: yaml.Node, what: str) -> list[tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{what} must be a mapping")
            return []
        seen: set[str] = set()
        pairs = []
        for key, value in node.value:
            name = self.string(key, f"a key of {what}")
            if name is None:
                continue
            if name in seen:
                self.error(key, f"{name!r} given twice in {what}")
                continue
            seen.add(name)
            pairs.append((key, value))
        return pairs

    def string(self, node: yaml.Node, what: str, *, allow_number: bool = False) -> str | None:
        if isinstance(node, yaml.ScalarNode) and (node.tag.endswith(":str") or (
                allow_number and node.tag.endswith((":int", ":float")))):
            return str(node.value)
        self.error(node, f"{what} must be a string")
        return None

    def strings(self, node: yaml.Node, what: str) -> list[str]:
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        out = []
        for item in items:
            text = self.string(item, what, allow_number=True)
            if text is not None:
                out.append(text)
        return out

    def boolean(self, node: yaml.Node, what: str) -> bool | None:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":bool"):
            return node.value.lower() in ("true", "yes", "on", "y")
        self.error(node, f"{what} must be true or false")
        return None

    def regexes(self, node: yaml.Node, what: str) -> tuple[str, ...]:
        out = []
        for text in self.strings(node, what):
            try:
                compile_regex(text, what)
            except FilterError as exc:
                self.error(node, str(exc))
                continue
            out.append(text)
        return tuple(out)

    def unknown(self, key: yaml.Node, name: str, known: set[str], what: str) -> None:
        self.error(key, f"unknown key {name!r} in {what} (known: "
                        f"{', '.join(sorted(known))})")
