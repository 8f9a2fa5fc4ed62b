"""Policies: what turns observations into ``ActionChunk``s, behind one ``Policy`` base.

- ``engram.planners.policies.base``: ``Policy`` (``reset`` / ``act`` / ``observe`` / ``close``).
- ``engram.planners.policies.scripted``: the simulator's scripted ``ExpertPolicy``, the
  memoryless ``ReactivePolicy``, ``StopPolicy``, ``run_episode`` (registered as policies
  ``expert``, ``reactive``, ``stop``: the sim node's drivers).
- ``engram.planners.policies.diffusion``: the memory-conditioned diffusion action expert
  (network, noise schedule, ``ActionExpertPolicy`` = policy ``action_expert``,
  demonstrations, checkpoints, ``engram train``).

- ``engram.planners.policies.node``: ``PolicyNode`` (node type ``policy``): the action
  expert on the bus, executing the planner's subgoals or the instruction end to end.

Nothing heavy is imported here.
"""
