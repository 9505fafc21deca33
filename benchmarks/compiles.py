"""What torch.compile did in a GPU check or bench: graphs built, and recompile-limit hits.

A model on `flex_attention` is compiled per batch shape. Past torch's recompile limit
(`torch._dynamo.config.recompile_limit`, 8) dynamo stops compiling that function and runs it
unfused (flex_attention then materialises every score matrix): the run still finishes, its
scores are still right, and its graph count keeps rising with other functions, so neither a
pass nor "<= 8 graphs" shows the limit was not hit. Dynamo counts each hit itself: a hit raises
`Unsupported` ("Dynamo recompile limit exceeded", torch/_dynamo/convert_frame.py, in
`_compile`: `exceeds_recompile_limit` -> `unimplemented(gb_type="Dynamo recompile limit
exceeded", ...)`), whose `add_to_stats` (torch/_dynamo/exc.py) adds one to
`counters["unimplemented"][message]`. torch < 2.8 words the message
"cache_size_limit reached" (`unimplemented(f"{limit_type} reached")`). `limit_hits` counts
those entries; a check or bench with any fails.

Each row or bench starts from empty compile caches (`reset`): otherwise a row inherits the
graphs (and the cache entries that count toward the limit) of the rows before it.
"""
from __future__ import annotations

import re

# the messages dynamo files a recompile-limit hit under in counters["unimplemented"]
LIMIT_HIT = re.compile(r"^(Dynamo recompile limit exceeded|"
                       r"(accumulated_)?(cache_size|recompile)_limit reached)")


class RecompileLimitHit(RuntimeError):
    """torch hit its recompile limit: what ran after it ran unfused, its figures are not ours."""


def graphs_compiled() -> int:
    """Graphs torch.compile built so far in this process (dynamo's own count)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def limit_hits() -> int:
    """Recompile-limit hits so far in this process, as dynamo counted them (module doc)."""
    from torch._dynamo.utils import counters

    return int(sum(n for message, n in counters["unimplemented"].items()
                   if LIMIT_HIT.match(message)))


def reset() -> None:
    """Empty compile caches, as in a fresh process: dynamo's, and the compiled flex_attention
    transformers keeps in a class attribute (it would outlive `torch._dynamo.reset`)."""
    import torch

    torch._dynamo.reset()
    try:
        from transformers.integrations import flex_attention as hf_flex
    except ImportError:  # transformers without flex_attention: nothing cached there
        return
    hf_flex.WrappedFlexAttention._instance = None
    hf_flex.WrappedFlexAttention._is_flex_compiled = False


def require_no_limit_hit(before: int, what: str) -> None:
    """Raise `RecompileLimitHit` if dynamo hit its recompile limit since `limit_hits()` was
    `before`.

    Args:
        before: `limit_hits()` read before `what` ran.
        what: the measurement, named in the error.
    """
    hits = limit_hits() - before
    if hits:
        raise RecompileLimitHit(
            f"{what}: torch hit its recompile limit {hits} time(s) (torch._dynamo.config."
            "recompile_limit): later shapes ran unfused, so its figures are not the kernel's; "
            "TORCH_LOGS=recompiles names the shapes")
