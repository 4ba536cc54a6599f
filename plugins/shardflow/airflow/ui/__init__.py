"""Shardflow's pages inside the Airflow UI: the jobs table and each job's page (an Airflow plugin)."""
