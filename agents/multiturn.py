"""Multi-turn episodes on ``TextToSQLAgent-v0``: G episodes per question, played in lockstep.

Each turn, the next move of every live episode is sampled in one batched call
(``LoRAPolicy.sample_ids``); a move ends at ``</sql>`` or ``</answer>`` (or EOS, or after
``max_completion_length`` tokens). The move goes to that episode's env; an exploration's result (or a
malformed move's complaint) comes back as the next user message (``LoRAPolicy.agent_feedback``), and the
episode continues until it answers or its turns run out. The turns play inside
``policy.reusing_prompts()``, so a move's context, which extends the last one, prefills only its new tokens.

An episode's token sequence is ``[prompt][move 1][env text 1][move 2][env text 2]...[last move]``:
the moves are the exact ids the policy sampled (so the sequence the update scores is the one the
policy saw), the env text is tokenised on its own. ``loss_mask`` is 1 exactly on the moves' tokens:
GRPO's loss, its token counts and its KL cover only what the policy generated (``agents.grpo_update``).
The episode's reward is the sum of the env's step rewards (by default only the answer's counts).

The env of each episode is a shallow copy of the caller's env (``EnvPool``): the dataset is shared,
each copy has its own episode state and executor.
"""

from __future__ import annotations

import contextlib
import copy
import re
from dataclasses import dataclass, field
from typing import Sequence

import torch

from sqlenv.agent_env import kept_a_floor

__all__ = ["Episode", "EnvPool", "move_finished", "run_episodes", "episode_metrics"]

_CLOSE = re.compile(r"</(sql|answer)>", re.IGNORECASE)


def move_finished(text: str) -> bool:
    """Whether a move (decoded text) has closed its ``<sql>`` or ``<answer>`` block."""
    return _CLOSE.search(text) is not None


@dataclass
class Episode:
    """One multi-turn episode, in the shape the GRPO update reads (as ``policy.Rollout``).

    ``completion_ids`` is everything after the first prompt: moves and env text; ``loss_mask`` is 1 on the
    moves' tokens; ``logprobs`` holds the sampled tokens' log-probs (0 on env tokens). ``info`` is the
    env's last step info (``correct``, ``error``, ... of the answer, or ``error="no_answer"``).
    ``explore_correct``, ``explore_floor`` and ``answer_explored`` say what the explorations found
    (``TextToSQLAgentEnv.score_explorations``: per move, an exploration that would have been a right answer,
    one whose result is a floor answer; whether the answer resubmits an exploration).
    """

    prompt_index: int
    prompt_ids: torch.Tensor
    completion_ids: torch.Tensor
    loss_mask: torch.Tensor
    logprobs: torch.Tensor
    text: str = ""
    sql: str = ""
    moves: list[str] = field(default_factory=list)
    move_errors: list[str | None] = field(default_factory=list)
    move_kinds: list[str] = field(default_factory=list)
    move_tokens: list[int] = field(default_factory=list)
    reward: float = 0.0
    info: dict = field(default_factory=dict)
    done: bool = False
    explore_correct: list[bool] = field(default_factory=list)
    explore_floor: list[bool] = field(default_factory=list)
    answer_explored: bool | None = None

    @property
    def turns(self) -> int:
        return len(self.moves)

    def record(self, move: str, tokens: int, reward: float, ended: bool, info: dict) -> bool:
        """Count one move of ``tokens`` tokens as the env answered it; returns ``ended``."""
        self.moves.append(move)
        self.move_tokens.append(tokens)
        self.move_kinds.append(info.get("move", ""))
        self.move_errors = list(info["move_errors"])
        self.reward += float(reward)
        if ended:
            self.done, self.info = True, info
            self.sql = info.get("sql", "") if info.get("move") == "answer" else ""
        return ended

    @property
    def policy_tokens(self) -> int:
        return int(self.loss_mask.sum())


class EnvPool:
    """Copies of one ``TextToSQLAgentEnv`` for episodes that run side by side; grows on demand."""

    def __init__(self, env):
        self.env = getattr(env, "unwrapped", env)
        if not hasattr(self.env, "max_turns"):
            raise TypeError("EnvPool needs a TextToSQLAgentEnv (TextToSQLAgent-v0)")
        self.copies: list = []

    def take(self, n: int) -> list:
        while len(self.copies) < n:
            self.copies.append(copy.copy(self.env))  # __getstate__: own executor, shared dataset
        return self.copies[:n]

    def close(self):
        for env in self.copies:
            env.executor.close()
            env.explore_executor.close()
        self.copies = []


