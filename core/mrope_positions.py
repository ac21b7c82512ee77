"""M-RoPE positions of one prompt whose images may be pruned (ALGORITHM.md section 5), pure torch.

The one implementation of the position rule, shared by the transformers classes
(``rope_index.pruned_rope_index``) and the vLLM plugin (``vllm_model.models``):

* text tokens get consecutive positions on all three (t, h, w) rows;
* an image (or one video frame: videos are split into ``t = 1`` grids, as the stock models do
  because frames are separated by timestamps) starting at position ``p`` gives its token at grid
  cell ``(h, w)`` the position ``(p, p + h, p + w)``; a pruned image keeps exactly these positions
  at its kept cells;
* the text after a grid resumes at ``p + max(grid_h, grid_w)``: past the FULL grid, as without
  pruning, not past the largest kept position.

Hence every text token has the same position with and without pruning, and decoding continues
from the unpruned next position. Without pruning this equals the stock ``get_rope_index`` of
transformers and ``_get_mrope_input_positions`` of vLLM (tested against both).
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
        """Placeholder tokens it occupies in the prompt (its kept count)."""
        return self.grid_h * self.grid_w if self.kept is None else int(self.kept.numel())


def pruned_mrope_positions(num_tokens: int, spans: Sequence[GridSpan]) -> tuple[torch.Tensor, int]:
    """``(positions, delta)`` for a prompt of ``num_tokens`` tokens holding ``spans`` (on CPU).

    ``positions`` is ``(3, num_tokens)`` int64 (t, h, w rows); ``delta`` is the position of the
    token that would follow the prompt minus ``num_tokens`` (what decoding adds to the sequence
    index: ``rope_deltas`` / ``mrope_position_delta``). Raises ``ValueError`` when spans overlap
    or run past the prompt.
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
