"""Prefix caching for every family: a radix tree over whole blocks of token ids, holding shared
KV / latent / window blocks and recurrent-state checkpoints, evicted by FLOPs saved per byte.

Each node is one block of `block_size` token ids (its key, compared exactly: a hit is confirmed
against the stored ids, not a hash) below its parent; a node at depth d stands for tokens
[0, d * block_size). It holds a reference on the block each block group (paged, window:W) wrote
for those tokens, and may hold a checkpoint: the pages of every recurrent layer's state after
its last token (state_checkpoints.py). A request hits at depth d when every layer has what it
needs there: the paged blocks of the whole path, the window blocks inside the window of the hit
point, and a checkpoint at d if the model has recurrent layers (a hybrid hits only where all
layers hit). Blocks are shared by reference count; a request never writes into a shared block
except when its whole prompt is cached, and then the last block is copied first (copy on write)
and only its last token recomputed, for the logits. See docs/prefix_caching.md.

Checkpoints are admitted where they pay (Marconi, arXiv 2411.19379): where a prompt's prefill
ends (its last block boundary before the last token, where a repeat of the prompt hits); at a
branch point the request passes (the end of a shared system prompt or of an earlier turn, found
when a second request leaves the tree's path there, or where requests prefilled in the same step
part); and at a sequence's last block boundary (the next turn of a chat resumes there). Or, with
`state_checkpoint_interval`, every that many tokens instead.

Eviction frees what is held by the tree alone: a leaf (its blocks and checkpoint), a checkpoint
of an inner node, or a window block of an inner node. Policy "cost" picks the unit with the least
recency + alpha * efficiency, each normalised over the candidates to [0, 1], where efficiency is
the prefill FLOPs the unit saves per byte it frees; "lru" picks the least recently used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EVICTION_POLICIES = ("cost", "lru")


@dataclass(eq=False)
class Node:
    key: tuple  # the block's token ids
    parent: Node | None
    depth: int  # blocks from the root
    blocks: dict[str, int]  # block group -> block id held by the tree (-1: evicted window block)
    checkpoint: list[int] | None = None  # pages of the recurrent state after this block
    children: dict = field(default_factory=dict)
    users: int = 0  # running requests whose computed blocks end here
    last_access: int = 0


@dataclass
class Match:
    path: list[Node]  # the hit's nodes, root excluded
    num_cached: int  # tokens the request does not compute
    copy_last: bool  # whole prompt cached: the last block is copied and its last token recomputed
    branch: int | None  # a branch point past the hit (tokens): store a checkpoint there


@dataclass
class Unit:
    """One thing eviction can free: a leaf node, an inner node's checkpoint or window block."""

    node: Node
    what: str  # "leaf", "checkpoint", or a window group
    frees: dict[str, int]  # pool name -> ids freed
    nbytes: int
    flops: float


