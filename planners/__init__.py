"""Planning and acting: the closed-loop planner, its skills, critic and evaluation.

Public surface (import from the submodules; nothing heavy is imported here):

- ``engram.planners.planner``: ``Planner`` (ABC), ``RuleBasedPlanner`` (default, no LLM),
  ``Subgoal``, ``Plan``, ``Decision``, ``ClosedLoop`` (plan -> act -> critic ->
  replan), ``MemoryClient`` and ``Grounding`` (questions answered from memory),
  ``layout_key``, ``detect_task``.
- ``engram.planners.skills``: the skill library (``SKILLS``, ``make_skill``, ``Skill``,
  ``SkillConfig``), ``WorldView`` / ``ObjectView`` (what a skill may read),
  ``SceneMonitor``, ``Verdict``, ``resolve_label``, ``estimate_yaw``.
- ``engram.planners.critic``: ``Critic``, ``LoopDetector``, ``LoopConfig``.
- ``engram.planners.reasoner``: optional LLM planning over an OpenAI-compatible endpoint
  (``OpenAIReasoner``, ``LLMPlanner``).
- ``engram.planners.node``: ``PlannerNode`` (node type ``planner``), ``PlannerNodeConfig``.
- ``engram.planners.evaluate``: ``engram eval`` (task success with / without memory,
  lifelong attempts), ``Pipeline`` (the lockstep graph); ``engram.planners.memory_qa``:
  ``engram eval memory-qa``.
- ``engram.planners.action_expert``, ``engram.planners.diffusion``, ``engram.planners.train``,
  ``engram.planners.policy``: the memory-conditioned diffusion action expert and
  ``engram train``.
"""
