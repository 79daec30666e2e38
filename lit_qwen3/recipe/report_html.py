"""``report.html``: ``report.md`` as one self-contained page, its figures embedded as base64 PNG,
so MLflow's artifact viewer (which shows HTML whole but prints a Markdown image link as text)
renders the report with Figure 2 in it.

The Markdown is the report's own small subset (headings, paragraphs, ``-`` lists, pipe tables,
``**bold**``, ``*italic*``, ``code``, images), converted here rather than through a Markdown
package the project does not otherwise need.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

__all__ = ["render_html"]

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 70em; margin: 1.5em auto; padding: 0 1em;
       line-height: 1.45; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
code { background: #f5f5f5; padding: 0 0.2em; }
img { max-width: 100%; }
"""


def _inline(text: str, directory: Path) -> str:
    """Escape a line of Markdown text and apply its inline marks; images are embedded."""
    images: list[str] = []

    def embed(match: re.Match[str]) -> str:
        alt, target = match.group(1), match.group(2)
        path = directory / target
        if path.is_file():
            data = base64.b64encode(path.read_bytes()).decode()
            images.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">')
        else:  # a missing figure is said so, not silently dropped
            images.append(f"<em>[{html.escape(alt)}: {html.escape(target)} missing]</em>")
        return f"\0{len(images) - 1}\0"

    text = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", embed, text)
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"(?<![*\w])\*([^*]+)\*(?![*\w])", r"<em>\1</em>", text)
    return re.sub(r"\0(\d+)\0", lambda m: images[int(m.group(1))], text)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def render_html(markdown: str, directory: Path, title: str = "lit-qwen3 pipeline report") -> str:
    """The page for ``markdown`` (the report's subset); images resolve against ``directory``."""
    out: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{_inline(line[level:].strip(), directory)}</h{level}>")
            i += 1
        elif line.lstrip().startswith("|"):
            rows = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            body = [r for r in rows[1:] if not all(set(c) <= set("-: ") for c in r)]
            head = "".join(f"<th>{_inline(c, directory)}</th>" for c in rows[0])
            cells = [
                "<tr>" + "".join(f"<td>{_inline(c, directory)}</td>" for c in row) + "</tr>"
                for row in body
            ]
            out.append(f"<table><tr>{head}</tr>{''.join(cells)}</table>")
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:], directory)}</li>")
                i += 1
            out.append(f"<ul>{''.join(items)}</ul>")
        else:
            paragraph = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("#", "|", "- ")):
                paragraph.append(lines[i])
                i += 1
            out.append(f"<p>{_inline(' '.join(paragraph), directory)}</p>")
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head>\n<body>\n" + "\n".join(out) + "\n</body></html>\n"
    )
