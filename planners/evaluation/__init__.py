"""Evaluation (``engram eval``): task success with and without memory, memory QA.

- ``pipeline``: ``Pipeline``, the ``launch/sim_full.yaml`` graph clocked in lockstep;
  ``EvalConfig`` (sizes, overriding the graph's params), ``make_memory_node``.
- ``tasks``: ``evaluate_tasks``, ``evaluate_lifelong``, tables and BENCH.md JSON.
- ``memory_qa``: questions about the past, memory vs a flat keyframe store vs none.
- ``cli``: the ``engram eval`` command.
"""
