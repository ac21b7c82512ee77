"""M-RoPE positions of a prompt whose images were pruned (vLLM-agnostic, pure torch).

ALGORITHM.md section 5: each kept image token keeps the (t, h, w) position it has unpruned, and
the text after an image resumes at the position it has unpruned (the full grid's extent, not the
largest kept position). This mirrors vLLM's stock ``Qwen3VLForConditionalGeneration.
_get_mrope_input_positions`` for full grids (each image or video frame is a ``t = 1`` grid whose
positions start right after the preceding text) and gathers the kept tokens for pruned images.
The transformers side does the same in ``pixelprune.modeling.pruned_rope``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["GridSpan", "pruned_mrope_positions"]


@dataclass(frozen=True)
class GridSpan:
    """One image (or video frame) in the prompt.

    Attributes:
        offset: index in the prompt of its first placeholder token.
        grid_h, grid_w: its LLM token grid (patch grid / merge size).
        kept: sorted raster indices of its kept tokens, or ``None`` when all are kept.
    """

    offset: int
    grid_h: int
    grid_w: int
    kept: torch.Tensor | None = None

    @property
    def num_tokens(self) -> int:
        return self.grid_h * self.grid_w if self.kept is None else int(self.kept.numel())


def pruned_mrope_positions(num_tokens: int, spans: Sequence[GridSpan]) -> tuple[torch.Tensor, int]:
    """``(positions, delta)`` for a prompt of ``num_tokens`` tokens holding ``spans``.

    ``positions`` is ``(3, num_tokens)`` int64 (t, h, w rows); ``delta`` is the position of the
    token that would follow the prompt minus ``num_tokens`` (what decoding adds to the sequence
    index). Raises ``ValueError`` when spans overlap or run past the prompt.
    """
    pieces: list[torch.Tensor] = []
    start = 0  # prompt index where the current text run begins
    next_pos = 0  # position the next token gets
    for span in sorted(spans, key=lambda s: s.offset):
        if span.offset < start or span.offset + span.num_tokens > num_tokens:
            raise ValueError(
                f"Image/frame placeholder run [{span.offset}, {span.offset + span.num_tokens}) overlaps "
                f"the previous one (ends at {start}) or the prompt end ({num_tokens})."
            )
        text_len = span.offset - start
        pieces.append(torch.arange(text_len, dtype=torch.long).expand(3, -1) + next_pos)
        next_pos += text_len
        hh, ww = torch.meshgrid(
            torch.arange(span.grid_h, dtype=torch.long), torch.arange(span.grid_w, dtype=torch.long), indexing="ij"
        )
        grid = torch.stack([torch.zeros_like(hh), hh, ww]).reshape(3, -1)
        if span.kept is not None:
            grid = grid[:, span.kept.to(device="cpu", dtype=torch.long)]
        pieces.append(grid + next_pos)
        # Past the FULL grid, exactly as without pruning.
        next_pos += max(span.grid_h, span.grid_w)
        start = span.offset + span.num_tokens
    text_len = num_tokens - start
    pieces.append(torch.arange(text_len, dtype=torch.long).expand(3, -1) + next_pos)
    next_pos += text_len
    return torch.cat(pieces, dim=1), next_pos - num_tokens
