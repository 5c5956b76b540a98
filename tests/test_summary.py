"""The run summary: drops decided at delivery, the ledger's counts, the state file line."""

from __future__ import annotations

import threading

from talon_classic.summary import MAX_DROPPED_NAMES, Summary


def test_drops_at_delivery_count_with_the_engines_and_from_any_thread() -> None:
    summary = Summary(clock=lambda: 0.0)
    summary.keep([("favourite_colour", "not_allowlisted")])
    threads = [threading.Thread(target=lambda: [summary.drop([("plan", "superseded")])
                                                for _ in range(500)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summary.drop([("email", "unchanged"), ("plan", "superseded")])
    assert summary.dropped == {"not_allowlisted": 1, "superseded": 2001, "unchanged": 1}
    assert summary.dropped_names["superseded"] == {"plan": 2001}
    text = summary.render()
    assert "  superseded              2,001  top: plan 2,001" in text
    assert "  unchanged                   1  top: email 1" in text


def test_past_the_name_limit_drops_are_still_counted() -> None:
    summary = Summary(clock=lambda: 0.0)
    summary.drop([(f"a{n}", "superseded") for n in range(MAX_DROPPED_NAMES + 5)])
    summary.drop([("new-name", "superseded"), ("a0", "superseded")])
    assert summary.dropped["superseded"] == MAX_DROPPED_NAMES + 7
    assert "new-name" not in summary.dropped_names["superseded"]
    assert summary.dropped_names["superseded"]["a0"] == 2


def test_the_ledgers_lines() -> None:
    summary = Summary(clock=lambda: 0.0)
    assert "state file" not in summary.render()  # a library run without one says nothing
    summary.state_file, summary.profiles_current = "/s/acme.db", 3
    summary.profiles_repaired, summary.repairs_left = 2, 1
    text = summary.render()
    assert "up to date                    3  profiles not sent (nothing newer than what " \
           "Talon.One acknowledged)" in text
    assert "repaired                      2  profiles (newest values sent again: a request " \
           "with older ones may land late)" in text
    summary.add_float(repair_wait=59.6)
    assert "may land late; waited 60s)" in summary.render()
    assert "repair pending                1  profiles" in text
    assert "repair refused" not in text
    summary.add(repairs_refused=1)
    assert "repair refused                1  profiles (Talon.One refused their newest values " \
           "now, so they may hold older ones: see the warnings)" in summary.render()
    assert "state file         /s/acme.db\n" in text
    summary.state_file, summary.state_note = None, "--no-state"
    assert "state file         none  (--no-state)" in summary.render()
    data = summary.as_dict()
    assert (data["profiles_current"], data["profiles_repaired"], data["repairs_left"],
            data["state_file"]) == (3, 2, 1, None)
