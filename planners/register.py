"""What the planners register (``engram.runtime.registry``; loaded through the
``engram.register`` entry points)."""

from engram.runtime.command import Command
from engram.runtime.registry import register

register("node", "planner", "engram.planners.planning.node:PlannerNode")
register("node", "policy", "engram.planners.policies.node:PolicyNode")

# policies (kind "policy"): what the sim node's driver and ``engram sim`` run
register("policy", "expert", "engram.planners.policies.scripted:ExpertPolicy")
register("policy", "reactive", "engram.planners.policies.scripted:ReactivePolicy")
register("policy", "stop", "engram.planners.policies.scripted:StopPolicy")
register("policy", "action_expert", "engram.planners.policies.diffusion.policy:ActionExpertPolicy")

# `engram` subcommands
register(
    "command",
    "train",
    Command(
        "engram.planners.policies.diffusion.train", "train the memory-conditioned action expert"
    ),
)
register(
    "command",
    "eval",
    Command(
        "engram.planners.evaluation.cli",
        "evaluate task success or memory QA (JSON as bench/README.md)",
    ),
)

_PLANNING = "engram.planners.planning"
for _name, _target in {
    "look_for": "skills.observe:LookFor",
    "wait": "skills.observe:Wait",
    "watch": "skills.observe:Watch",
    "navigate_to": "skills.mobile:NavigateTo",
    "pick": "skills.arm:Pick",
    "lift": "skills.arm:Lift",
    "place": "skills.arm:PlaceSkill",
    "push": "skills.arm:Push",
    "press": "skills.arm:Press",
}.items():
    register("skill", _name, f"{_PLANNING}.{_target}")
register("planner", "rule", f"{_PLANNING}.planner:RuleBasedPlanner")
register("planner", "llm", f"{_PLANNING}.reasoner:LLMPlanner")
register("recipe", "tour", f"{_PLANNING}.recipes:TourRecipe")
register("recipe", "generic", f"{_PLANNING}.recipes:GenericRecipe")
