"""A report as a list of blocks, rendered to markdown (figures linked) and to one self-contained
HTML file (figures embedded as base64 PNG), so both say exactly the same thing."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
code, pre { background: #f6f6f6; font-family: ui-monospace, monospace; font-size: 0.88em; }
pre { padding: 0.6em; overflow-x: auto; }
img { max-width: 100%; }
figcaption { font-size: 0.85em; color: #555; }
"""


@dataclass
class Document:
    root: Path  # figure paths are relative to it in markdown
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", level, text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("paragraph", text))

    def bullets(self, items: list[str]) -> None:
        self.blocks.append(("bullets", items))

    def table(self, header: list[str], rows: list[list]) -> None:
        self.blocks.append(("table", header, [[str(c) for c in row] for row in rows]))

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))

    def figure(self, path: Path, caption: str) -> None:
        """A PNG this run wrote; a missing one is said, not skipped silently."""
        if Path(path).is_file():
            self.blocks.append(("figure", Path(path), caption))
        else:
            self.paragraph(f"(figure not written: {caption})")

    # --- rendering --------------------------------------------------------------------------------
    def markdown(self) -> str:
        out = []
        for kind, *rest in self.blocks:
            if kind == "heading":
                out.append("#" * rest[0] + " " + rest[1])
            elif kind == "paragraph":
                out.append(rest[0])
            elif kind == "bullets":
                out.append("\n".join(f"- {item}" for item in rest[0]))
            elif kind == "table":
                header, rows = rest
                lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                lines += ["| " + " | ".join(row) + " |" for row in rows]
                out.append("\n".join(lines))
            elif kind == "code":
                out.append("```bash\n" + rest[0] + "\n```")
            elif kind == "figure":
                path, caption = rest
                out.append(f"![{caption}]({path.relative_to(self.root).as_posix()})")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
               f"<style>{CSS}</style></head><body>"]  # fmt: skip
        for kind, *rest in self.blocks:
            if kind == "heading":
                out.append(f"<h{rest[0]}>{inline(rest[1])}</h{rest[0]}>")
            elif kind == "paragraph":
                out.append(f"<p>{inline(rest[0])}</p>")
            elif kind == "bullets":
                out.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in rest[0]) + "</ul>")
            elif kind == "table":
                header, rows = rest
                head = "".join(f"<th>{inline(h)}</th>" for h in header)
                body = "".join(
                    "<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in rows
                )
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif kind == "code":
                out.append(f"<pre><code>{html.escape(rest[0])}</code></pre>")
            elif kind == "figure":
                path, caption = rest
                data = base64.b64encode(path.read_bytes()).decode()
                out.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(caption)}'>"
                           f"<figcaption>{inline(caption)}</figcaption></figure>")  # fmt: skip
        out.append("</body></html>")
        return "\n".join(out) + "\n"


def inline(text: str) -> str:
    """Escape, then the markdown the report uses inline: `code` and **bold**."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
