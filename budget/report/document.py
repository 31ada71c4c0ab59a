"""Report documents: blocks (headings, text, lists, tables, figures) written once, rendered to Markdown and to a
self-contained HTML page that embeds its figures, so it can be mailed as one file; and annotation costs."""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from budget.errors import check_number


@dataclass
class Costs:
    """Annotation cost settings: seconds of annotator time per label, money per annotator hour."""

    seconds_per_label: float | None = None
    cost_per_hour: float | None = None

    def __post_init__(self) -> None:
        for key, value in (("seconds per label", self.seconds_per_label), ("cost per hour", self.cost_per_hour)):
            if value is not None:
                check_number(key, value, minimum=0)

    def short(self, labels: float) -> str:
        """``labels`` in annotator hours and money, for a table cell ('' without costs or labels)."""
        if self.seconds_per_label is None or not math.isfinite(labels):
            return ""
        hours = labels * self.seconds_per_label / 3600
        return f"{hours:,.1f} h" + (f", {hours * self.cost_per_hour:,.0f}" if self.cost_per_hour else "")

    def describe(self, labels: float) -> str:
        if self.seconds_per_label is None or math.isinf(labels):
            return ""
        hours = labels * self.seconds_per_label / 3600
        took = f"{labels:,.0f} labels take {hours:,.1f} annotator hours"
        if not self.cost_per_hour:
            return took
        return f"{took} and cost {hours * self.cost_per_hour:,.0f} at {self.cost_per_hour:g} per hour"


def _md_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


class Document:
    def __init__(self, title: str):
        self.title = title
        self.blocks: list[tuple[str, object]] = []

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def text(self, text: str) -> None:
        self.blocks.append(("p", text))

    def items(self, lines: list[str]) -> None:
        self.blocks.append(("ul", lines))

    def table(self, frame: pd.DataFrame) -> None:
        self.blocks.append(("table", frame))

    def figure(self, png: Path, caption: str) -> None:
        self.blocks.append(("img", (png, caption)))

    def markdown(self, folder: Path) -> str:
        out = [f"# {self.title}"]
        for kind, value in self.blocks:
            if kind == "h2":
                out.append(f"## {value}")
            elif kind == "p":
                out.append(str(value))
            elif kind == "ul":
                out.append("\n".join(f"- {line}" for line in value))
            elif kind == "table":
                out.append(_md_table(value))
            else:
                png, caption = value
                out.append(f"![{caption}]({png.relative_to(folder).as_posix()})\n\n*{caption}*")
        return "\n\n".join(out) + "\n"

    def html(self) -> str:
        style = (
            "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
            "table{border-collapse:collapse;margin:0.5rem 0}td,th{border:1px solid #bbb;padding:0.2rem 0.5rem;"
            "text-align:right}th{background:#eee}img{max-width:100%}figcaption{font-style:italic;color:#444}"
        )
        out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
               f"<style>{style}</style></head><body><h1>{html.escape(self.title)}</h1>"]  # fmt: skip
        for kind, value in self.blocks:
            if kind == "h2":
                out.append(f"<h2>{html.escape(value)}</h2>")
            elif kind == "p":
                out.append(f"<p>{html.escape(value)}</p>")
            elif kind == "ul":
                out.append("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in value) + "</ul>")
            elif kind == "table":
                out.append(value.to_html(index=False, border=0, escape=True))
            else:
                png, caption = value
                data = base64.b64encode(png.read_bytes()).decode()
                out.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(caption)}'>"
                           f"<figcaption>{html.escape(caption)}</figcaption></figure>")  # fmt: skip
        out.append("</body></html>")
        return "\n".join(out)


def provenance_section(doc: Document, provenance: dict, results_file: Path) -> None:
    """The provenance table a report ends with: every item the study recorded."""
    doc.heading("Provenance")
    flat = {k: (json.dumps(v) if isinstance(v, dict | list) else v) for k, v in provenance.items()}
    doc.table(pd.DataFrame({"item": list(flat), "value": [str(v) for v in flat.values()]}))
    doc.text(f"results: {results_file}")


def write(doc: Document, out: Path) -> Path:
    """``report.md`` and ``report.html`` of ``doc`` into ``out``; the HTML's path."""
    from budget import files

    files.write_text(out / "report.md", doc.markdown(out))
    files.write_text(out / "report.html", doc.html())
    return out / "report.html"
