"""The processing script's code: a pool of forked workers, one per core, that stream each input
file in record batches through the model. Depends on the core only; imports no Airflow and no
AWS client (the entry point hands it the job store)."""
