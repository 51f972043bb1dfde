"""The researcher's (aggregator's) command line for cross-plant statistics: ``python -m collab.secagg ...``.

    new-round CARD... --title T (--deadline DATE | --days N) [--min-plants 3] [--epsilon E] --out round.json
    route --round round.json SHARE... --out-dir DIR        sort share files into DIR/<recipient>/ (cannot read them)
    aggregate --round round.json PARTIAL... --out aggregate.json
    show --round round.json aggregate.json                 counts and % per bin of a (re-checked) aggregate
    error-bound --plants N --epsilon E                     the DP error figures a round with these settings states

Exit status: 0 done, 2 refused or bad usage (the reason is printed on stderr).
"""
from __future__ import annotations

import argparse
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from collab.secagg_dp import error_bound, noise_std
from collab.secagg_files import DP_FAILURE_PROB, aggregate, open_aggregate, route_shares
from collab.secagg_protocol import (CURRENT_BINS, MAX_AGGREGATE_BYTES, MAX_SMALL_FILE_BYTES, MIN_PLANTS_FLOOR,
                                    SecAggError, bin_labels, create_round, parse_card, parse_round, round_json,
                                    vector_length)


def _read(path: str, limit: int) -> bytes:
    p = Path(path)
    try:
        if p.stat().st_size > limit:
            raise SecAggError(f"{path} is too large ({p.stat().st_size} bytes, at most {limit}).")
        return p.read_bytes()
    except OSError as e:
        raise SecAggError(f"Cannot read {path}: {e.strerror}.") from e


def _deadline(args: argparse.Namespace, now: datetime) -> datetime:
    if args.deadline:
        try:
            value = datetime.fromisoformat(args.deadline)
        except ValueError as e:
            raise SecAggError(f"--deadline {args.deadline!r} is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM).") from e
        if len(args.deadline) == 10:  # a date alone: the end of that day
            value = value.replace(hour=23, minute=59, second=59)
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return now + timedelta(days=args.days)


def _new_round(args: argparse.Namespace) -> int:
    now = datetime.now(timezone.utc)
    cards = [parse_card(_read(p, MAX_SMALL_FILE_BYTES)) for p in args.cards]
    rnd = create_round(cards, title=args.title, min_plants=args.min_plants, deadline=_deadline(args, now),
                       epsilon=args.epsilon, now=now)
    Path(args.out).write_bytes(round_json(rnd))
    print(f"round {rnd.round_id}  digest {rnd.short_digest}  deadline {rnd.deadline}  min plants {rnd.min_plants}"
          f"  epsilon {rnd.epsilon if rnd.epsilon is not None else 'none (exact)'}")
    for card in rnd.plants:
        print(f"  {card.pseudonym:<32} card fingerprint {card.fingerprint}")
    print(f"wrote {args.out}: send it to every plant; each plant should compare the fingerprints above with the"
          " plants' own before joining.")
    return 0


def _route(args: argparse.Namespace) -> int:
    rnd = parse_round(_read(args.round, MAX_SMALL_FILE_BYTES))
    routed = route_shares(rnd, [_read(p, MAX_SMALL_FILE_BYTES) for p in args.shares])
    out = Path(args.out_dir)
    for recipient, items in routed.items():
        folder = out / recipient
        folder.mkdir(parents=True, exist_ok=True)
        for i, data in enumerate(items):
            (folder / f"share-{i + 1:02d}.json").write_bytes(data)
        print(f"  {recipient}: {len(items)} share files -> {folder}")
    return 0


def _aggregate(args: argparse.Namespace) -> int:
    rnd = parse_round(_read(args.round, MAX_SMALL_FILE_BYTES))
    data = aggregate(rnd, [_read(p, MAX_SMALL_FILE_BYTES) for p in args.partials])
    Path(args.out).write_bytes(data)
    result = open_aggregate(rnd, data)
    print(f"aggregate of {result.n_plants} plants, {result.total} crystals -> {args.out}")
    return 0


def _show(args: argparse.Namespace) -> int:
    rnd = parse_round(_read(args.round, MAX_SMALL_FILE_BYTES))
    result = open_aggregate(rnd, _read(args.aggregate, MAX_AGGREGATE_BYTES))
    shown = [max(0, c) for c in result.counts]
    total = sum(shown) or 1
    print(f"round {rnd.round_id} '{rnd.title}': {result.n_plants} plants, {result.total} crystals")
    if result.epsilon is not None:
        print(f"DP epsilon {result.epsilon}: each bin within ±{result.bin_error} counts, the total within"
              f" ±{result.total_error}, with probability >= 1 - {result.failure_prob:g}")
    for label, count in zip(bin_labels(rnd.bins_version), shown):
        print(f"  {label:>14} µm  {count:>10}  {100 * count / total:6.2f} %")
    return 0


def _error_bound(args: argparse.Namespace) -> int:
    n, eps, length = args.plants, args.epsilon, vector_length(args.bins)
    print(f"{n} plants, epsilon {eps}: per bin std {noise_std(n, eps):.2f} counts, within ±"
          f"{error_bound(n, eps, failure_prob=DP_FAILURE_PROB)} with probability >= 1 - {DP_FAILURE_PROB:g};"
          f" total count std {noise_std(n * length, eps):.2f}, within ±"
          f"{error_bound(n * length, eps, failure_prob=DP_FAILURE_PROB)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m collab.secagg", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("new-round", help="create a round file from the plants' cards")
    p.add_argument("cards", nargs="+", help="plant card files (downloaded from each plant's app)")
    p.add_argument("--title", required=True)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--deadline", help="YYYY-MM-DD (end of day, UTC) or an ISO date and time")
    group.add_argument("--days", type=float, help="deadline this many days from now")
    p.add_argument("--min-plants", type=int, default=MIN_PLANTS_FLOOR)
    p.add_argument("--epsilon", type=float, default=None, help="differential privacy per crystal (omit: exact)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_new_round)
    p = sub.add_parser("route", help="sort the plants' share files by recipient")
    p.add_argument("--round", required=True)
    p.add_argument("shares", nargs="+")
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=_route)
    p = sub.add_parser("aggregate", help="add the plants' partial sums")
    p.add_argument("--round", required=True)
    p.add_argument("partials", nargs="+")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_aggregate)
    p = sub.add_parser("show", help="print a checked aggregate")
    p.add_argument("--round", required=True)
    p.add_argument("aggregate")
    p.set_defaults(func=_show)
    p = sub.add_parser("error-bound", help="DP error figures for a number of plants and an epsilon")
    p.add_argument("--plants", type=int, required=True)
    p.add_argument("--epsilon", type=float, required=True)
    p.add_argument("--bins", default=CURRENT_BINS)
    p.set_defaults(func=_error_bound)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (SecAggError, ValueError) as e:
        print(f"refused: {e}", file=sys.stderr)
        return 2
