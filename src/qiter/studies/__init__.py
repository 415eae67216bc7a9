"""Studies: multi-seed sweeps, Optuna tuning on a shared database, and honest plots and reports.

- :mod:`qiter.studies.sweep`: every (setting, seed) pair as a run folder, in parallel processes, resumable,
  optionally shared between machines through a database;
- :mod:`qiter.studies.tune`: Optuna studies with pruning through the run loop's events and heartbeats;
- :mod:`qiter.studies.report`, :mod:`qiter.studies.plots`: IQM and stratified-bootstrap intervals (rliable);
- :mod:`qiter.studies.storage`: storage URLs, Optuna storages and the sweeps' shared run table.

Modules are imported when used: Optuna, SQLAlchemy and rliable load slowly.
"""
