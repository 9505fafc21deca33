"""The doors: what `lmsys-pref <command>` and `make` run. `predict` (score a test file with any
saved model), `notebooks` (train a baseline by executing its notebook; EDA), `grid` (a YAML grid
of runs and a leaderboard), `launch`/`distributed` (torchrun), `pseudo_label`, `nbstrip`. Each
owns its command's `cli_main`; `lmsys_pref.cli` only routes."""
