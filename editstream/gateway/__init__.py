"""The HTTPS ingestion edge for editors that do not speak Kafka, and how it writes to Kafka."""
