"""Demucs checkpoints with random weights, saved where demucs' own loader finds them.

There is no network for tests, and the pretrained htdemucs is an 80 MB download, so tests build
an HTDemucs of their own and save it as demucs saves its releases (`serialize_model` + torch.save
as `<sig>.th`), so `demucs.pretrained.get_model(sig, repo=folder)` (LocalRepo) loads it, which is
the path users with `separation.repo` take. Random weights separate nothing; they are for
plumbing (tiny) and timing (real size).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

SOURCES = ["drums", "bass", "other", "vocals"]

# Small enough that a forward pass over its 1 s segment takes a fraction of a second on a CPU,
# yet every branch of the real model is there (STFT branch, time branch, DConv, transformer).
# channels=4 needs dconv_comp=4 (the DConv hidden width is channels // dconv_comp) and a head
# count that divides the transformer width (channels * growth ** (depth - 1) = 32).
TINY_ARGS: dict[str, Any] = {
    "channels": 4,
    "t_layers": 1,
    "t_heads": 4,
    "dconv_comp": 4,
    "segment": 1,
}

# The released htdemucs (signature 955717e8): the htdemucs section of demucs' training config
# with the options its grid (demucs/grids/mmi.py) and release set. Only the architecture matters
# here (for timing); the library defaults cover the rest.
REAL_ARGS: dict[str, Any] = {
    "channels": 48,
    "growth": 2,
    "nfft": 4096,
    "depth": 4,
    "dconv_mode": 3,
    "dconv_depth": 2,
    "dconv_comp": 8,
    "bottom_channels": 512,
    "t_layers": 5,
    "t_heads": 8,
    "t_hidden_scale": 4.0,
    "t_sparse_attn_window": 400,
    "segment": Fraction(39, 5),
}


def make_tiny_demucs(folder: Path, real_size: bool = False) -> str:
    """Save a random-weight HTDemucs as `folder/<sig>.th` and return `sig`.

    The signature has no '-': LocalRepo reads `<sig>-<checksum>.th`, so a dash would be taken
    for a checksum. The weights come from a fixed seed, without touching the global generator.
    """
    import torch
    from demucs.htdemucs import HTDemucs
    from demucs.states import serialize_model
    from omegaconf import OmegaConf

    sig = "randomhtdemucs" if real_size else "tinyhtdemucs"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = HTDemucs(sources=SOURCES, **(REAL_ARGS if real_size else TINY_ARGS))
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(serialize_model(model, OmegaConf.create({})), folder / f"{sig}.th")
    return sig
