"""spoken_keys: during the tour a person says where they left their keys; afterwards, go there.

Show phase: the base is driven through the four rooms and looks around in each (six
objects stand on random furniture slots). While it looks around the first room, a voice
(espeak-ng speech, from that room's speaker, mixed into the scene audio over a -46 dBFS
noise floor) says "I left my keys next to the <object>." The object stands in another
room than the one the tour ends in. Decision time: the end of the tour, when the
question is asked: "Go to where I left my keys." Nothing in view says which object was
named: the information is only in what was heard. Success: when the base has stood
still for 2 s, its centre is within 0.5 m of the named object. Chance: a guess among the
furniture slots outside the current room (9 of 12) succeeds about 1 / 9 of the time.

``transcript_answer(texts)``: the object a transcript names (what an agent that kept
the transcripts answers; ``TranscriptPolicy`` runs the real speech pipeline on the
episode's microphone stream for that).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from difflib import SequenceMatcher
from typing import Any, ClassVar

import numpy as np

from engram.planners.planning.recipes import GoToRecipe
from engram.planners.policies.scripted import ReactivePolicy
from engram.sim.audio import SoundSource, speak
from engram.sim.tasks._apartment import OBJECT_LABELS, GoToObjectTask
from engram.sim.tasks._skills import base_drive_to, base_hold
from engram.sim.tasks.spec import TaskSpec

__all__ = ["SPEC", "SpokenKeysEnv", "SpokenKeysRecipe", "TranscriptPolicy", "transcript_answer"]

_SPEECH_DELAY_S = 1.0  # after the base starts looking around the first room
_NOISE_FLOOR = 0.005  # scene noise, amplitude (-46 dBFS: a quiet room)
_SPEECH_LEVEL = 1.0  # voice peak amplitude at 1 m (conversational: ~25 dB over the floor at 2 m)
_VOICE = ("en-us", 130, 4)  # espeak-ng voice, words per minute, gap between words (10 ms)
#: how the voice names each object: the instructions' names (a colour word each, what
#: tiny.en hears best, and a noun)
SPOKEN_NAMES = OBJECT_LABELS
QUESTION = "Go to where I left my keys."
_MIN_SIMILARITY = 0.5  # difflib ratio a misheard name must reach (unrelated names: 0.3-0.45)
_MIN_MARGIN = 0.1  # ... and its lead over the next-closest name


def sentence(obj: str) -> str:
    return f"I left my keys next to the {SPOKEN_NAMES[obj]}."


def transcript_answer(texts: Iterable[str]) -> str | None:
    """The object (body name) that the latest transcript mentioning keys names, else None.
    Each object scores the words of its spoken name found after "next to" (a colour alone
    names its object: a recognizer's "yellow marble" is still the yellow bottle); the
    single best wins."""
    for text in reversed(list(texts)):
        words = re.sub(r"[^a-z ]+", " ", text.lower()).split()
        if not ({"keys", "key"} & set(words) or "left my" in " ".join(words)):
            continue
        tail = words[words.index("next") :] if "next" in words else words
        scores = {o: sum(w in tail for w in name.split()) for o, name in SPOKEN_NAMES.items()}
        best = max(scores.values())
        winners = [o for o, v in scores.items() if v == best]
        if best > 0 and len(winners) == 1:
            return winners[0]
        heard = _closest_name(" ".join(tail[2:] if tail[:2] == ["next", "to"] else tail))
        if heard is not None:
            return heard
    return None


def _closest_name(tail: str) -> str | None:
    """The object whose spoken name the words sound most like, for what tiny.en makes of
    espeak's voice ("the greenboard", "the round and the air" for "the brown teddy bear"):
    character similarity (difflib's ratio) of at least ``_MIN_SIMILARITY``, clear of the
    runner-up by ``_MIN_MARGIN``; else None (no guess from a mumble)."""
    tail = re.sub(r"^(the|a|an) ", "", tail.strip())
    if not tail:
        return None
    sims = sorted(
        ((SequenceMatcher(None, tail, name).ratio(), o) for o, name in SPOKEN_NAMES.items()),
        reverse=True,
    )
    (best, obj), (second, _) = sims[0], sims[1]
    return obj if best >= _MIN_SIMILARITY and best - second >= _MIN_MARGIN else None


class SpokenKeysEnv(GoToObjectTask):
    task_name = "spoken_keys"
    description = "a voice says where the keys are during the tour; afterwards go there"
    chance_success = 1.0 / 9.0

    def _setup(self, rng: np.random.Generator, options: dict[str, Any]) -> None:
        super()._setup(rng, options)
        self.audio.noise_level = _NOISE_FLOOR
        final_room = self.tour[-1]
        pool = [n for n in OBJECT_LABELS if self.placement[n]["room"] != final_room]
        self.target = pool[int(rng.integers(len(pool)))]
        if "answer" in options:  # force the object named (the rng stream stays the same)
            if options["answer"] not in pool:
                raise ValueError(f"answer must be one of {pool}, got {options['answer']!r}")
            self.target = str(options["answer"])
        self.said = sentence(self.target)
        slot = self.placement[self.target]
        self.log.answer = {
            "object": self.target,
            "room": slot["room"],
            "position_m": slot["position_m"],
            "said": self.said,
        }
        self.log.extra["speech"] = []
        self.set_instruction("Follow the tour of the apartment and listen.")

    def _entered_room(self, room: str, index: int) -> None:
        if index != 0:
            return
        wave = speak(self.said, *_VOICE)
        source = SoundSource(
            label="speech",
            position_m=self.layout.speakers[room],
            start_s=self.t + _SPEECH_DELAY_S,
            duration_s=len(wave) / 16000.0,
            room=room,
            level=_SPEECH_LEVEL,
            waveform=wave,
            text=self.said,
        )
        self.audio.add(source)
        record = {
            "text": self.said,
            "room": room,
            "start_s": source.start_s,
            "end_s": source.start_s + source.duration_s,
        }
        self.log.extra["speech"].append(record)
        self.event("speech", **record)

    def _on_decision(self) -> None:
        self.set_instruction(QUESTION)

    # ---- policies ------------------------------------------------------------------------
    def guess_answer(self, obs: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, Any]:
        here = self.layout.room_of(obs["robot"][:2])
        pool = [s for s in self.layout.slots if s["room"] != here]
        return pool[int(rng.integers(len(pool)))]

    def answer_for(self, obj: str | None, obs, rng) -> dict[str, Any]:
        """The slot of object ``obj`` (None: a guess, as without memory)."""
        return self.placement[obj] if obj in self.placement else self.guess_answer(obs, rng)

    def solve(self, answer):
        slot = answer()
        yield from self.go_to_room(slot["room"])
        yield from base_drive_to(self, slot["approach_m"], tol_m=0.04)
        yield from base_hold(self, 40)


class TranscriptPolicy(ReactivePolicy):
    """The scripted motions, with the answer taken from what was heard: the episode's
    microphone stream (``obs["audio"]``) goes through ``stream`` (an
    ``engram.perception.speech.streaming.SpeechStream``: Silero + faster-whisper) and the
    final transcripts are kept; at decision time ``transcript_answer`` reads them. With
    ``keep=False`` the transcripts are dropped before the decision (no memory)."""

    name: ClassVar[str] = "transcripts"

    def __init__(self, stream: Any, *, keep: bool = True, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.stream = stream
        self.keep = keep
        self.heard: list[str] = []
        self._t_ns = 0

    def reset(self, env: Any = None, *, seed: int | None = None) -> None:
        super().reset(env, seed=seed)
        self.heard = []
        self._t_ns = 10**12 * (1 + int(self.rng.integers(1000)))  # a fresh stream clock
        self.stream.on_utterance = lambda u: self.heard.append(u.text) if u.final else None

    def act(self, observation: Mapping[str, Any], info: Mapping[str, Any] | None = None, **kw):
        pcm = observation.get("audio")
        if pcm is not None and (info or {}).get("phase") != "act":
            self.stream.push(np.asarray(pcm, np.float32), 16000, self._t_ns)
            self._t_ns += round(len(pcm) * 1e9 / 16000)
        elif self._script is None:
            self.stream.flush()
        return super().act(observation, info, **kw)

    def _answer(self) -> Any:
        obj = transcript_answer(self.heard) if self.keep else None
        return self.env.answer_for(obj, self._obs, self.rng)


# ---------------------------------------------------------------------------------------
# the planner's recipe (memory-grounded decision) and the task's spec


class SpokenKeysRecipe(GoToRecipe):
    """Go to the object that the remembered speech named (episodic memory's transcripts),
    where memory last saw it."""

    kind = "object"
    task_wording: ClassVar[str] = r"where i left"

    def decide(self, ctx, subgoal):
        hits = ctx.grounding.memory.recall(
            "I left my keys next to the", memories=("episodic",), top_k=20,
            t0_ns=ctx.episode_start_ns,
        )  # fmt: skip
        texts = [h.get("text", "") for h in sorted(hits, key=lambda h: h.get("stamp_ns", 0))]
        obj = transcript_answer(texts)
        self._spoken = OBJECT_LABELS[obj] if obj else ""
        return super().decide(ctx, subgoal)

    def _target_name(self, text: str) -> str:
        return getattr(self, "_spoken", "")


SPEC = TaskSpec(
    name="spoken_keys",
    env="engram.sim.tasks.spoken_keys:SpokenKeysEnv",
    kind="apartment",
    chance=SpokenKeysEnv.chance_success,
    instruction_patterns=(r"where i left my keys",),
    recipe="engram.sim.tasks.spoken_keys:SpokenKeysRecipe",
    lifelong=False,
)
