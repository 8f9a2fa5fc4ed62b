"""The planner's skill library, by family: ``base`` (``Skill``, ``WorldView``, ``Verdict``,
``make_skill``), ``arm``, ``mobile``, ``observe``. Skills are registered under kind
``skill`` in ``engram.planners.register``."""
