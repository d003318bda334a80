"""What the results say: parquet frames, scores, statistics, coverage, cost, tables and figures."""
