"""Planning and acting: the closed-loop planner, its skills, critic and evaluation.

Public surface (import from the submodules; nothing heavy is imported here):

- ``engram.planners.planning``: the closed-loop planner grounded in memory: ``plans``
  (``Subgoal``, ``Plan``, ``PlanDecision``), ``memory_client``, ``grounding``, ``recipes``,
  ``planner`` (``Planner``, ``RuleBasedPlanner``, ``detect_task``), ``reasoner`` (optional
  ``LLMPlanner``), ``loop`` (``ClosedLoop``), ``critic``, ``skills`` (the skill library),
  ``node`` (``PlannerNode``, node type ``planner``).
- ``engram.planners.policies``: the one ``Policy`` base (``base``), the scripted
  ``expert`` / ``reactive`` / ``stop`` policies the sim runs (``scripted``), and the
  memory-conditioned diffusion action expert with ``engram train`` (``diffusion``).
- ``engram.planners.evaluation``: ``engram eval``: ``pipeline`` (``Pipeline``, the
  ``launch/sim_full.yaml`` graph in lockstep), ``tasks`` (task success with / without
  memory, lifelong attempts), ``memory_qa`` (``engram eval memory-qa``), ``cli``.
"""
