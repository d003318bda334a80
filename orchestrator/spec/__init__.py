"""What to run: the study schema, its search spaces, and the plan of pipelines it expands to."""
