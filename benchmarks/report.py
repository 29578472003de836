"""A sweep's outputs as one page to look at: ``<out>/index.html``.

Self-contained on purpose: the plots are embedded as data URIs, so the file can be mailed, attached
to a CI run or opened from an archive on its own; only the links to each job's run directory
(``runs/<id>/metrics.json``, ``curves.png``) need the rest of ``<out>`` beside it. The page is
derived only from what the sweep already wrote (the tables' markdown, the PNGs, the records), so
``--report`` rebuilds it and any suite (accuracy or perf) gets one.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from urllib.parse import quote

from promptgen.runs.curves import PNG as CURVES
from promptgen.files import read_json_or_none, write_text

TABLES = ("table.md", "pairs.md", "methods.md", "stability.md", "domain_gap.md")
TITLED = ("table.md", "pairs.md")  # files whose text (headings, legends) is shown: the others' is table.md's
FIRST_PLOTS = ("table.png", "stability.png")
INDEX = "index.html"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f0f0f0; }
td.right, th.right { text-align: right; } td.center, th.center { text-align: center; }
img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; }
.ok { color: #17702a; } .failed { color: #b00020; } .muted { color: #666; }
"""

# After load, count the images that decoded: a headless browser (tests/test_report.py) reads these two
# attributes off the dumped DOM to tell a page whose plots show from one with broken images.
SCRIPT = """
window.addEventListener("load", function () {
  var images = document.images, loaded = 0;
  for (var i = 0; i < images.length; i++) { if (images[i].naturalWidth > 0) { loaded++; } }
  document.body.dataset.imagesLoaded = String(loaded);
  document.body.dataset.images = String(images.length);
});
"""


def write_report(out: Path) -> Path:
    """Write ``<out>/index.html`` from the outputs in ``out``; returns its path."""
    out = Path(out)
    summary = read_json_or_none(out / "summary.json")
    summary = summary if isinstance(summary, dict) else {}
    title = str(summary.get("title") or summary.get("suite") or out.name)  # title: the suite narrowed by --dataset
    body = [f"<h1>{_e(title)}</h1>"]
    facts = [f"{key} {summary[key]}" for key in ("jobs", "ok", "failed", "missing", "rows", "seconds")
             if key in summary]
    if facts:
        body.append(f'<p class="muted">{_e(", ".join(facts))}</p>')
    body += _tables(out)
    body += _plots(out)
    records = _records(out)
    if records:
        body += _curves(out, records)
        body += _jobs(out, records)
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{_e(title)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n" + "\n".join(body) + f"\n<script>{SCRIPT}</script>\n"
            "</body>\n</html>\n")
    return write_text(out / INDEX, page)


def _e(text) -> str:
    return html.escape(str(text), quote=True)


# --- the tables: the pipe tables the project writes, with the title lines above them --------------------------------

def _cells(line: str) -> list[str]:
    line = line.strip()
    line = line[1:] if line.startswith("|") else line
    line = line[:-1] if line.endswith("|") and not line.endswith("\\|") else line
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line)]


