"""Choosing among filtered items: domain balance, the cold-start subset, the RL query set.

Pure functions of rows with a ``domain`` (and, for RL, a ``pass_rate``) and a seed.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["balance_domains", "check_shares", "quotas", "select_hardest"]

Row = Mapping[str, Any]


def check_shares(shares: Mapping[str, float], owner: str) -> dict[str, float]:
    """Shares as fractions that sum to 1 (any positive weights are normalised)."""
    if not shares:
        return {}
    for domain, share in shares.items():
        if not isinstance(share, (int, float)) or isinstance(share, bool) or share < 0:
            raise ValueError(f"{owner}: share of {domain!r} must be a number >= 0, got {share!r}")
    total = float(sum(shares.values()))
    if total <= 0:
        raise ValueError(f"{owner}: shares must not all be 0, got {dict(shares)}")
    return {domain: share / total for domain, share in shares.items()}


def quotas(total: int, shares: Mapping[str, float]) -> dict[str, int]:
    """``total`` split by ``shares`` with the largest-remainder rule (sums to ``total``)."""
    raw = {domain: total * share for domain, share in shares.items()}
    counts = {domain: math.floor(value) for domain, value in raw.items()}
    left = total - sum(counts.values())
    for domain in sorted(raw, key=lambda d: (counts[d] - raw[d], d))[:left]:
        counts[domain] += 1
    return counts


def _by_domain(rows: Sequence[Row]) -> dict[str, list[Row]]:
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        groups[row["domain"]].append(row)
    return groups


def balance_domains(
    rows: Sequence[Row], shares: Mapping[str, float], *, total: int | None = None, seed: int = 0
) -> list[Row]:
    """The largest subset (at most ``total``) whose domains follow ``shares``, drawn at random
    (seeded) within each domain, in the input order. Domains with share 0 are left out.
    Without shares every row is kept (up to ``total``, drawn at random)."""
    rng = random.Random(f"lit-qwen3/curation/balance/{seed}")
    if not shares:
        if total is None or total >= len(rows):
            return list(rows)
        keep = set(rng.sample(range(len(rows)), total))
        return [row for i, row in enumerate(rows) if i in keep]
    groups = _by_domain(rows)
    active = {d: s for d, s in shares.items() if s > 0}
    limit = min(len(groups.get(d, [])) / s for d, s in active.items())
    size = math.floor(limit + 1e-9)
    if total is not None:
        size = min(size, total)
    want = quotas(size, active)
    # Rounding may ask one more row of a domain than it has: give that row to another domain.
    for domain in sorted(want):
        spare = want[domain] - len(groups.get(domain, []))
        if spare > 0:
            want[domain] -= spare
            for other in sorted(want, key=lambda d: len(groups.get(d, [])) - want[d], reverse=True):
                room = len(groups.get(other, [])) - want[other]
                take = min(room, spare)
                want[other] += take
                spare -= take
    chosen: set[int] = set()
    for domain, count in want.items():
        members = [i for i, row in enumerate(rows) if row["domain"] == domain]
        chosen.update(rng.sample(members, count))
    return [row for i, row in enumerate(rows) if i in chosen]


def select_hardest(
    rows: Sequence[Row],
    *,
    size: int | None,
    shares: Mapping[str, float] | None = None,
    seed: int = 0,
) -> list[Row]:
    """Up to ``size`` rows, hardest (lowest ``pass_rate``) first within each domain, spread
    over domains by ``shares`` (default: equal); a domain short of its quota leaves its place
    to the hardest remaining rows of the others. Returned hardest first (ties at random)."""
    rng = random.Random(f"lit-qwen3/curation/hardest/{seed}")
    keyed = [(row["pass_rate"], rng.random(), i) for i, row in enumerate(rows)]
    order = [i for _, _, i in sorted(keyed)]
    if size is None or size >= len(rows):
        return [rows[i] for i in order]
    groups: dict[str, list[int]] = defaultdict(list)
    for i in order:
        groups[rows[i]["domain"]].append(i)
    if not shares:
        shares = {domain: 1.0 for domain in groups}
    shares = check_shares({d: s for d, s in shares.items() if d in groups}, "select_hardest")
    want = quotas(size, shares) if shares else {}
    chosen = []
    for domain, count in want.items():
        chosen.extend(groups[domain][:count])
    if len(chosen) < size:
        taken = set(chosen)
        chosen.extend([i for i in order if i not in taken][: size - len(chosen)])
    rank = {i: r for r, i in enumerate(order)}
    return [rows[i] for i in sorted(chosen, key=rank.__getitem__)]
