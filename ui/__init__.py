"""App-side code: Streamlit helpers (session and vault life cycle, result view, cached resources, charts, upload
spooling) and pure modules with no Streamlit import (archive, analyses, settings, passphrase) that could move into a
package later. The packages analysis/, detection/ and vault/ never import this."""
