"""Collaboration with researchers on the plant's terms (no Streamlit here; screens/share.py is the front end).

* :mod:`collab.dataset` - build a de-identified YOLO training set from saved analyses (pixels re-encoded, random
  file names, manifest without operator names) as one tar archive, in memory.
* :mod:`collab.crypto_age` - encrypt that archive to one researcher's age public key (``age1...``) with ``pyrage``;
  the only importer of ``pyrage``.
* :mod:`collab.recipients` - the named list of researcher public keys kept in the vault.
* :mod:`collab.researcher` - the researcher's command line: ``keygen``, ``decrypt``, ``inspect``, ``evaluate``.

docs/privacy.md explains what leaves the plant, to whom and in what form.
"""
