"""The service around provpt_core: study files, Ray Tune, Optuna, MLflow and result tables."""
