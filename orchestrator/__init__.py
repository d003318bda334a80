"""The service around provpt_core: study files, Ray Tune, Optuna, MLflow and result tables.

Stages, each importing only those below it (import contracts in pyproject.toml):
``cli`` > ``execution`` (run a study) > ``report`` (tables, figures) > ``spec`` (what to run) |
``store`` (MLflow runs and records, agreeing through ``store.schema``). The core is entered only
through ``provpt_core``'s facade.
"""
