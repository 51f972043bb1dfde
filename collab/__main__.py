"""``python -m collab`` = ``python -m collab.researcher`` (the researcher's command line)."""
from collab.researcher import main

raise SystemExit(main())
