"""Public us-east-1 on-demand list prices used to turn counts into dollars.

Recorded on 2026-11-25 from the providers' pricing pages (DynamoDB on-demand prices in effect
since 2024-11-01). Lambda duration is the arm64 price: template.yaml deploys arm64 functions.
"""

from __future__ import annotations

PRICES_AS_OF = "2026-11-25"
REGION = "us-east-1"

PRICES = {
    "dynamodb_per_million_wru": 0.625,  # on-demand, since 2024-11-01
    "dynamodb_per_million_rru": 0.125,  # on-demand, since 2024-11-01
    "sqs_per_million_requests": 0.40,  # standard queue, per 64 KB chunk
    "lambda_per_million_requests": 0.20,
    "lambda_per_gb_second_arm64": 0.0000133334,
    "s3_per_thousand_put": 0.005,  # PUT, COPY, POST, LIST
    "s3_per_thousand_get": 0.0004,  # GET and the rest
    "apigw_http_per_million_requests": 1.00,  # HTTP API, first 300 million a month
    # API Gateway WebSocket APIs (aws.amazon.com/api-gateway/pricing, us-east-1): messages sent and
    # received, first billion a month, billed in 32 KB increments; connection minutes.
    "apigw_websocket_per_million_messages": 1.00,
    "apigw_websocket_per_million_connection_minutes": 0.25,
    "sfn_standard_per_million_transitions": 25.0,
    "sfn_express_per_million_requests": 1.00,
    "sfn_express_per_gb_second": 0.00001667,  # billed in 64 MB memory chunks, 100 ms minimum
    # What the kept history costs beside requests (the TCO figure).
    "dynamodb_storage_per_gb_month": 0.25,  # Standard table class, past the free 25 GB
    "dynamodb_pitr_per_gb_month": 0.20,  # continuous backups, on the table's size
    "s3_storage_per_gb_month": 0.023,  # S3 Standard, first 50 TB
    "logs_ingest_per_gb": 0.50,  # CloudWatch Logs standard ingestion
    "logs_storage_per_gb_month": 0.03,
    "xray_per_million_traces": 5.00,  # traces recorded
}

# Deployed function memory (template.yaml): the dispatcher and DLQ worker 512 MB, the API 1024 MB.
DISPATCHER_MEMORY_MB = 512
API_MEMORY_MB = 1024
# FollowFunction's memory (template.yaml) and its stream event source's batch size.
FOLLOW_MEMORY_MB = 256
STREAM_BATCH = 100
# FollowFunction's time per stream record of a run nobody follows, as the cost section counts it
# on every commit: an upper bound that bench/follow.py measures and checks.
FOLLOW_STREAM_MS_PER_RECORD = 2.0
# Lambda's SQS event source receives and deletes messages in batches of up to this many.
SQS_BATCH = 10