def _inline(text: str) -> str:
    """Escaped text with the markdown the tables use: **bold** and `code`."""
    text = _e(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def _table_html(lines: list[str]) -> str:
    header, rows = _cells(lines[0]), [_cells(line) for line in lines[1:]]
    align = []
    if rows and all(re.fullmatch(r":?-+:?", cell) for cell in rows[0]):
        spec = rows.pop(0)
        align = ["center" if c.startswith(":") and c.endswith(":") else "right" if c.endswith(":") else ""
                 for c in spec]

    def row(cells, tag):
        html_cells = []
        for index, cell in enumerate(cells):
            css = f' class="{align[index]}"' if index < len(align) and align[index] else ""
            html_cells.append(f"<{tag}{css}>{_inline(cell)}</{tag}>")
        return "<tr>" + "".join(html_cells) + "</tr>"

    return ("<table>\n<thead>" + row(header, "th") + "</thead>\n<tbody>\n"
            + "\n".join(row(cells, "td") for cells in rows) + "\n</tbody>\n</table>")


def _blocks(text: str) -> list[tuple[str, list[str]]]:
    """("table", lines) and ("text", lines) blocks, in order; blank lines end a text block."""
    blocks: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        kind = "table" if line.lstrip().startswith("|") else "text" if line.strip() else None
        if kind is None:
            blocks.append(("blank", []))
        elif blocks and blocks[-1][0] == kind:
            blocks[-1][1].append(line)
        else:
            blocks.append((kind, [line]))
    return [block for block in blocks if block[0] != "blank"]


def _text_html(lines: list[str]) -> str:
    items = [line for line in lines if line.startswith("- ")]
    rest = [line for line in lines if not line.startswith("- ")]
    parts = [f"<p>{'<br>'.join(_inline(line) for line in rest)}</p>"] if rest else []
    if items:
        parts.append("<ul>" + "".join(f"<li>{_inline(item[2:])}</li>" for item in items) + "</ul>")
    return "\n".join(parts)


def _tables(out: Path) -> list[str]:
    # table.md already repeats methods.md (and stability.md, domain_gap.md when written): each table once. Its
    # pairs.md section (benchmarks.compare: the pairwise matrices, headings and legends) gets a section of its own.
    # Within one file every table shows, equal ones too: a search's selection methods can agree cell for cell, and
    # each heading needs its table under it.
    pairs = out / "pairs.md"
    elsewhere = ({"\n".join(lines) for _, lines in _blocks(pairs.read_text(encoding="utf-8"))} if pairs.is_file()
                 else set())
    seen: set[str] = set()
    parts = []
    for name in TABLES:
        path = out / name
        if not path.is_file():
            continue
        earlier = set(seen)  # the tables of the files before this one
        blocks = _blocks(path.read_text(encoding="utf-8"))
        if name == "table.md":
            blocks = [block for block in blocks if "\n".join(block[1]) not in elsewhere]
        new = [b for b in blocks if b[0] == "table" and "\n".join(b[1]) not in earlier]
        if not new:
            continue
        html_blocks = []
        for kind, lines in blocks:
            if kind == "table":
                key = "\n".join(lines)
                if key not in earlier:
                    seen.add(key)
                    html_blocks.append(_table_html(lines))
            elif name in TITLED:  # the other files' only text is what table.md already titled
                html_blocks.append(_text_html(lines))
        parts.append(f"<section>\n<h2>{_e(name)}</h2>\n" + "\n".join(html_blocks) + "\n</section>")
    return parts


# --- the plots, embedded ------------------------------------------------------------------------------------------

def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _plots(out: Path) -> list[str]:
    names = [n for n in FIRST_PLOTS if (out / n).is_file()]
    names += sorted(p.name for p in out.glob("*.png") if p.is_file() and p.name not in FIRST_PLOTS)
    if not names:
        return []
    return ["<section>\n<h2>plots</h2>\n" + "\n".join(
        f"<h3>{_e(name)}</h3>\n{_image(out / name, name)}" for name in names) + "\n</section>"]


# --- the jobs: one training-curve plot per method, and every job with links into its run directory ----------------

def _records(out: Path) -> list[dict]:
    """Job records (records/<id>.json with a job), in the table's method order; perf suites have none."""
    records = [r for r in map(read_json_or_none, sorted((out / "records").glob("*.json")))
               if isinstance(r, dict) and isinstance(r.get("job"), dict) and r["job"].get("id")]
    order = []
    csv = out / "table.csv"
    if csv.is_file():
        order = [line.split(",")[0] for line in csv.read_text(encoding="utf-8").splitlines()[1:] if line]
    rank = {method: index for index, method in enumerate(order)}
    return sorted(records, key=lambda r: rank.get(r["job"].get("method"), len(rank)))


def _href(job_id: str, name: str) -> str:
    return _e(f"runs/{quote(job_id)}/{name}")


def _curves(out: Path, records: list[dict]) -> list[str]:
    parts, without = [], []
    for method in dict.fromkeys(r["job"].get("method") for r in records):
        finished = [r for r in records if r["job"].get("method") == method and r.get("status") == "ok"]
        shown = next((r for r in finished if (out / "runs" / r["job"]["id"] / CURVES).is_file()), None)
        if shown is None:
            without.append(str(method))
            continue
        job_id = shown["job"]["id"]
        parts.append(f"<h3>{_e(method)}</h3>\n<p class=\"muted\">{_e(job_id)}</p>\n"
                     f"{_image(out / 'runs' / job_id / CURVES, f'{method}: {job_id}')}")
    if without:
        parts.append(f'<p class="muted">no per-epoch history: {_e(", ".join(without))}</p>')
    return ["<section>\n<h2>training curves</h2>\n" + "\n".join(parts) + "\n</section>"]


def _jobs(out: Path, records: list[dict]) -> list[str]:
    rows = []
    for record in records:
        job = record["job"]
        job_id = str(job["id"])
        status = str(record.get("status", "?"))
        links = [f'<a href="{_href(job_id, name)}">{_e(name)}</a>'
                 for name in ("metrics.json", CURVES) if (out / "runs" / job_id / name).is_file()]
        accuracy = record.get("test_accuracy")
        score = ", ".join(f"{domain} {100 * value:.1f}" for domain, value in accuracy.items()
                          if isinstance(value, (int, float))) if isinstance(accuracy, dict) else ""
        rows.append(f"<tr><td>{_e(job_id)}</td><td>{_e(job.get('method', ''))}</td><td>{_e(job.get('seed', ''))}</td>"
                    f"<td>{_e(', '.join(job.get('targets') or ()))}</td>"
                    f"<td class=\"{_e(status)}\">{_e(status)}</td><td>{_e(score or record.get('error', ''))}</td>"
                    f"<td>{' '.join(links)}</td></tr>")
    return ["<section>\n<h2>jobs</h2>\n<table>\n<thead><tr><th>job</th><th>method</th><th>seed</th><th>targets</th>"
            "<th>status</th><th>test accuracy (%) / error</th><th>run</th></tr></thead>\n<tbody>\n"
            + "\n".join(rows) + "\n</tbody>\n</table>\n</section>"]
