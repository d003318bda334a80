"""Running a study: the driver, each pipeline's phases on Ray Tune with Optuna, the trainable, the selection."""
