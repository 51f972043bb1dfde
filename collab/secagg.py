"""Cross-plant statistics without revealing any plant's numbers: secure aggregation of size histograms.

Several plants learn how their crystal size distribution compares with the industry's while nobody - neither another
plant nor the researcher who aggregates - sees a plant's histogram. Additive secret sharing over Z_(2^64) among the
plants, shares encrypted to each recipient with age and signed with Ed25519, optional differential-privacy noise
(OpenDP), a minimum of three plants. docs/privacy.md ("Cross-plant statistics") gives the threat model and the
reasons for this design over Flower's SecAgg+.

The modules, in the order data flows:

* :mod:`collab.secagg_protocol` - constants, the agreed bins (versioned), plant cards, rounds, strict file parsing.
* :mod:`collab.secagg_math` - the histogram over the agreed bins; split / add shares mod 2^64.
* :mod:`collab.secagg_dp` - discrete Laplace noise via OpenDP and its exact error bound.
* :mod:`collab.secagg_keys` - a plant's keys (age X25519 + Ed25519) and signatures.
* :mod:`collab.secagg_files` - share, partial-sum and aggregate files and every check on them.
* :mod:`collab.secagg_plant` - the plant side in the vault (keys, rounds, audited steps); screens/benchmark.py.
* :mod:`collab.secagg_cli` - the researcher's command line, run as ``python -m collab.secagg``.
"""
from __future__ import annotations

import sys

from collab.secagg_dp import add_noise, error_bound, noise_std
from collab.secagg_files import (DP_FAILURE_PROB, Aggregate, aggregate, make_partial, make_shares, open_aggregate,
                                 open_share, route_shares)
from collab.secagg_keys import PlantKeys
from collab.secagg_math import ecd_histogram, split
from collab.secagg_protocol import (BINS, CURRENT_BINS, MIN_PLANTS_FLOOR, PlantCard, Round, SecAggError, bin_labels,
                                    create_round, parse_card, parse_round, round_json)

__all__ = ["BINS", "CURRENT_BINS", "DP_FAILURE_PROB", "MIN_PLANTS_FLOOR", "Aggregate", "PlantCard", "PlantKeys",
           "Round", "SecAggError", "add_noise", "aggregate", "bin_labels", "create_round", "ecd_histogram",
           "error_bound", "make_partial", "make_shares", "noise_std", "open_aggregate", "open_share", "parse_card",
           "parse_round", "round_json", "route_shares", "split"]

if __name__ == "__main__":
    from collab.secagg_cli import main

    sys.exit(main())
