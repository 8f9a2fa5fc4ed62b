"""An optional LLM reasoner behind an interface, over an OpenAI-compatible HTTP endpoint.

The default planner (``engram.planners.planning.planner.RuleBasedPlanner``) needs no language model.
With a local server on the user's machine (llama.cpp ``server``, vLLM, Ollama, LM
Studio: anything that answers ``POST <url>/v1/chat/completions``) the ``LLMPlanner``
asks it for the plan and, after a failure, for the rest of the plan:

- the prompt lists the skill library (names, arguments, what each does), the
  objects in view (labels, positions), what memory recalls for the instruction,
  and, when replanning, the failed subgoal and the critic's reason;
- the model must answer with JSON ``{"steps": [{"skill": ..., "args": {...}}, ...]}``
  (a fenced ``json`` block is accepted); every step is validated against the skill
  library before it is used;
- anything wrong (no server, timeout, HTTP error, no JSON, an unknown skill) falls
  back to the rule-based planner, and the reason is kept in ``Plan.facts``.

Decisions (``decide`` steps: which cup, what order) stay with the rule-based
recipes, which answer them from memory.

Only the standard library is used (``urllib``); no API key is needed for a local
server (``api_key`` adds an ``Authorization: Bearer`` header when set).
"""

from __future__ import annotations

import json
import logging
import re
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from typing import Any

from engram.planners.planning.planner import Planner, RuleBasedPlanner, detect_task
from engram.planners.planning.plans import Plan, Subgoal
from engram.planners.planning.recipes import PlanContext
from engram.planners.planning.skills.base import Verdict
from engram.runtime import registry

__all__ = ["LLMPlanner", "OpenAIReasoner", "Reasoner", "ReasonerError", "parse_steps"]

log = logging.getLogger(__name__)

_SKILL_HELP = {
    "look_for": "object: bring it into view (arm moves out of the way, base turns)",
    "navigate_to": "target: [x, y] (m), stop_m: stand-off: drive the base there",
    "pick": "object: grasp it from above and lift it",
    "place": "object, and on: a label or target: [x, y]: put the held object down",
    "push": "object, direction: [dx, dy], distance_m: push it along the table",
    "lift": "object, height_m: grasp it and raise it",
    "press": "object: press a push button once",
    "wait": "duration_s: stay still",
    "watch": "until: still | hidden:<label> | gone:<prefix> | lights_off: watch a show",
}


class ReasonerError(RuntimeError):
    """The reasoner could not answer (connection, HTTP status, malformed reply)."""


class Reasoner(ABC):
    """A chat model: a list of messages in, the assistant's text out."""

    @abstractmethod
    def complete(self, messages: list[dict[str, str]]) -> str:
        """``messages``: [{"role": "system" | "user" | "assistant", "content": str}]."""


