"""The core: the one typed description of a job, its record and transitions, planning, and the
lifecycle's decisions over small ports. Imports neither Airflow nor boto3."""
