"""The Airflow layer, the only one that imports ``airflow``: hooks, operators, sensors, triggers,
the DAG builders, the cluster policy and the pools."""
