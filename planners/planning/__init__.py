"""Closed-loop planning grounded in memory (RoboMemory's planner, critic and loop guard).

- ``plans``: ``Subgoal``, ``Plan``, ``PlanDecision``.
- ``memory_client``: ``MemoryClient`` (recall over the bus; disabled = no-memory ablation).
- ``grounding``: ``Grounding`` (the questions plans ask memory; shortest routes over places),
  ``layout_key``.
- ``recipes``: ``Recipe`` base, ``PlanContext``, ``choose``, the ``tour`` / ``generic``
  recipes and ``GoToRecipe``; each task's recipe is in its ``engram.sim.tasks`` module.
- ``planner``: ``Planner`` (ABC), ``RuleBasedPlanner``, ``detect_task``.
- ``reasoner``: the optional ``LLMPlanner`` over an OpenAI-compatible endpoint.
- ``loop``: ``ClosedLoop``, the executive (plan -> act -> critic -> replan).
- ``critic``: ``Critic``, ``LoopDetector``.
- ``skills``: the skill library (``skills.base``, ``arm``, ``mobile``, ``observe``, ``scene``).
- ``node``: ``PlannerNode`` (node type ``planner``), ``PlannerNodeConfig``.

Skills, planners and the ``tour`` / ``generic`` recipes are registered in
``engram.planners.register``.
"""
