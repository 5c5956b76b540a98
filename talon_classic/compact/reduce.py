"""The merge rule of compaction, as both engines compute it.

"What the streaming merge would produce if it could hold every profile at
once" (:class:`talon_classic.bulk.Merger` with no batch limit) is, per
integrationId and attribute, a fold over its events in input order with a
state (value, stamp):

* an event without a (readable) timestamp always takes the value and
  leaves the stamp as it was (none for a new attribute);
* an event with timestamp ``ts`` takes it when there is no stamp yet or
  ``ts >= stamp``, and the stamp becomes ``ts``.

The stamp only ever grows, so at the end it is ``M``, the newest timestamp
of the attribute's events (none if none had one), and the value is that of
the later of two events: the last event whose timestamp is ``M`` and the
last event without a timestamp. That is an ordinary aggregation (no window,
no sort, no state across events), so it runs out of core in DuckDB and
spreads over a Spark cluster:

    winner = later of  max((ts, position)) over events with a timestamp
                       max(position)       over events without one

The ordering key written beside each value is ``[M, position of the
winner]``: later runs (the delivery ledger) compare keys as (timestamp,
position).
"""

from __future__ import annotations

from itertools import accumulate

#: The reduction over rows ``(iid, attr, val, ts, pos)``, attributes being JSON text.
#: ``{rows}`` is a relation with those columns.
WINNERS_SQL = """
SELECT iid, attr,
       CASE WHEN tsd IS NULL OR nul.pos > tsd.pos THEN nul.val ELSE tsd.val END AS val,
       tsd.ts AS m,
       CASE WHEN tsd IS NULL OR nul.pos > tsd.pos THEN nul.pos ELSE tsd.pos END AS pos
FROM (
    SELECT iid, attr,
           max({{'ts': ts, 'pos': pos, 'val': val}}) FILTER (WHERE ts IS NOT NULL) AS tsd,
           max({{'pos': pos, 'val': val}}) FILTER (WHERE ts IS NULL) AS nul
    FROM {rows}
    GROUP BY iid, attr
)
"""


def block_bases(records_per_block: list[int]) -> list[int]:
    """Position of each block's first record: the records of every block before it."""
    return [0, *accumulate(records_per_block)][:-1]
