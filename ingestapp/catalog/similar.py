"""Similar pictures (issue 19): a session's items that show the same picture, the catalog entries
they match, and the catalog entries similar to one entry.

Two pictures are similar when the Hamming distance of their 64-bit perceptual hashes
(``stages/similar.py``: ``phash``, 16 hex digits) is at most ``INGEST_SIMILAR_DISTANCE`` bits
(default :data:`DEFAULT_DISTANCE`, chosen on the test set of ``bench/similar_set.py``; see
``docs/similar.md``). Nearby hashes are found with multi-index hashing (Norouzi, Punjani and Fleet,
"Fast Search in Hamming Space with Multi-Index Hashing", CVPR 2012): the hash is cut into
:data:`CHUNKS` chunks of 16 bits; two hashes within ``d`` bits differ by at most ``d // CHUNKS``
bits in at least one chunk (pigeonhole), so probing each chunk's table with every key within that
radius finds every pair, with no comparison of all pairs. The candidates are then checked on all
64 bits. A session's grouping (its items, and them against the catalog) probes exactly; grouping
a whole catalog (:func:`group_hashes`) probes fewer keys, see :data:`CATALOG_RADIUS`.

Grouping is the connected components of the "similar" relation among a session's ``ok`` items
(errors and skipped exact duplicates never take part), except that two items of one RAW+JPEG pair
(each naming the other in ``pair_id``) never count as similar: a pair is one picture.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sqlalchemy import Engine, select

from ingestapp.core.config import SIMILAR_DISTANCE
from ingestapp.core.vocabulary import ItemStatus
from ingestapp.store.models import CatalogEntry, Item

#: Hamming distance, in bits, up to which two pictures count as the same (INGEST_SIMILAR_DISTANCE).
DEFAULT_DISTANCE = SIMILAR_DISTANCE
#: Chunks per hash of the index a session's grouping uses: 16 bits each, probed exactly.
CHUNKS = 4
#: Chunks per hash of the whole-catalog grouping (21-22 bits each) and the radius each is probed
#: with: exact up to 3 x (2 + 1) - 1 = 8 bits, and beyond that a pair is found when one chunk
#: differs in at most 2 bits (what recall this keeps is measured in docs/similar.md).
CATALOG_CHUNKS, CATALOG_RADIUS = 3, 2
#: Probe keys handled per numpy step (bounds the temporary arrays to a few tens of MB).
_BLOCK = 1 << 20


def parse_phash(text: str | None) -> int | None:
    """The 64-bit integer of a 16-hex-digit ``phash``; None for None or anything else."""
    if not text or len(text) != 16:
        return None
    try:
        return int(text, 16)
    except ValueError:
        return None


def as_array(hashes: Iterable[int]) -> np.ndarray:
    """64-bit hashes as a numpy ``uint64`` array."""
    return np.fromiter(hashes, dtype=np.uint64)


def _flip_masks(bits: int, radius: int) -> np.ndarray:
    """Every ``bits``-bit value with at most ``radius`` bits set (the keys within ``radius`` of 0)."""
    masks = [0]
    for r in range(1, min(radius, bits) + 1):
        masks.extend(sum(1 << b for b in chosen) for chosen in itertools.combinations(range(bits), r))
    return np.array(masks, dtype=np.int32)


class HashIndex:
    """A multi-index over 64-bit hashes cut into ``chunks`` chunks of nearly equal width: per
    chunk, the hashes sorted by that chunk's value, and tables of how many hashes have each value
    and where they start (2^width entries each). Building is O(n log n + chunks x 2^width)."""

    def __init__(self, hashes: np.ndarray, chunks: int = CHUNKS) -> None:
        self.hashes = hashes.astype(np.uint64, copy=False)
        widths = [64 // chunks + (1 if c < 64 % chunks else 0) for c in range(chunks)]
        self._fields = [(sum(widths[:c]), width) for c, width in enumerate(widths)]  # (shift, width)
        self._order: list[np.ndarray] = []
        self._counts: list[np.ndarray] = []
        self._starts: list[np.ndarray] = []
        for shift, width in self._fields:
            values = self._chunk(self.hashes, shift, width)
            self._order.append(np.argsort(values, kind="stable"))
            counts = np.bincount(values, minlength=1 << width).astype(np.int32)
            self._counts.append(counts)
            self._starts.append(np.cumsum(counts, dtype=np.int64) - counts)

    @staticmethod
    def _chunk(hashes: np.ndarray, shift: int, width: int) -> np.ndarray:
        return ((hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int32)

    def within(self, queries: np.ndarray, distance: int, radius: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Every ``(query position, hash position)`` whose hashes differ in at most ``distance``
        bits, each pair once, as two ``int64`` arrays of equal length.

        Each chunk is probed with every key within ``radius`` bits; the default,
        ``distance // chunks``, finds every pair (pigeonhole). A smaller radius is faster and
        finds every pair within ``chunks x (radius + 1) - 1`` bits, and farther ones only when
        one chunk differs in at most ``radius`` bits.
        """
        radius = distance // len(self._fields) if radius is None else radius
        queries = queries.astype(np.uint64, copy=False)
        found: list[np.ndarray] = []
        for c, (_, width) in enumerate(self._fields):
            masks = _flip_masks(width, radius)
            step = max(1, _BLOCK // len(masks))
            for start in range(0, len(queries), step):
                block = queries[start:start + step]
                q, h = self._probe(block, c, masks)
                close = np.bitwise_count(block[q] ^ self.hashes[h]) <= distance
                found.append((q[close] + start) * len(self.hashes) + h[close])
        pairs = np.unique(np.concatenate(found)) if found else np.empty(0, dtype=np.int64)
        return pairs // max(len(self.hashes), 1), pairs % max(len(self.hashes), 1)

    def _probe(self, block: np.ndarray, c: int, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Candidates: the block's queries and the hashes whose chunk ``c`` is within the masks."""
        keys = (self._chunk(block, *self._fields[c])[:, None] ^ masks[None, :]).ravel()
        hit = np.flatnonzero(self._counts[c][keys])  # most keys have no hash: look up the rest only
        keys = keys[hit]
        first, counts = self._starts[c][keys], self._counts[c][keys].astype(np.int64)
        total = int(counts.sum())
        if total == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        query = np.repeat(hit // len(masks), counts)
        offset = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        return query, self._order[c][np.repeat(first, counts) + offset]


def components(count: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The connected component label (0..k-1) of each of ``count`` nodes joined by the edges
    ``left[i] - right[i]``."""
    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(count, count))
    return connected_components(graph, directed=False)[1]


def group_hashes(hashes: np.ndarray, distance: int) -> np.ndarray:
    """The group label of each hash: hashes within ``distance`` bits, directly or through a chain
    of others, share one. For a whole catalog: the index of :data:`CATALOG_CHUNKS` chunks probed
    with :data:`CATALOG_RADIUS` (exact up to 8 bits, see ``HashIndex.within``)."""
    index = HashIndex(hashes, CATALOG_CHUNKS)
    left, right = index.within(hashes, distance, min(CATALOG_RADIUS, distance // CATALOG_CHUNKS))
    return components(len(hashes), left, right)


# -- a session's groups -----------------------------------------------------------------------------


def session_groups(engine: Engine, session_id: str, distance: int) -> dict[str, Any]:
    """``{"groups": [{"item_ids", "keep", "exclude", "catalog_ids"}]}``: the session's ok items
    that show the same picture (two or more), or one item that matches catalog entries.

    ``keep`` is the suggested keeper: most pixels, then sharpest, then largest file, then first
    path. ``exclude`` is what "keep the best" leaves out: the others, except items of a RAW+JPEG
    pair (never hidden by a similar group). ``catalog_ids`` are the catalog entries within
    ``distance`` of any item of the group (entries imported from this session are left out: they
    are these items). Groups are ordered by the keeper's path; ids within a group by path.
    """
    items = _session_items(engine, session_id)
    if not items:
        return {"groups": []}
    hashes = as_array(item["hash"] for item in items)
    labels = _item_labels(items, hashes, distance)
    matches = _catalog_matches(_catalog_hashes(engine, session_id), hashes, labels, distance)
    members: dict[int, list[dict[str, Any]]] = {}
    for item, label in zip(items, labels.tolist(), strict=True):
        members.setdefault(label, []).append(item)
    groups = [_group(group, sorted(matches.get(label, ()))) for label, group in members.items()
              if len(group) > 1 or label in matches]
    return {"groups": [group for _, group in sorted(groups, key=lambda keyed: keyed[0])]}


def _item_labels(items: list[dict[str, Any]], hashes: np.ndarray, distance: int) -> np.ndarray:
    """The group label of each item: connected through pairs within ``distance``, except pairs
    of items of one RAW+JPEG pair."""
    left, right = HashIndex(hashes).within(hashes, distance)
    one_pair = [items[a]["pair_id"] == items[b]["id"] for a, b in zip(left.tolist(), right.tolist(), strict=True)]
    edge = (left != right) & ~np.array(one_pair, dtype=bool)
    return components(len(items), left[edge], right[edge])


def _catalog_matches(
    catalog: list[tuple[str, int]], hashes: np.ndarray, labels: np.ndarray, distance: int
) -> dict[int, set[str]]:
    """Per group label, the ids of the catalog entries within ``distance`` of one of its items."""
    matches: dict[int, set[str]] = {}
    if not catalog:
        return matches
    found, entry = HashIndex(as_array(h for _, h in catalog)).within(hashes, distance)
    for i, e in zip(found.tolist(), entry.tolist(), strict=True):
        matches.setdefault(int(labels[i]), set()).add(catalog[e][0])
    return matches


def _group(members: list[dict[str, Any]], catalog_ids: list[str]) -> tuple[str, dict[str, Any]]:
    """The keeper's path (what groups are ordered by) and the group's JSON."""
    members.sort(key=lambda item: item["path"])
    ranked = [(item["pixels"], item["sharpness"], item["size"], -n) for n, item in enumerate(members)]
    keeper = members[max(range(len(members)), key=ranked.__getitem__)]
    return keeper["path"], {
        "item_ids": [item["id"] for item in members],
        "keep": keeper["id"],
        "exclude": [item["id"] for item in members if item is not keeper and item["pair_id"] is None],
        "catalog_ids": catalog_ids,
    }


def _session_items(engine: Engine, session_id: str) -> list[dict[str, Any]]:
    """The session's ok items that have a hash, with what choosing the keeper needs. ``pair_id``
    is the other item of a RAW+JPEG pair (``items.pair_id``, ``jobs.pairs``: each names the other)."""
    with engine.connect() as conn:
        rows = conn.execute(select(Item.id, Item.path, Item.phash, Item.fields, Item.pair_id).where(
            Item.session_id == session_id, Item.status == ItemStatus.OK, Item.phash.is_not(None)
        )).all()
    items = []
    for row in rows:
        fields = row.fields or {}
        value = parse_phash(row.phash)
        if value is None:
            continue
        items.append({
            "id": row.id, "path": row.path, "hash": value,
            "pixels": (fields.get("width") or 0) * (fields.get("height") or 0),
            "sharpness": fields.get("sharpness") or 0.0,
            "size": fields.get("size_bytes") or 0,
            "pair_id": row.pair_id,
        })
    return items


def _catalog_hashes(engine: Engine, session_id: str) -> list[tuple[str, int]]:
    """``(entry id, hash)`` of the catalog entries that have a hash and were not imported from
    ``session_id``."""
    own = select(Item.id).where(Item.session_id == session_id)
    with engine.connect() as conn:
        rows = conn.execute(select(CatalogEntry.id, CatalogEntry.phash).where(
            CatalogEntry.phash.is_not(None), CatalogEntry.item_id.not_in(own)
        )).all()
    return [(row.id, value) for row in rows if (value := parse_phash(row.phash)) is not None]


# -- the catalog ------------------------------------------------------------------------------------


def similar_entry_ids(engine: Engine, entry_id: str, distance: int) -> list[str]:
    """The ids of the catalog entries within ``distance`` bits of entry ``entry_id`` (not itself),
    nearest first; ``[]`` when there is no such entry or it has no hash."""
    with engine.connect() as conn:
        target = parse_phash(conn.scalar(select(CatalogEntry.phash).where(CatalogEntry.id == entry_id)))
        if target is None:
            return []
        rows = conn.execute(select(CatalogEntry.id, CatalogEntry.phash).where(
            CatalogEntry.phash.is_not(None), CatalogEntry.id != entry_id)).all()
    entries = [(row.id, value) for row in rows if (value := parse_phash(row.phash)) is not None]
    if not entries:
        return []
    # One query: a vectorized pass over the hashes is cheaper than building an index.
    distances = np.bitwise_count(as_array(h for _, h in entries) ^ np.uint64(target))
    near = np.flatnonzero(distances <= distance)
    return [entries[e][0] for e in sorted(near.tolist(), key=lambda e: (int(distances[e]), entries[e][0]))]
