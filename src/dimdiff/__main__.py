"""``python -m dimdiff`` (also what ``torchrun -m dimdiff`` runs)."""

from dimdiff.cli import main

raise SystemExit(main())
