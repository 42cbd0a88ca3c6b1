"""Reading a paged KV cache (vLLM layout) without touching pages no query can see.

k_cache [P, page, Hkv, D] and v_cache [P, page, Hkv, Dv] hold every sequence's keys in physical
pages; block_table[n, i] is the physical page of sequence n's logical page i. With a sliding window
the serving engine frees the pages that lie wholly before the window start and may mark them -1,
so readers start at the page of the first visible key (`first_key`) and never look further back.

The caches may be views of one buffer (MLA: k_cache = latent[:, :, None, :] and v_cache =
latent[:, :, None, :R]); `gather_pages` then reads the buffer once and slices the values out of it.
"""

from __future__ import annotations

import torch


def first_key(seq_len: int, q_len: int, window: int | None) -> int:
    """Position of the first key that any of the last `q_len` queries of a sequence can see."""
    return 0 if window is None else max(0, seq_len - q_len - window + 1)


def first_keys(seq_lens: torch.Tensor, window: int | None) -> torch.Tensor:
    """[N] positions of the first key each decode query (at seq_len - 1) sees."""
    lens = seq_lens.long()
    return torch.zeros_like(lens) if window is None else (lens - window).clamp(min=0)


def shares_buffer(k_cache: torch.Tensor, v_cache: torch.Tensor) -> bool:
    """v_cache is k_cache[..., :Dv] (MLA's latent cache): one gather serves both."""
    return (
        v_cache.data_ptr() == k_cache.data_ptr()
        and v_cache.stride() == k_cache.stride()
        and v_cache.shape[-1] <= k_cache.shape[-1]
    )


def gather_pages(
    k_cache: torch.Tensor, v_cache: torch.Tensor, pages: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """pages [M] (long, valid indices) -> k [M, page, Hkv, D], v [M, page, Hkv, Dv].

    index_select over dim 0, not `k_cache[pages]`: on CPU advanced indexing is ~10x slower."""
    k = k_cache.index_select(0, pages)
    if shares_buffer(k_cache, v_cache):
        return k, k[..., : v_cache.shape[-1]]
    return k, v_cache.index_select(0, pages)


def sequence_kv(
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    table_row: torch.Tensor,
    seq_len: int,
    q_len: int,
    window: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One sequence's keys from the start of the page holding its first visible key to its end:
    k [S, Hkv, D], v [S, Hkv, Dv]. Its last `q_len` queries are the last `q_len` of these S
    positions, so bottom-right causal attention over them equals attention over the whole sequence
    (keys cut off lie before every query's window)."""
    page = k_cache.shape[1]
    lo = first_key(seq_len, q_len, window) // page
    hi = -(-seq_len // page)
    k, v = gather_pages(k_cache, v_cache, table_row[lo:hi].long())
    length = seq_len - lo * page
    return k.flatten(0, 1)[:length], v.flatten(0, 1)[:length]


def random_block_table(
    seq_lens: list[int], q_lens: list[int], page: int, window: int | None, gen: torch.Generator
) -> tuple[torch.Tensor, int]:
    """A block table over shuffled physical pages (a few spare ones, so the table must pick the
    right pages) -> (table [N, max_pages] int32, number of physical pages). Pages wholly before a
    sequence's first visible key are -1, as a serving engine that freed them would leave them."""
    counts = [-(-t // page) for t in seq_lens]
    num_pages = sum(counts) + 3
    physical = torch.randperm(num_pages, generator=gen).tolist()
    table = torch.zeros(len(seq_lens), max(counts), dtype=torch.int32)
    for n, count in enumerate(counts):
        table[n, :count] = torch.tensor(physical[:count], dtype=torch.int32)
        physical = physical[count:]
        table[n, : first_key(seq_lens[n], q_lens[n], window) // page] = -1
    return table, num_pages
