"""Where results are kept: MLflow runs and the output folder's records, agreeing through `schema`."""
