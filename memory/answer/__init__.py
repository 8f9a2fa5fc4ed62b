"""Answers, not hits: a question in plain words -> an answer with its evidence, or an
explicit abstention ("I have not seen that").

- ``parse_intent`` (``intents``): the question's intent (where is / where was / when /
  which / what was at / how many / did you hear / what was said / before-after) and
  the noun phrases it is about;
- ``NameTable`` (``names``): natural names, colours and synonyms of internal labels;
- ``Answerer`` (``answerer``): asks the memories that can answer and composes the
  ``Answer`` (JSON: answer, kind, value, confidence, abstained, evidence).
"""

from engram.memory.answer.answerer import Answerer, AnswererConfig
from engram.memory.answer.intents import Intent, parse_intent
from engram.memory.answer.names import NameTable, NaturalName
from engram.memory.answer.records import NOT_SEEN, Answer, Evidence, calibrate_threshold

__all__ = [
    "NOT_SEEN",
    "Answer",
    "Answerer",
    "AnswererConfig",
    "Evidence",
    "Intent",
    "NameTable",
    "NaturalName",
    "calibrate_threshold",
    "parse_intent",
]
