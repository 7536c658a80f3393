"""The values GRPO's math accepts for its two switches, without torch.

``agents.grpo`` implements each of them; ``agents.grpo_config`` checks the trainer's flags against them, so
that reading the config (and ``--help``) imports no torch.
"""

SCALE_REWARDS = ("group", "batch", "none")  # how advantages are divided: group std, batch std, not at all
LOSS_TYPES = ("grpo", "dr_grpo")  # how token losses are aggregated: per-sequence mean, or sum / constant
