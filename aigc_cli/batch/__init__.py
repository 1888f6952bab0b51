"""`aigc batch`: JSONL jobs (jobs.py) run through the core (run.py), here (local.py) or on Ray Data
(ray_runner.py)."""
