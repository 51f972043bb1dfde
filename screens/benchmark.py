"""Industry comparison: this plant's size distribution against the sum over several plants, computed by secure
aggregation so that nobody sees another plant's histogram. Logic lives in collab.secagg_plant; this screen reads
widgets, calls it and renders. Steps: keys and plant card -> join a round -> make shares -> partial sum -> aggregate.
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from analysis.errors import CrystalQCError
from collab import secagg_plant as plant
from collab.secagg_dp import error_bound
from collab.secagg_files import DP_FAILURE_PROB
from collab.secagg_protocol import MIN_PLANTS_FLOOR, Round, parse_round
from ui import session

MESSAGE = "secagg_message"
ERRORS = (CrystalQCError, OSError)


def _say(kind: str, text: str) -> None:
    st.session_state[MESSAGE] = (kind, text)


def _privacy_line(rnd: Round) -> str:
    if rnd.epsilon is None:
        return "exact aggregate (no noise)"
    bound = error_bound(len(rnd.plants), rnd.epsilon, failure_prob=DP_FAILURE_PROB)
    return (f"differential privacy ε = {rnd.epsilon:g} per crystal: each bin of the aggregate is within ±{bound}"
            f" crystals of the true sum with probability ≥ 1 − {DP_FAILURE_PROB:g}")


def _roster(rnd: Round) -> None:
    st.dataframe(pd.DataFrame([{"plant": c.pseudonym, "card fingerprint": c.fingerprint} for c in rnd.plants]),
                 hide_index=True, width="stretch")


def _keys_section(vault) -> bool:
    st.subheader("1. This plant's keys")
    try:
        keys = plant.plant_keys(vault)
    except ERRORS as e:
        st.error(str(e))
        return False
    if keys is None:
        st.caption("Choose a pseudonym that does not name the company or the site. The private keys stay in this"
                   " vault; only the plant card (public keys) is handed to the researcher.")
        pseudonym = st.text_input("Plant pseudonym", key="secagg_pseudonym", max_chars=32, placeholder="plant-07")
        if st.button("Create keys", key="secagg_create_keys"):
            try:
                card = plant.create_keys(vault, pseudonym.strip(), user=vault.user)
            except ERRORS as e:
                st.error(str(e))
                return False
            _say("success", f"Keys created for {card.pseudonym}.")
            st.rerun()
        return False
    card = keys.card()
    st.markdown(f"Pseudonym **{card.pseudonym}** · card fingerprint `{card.fingerprint}` (read it to the researcher"
                " and the other plants when they check the round).")
    st.download_button("Download plant card", plant.card_file(vault), file_name=f"{card.pseudonym}.card.json",
                       mime="application/json", key="secagg_card_download", on_click=session.record,
                       args=("secagg_card_exported", {"pseudonym": card.pseudonym}))
    return True


def _join_section(vault) -> None:
    st.subheader("2. Join a round")
    upload = st.file_uploader("Round file from the researcher", type=["json"], key="secagg_round_upload")
    if upload is None:
        return
    try:
        rnd = parse_round(upload.getvalue())
    except ERRORS as e:
        st.error(str(e))
        return
    st.markdown(f"**{rnd.title}** · round `{rnd.short_digest}` · deadline {rnd.deadline} · at least"
                f" {rnd.min_plants} plants · {_privacy_line(rnd)}")
    _roster(rnd)
    confirmed = st.checkbox("I compared these plants' card fingerprints with the plants themselves (not only with"
                            " the researcher)", key="secagg_round_confirm")
    if st.button("Join this round", key="secagg_join", disabled=not confirmed):
        try:
            plant.join_round(vault, upload.getvalue(), user=vault.user)
        except ERRORS as e:
            st.error(str(e))
            return
        _say("success", f"Joined round '{rnd.title}'.")
        st.rerun()


def _shares_step(vault, status: plant.RoundStatus) -> None:
    rnd = status.round
    st.markdown("**Step 1 - contribute this plant's histogram as shares**")
    if not status.shares_made:
        c1, c2, c3 = st.columns(3)
        since = c1.date_input("From (analysis date)", value=None, key="secagg_since")
        until = c2.date_input("To", value=None, key="secagg_until")
        products = sorted({a.product for a in plant.eligible_analyses(vault) if a.product})
        product = c3.selectbox("Product", ["(all products)", *products], key="secagg_product")
        product = "" if product == "(all products)" else product
        chosen = plant.eligible_analyses(vault, since=since, until=until, product=product)
        st.caption(f"{len(chosen)} calibrated analyses selected (uncalibrated ones are never used: their sizes are in"
                   f" px). Your histogram is split into {len(rnd.plants)} random-looking shares; no file leaving the"
                   " app contains it.")
        if st.button("Make shares", key="secagg_make_shares", disabled=not chosen):
            filters = {"since": since.isoformat() if since else "", "until": until.isoformat() if until else "",
                       "product": product}
            try:
                plant.make_shares(vault, rnd.round_id, [a.analysis_id for a in chosen], user=vault.user,
                                  filters=filters)
            except ERRORS as e:
                st.error(str(e))
                return
            st.rerun()
        return
    st.caption("Send each file to the researcher, who routes it to the plant named in it; only that plant can open"
               " it.")
    for recipient, data in plant.outgoing_shares(vault, rnd.round_id).items():
        st.download_button(f"Share for {recipient}", data, file_name=f"share-{rnd.round_id[:8]}-to-{recipient}.json",
                           mime="application/json", key=f"secagg_share_{recipient}", on_click=session.record,
                           args=("secagg_share_exported", {"round_id": rnd.round_id, "recipient": recipient}))


def _partial_step(vault, status: plant.RoundStatus) -> None:
    rnd = status.round
    st.markdown("**Step 2 - add the shares the other plants sent you**")
    if not status.partial_made:
        uploads = st.file_uploader(f"The {len(rnd.plants) - 1} share files addressed to this plant", type=["json"],
                                   accept_multiple_files=True, key="secagg_shares_upload")
        if st.button("Make partial sum", key="secagg_make_partial", disabled=not uploads):
            try:
                plant.make_partial(vault, rnd.round_id, [u.getvalue() for u in uploads], user=vault.user)
            except ERRORS as e:
                st.error(str(e))
                return
            st.rerun()
        return
    st.download_button("Partial sum for the researcher", plant.stored_partial(vault, rnd.round_id),
                       file_name=f"partial-{rnd.round_id[:8]}.json", mime="application/json",
                       key="secagg_partial_download", on_click=session.record,
                       args=("secagg_partial_exported", {"round_id": rnd.round_id}))


def _figure(cmp: plant.Comparison, n_plants: int) -> go.Figure:
    fig = go.Figure([go.Bar(name="This plant", x=list(cmp.labels), y=list(cmp.own_pct)),
                     go.Bar(name=f"Industry ({n_plants} plants)", x=list(cmp.labels), y=list(cmp.aggregate_pct))])
    fig.update_layout(barmode="group", xaxis_title="Equivalent circular diameter (µm)",
                      yaxis_title="Crystals per bin (% of count)", margin=dict(l=10, r=10, t=30, b=10))
    return fig


def _aggregate_step(vault, status: plant.RoundStatus) -> None:
    rnd = status.round
    st.markdown("**Step 3 - the aggregate**")
    if not status.aggregate_loaded:
        upload = st.file_uploader("Aggregate file from the researcher", type=["json"], key="secagg_aggregate_upload")
        if upload is not None and st.button("Check and show", key="secagg_load_aggregate"):
            try:
                plant.load_aggregate(vault, rnd.round_id, upload.getvalue(), user=vault.user)
            except ERRORS as e:
                st.error(str(e))
                return
            st.rerun()
        return
    try:
        cmp = plant.comparison(vault, rnd.round_id)
    except ERRORS as e:
        st.error(str(e))
        return
    agg = cmp.aggregate
    c1, c2, c3 = st.columns(3)
    c1.metric("Plants", agg.n_plants)
    c2.metric("Crystals, all plants", f"{agg.total:,}" + (f" ± {agg.total_error}" if agg.epsilon else ""))
    c3.metric("Crystals, this plant", f"{sum(cmp.own_counts):,}")
    st.plotly_chart(_figure(cmp, agg.n_plants), key="secagg_chart")
    st.caption("Every partial sum was checked against its plant's signature and the total recomputed here. "
               + _privacy_line(rnd).capitalize() + ".")
    st.dataframe(pd.DataFrame({"ECD bin (µm)": cmp.labels, "this plant (%)": [round(x, 2) for x in cmp.own_pct],
                               "industry (%)": [round(x, 2) for x in cmp.aggregate_pct],
                               "industry (count)": cmp.aggregate_counts}), hide_index=True, width="stretch")


vault = session.require_vault()
st.title("Industry comparison")
st.caption(f"Compare this plant's crystal size distribution with the sum over at least {MIN_PLANTS_FLOOR} plants."
           " Secure aggregation: what leaves the app are random-looking shares and a partial sum; neither the"
           " researcher nor another plant sees this plant's histogram.")
message = st.session_state.pop(MESSAGE, None)
if message is not None:
    (st.success if message[0] == "success" else st.error)(message[1])

if _keys_section(vault):
    _join_section(vault)
    try:
        rounds = plant.joined_rounds(vault)
    except ERRORS as e:
        st.error(str(e))
        rounds = []
    if rounds:
        st.subheader("3. Rounds")
        by_id = {s.round.round_id: s for s in rounds}
        chosen = st.selectbox("Round", list(by_id), key="secagg_round",
                              format_func=lambda i: f"{by_id[i].round.title} ({by_id[i].step})")
        status = by_id[chosen]
        st.caption(f"Round `{status.round.short_digest}` · deadline {status.round.deadline} · "
                   f"{_privacy_line(status.round)}")
        _roster(status.round)
        _shares_step(vault, status)
        if status.shares_made:
            _partial_step(vault, status)
        if status.partial_made:
            _aggregate_step(vault, status)
