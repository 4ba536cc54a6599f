"""The embedded default on one machine: a moto server, the demo's model and data, the demo run,
and the four Airflow components as local processes. No AWS account, no Docker."""
