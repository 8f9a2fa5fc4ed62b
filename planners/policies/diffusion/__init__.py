"""The memory-conditioned diffusion action expert and its training (``engram train``).

- ``action_expert``: ``ActionExpert`` (the network), ``ActionExpertConfig``.
- ``noise``: ``NoiseSchedule`` (DDPM / DDIM, squared-cosine schedule).
- ``policy``: ``ActionExpertPolicy``, the expert as a ``Policy`` (save / load).
- ``data``: demonstrations on disk -> ``Episode``s -> ``Demonstrations`` batches.
- ``checkpoint``: checkpoint files (atomic writes, format check).
- ``train``: ``train(...)``, ``TrainConfig`` and the ``engram train`` command.

In the evaluated tasks the skill controllers produce the ActionChunks, not this expert
(``engram.planners.planning.skills.base`` says why). Nothing heavy is imported here.
"""
