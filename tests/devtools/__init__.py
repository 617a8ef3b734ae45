"""Developer tools, not installed with dermaseg: the browser benchmark, the load test, the prompt-path profile.
Run from the repository: `PYTHONPATH=tests .venv/bin/python -m devtools.bench_browser --help`."""
