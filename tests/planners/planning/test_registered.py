"""The planning package's registry entries: skills, planners and the task-free recipes."""

from __future__ import annotations

import pytest

from engram.planners.planning.node import PlannerNodeConfig, make_planner
from engram.planners.planning.planner import RuleBasedPlanner, recipe_for
from engram.planners.planning.recipes import GenericRecipe, Recipe, TourRecipe
from engram.planners.planning.skills.base import Skill, make_skill
from engram.runtime import registry

SKILLS = (
    "lift",
    "look_for",
    "navigate_to",
    "pick",
    "place",
    "press",
    "push",
    "wait",
    "watch",
)


def test_every_skill_is_registered_under_its_own_name():
    assert tuple(registry.known("skill")) == SKILLS
    for name in SKILLS:
        skill = make_skill(name)
        assert isinstance(skill, Skill) and skill.name == name
    with pytest.raises(KeyError, match="known: lift"):
        make_skill("juggle")


def test_planners_are_built_from_the_node_config():
    assert registry.known("planner") == ["llm", "rule"]
    assert isinstance(make_planner(PlannerNodeConfig()), RuleBasedPlanner)
    with pytest.raises(ValueError, match="reasoner_url"):
        make_planner(PlannerNodeConfig(planner="llm"))
    with pytest.raises(ValueError, match="known"):
        make_planner(PlannerNodeConfig(planner="oracle"))


def test_every_task_and_the_task_free_recipes_have_a_recipe():
    assert isinstance(recipe_for("tour"), TourRecipe)
    assert isinstance(recipe_for("generic"), GenericRecipe)
    for task in registry.known("task"):
        assert isinstance(recipe_for(task), Recipe)
