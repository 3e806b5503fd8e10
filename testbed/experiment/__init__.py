"""Fault-injection experiments: a plan of fault rules x axes x seeds x repeats, run against a client and judged.

plan (the model and matrix), explore (plans from a baseline run), cell (one run), executors (local
processes, Dask), runner (results.jsonl, resume, flaky), shrink (ddmin), report (HTML, JUnit).
"""
