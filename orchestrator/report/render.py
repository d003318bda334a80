"""A table as Markdown, HTML (what the MLflow UI shows), LaTeX and long-form CSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from orchestrator.report.frames import replace_atomically
from orchestrator.report.model import FLAG, Table


def to_markdown(table: Table) -> str:
    header = ["", *(c.title for c in table.columns)]
    lines = [f"### {table.title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.rows:
        label = f"*{row.label}*" if row.kind in ("published", "delta", "readout") else row.label
        lines.append("| " + " | ".join([label, *(row.cells[c.id].text() for c in table.columns)]) + " |")
    lines += ["", *table.notes]
    return "\n".join(lines) + "\n"


HTML_STYLE = (
    "<style>table{border-collapse:collapse;font:13px sans-serif}caption{font-weight:bold;text-align:left;padding:4px}"
    "td,th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right;white-space:nowrap}td:first-child,th:first-child{text-align:left}"
    "tr.other td{color:#666;font-style:italic}p{font:12px sans-serif;color:#444}</style>"
)


def to_html(table: Table) -> str:
    from html import escape

    head = "".join(f"<th>{escape(c.title)}</th>" for c in table.columns)
    body = []
    for row in table.rows:
        kind = ' class="other"' if row.kind in ("published", "delta", "readout") else ""
        cells = "".join(f"<td>{escape(row.cells[c.id].text())}</td>" for c in table.columns)
        body.append(f"<tr{kind}><td>{escape(row.label)}</td>{cells}</tr>")
    notes = "".join(f"<p>{escape(note)}</p>" for note in table.notes)
    return (
        f"<!doctype html><meta charset=\"utf-8\">{HTML_STYLE}<table><caption>{escape(table.title)}</caption>"
        f"<thead><tr><th></th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{notes}\n"
    )


TEX = {
    "\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"$<$", ">": r"$>$", "±": r"$\pm$", "−": "$-$",
    "×": r"$\times$", "≥": r"$\geq$", "≤": r"$\leq$", "…": r"\ldots{}", FLAG: r"$^\dagger$",
}


def tex(text: str) -> str:
    """Text as LaTeX source: special characters escaped, the few symbols tables use as math,
    any other non-ASCII character dropped with a visible '?'."""
    return "".join(TEX.get(ch, ch if ord(ch) < 128 else "?") for ch in text)


def to_latex(table: Table) -> str:
    """A `table` float with its caption and label (`tab:<name>`), scaled down to the line width
    when wider, the notes below; needs booktabs and graphicx."""
    spec = "l" + "r" * len(table.columns)
    lines = [
        r"% provpt tables; needs \usepackage{booktabs,graphicx}",
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{" + tex(table.title) + "}",
        r"\label{tab:" + table.name.replace("_", "-") + "}",
        r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
        r"\begin{tabular}{" + spec + "}",
        r"\toprule",
        " & ".join(["", *(tex(c.title) for c in table.columns)]) + r" \\",
        r"\midrule",
    ]
    for row in table.rows:
        label = tex(row.label) if row.kind not in ("published", "delta", "readout") else r"\quad\textit{" + tex(row.label) + "}"
        lines.append(" & ".join([label, *(tex(row.cells[c.id].text()) for c in table.columns)]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}"]
    if table.notes:
        lines += [r"\par\smallskip", r"{\footnotesize", *(tex(n) + r"\par" for n in table.notes), "}"]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def frame_markdown(frame: pd.DataFrame, digits: int = 4) -> str:
    """A data frame as a Markdown table (floats to `digits` significant figures, missing empty)."""

    def text(value) -> str:
        if value is None or (isinstance(value, float) and value != value):
            return ""
        return f"{value:.{digits}g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(text(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def frame_html(frame: pd.DataFrame, caption: str, digits: int = 4) -> str:
    """A data frame as a styled HTML table with a caption (what the MLflow UI shows)."""
    from html import escape

    body = frame.to_html(index=False, float_format=f"%.{digits}g", border=0, na_rep="")
    return f"<!doctype html><meta charset=\"utf-8\">{HTML_STYLE}<p><b>{escape(caption)}</b></p>{body}\n"


CSV_COLUMNS = ["table", "row", "kind", "method", "column", "title", "value", "std", "seeds", "state", "note", "grade", "text"]


def to_frame(table: Table) -> pd.DataFrame:
    """The table in long form, one row per cell, numbers as numbers."""
    records = [
        {
            "table": table.name,
            "row": row.label,
            "kind": row.kind,
            "method": row.method,
            "column": column.id,
            "title": column.title,
            "value": cell.value,
            "std": cell.std,
            "seeds": cell.seeds,
            "state": cell.state,
            "note": cell.note,
            "grade": cell.grade,
            "text": cell.text(),
        }
        for row in table.rows
        for column in table.columns
        for cell in [row.cells[column.id]]
    ]
    return pd.DataFrame(records, columns=CSV_COLUMNS)


def write_table(table: Table, folder: Path, latex: bool = True) -> list[Path]:
    paths = [folder / f"{table.name}.{suffix}" for suffix in ("md", "html", "csv")] + ([folder / f"{table.name}.tex"] if latex else [])
    write_text(paths[0], to_markdown(table))
    write_text(paths[1], to_html(table))
    write_text(paths[2], to_frame(table).to_csv(index=False, float_format="%.10g"))
    if latex:
        write_text(paths[3], to_latex(table))
    return paths


def write_text(path: Path, text: str) -> None:
    replace_atomically(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))
