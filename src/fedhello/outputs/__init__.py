"""Everything a run writes to its run directory: logs, CSV, TensorBoard, plots, summary."""

from fedhello.outputs.plots import (
    allocation_matrix,
    plot_allocation_heatmap,
    plot_fisher_scores,
    plot_layer_counts,
    plot_learning_curves,
    plot_partition,
)
from fedhello.outputs.run_writer import METRICS_CSV_COLUMNS, RunWriter, metrics_csv_row, read_jsonl
from fedhello.outputs.summary import (
    best_eval,
    format_bytes,
    format_cell,
    format_table,
    summary_table_rows,
    write_summary,
)

__all__ = [
    "METRICS_CSV_COLUMNS",
    "RunWriter",
    "allocation_matrix",
    "best_eval",
    "format_bytes",
    "format_cell",
    "format_table",
    "metrics_csv_row",
    "plot_allocation_heatmap",
    "plot_fisher_scores",
    "plot_layer_counts",
    "plot_learning_curves",
    "plot_partition",
    "read_jsonl",
    "summary_table_rows",
    "write_summary",
]