class OpenAIReasoner(Reasoner):
    """``POST <url>/v1/chat/completions`` (OpenAI-compatible), standard library only.

    ``url`` is the server's base (``http://127.0.0.1:8080``); a URL already ending in
    ``/chat/completions`` is used as is.
    """

    def __init__(
        self,
        url: str,
        *,
        model: str = "local",
        timeout_s: float = 30.0,
        api_key: str = "",
        temperature: float = 0.0,
        max_tokens: int = 512,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"reasoner url must start with http:// or https://, got {url!r}")
        url = url.rstrip("/")
        if not url.endswith("/chat/completions"):
            url += "/chat/completions" if url.endswith("/v1") else "/v1/chat/completions"
        self.url = url
        self.model = model
        self.timeout_s = timeout_s
        self.api_key = api_key
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.calls = 0

    def complete(self, messages: list[dict[str, str]]) -> str:
        body = json.dumps(
            {
                "model": self.model,
                "messages": messages,
                "temperature": self.temperature,
                "max_tokens": self.max_tokens,
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        self.calls += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                payload = json.loads(reply.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:200]
            raise ReasonerError(f"{self.url}: HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise ReasonerError(f"{self.url}: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise ReasonerError(f"{self.url}: reply is not JSON ({exc})") from exc
        try:
            return str(payload["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError) as exc:
            raise ReasonerError(
                f"{self.url}: reply has no choices[0].message.content: {str(payload)[:200]}"
            ) from exc


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def parse_steps(text: str) -> list[Subgoal]:
    """The model's answer -> validated subgoals. Raises ``ReasonerError`` naming what is
    wrong (no JSON, not a list of steps, an unknown skill, args not an object)."""
    m = _FENCE.search(text)
    raw = m.group(1) if m else text
    start, end = raw.find("{"), raw.rfind("}")
    if start < 0 or end <= start:
        raise ReasonerError(f"no JSON object in the reply: {text[:120]!r}")
    try:
        doc = json.loads(raw[start : end + 1])
    except json.JSONDecodeError as exc:
        raise ReasonerError(f"malformed JSON in the reply: {exc}") from exc
    steps = doc.get("steps") if isinstance(doc, dict) else None
    if not isinstance(steps, list) or not steps:
        raise ReasonerError('the reply must be {"steps": [{"skill": ..., "args": {...}}, ...]}')
    out = []
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or not isinstance(step.get("skill"), str):
            raise ReasonerError(f"steps[{i}] must be an object with a 'skill' string")
        skill, args = step["skill"], step.get("args", {})
        known = registry.known("skill")
        if skill not in known:
            raise ReasonerError(f"steps[{i}]: unknown skill {skill!r}; known: {known}")
        if not isinstance(args, dict):
            raise ReasonerError(f"steps[{i}].args must be an object, got {type(args).__name__}")
        out.append(Subgoal(skill, dict(args), description=str(step.get("why", ""))))
    return out


class LLMPlanner(Planner):
    """Plans and replans with a ``Reasoner``; falls back to ``fallback`` (rule-based)."""

    name = "llm"

    def __init__(self, reasoner: Reasoner, *, fallback: Planner | None = None) -> None:
        self.reasoner = reasoner
        self.fallback = fallback or RuleBasedPlanner()
        self.errors: list[str] = []

    @classmethod
    def from_config(cls, config: Any) -> LLMPlanner:
        """The planner for a ``PlannerNodeConfig``: ``reasoner_url`` (required),
        ``reasoner_model``, ``reasoner_timeout_s``."""
        if not config.reasoner_url:
            raise ValueError("planner 'llm' needs reasoner_url (an OpenAI-compatible server)")
        reasoner = OpenAIReasoner(
            config.reasoner_url, model=config.reasoner_model, timeout_s=config.reasoner_timeout_s
        )
        return cls(reasoner)

    def _system(self) -> str:
        skills = "\n".join(
            f"- {name}: {_SKILL_HELP.get(name, '')}" for name in registry.known("skill")
        )
        return (
            "You plan for a robot. Answer only with JSON "
            '{"steps": [{"skill": "<name>", "args": {...}, "why": "<short>"}]} '
            "using these skills:\n" + skills
        )

    def _facts(self, ctx: PlanContext) -> str:
        seen = {
            label: [round(float(v), 3) for v in obj.position]
            for label, obj in sorted(ctx.world.objects.items())
        }
        hits = ctx.grounding.memory.recall(ctx.instruction.text, top_k=8)
        recalled = [h.get("text", "") for h in hits]
        return json.dumps({"in_view": seen, "memory": recalled})

    def plan(self, ctx: PlanContext) -> Plan:
        task = detect_task(ctx.instruction)
        if task != "generic":  # a known task: its recipe decides from memory
            return self.fallback.plan(ctx)
        messages = [
            {"role": "system", "content": self._system()},
            {
                "role": "user",
                "content": f"Instruction: {ctx.instruction.text}\nFacts: {self._facts(ctx)}",
            },
        ]
        try:
            steps = parse_steps(self.reasoner.complete(messages))
        except ReasonerError as exc:
            self.errors.append(str(exc))
            log.warning("reasoner failed, using the rule-based planner: %s", exc)
            plan = self.fallback.plan(ctx)
            plan.facts["reasoner_error"] = str(exc)
            return plan
        return Plan(
            task="llm", instruction=ctx.instruction.text, steps=steps, facts={"planner": "llm"}
        )

    def decide(self, ctx, plan, subgoal):
        return self.fallback.decide(ctx, plan, subgoal)

    def replan(
        self, ctx: PlanContext, plan: Plan, index: int, verdict: Verdict, action: str
    ) -> list[Subgoal] | None:
        if plan.task != "llm" or action == "retry":
            return self.fallback.replan(ctx, plan, index, verdict, action)
        failed = plan.steps[index]
        done = [f"{s.skill} {json.dumps(s.args)}" for s in plan.steps[:index]]
        messages = [
            {"role": "system", "content": self._system()},
            {
                "role": "user",
                "content": (
                    f"Instruction: {ctx.instruction.text}\nDone: {done}\n"
                    f"Failed: {failed.skill} {json.dumps(failed.args)}: {verdict.reason}\n"
                    f"Facts: {self._facts(ctx)}\nGive the remaining steps."
                ),
            },
        ]
        try:
            return parse_steps(self.reasoner.complete(messages))
        except ReasonerError as exc:
            self.errors.append(str(exc))
            return self.fallback.replan(ctx, plan, index, verdict, action)
