"""Apps used by the README and the benchmark (bench/run.py): hello, fastapi_app, echo."""
