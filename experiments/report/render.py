"""Writing tables: Markdown for reading, CSV for tools, and `report.md` with them all."""

from __future__ import annotations

import csv
import os
import statistics
from collections.abc import Sequence

from experiments.report.tables import Cell, Table


def cell_markdown(cell: Cell) -> str:
    """The mean at the cell's digits, ±std where several runs share the cell."""
    if cell.value is None:
        return ""
    text = f"{cell.value:.{cell.digits}f}"
    if len(cell.finite) > 1:
        text += f"±{statistics.stdev(cell.finite):.{cell.digits}f}"
    return text


def cell_csv(cell: Cell) -> str:
    return "" if cell.value is None else f"{cell.value:.{max(cell.digits, 4)}f}"


def markdown(table: Table) -> str:
    lines = [f"## {table.title}", "", "| " + " | ".join(table.columns) + " |",
             "|" + "|".join("---" for _ in table.columns) + "|"]
    for row in table.rows:
        if isinstance(row, str):
            lines.append(f"| **{row}** |" + " |" * (len(table.columns) - 1))
            continue
        cells = [cell_markdown(c) if isinstance(c, Cell) else str(c) for c in row]
        lines.append("| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
    if table.notes:
        lines += [""] + [f"- {n}" for n in table.notes]
    return "\n".join(lines) + "\n"


def write_csv(table: Table, path: str) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(table.columns)
        for row in table.rows:
            if not isinstance(row, str):
                w.writerow([cell_csv(c) if isinstance(c, Cell) else str(c) for c in row])


def write(tables: Sequence[Table], out: str, *, num_runs: int, skipped: Sequence[str]) -> None:
    """`<key>.md` and `<key>.csv` per table and `report.md` with all of them under `out`."""
    os.makedirs(out, exist_ok=True)
    parts = ["# MANGO: our results beside the paper's", "",
             f"{num_runs} run(s). Our numbers are each run's 'test' split ('val' where it has "
             "no test); the paper's are copied from its text. Empty 'ours' cells: no run fits "
             "that row yet. Several runs in one cell: mean±std.", ""]
    if skipped:
        parts += ["Skipped:", ""] + [f"- {s}" for s in skipped] + [""]
    for table in tables:
        md = markdown(table)
        with open(os.path.join(out, f"{table.key}.md"), "w") as f:
            f.write(md)
        write_csv(table, os.path.join(out, f"{table.key}.csv"))
        parts.append(md)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(parts))
