"""Multi-seed comparisons: a grid of runs (methods x partitions x ratios x seeds) and its report."""
