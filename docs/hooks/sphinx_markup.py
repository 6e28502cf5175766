"""A Griffe extension for the API reference: the docstrings' reStructuredText markup, rendered.

rnnlab's docstrings use Google-style sections with two pieces of Sphinx markup that no mkdocstrings docstring
style renders: cross-reference roles (``:class:`~rnnlab.nn.cells.Cell```, ``:func:`train``` ...) and mathematics
(``:math:`h_t``` inline, ``.. math::`` blocks). Before mkdocstrings parses a docstring, this extension rewrites

* a role into an optional cross-reference (``<autoref identifier=... optional>``): a link where the target is in
  the reference, plain code where it is not (torch's classes, private helpers), so a strict build never fails on
  one; a name without a module is looked up beside the object (its class, then its module);
* mathematics into MathML (``latex2mathml``), which browsers draw themselves: the site loads no script from
  another host. An expression the converter refuses stays as code, with a warning on the build's log.

Loaded by ``mkdocs.yml`` (the python handler's ``extensions``); :func:`convert` is the whole transformation.
"""

from __future__ import annotations

import html
import logging
import re
from typing import Any

import griffe

log = logging.getLogger("mkdocs.plugins.rnnlab.sphinx_markup")

ROLE = re.compile(r":(class|func|meth|mod|data|attr|exc|obj):`(~?)([^`<]+?)(?:\s*<([^`>]+)>)?`")
MATH = re.compile(r":math:`([^`]+)`")
EXTERNAL = ("torch", "numpy", "np", "matplotlib", "sklearn", "scipy", "safetensors", "fastapi", "starlette",
            "pydantic", "typing", "collections", "tqdm")  # packages whose dotted names are taken as they are
BLOCK = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<first>.*)$")


def _mathml(tex: str, block: bool) -> str:
    """``tex`` as one line of MathML; the TeX itself as code if the converter refuses it."""
    from latex2mathml.converter import convert as to_mathml

    body = tex.strip()
    if block and ("&" in body or r"\\" in body):
        body = r"\begin{align*}" + body + r"\end{align*}"  # Sphinx aligns a multi-line block the same way
    try:
        out = to_mathml(body, display="block" if block else "inline")
    except Exception as e:  # noqa: BLE001 - any refusal: show the TeX
        log.warning("sphinx_markup: cannot convert %r to MathML (%s); shown as code", tex, e)
        return f"<code>{html.escape(tex)}</code>"
    # one line, and nothing Markdown would read as emphasis or an escape inside the tags
    return out.replace("\n", "").replace("*", "&#42;").replace("_", "&#95;").replace("\\", "&#92;")


def _target(kind: str, name: str, where: str, in_class: str | None, imported: dict[str, str]) -> str:
    """The identifier a role names: a dotted ``rnnlab...`` path as it is; a name its module imported, where it
    was defined (``imported``: name -> path); else a name beside ``where`` (its class first, for a method)."""
    if name.startswith("rnnlab") or "." in name and name.split(".")[0] in EXTERNAL:
        return name
    first, _, rest = name.partition(".")
    if first in imported:
        return imported[first] + (f".{rest}" if rest else "")
    if kind in ("meth", "attr") and in_class and "." not in name:
        return f"{in_class}.{name}"
    return f"{where}.{name}"


def convert(text: str, where: str = "rnnlab", in_class: str | None = None,
            imported: dict[str, str] | None = None) -> str:
    """A docstring's roles and mathematics rewritten (see the module's docstring). ``where``: the module the
    docstring belongs to; ``in_class``: its class's path, for ``:meth:`` and ``:attr:`` without one;
    ``imported``: the names the module imported, each with the path where it is defined."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = BLOCK.match(lines[i])
        if m is None:
            out.append(lines[i])
            i += 1
            continue
        indent = m["indent"]
        body = [m["first"]] if m["first"].strip() else []
        i += 1
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(indent)):
            body.append(lines[i].strip())
            i += 1
        while body and not body[-1]:
            body.pop()
        out += ["", indent + _mathml(" ".join(body), block=True), ""]
    text = "\n".join(out)
    text = MATH.sub(lambda m: _mathml(m[1], block=False), text)

    def role(m: re.Match[str]) -> str:
        kind, short, shown, explicit = m[1], m[2], m[3].strip(), m[4]
        name = (explicit or shown).strip().rstrip("()")
        target = _target(kind, name, where, in_class, imported or {})
        title = shown if explicit else (name.rsplit(".", 1)[-1] if short else name)
        if kind in ("func", "meth") and not explicit:
            title += "()"
        return f'<autoref identifier="{html.escape(target)}" optional><code>{html.escape(title)}</code></autoref>'

    return ROLE.sub(role, text)


class SphinxMarkup(griffe.Extension):
    """Rewrites every docstring of the loaded package (:func:`convert`) once the whole package is loaded, when
    every module's imports are known."""

    def on_package(self, *, pkg: Any, **kwargs: Any) -> None:  # griffe >= 1.7 (griffelib 2)
        self._walk(pkg, {})

    def _walk(self, obj: Any, imported: dict[str, str]) -> None:
        if obj.is_alias:
            return
        if obj.is_module:
            imported = {name: m.target_path for name, m in obj.members.items() if m.is_alias}
        if obj.docstring is not None:
            module = obj.path if obj.is_module else obj.module.path
            parent = obj.parent
            in_class = obj.path if obj.is_class else (parent.path if parent is not None and parent.is_class else None)
            obj.docstring.value = convert(obj.docstring.value, module, in_class, imported)
        for member in obj.members.values():
            self._walk(member, imported)
