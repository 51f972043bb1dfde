"""crystal QC - Streamlit entry point: page config, lock state and navigation only (screens live in screens/).

Order on every run: keep uploads in memory (ui.spool), lock if idle too long (before anything is rendered), then
show either the lock screen (create / unlock), the one-time recovery key, or - unlocked - the app's screens.

The screens are in screens/, not pages/: a folder named pages/ next to the main script switches Streamlit into its
legacy multipage mode (PagesManager.uses_pages_directory) until st.navigation first runs, and in that mode a URL such
as /history runs the page file directly, without this script (no idle check, no lock screen). Every screen still
guards itself with ui.session.require_vault().
"""
from __future__ import annotations

import streamlit as st

from ui import session
from ui.spool import keep_uploads_in_memory

st.set_page_config(page_title="crystal QC", page_icon="🔬", layout="wide")
keep_uploads_in_memory()
session.enforce_idle_lock()

#: Every URL path the app has. Paths the current state does not show run that state's default screen (hidden
#: pages), so locking on /history shows the lock screen at /history - and unlocking returns there - instead of
#: Streamlit's "page not found".
URL_PATHS = ("analyze", "review", "history", "settings", "models", "share", "benchmark", "audit", "unlock",
             "recovery-key")


def routes(*screens: tuple[str, str, str, str]) -> list[st.Page]:
    """Pages for ``(script, title, icon, url_path)`` screens (the first is the default) plus hidden pages that run
    the default screen for every other URL path."""
    pages = [st.Page(script, title=title, icon=icon, url_path=path, default=i == 0)
             for i, (script, title, icon, path) in enumerate(screens)]
    shown = {path for *_, path in screens}
    script, title, icon, _ = screens[0]
    return pages + [st.Page(script, title=title, icon=icon, url_path=path, visibility="hidden")
                    for path in URL_PATHS if path not in shown]


if session.recovery_key_pending() is not None:
    pages = routes(("screens/recovery_key.py", "Recovery key", "🔑", "recovery-key"))
elif session.is_unlocked():
    session.render_session_controls()
    pages = routes(("screens/analyze.py", "Analyze", "🔬", "analyze"),
                   ("screens/review.py", "Review and correct", "✏️", "review"),
                   ("screens/history.py", "History", "🗂️", "history"),
                   ("screens/settings.py", "Settings", "⚙️", "settings"),
                   ("screens/models.py", "Models", "🧠", "models"),
                   ("screens/share.py", "Share with a researcher", "📦", "share"),
                   ("screens/benchmark.py", "Industry comparison", "🏭", "benchmark"),
                   ("screens/audit.py", "Audit log", "📜", "audit"))
else:
    pages = routes(("screens/unlock.py", "Unlock", "🔒", "unlock"))

navigation = st.navigation(pages, position="sidebar" if session.is_unlocked() else "hidden")
if navigation.visibility == "hidden" and navigation.url_path in ("unlock", "recovery-key"):
    st.switch_page(pages[0])  # just unlocked or confirmed the key: go to the app's home, not a lock-screen URL
session.show_notice()
navigation.run()
