"""AWS adapters: the S3 object store and the DynamoDB job table, on plain boto3 clients."""
