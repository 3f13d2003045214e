"""Pure computation of an undo plan from one run's journal entries."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from mailrules.state.models import (
    JournalEntry,
    Location,
    UndoFlag,
    UndoMove,
    UndoPlan,
    UndoRefused,
)

#: flag actions -> (default flag when `detail` is empty, True if the action adds the flag)
FLAG_ACTIONS: dict[str, tuple[str, bool]] = {
    "mark read": ("\\Seen", True),
    "mark unread": ("\\Seen", False),
    "flag": ("\\Flagged", True),
    "unflag": ("\\Flagged", False),
    "tag": ("", True),
    "untag": ("", False),
    # the flag is in `detail`: Gmail's \Important label, or the keyword $Important (RFC 8457)
    "mark important": ("", True),
    "mark not important": ("", False),
}
#: actions that take the message out of its mailbox into `destination` (delete = to the trash);
#: an archive without destination but with a `detail` removed that label in place instead
MOVE_ACTIONS: frozenset[str] = frozenset({"move", "archive", "delete"})
#: actions never undone, and why
REFUSED_ACTIONS: dict[str, str] = {
    "delete permanently": "the message was expunged; it cannot be brought back",
    "forward": "mail already sent cannot be recalled",
    "redirect": "mail already sent cannot be recalled",
    "copy": "the copy is left in place: undo never removes mail",
}
#: actions without an effect on the mailbox
NO_EFFECT: frozenset[str] = frozenset({"stop"})


@dataclass(slots=True)
class _Track:
    """One message followed through the run: where it started, where it is now."""

    origin: Location
    current: Location
    flags: list[tuple[int, JournalEntry, str, bool]] = field(default_factory=list)
    last_move: tuple[int, JournalEntry] | None = None
    lost: str | None = None


def _location(e: JournalEntry) -> Location:
    return Location(e.account, e.mailbox, e.uidvalidity, e.uid)


def plan_undo(run_id: str, entries: Iterable[JournalEntry], undone_by: Iterable[str] = ()) -> UndoPlan:
    """Build the plan that reverses the `ok` entries of a run (entries in the order they happened).

    Flag changes are inverted on the message's location at the end of the run (a flag set before
    a move travels with the message), then every moved message goes back to where the run found
    it. Entries that did nothing (failed, skipped, dry-run) are ignored.
    """
    tracks: dict[Location, _Track] = {}
    every: list[_Track] = []
    refused: list[tuple[int, UndoRefused]] = []
    for seq, e in enumerate(entries):
        if e.outcome != "ok" or e.action in NO_EFFECT:
            continue
        if e.action in REFUSED_ACTIONS:
            refused.append((seq, UndoRefused(e, REFUSED_ACTIONS[e.action])))
            continue
        if e.action not in FLAG_ACTIONS and e.action not in MOVE_ACTIONS:
            refused.append((seq, UndoRefused(e, f"unknown action {e.action!r}")))
            continue
        loc = _location(e)
        track = tracks.get(loc)
        if track is None:
            track = tracks[loc] = _Track(origin=loc, current=loc)
            every.append(track)
        if e.action in FLAG_ACTIONS:
            default, add = FLAG_ACTIONS[e.action]
            flag = e.detail or default
            if not flag:
                refused.append((seq, UndoRefused(e, "no keyword recorded")))
            else:
                track.flags.append((seq, e, flag, add))
            continue
        if e.destination is None and e.detail:
            # archived in place: a label removed, the message stayed (Gmail's archive from a
            # label's mailbox, engine/ports.py ARCHIVED_LABEL): undo adds the label back
            track.flags.append((seq, e, e.detail, False))
            continue
        # a move: follow the message to its new location, if COPYUID told us its new UID
        del tracks[loc]
        track.last_move = (seq, e)
        if e.destination is None or e.new_uid is None or e.new_uidvalidity is None:
            track.lost = (
                f"moved to {e.destination!r} without a recorded new UID "
                "(no COPYUID from the server); the message cannot be found safely"
            )
            continue
        track.current = Location(e.account, e.destination, e.new_uidvalidity, e.new_uid)
        tracks[track.current] = track

    flags: list[tuple[int, UndoFlag]] = []
    moves: list[tuple[int, UndoMove]] = []
    for track in every:
        if track.lost is not None:
            assert track.last_move is not None
            for seq, e, _flag, _add in track.flags:
                refused.append((seq, UndoRefused(e, f"the message was later {track.lost}")))
            refused.append((track.last_move[0], UndoRefused(track.last_move[1], track.lost)))
            continue
        for seq, e, flag, add in track.flags:
            flags.append((seq, UndoFlag(where=track.current, flag=flag, add=not add, journal=e)))
        if track.last_move is not None and track.current != track.origin:
            assert track.origin.uidvalidity is not None
            seq, e = track.last_move
            moves.append(
                (
                    seq,
                    UndoMove(
                        source=track.current,
                        target=track.origin.mailbox,
                        target_uidvalidity=track.origin.uidvalidity,
                        journal=e,
                    ),
                )
            )

    return UndoPlan(
        run_id=run_id,
        flags=tuple(s for _, s in sorted(flags, key=lambda p: p[0], reverse=True)),
        moves=tuple(s for _, s in sorted(moves, key=lambda p: p[0], reverse=True)),
        refused=tuple(s for _, s in sorted(refused, key=lambda p: p[0])),
        undone_by=tuple(undone_by),
    )