class PrefixCache:
    def __init__(self, cache, cost, policy: str = "cost", alpha: float = 1.0, interval: int | None = None):
        """cache: the CacheManager; cost(start, end): prefill FLOPs of tokens [start, end) (flops.py)."""
        self.cache, self.cost, self.policy, self.alpha, self.interval = cache, cost, policy, alpha, interval
        self.bs = cache.block_size
        self.needs_checkpoint = cache.checkpoints is not None
        self.root = Node((), None, 0, {})
        self.nodes: set[Node] = set()
        self.clock = 0
        self.queried_tokens = self.hit_tokens = self.evictions = 0

    # --- lookup ------------------------------------------------------------------------------------
    def _walk(self, tokens: list[int], blocks: int) -> list[Node]:
        path, node = [], self.root
        for i in range(blocks):
            node = node.children.get(tuple(tokens[i * self.bs : (i + 1) * self.bs]))
            if node is None:
                break
            path.append(node)
        return path

    def _windows_held(self, path: list[Node], hit: int) -> bool:
        for g, w in self.cache.windows.items():
            lo = max(0, hit - w + 1) // self.bs
            if any(path[i].blocks.get(g, -1) < 0 for i in range(lo, len(path))):
                return False
        return True

    def match(self, tokens: list[int], allow_copy: bool = True) -> Match:
        """The deepest hit for a prompt: at most len - 1 tokens cached (one is computed, for logits)."""
        n, bs = len(tokens), self.bs
        path = self._walk(tokens, n // bs)
        end = path[-1] if path else self.root
        branch = None
        if path and end.children and len(path) < n // bs and end.checkpoint is None:
            branch = len(path) * bs  # others continue from here differently
        for k in range(len(path), 0, -1):
            node, hit = path[k - 1], k * bs
            if self.needs_checkpoint and node.checkpoint is None:
                continue
            copy = hit == n
            if copy and (self.needs_checkpoint or not allow_copy):
                continue
            hit = n - 1 if copy else hit
            if self._windows_held(path[:k], hit):
                return Match(path[:k], hit, copy, branch)
        return Match([], 0, False, branch)

    # --- a request's life --------------------------------------------------------------------------
    def acquire(self, holding, tokens: list[int]) -> int:
        """Share a hit's blocks with a newly admitted request and restore its state; -> tokens hit."""
        self.clock += 1
        m = self.match(tokens)
        self._share(holding, m)
        if m.copy_last and not self._copy_last(holding):
            self._unshare(holding)
            m = self.match(tokens, allow_copy=False)
            self._share(holding, m)
        if m.path and self.needs_checkpoint:
            self.cache.checkpoints.restore(m.path[-1].checkpoint, holding.slot)
        for node in m.path:
            node.last_access = self.clock
        return m.num_cached

    def count(self, prompt_tokens: int, cached: int) -> None:
        """An admitted request's lookup, for the hit rate (a refused admission is not counted)."""
        self.queried_tokens += prompt_tokens
        self.hit_tokens += cached

    def _share(self, holding, m: Match) -> None:
        """Reference the hit's blocks from the request's tables (window blocks behind the window of
        the hit point stay -1: no query of the request reads them)."""
        for g, pool in self.cache.pools.items():
            w = self.cache.windows.get(g)
            lo = 0 if w is None else max(0, m.num_cached - w + 1) // self.bs
            table = holding.tables[g]
            for i, node in enumerate(m.path):
                if i < lo:
                    table.append(-1)
                else:
                    pool.ref(node.blocks[g])
                    table.append(node.blocks[g])
        self._move(holding, m.path[-1] if m.path else self.root)
        holding.cached_blocks, holding.num_cached, holding.branch = len(m.path), m.num_cached, m.branch

    def _unshare(self, holding) -> None:
        for g, pool in self.cache.pools.items():
            pool.give(holding.tables[g])
            holding.tables[g] = []
        self._move(holding, None)

    def _copy_last(self, holding) -> bool:
        """Copy on write: the request's last (shared) block becomes a private copy it may write."""
        if not self.cache.reclaim({g: 1 for g in self.cache.pools}):
            return False
        for g, pool in self.cache.pools.items():
            shared = holding.tables[g][-1]
            (fresh,) = pool.take(1)
            self.cache.copy_block(g, shared, fresh)
            pool.give([shared])
            holding.tables[g][-1] = fresh
        return True

    def _move(self, holding, node: Node | None) -> None:
        if holding.node is not None:
            holding.node.users -= 1
        holding.node = node
        if node is not None:
            node.users += 1

    def release(self, holding) -> None:
        """A request leaves (finished, aborted, preempted): its tree position is let go, and a path
        end no hit can use any more (no checkpoint, in a model that needs one) is pruned."""
        node = holding.node
        self._move(holding, None)
        if node is not None:
            self._prune(node)

    def insert(self, holding, tokens: list[int], num_computed: int) -> None:
        """Add the request's newly completed blocks to the tree (shared ones are found, not copied)."""
        self.clock += 1
        node = holding.node
        for i in range(holding.cached_blocks, num_computed // self.bs):
            key = tuple(tokens[i * self.bs : (i + 1) * self.bs])
            child = node.children.get(key)
            if child is None:
                blocks = {g: holding.tables[g][i] for g in self.cache.pools}
                for g, b in blocks.items():
                    if b >= 0:
                        self.cache.pools[g].ref(b)
                child = Node(key, node, i + 1, blocks)
                node.children[key] = child
                self.nodes.add(child)
            child.last_access = self.clock
            node = child
        holding.cached_blocks = max(holding.cached_blocks, num_computed // self.bs)
        self._move(holding, node)

    # --- checkpoints -------------------------------------------------------------------------------
    def wants_checkpoint(
        self, holding, tokens: list[int], prompt_len: int, at: int, peer_branch: int | None = None
    ) -> bool:
        """Whether to store the state after `at` tokens (a block boundary this step reaches).
        peer_branch: where the request's tokens leave another's that is prefilled in the same step."""
        if self.interval is not None:
            wanted = at % self.interval == 0
        else:
            # a branch point (with the tree, or with a request of this step); the deepest point a
            # repeat of this prompt can hit; a sequence end
            last = (prompt_len - 1) // self.bs * self.bs
            wanted = at in (holding.branch, peer_branch, last) or at >= prompt_len
        if not wanted:
            return False
        node = holding.node  # is there a checkpoint at `at` already (another request's)?
        for i in range(node.depth, at // self.bs):
            node = node.children.get(tuple(tokens[i * self.bs : (i + 1) * self.bs]))
            if node is None:
                return True
        return node.checkpoint is None

    def take_checkpoint_pages(self) -> list[int] | None:
        store, name = self.cache.checkpoints, self.cache.checkpoint_pool_name
        if not self.cache.reclaim({name: store.pages_per_checkpoint}):
            return None
        return self.cache.pool(name).take(store.pages_per_checkpoint)

    def attach(self, holding, at: int, pages: list[int], prompt_len: int) -> None:
        """Hang a stored checkpoint on the node at `at` tokens of the request's path."""
        node = holding.node
        while node.depth > at // self.bs:
            node = node.parent
        if node.depth != at // self.bs or node.checkpoint is not None:
            self.free_pages(pages)  # the tree lost the node, or another request stored it first
            return
        node.checkpoint = pages
        if self.interval is None and at >= prompt_len:  # a sequence end replaces the previous one
            old = holding.output_checkpoint
            if old is not None and old is not node and old.checkpoint is not None:
                self.free_pages(old.checkpoint)
                old.checkpoint = None
            holding.output_checkpoint = node

    def free_pages(self, pages: list[int]) -> None:
        self.cache.pool(self.cache.checkpoint_pool_name).give(pages)

    # --- eviction ----------------------------------------------------------------------------------
    def _tree_only(self, g: str, b: int) -> bool:
        return b >= 0 and self.cache.pools[g].refs[b] == 1

    def units(self) -> list[Unit]:
        """Everything eviction could free now, with its bytes and the FLOPs it saves (one walk)."""
        cache, units = self.cache, []
        name, store = cache.checkpoint_pool_name, cache.checkpoints
        ckpt_bytes = 0 if store is None else store.pages_per_checkpoint * store.arena.page_bytes
        stack = [(child, 0) for child in self.root.children.values()]  # (node, last checkpoint above)
        while stack:
            node, above = stack.pop()
            below = node.depth if node.checkpoint is not None else above
            stack.extend((child, below) for child in node.children.values())
            if self._leaf_free(node):
                frees = {g: 1 for g, b in node.blocks.items() if b >= 0}
                nbytes = sum(cache.block_bytes(g) for g in frees)
                if node.checkpoint is not None:
                    frees[name] = frees.get(name, 0) + len(node.checkpoint)
                    nbytes += ckpt_bytes
                units.append(Unit(node, "leaf", frees, nbytes, self._flops_saved(node, above)))
                continue
            if node.checkpoint is not None:
                saved = self._flops_saved(node, above)
                units.append(Unit(node, "checkpoint", {name: len(node.checkpoint)}, ckpt_bytes, saved))
            for g in cache.windows:
                if self._tree_only(g, node.blocks.get(g, -1)):
                    units.append(Unit(node, g, {g: 1}, cache.block_bytes(g), self._block_flops(node)))
        return units

    def _leaf_free(self, node: Node) -> bool:
        """A leaf no request stands on or shares a block of."""
        return (
            not node.children
            and node.users == 0
            and all(b < 0 or self._tree_only(g, b) for g, b in node.blocks.items())
        )

    def _block_flops(self, node: Node) -> float:
        return self.cost((node.depth - 1) * self.bs, node.depth * self.bs)

    def _flops_saved(self, node: Node, above: int) -> float:
        """Prefill FLOPs a hit here saves over the next shallower place a hit could land (`above`:
        the depth of the nearest checkpoint above, 0 for none)."""
        if not self.needs_checkpoint:
            return self._block_flops(node)
        if node.checkpoint is None:
            return 0.0
        return self.cost(above * self.bs, node.depth * self.bs)

    def ranked(self, units: list[Unit]) -> list[Unit]:
        """Units in the order the policy evicts them."""
        times = [u.node.last_access for u in units]
        if self.policy == "lru":
            return [u for _, _, u in sorted(zip(times, range(len(units)), units, strict=True))]
        effs = [u.flops / max(u.nbytes, 1) for u in units]

        def norm(x, xs):
            lo, hi = min(xs), max(xs)
            return 0.0 if hi == lo else (x - lo) / (hi - lo)

        scores = [norm(t, times) + self.alpha * norm(e, effs) for t, e in zip(times, effs, strict=True)]
        return [u for *_, u in sorted(zip(scores, times, range(len(units)), units, strict=True))]

    def pick(self, units: list[Unit]) -> Unit:
        """The unit to evict first under the policy."""
        return self.ranked(units)[0]

    def evict(self, need: dict[str, int]) -> bool:
        """Evict until each named pool has `need` free ids; False if the tree runs out first. Units
        are ranked once per pass and dropped in that order (a pass ends when its list does: drops
        make new leaves, which the next pass ranks)."""
        while True:
            short = {n for n, k in need.items() if self.cache.pool(n).num_free < k}
            if not short:
                return True
            units = [u for u in self.units() if short & set(u.frees)]
            if not units:
                return False
            for unit in self.ranked(units):
                if not short:
                    break
                if self._still(unit):
                    self.drop(unit)
                    short = {n for n, k in need.items() if self.cache.pool(n).num_free < k}

    def _still(self, unit: Unit) -> bool:
        """Whether a ranked unit is still there to free (an earlier drop may have pruned it)."""
        node = unit.node
        if node not in self.nodes:
            return False
        if unit.what == "leaf":
            return self._leaf_free(node)
        if unit.what == "checkpoint":
            return node.checkpoint is not None
        return self._tree_only(unit.what, node.blocks.get(unit.what, -1))

    def drop(self, unit: Unit) -> None:
        node, cache = unit.node, self.cache
        self.evictions += 1
        if unit.what in cache.windows:
            cache.pools[unit.what].give([node.blocks[unit.what]])
            node.blocks[unit.what] = -1
            self._prune(node)
            return
        if node.checkpoint is not None:
            self.free_pages(node.checkpoint)
            node.checkpoint = None
        if unit.what == "leaf":
            for g, b in node.blocks.items():
                cache.pools[g].give([b])
            del node.parent.children[node.key]
            self.nodes.discard(node)
            self._prune(node.parent)
        else:
            self._prune(node)

    def _useless(self, node: Node) -> bool:
        """A path end no hit can use: no hit lands on it (no checkpoint where one is needed, or a
        window block gone), and nothing below it."""
        if node.children or node.users:
            return False
        if self.needs_checkpoint and node.checkpoint is None:
            return True
        return any(node.blocks.get(g, -1) < 0 for g in self.cache.windows)

    def _prune(self, node: Node) -> None:
        """Remove useless path ends, walking up (their blocks would only ever be recomputed)."""
        while node is not self.root and self._useless(node):
            parent = node.parent
            if node.checkpoint is not None:
                self.free_pages(node.checkpoint)
                node.checkpoint = None
            for g, b in node.blocks.items():
                self.cache.pools[g].give([b])
            del parent.children[node.key]
            self.nodes.discard(node)
            node = parent

    def clear(self) -> None:
        """Evict everything no running request holds."""
        while units := self.units():
            for unit in units:
                if self._still(unit):
                    self.drop(unit)

    # --- accounting --------------------------------------------------------------------------------
    def held_bytes(self) -> int:
        """Bytes held by the tree alone (what eviction could free)."""
        cache = self.cache
        total = 0
        for node in self.nodes:
            total += sum(cache.block_bytes(g) for g, b in node.blocks.items() if self._tree_only(g, b))
            if node.checkpoint is not None:
                total += len(node.checkpoint) * cache.checkpoints.arena.page_bytes
        return total

    def stats(self) -> dict:
        return {
            "queried_tokens": self.queried_tokens,
            "hit_tokens": self.hit_tokens,
            "hit_rate": self.hit_tokens / self.queried_tokens if self.queried_tokens else 0.0,
            "nodes": len(self.nodes),
            "checkpoints": sum(1 for n in self.nodes if n.checkpoint is not None),
            "held_bytes": self.held_bytes(),
            "evictions": self.evictions,
        }