def run_episodes(policy, pool: EnvPool, indices: Sequence[int], group_size: int, *,
                 greedy: bool = False) -> list[Episode]:
    """``group_size`` episodes of each question in ``indices`` (grouped by question), in lockstep."""
    envs = pool.take(len(indices) * group_size)
    max_turns = pool.env.max_turns
    eos_ids = set(policy.eos_token_ids)
    episodes: list[Episode] = []
    first_prompts = []
    for k, index in enumerate(indices):
        obs = None
        for g in range(group_size):
            obs, _ = envs[k * group_size + g].reset(options={"index": int(index)})
        prompt_ids = policy.encode(policy.agent_prompt(obs, max_turns))
        first_prompts.append(prompt_ids)
        for g in range(group_size):
            empty = torch.zeros(0, dtype=torch.long)
            episodes.append(Episode(k, prompt_ids, empty, empty.float(), empty.float()))
    pieces = [{"ids": [], "mask": [], "logp": [], "text": []} for _ in episodes]
    reusing = getattr(policy, "reusing_prompts", contextlib.nullcontext)
    with reusing():  # a move's context is prefilled once: the next move's context extends it
        for turn in range(1, max_turns + 1):
            live = [i for i, e in enumerate(episodes) if not e.done]
            if not live:
                break
            if turn == 1:  # every episode of a question has the same context: one prompt, G samples
                sampled = policy.sample_ids(first_prompts, group_size, greedy=greedy, finished=move_finished)
                moves = [move for group in sampled for move in group]
            else:
                contexts = [torch.cat([episodes[i].prompt_ids, *pieces[i]["ids"]]) for i in live]
                moves = [group[0] for group in policy.sample_ids(contexts, 1, greedy=greedy, finished=move_finished)]
            for i, (ids, logp) in zip(live, moves):
                episode, piece, env = episodes[i], pieces[i], envs[i]
                text = policy.tokenizer.decode(ids, skip_special_tokens=True)
                piece["ids"].append(ids)
                piece["mask"].append(torch.ones(len(ids)))
                piece["logp"].append(logp.float())
                piece["text"].append(text)
                _, reward, terminated, truncated, info = env.step(text)
                if episode.record(text, len(ids), reward, terminated or truncated, info):
                    continue
                ended_on_eos = len(ids) > 0 and int(ids[-1]) in eos_ids
                feedback = policy.agent_feedback(info["reply"], info["turns_left"], after_eos=ended_on_eos)
                feedback_ids = policy.encode(feedback)
                piece["ids"].append(feedback_ids)
                piece["mask"].append(torch.zeros(len(feedback_ids)))
                piece["logp"].append(torch.zeros(len(feedback_ids)))
                piece["text"].append(feedback)
    for episode, piece in zip(episodes, pieces):
        found = pool.env.score_explorations(
            int(indices[episode.prompt_index]), episode.moves, episode.move_kinds, episode.move_errors)
        episode.explore_correct, episode.explore_floor, episode.answer_explored = (
            found.correct, found.floor, found.answer_explored)
        episode.completion_ids = torch.cat(piece["ids"]).long()
        episode.loss_mask = torch.cat(piece["mask"]).float()
        episode.logprobs = torch.cat(piece["logp"]).float()
        episode.text = "".join(piece["text"])
    return episodes


def episode_counts(episodes: Sequence[Episode]) -> dict[str, float]:
    """The sums that :func:`episode_metrics` divides: additive, so ranks' counts add up (``World.sum``)."""
    explorations = [err for e in episodes for kind, err in zip(e.move_kinds, e.move_errors) if kind != "answer"]
    return {
        "episodes": len(episodes),
        "turns": sum(e.turns for e in episodes),
        "no_answer": sum(e.info.get("error") == "no_answer" for e in episodes),
        "explorations": len(explorations),
        "explore_errors": sum(err is not None for err in explorations),
        "malformed": sum(kind == "malformed" for e in episodes for kind in e.move_kinds),
        "policy_tokens": sum(e.policy_tokens for e in episodes),
        "explore_found": sum(any(e.explore_correct) for e in episodes),
        "found_then_lost": sum(any(e.explore_correct) and not e.info.get("correct") for e in episodes),
        "explore_floor": sum(any(e.explore_floor) for e in episodes),
        "floor_kept": sum(kept_a_floor(e.explore_floor, e.info) for e in episodes),
        "answered": sum(e.answer_explored is not None for e in episodes),
        "answer_explored": sum(bool(e.answer_explored) for e in episodes),
    }


def counts_metrics(prefix: str, counts: dict[str, float]) -> dict[str, float]:
    """:func:`episode_metrics` from :func:`episode_counts` (one rank's, or every rank's summed)."""
    n, moves = max(counts["episodes"], 1), max(counts["turns"], 1)
    return {
        f"{prefix}/turns_mean": counts["turns"] / n,
        f"{prefix}/no_answer_frac": counts["no_answer"] / n,
        f"{prefix}/explore_error_frac": (counts["explore_errors"] / counts["explorations"]
                                         if counts["explorations"] else 0.0),
        f"{prefix}/explore_moves_mean": counts["explorations"] / n,
        f"{prefix}/malformed_frac": counts["malformed"] / moves,
        f"{prefix}/policy_tokens": counts["policy_tokens"] / n,
        f"{prefix}/explore_found_frac": counts["explore_found"] / n,
        f"{prefix}/found_then_lost_frac": counts["found_then_lost"] / n,
        f"{prefix}/explore_floor_frac": counts["explore_floor"] / n,
        f"{prefix}/floor_kept_frac": counts["floor_kept"] / n,
        f"{prefix}/answer_explored_frac": counts["answer_explored"] / counts["answered"] if counts["answered"] else 0.0,
    }


def episode_metrics(prefix: str, episodes: Sequence[Episode]) -> dict[str, float]:
    """Turns and exploration under ``prefix/``: mean turns, the share of episodes that never answered,
    the share of exploratory moves (``<sql>`` or malformed) that failed, of malformed moves, the
    policy's tokens per episode, the share of episodes where an exploration would have been a right
    answer (``explore_found_frac``) and where it was, but the answer was not (``found_then_lost_frac``), where
    an exploration's result was a floor (0, empty, None: ``explore_floor_frac``) and the answer was a wrong
    floor all the same (``floor_kept_frac``), and the share of answers that resubmit an exploration
    (``answer_explored_frac``)."""
    return counts_metrics(prefix, episode_counts(episodes))
