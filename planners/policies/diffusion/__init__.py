"""The memory-conditioned diffusion action expert and its training (``engram train``).

- ``action_expert``: ``ActionExpert`` (the network), ``ActionExpertConfig``.
- ``noise``: ``NoiseSchedule`` (DDPM / DDIM, squared-cosine schedule).
- ``policy``: ``ActionExpertPolicy``, the expert as a ``Policy`` (save / load, by path
  or by a shipped checkpoint's name).
- ``features``: the shared tabletop state layout (one model for every task) and the
  hindsight subgoals it is conditioned on in planner mode.
- ``data``: demonstrations (LeRobotDataset v3, as ``engram sim collect`` writes them)
  -> ``Episode``s -> ``Demonstrations`` batches.
- ``checkpoint``: checkpoint files (atomic writes, format and config checks, the
  shipped safetensors checkpoints in ``checkpoints/``).
- ``rollout``: the expert driving a simulated task directly (validation, ``--harness env``).
- ``train``: ``train(...)``, ``TrainConfig`` and the ``engram train`` command.

The policy node (``engram.planners.policies.node``) runs the expert on the bus; a
launch graph chooses it with ``executor: expert``. Nothing heavy is imported here.
"""
